/**
 * Waiting for "something may have happened" with a timeout and an abort
 * signal, for stream readers that then look for themselves.
 */

/**
 * Resolves true when `arm`'s wake function is called, false after `ms` or
 * when `signal` aborts. `arm` receives the wake function (and undefined once
 * the wait is over, so a late call does nothing).
 */
export function waitForWake(ms: number, signal: AbortSignal | undefined, arm: (wake: (() => void) | undefined) => void): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (woken: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      arm(undefined);
      resolve(woken);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(false), ms);
    signal?.addEventListener("abort", onAbort, { once: true });
    arm(() => done(true));
  });
}
