/**
 * The authenticated principal of a call, set by the request gate before the
 * body is read and carried in the handler context, so handlers (and the
 * engine's per-namespace views, later) act for its namespace only.
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { Principal } from "../domain/auth/principal.js";

export type { Principal };

/** Undefined only on calls that need no credentials (Health) and sent none that verify. */
export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "mailroom principal" });

/** The caller of a call that needs credentials; the gate guarantees there is one. */
export function principalOf(context: Pick<HandlerContext, "values">): Principal {
  const principal = context.values.get(principalKey);
  if (!principal) throw new Error("no principal: the request gate did not authenticate this call");
  return principal;
}
