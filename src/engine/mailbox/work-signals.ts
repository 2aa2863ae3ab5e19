/**
 * "A dispatch may be claimable now" notices, in this process. They come from
 * the journal tail (so work enqueued on any instance wakes waiters on every
 * instance) and from the availability clock (delayed work coming due). Long
 * polls wait on them; WatchDispatchSignals streams them out. They are hints:
 * a waiter always claims again to find out.
 */
import { DispatchSignalReason } from "../../../gen/mailroom/v1/dispatch_pb.js";

export { DispatchSignalReason };

export interface WorkSignal {
  threadId: string;
  dispatchId: string;
  reason: DispatchSignalReason;
}

interface Waiter {
  threadId?: string;
  wake(): void;
}

export class WorkSignals {
  private counter = 0;
  /** Waiting long polls, oldest first (a Set keeps insertion order). */
  private readonly waiters = new Set<Waiter>();
  private readonly listeners = new Set<(signal: WorkSignal) => void>();

  /** Increases with every signal: compare before and after a claim attempt. */
  get version(): number {
    return this.counter;
  }

  /**
   * Wakes one waiter that may claim the signalled dispatch (the oldest
   * waiting for its thread or for any thread), not all of them: one
   * dispatch satisfies one claim, and a woken waiter always claims again
   * (so a signal is never lost on a waiter that then finds nothing: it
   * found the dispatch taken, which is what the signal was about).
   */
  emit(signal: WorkSignal): void {
    this.counter++;
    this.wakeOne(signal.threadId);
    for (const listener of this.listeners) listener(signal);
  }

  /** A woken waiter that will not claim (its caller left) hands its wake to the next one. */
  passOn(threadId: string | undefined): void {
    this.wakeOne(threadId);
  }

  private wakeOne(threadId: string | undefined): void {
    for (const waiter of this.waiters) {
      if (waiter.threadId === undefined || threadId === undefined || waiter.threadId === threadId) {
        waiter.wake();
        return;
      }
    }
  }

  listen(listener: (signal: WorkSignal) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** How many long polls are waiting (for metrics and tests). */
  get waiting(): number {
    return this.waiters.size;
  }

  /** Resolves true when a signal woke this waiter (see emit); false after `timeoutMs` or on abort. */
  wait(threadId: string | undefined, timeoutMs: number, abort?: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const waiter: Waiter = { threadId, wake: () => done(true) };
      const timer = setTimeout(() => done(false), timeoutMs);
      const onAbort = () => done(false);
      const done = (woken: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        abort?.removeEventListener("abort", onAbort);
        resolve(woken);
      };
      if (abort?.aborted) return done(false);
      abort?.addEventListener("abort", onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }
}
