/**
 * A server stream lives no longer than the credential it was admitted with:
 * it ends with UNAUTHENTICATED when its JWT expires, and when a reload of the
 * auth file removes its principal or changes what the principal may do.
 * Without this, a revoked token would keep reading events for as long as its
 * stream stayed open.
 *
 * Ending a stream uses the call context's abort, the same path Connect takes
 * when a call fails: the handler sees its signal abort and the client gets
 * the reason.
 */
import { Code, type HandlerContext } from "@connectrpc/connect";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { grantsSame, type Principal } from "../domain/auth/principal.js";
import type { Authenticator } from "./auth.js";
import { errorWithDetail } from "./errors.js";

/** setTimeout's longest delay; a later expiry re-arms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Tracked {
  context: HandlerContext;
  principal: Principal;
  timer?: NodeJS.Timeout;
}

function end(context: HandlerContext, reason: unknown): void {
  // Connect's handler contexts are abortable (HandlerContextController); the public type does not say so.
  (context as HandlerContext & { abort?: (reason?: unknown) => void }).abort?.(reason);
}

export class StreamCredentials {
  private readonly open = new Set<Tracked>();

  /** Follows a stream admitted for `principal` until its call ends. */
  track(context: HandlerContext, principal: Principal): void {
    const tracked: Tracked = { context, principal };
    this.open.add(tracked);
    if (principal.expiresAt !== undefined) this.expireAt(tracked, principal.expiresAt);
    const forget = () => {
      clearTimeout(tracked.timer);
      this.open.delete(tracked);
    };
    if (context.signal.aborted) forget();
    else context.signal.addEventListener("abort", forget, { once: true });
  }

  /** After a reload: ends every stream whose credential no longer names a principal granting the same. Resolves to how many ended. */
  async recheck(auth: Authenticator): Promise<number> {
    let ended = 0;
    for (const tracked of [...this.open]) {
      const now = await auth.authenticate(tracked.context.requestHeader.get("authorization")).catch(() => undefined);
      if (now && grantsSame(now, tracked.principal)) continue;
      end(
        tracked.context,
        errorWithDetail(Code.Unauthenticated, "the credentials this stream was opened with were revoked or changed; reconnect with valid ones", {
          reason: ErrorReason.UNAUTHENTICATED,
        }),
      );
      ended++;
    }
    return ended;
  }

  private expireAt(tracked: Tracked, expiresAt: number): void {
    const delay = expiresAt - Date.now();
    tracked.timer = setTimeout(() => {
      if (Date.now() < expiresAt) return this.expireAt(tracked, expiresAt);
      end(tracked.context, errorWithDetail(Code.Unauthenticated, "the JWT this stream was opened with has expired; reconnect with a fresh one", { reason: ErrorReason.TOKEN_EXPIRED, metadata: { claim: "exp" } }));
    }, Math.min(Math.max(delay, 0), MAX_TIMER_MS));
    tracked.timer.unref();
  }
}
