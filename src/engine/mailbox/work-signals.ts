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

type Waiter = { threadId?: string; wake: () => void };

export class WorkSignals {
  private counter = 0;
  private readonly waiters = new Set<Waiter>();
  private readonly listeners = new Set<(signal: WorkSignal) => void>();

  /** Increases with every signal: compare before and after a claim attempt. */
  get version(): number {
    return this.counter;
  }

  emit(signal: WorkSignal): void {
    this.counter++;
    for (const waiter of this.waiters) {
      if (waiter.threadId === undefined || waiter.threadId === signal.threadId) waiter.wake();
    }
    for (const listener of this.listeners) listener(signal);
  }

  listen(listener: (signal: WorkSignal) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves on the next signal for the thread (any thread when undefined), after `timeoutMs`, or on abort. */
  wait(threadId: string | undefined, timeoutMs: number, abort?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const waiter: Waiter = { threadId, wake: () => done() };
      const timer = setTimeout(() => done(), timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        abort?.removeEventListener("abort", done);
        resolve();
      };
      if (abort?.aborted) return done();
      abort?.addEventListener("abort", done, { once: true });
      this.waiters.add(waiter);
    });
  }
}
