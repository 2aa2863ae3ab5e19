/**
 * A time bound on every store call, whatever the backend. A call still
 * running after `timeoutMs` is answered with StoreUnavailableError (the
 * client sees UNAVAILABLE and may retry), so no request, sweeper or timer
 * ever waits on a stalled store: a majority commit point that stopped
 * advancing, a primary being elected, a connection that went silent.
 *
 * The mongo backend also hands the bound to MongoDB (maxTimeMS, wtimeout,
 * server selection, connection checkout) so the server stops working for a
 * caller that has gone; this wrapper is what guarantees the caller's wait.
 * A call cut off may still be applied later, as with any timeout: every
 * transition is a conditional update and every insert is keyed, so a late
 * write is either harmless or refused.
 */
import { InterceptedStore } from "./intercept.js";
import { type Store, StoreUnavailableError } from "./port.js";

/**
 * The default of `--store-timeout-ms`: far above a healthy majority write;
 * during a failover (about 10-12 s with MongoDB's default election timeout)
 * calls answer UNAVAILABLE and clients retry, instead of piling up.
 */
export const DEFAULT_STORE_TIMEOUT_MS = 10_000;

/**
 * Runs `call`, rejecting with StoreUnavailableError once `timeoutMs` passed.
 * A result that arrives after that is handed to `late` (to close what it opened).
 */
export function withinDeadline<R>(label: string, timeoutMs: number, call: () => Promise<R>, late?: (value: R) => void): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      reject(new StoreUnavailableError(`store call ${label} did not complete within ${timeoutMs} ms`));
    }, timeoutMs);
    // A process with nothing else to do need not wait for a bound.
    timer.unref?.();
    let pending: Promise<R>;
    try {
      pending = call();
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (value) => {
        if (settled) return late?.(value);
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** The store with every call bounded by `timeoutMs`. */
export function withDeadline(store: Store, timeoutMs: number): Store {
  if (store instanceof DeadlineStore && store.timeoutMs === timeoutMs) return store;
  return new DeadlineStore(store, timeoutMs);
}

export class DeadlineStore extends InterceptedStore {
  constructor(
    inner: Store,
    readonly timeoutMs: number,
  ) {
    super(inner, {
      operation: (call) => withinDeadline(`${call.collection}.${call.operation}`, timeoutMs, call.run),
      // A stream that opens after its caller gave up would never be closed by anyone else.
      watch: (_options, open) => withinDeadline("watch", timeoutMs, open, (stream) => void stream.close().catch(() => undefined)),
      ping: (ping) => withinDeadline("ping", timeoutMs, ping),
    });
  }
}
