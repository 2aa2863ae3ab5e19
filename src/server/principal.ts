/**
 * The authenticated principal of a call, set by the request gate before the
 * body is read and carried in the handler context, so handlers act through
 * the engine's scope of its namespace only (`scopeOf`).
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { Principal } from "../domain/auth/principal.js";
import type { Engine } from "../engine/engine.js";
import type { NamespaceScope } from "../engine/scope.js";

export type { Principal };

/** Undefined only on calls that need no credentials (Health) and sent none that verify. */
export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "mailroom principal" });

/** The caller of a call that needs credentials; the gate guarantees there is one. */
export function principalOf(context: Pick<HandlerContext, "values">): Principal {
  const principal = context.values.get(principalKey);
  if (!principal) throw new Error("no principal: the request gate did not authenticate this call");
  return principal;
}

/** The engine's use cases for the caller's namespace: the only way handlers reach the engine's data. */
export function scopeOf(engine: Engine, context: Pick<HandlerContext, "values">): NamespaceScope {
  return engine.scope(principalOf(context).namespace);
}
