/**
 * "A dispatch may be claimable now" notices, in this process. They come from
 * the journal tail (so work enqueued on any instance wakes waiters on every
 * instance) and from the availability clock (delayed work coming due). Long
 * polls wait on them; WatchDispatchSignals streams them out. They are hints:
 * a waiter always claims again to find out.
 *
 * Every signal belongs to one namespace, and only that namespace's waiters
 * and listeners hear it (through its NamespaceSignals view): one namespace's
 * traffic neither wakes nor informs another's.
 */
import { DispatchSignalReason } from "../../../gen/mailroom/v1/dispatch_pb.js";
import { addKeyed } from "../listeners.js";

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

type Listener = (signal: WorkSignal) => void;

/** Namespaces whose last signal is remembered before the memory is cleared (see versionOf). */
const REMEMBERED_NAMESPACES = 10_000;

export class WorkSignals {
  private counter = 0;
  /** The counter at each namespace's last signal; namespaces not in it had none since `floor`. */
  private readonly last = new Map<string, number>();
  private floor = 0;
  /** Waiting long polls by namespace, oldest first (a Set keeps insertion order). */
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private waitingCount = 0;

  /**
   * Changes with every signal of the namespace: compare before and after a
   * claim attempt. (Forgetting namespaces moves every version on: a waiter
   * then claims once more for nothing, never misses a signal.)
   */
  versionOf(namespace: string): number {
    return this.last.get(namespace) ?? this.floor;
  }

  /**
   * Wakes one waiter of the namespace that may claim the signalled dispatch
   * (the oldest waiting for its thread or for any thread), not all of them:
   * one dispatch satisfies one claim, and a woken waiter always claims again
   * (so a signal is never lost on a waiter that then finds nothing: it
   * found the dispatch taken, which is what the signal was about).
   */
  emit(namespace: string, signal: WorkSignal): void {
    if (this.last.size >= REMEMBERED_NAMESPACES && !this.last.has(namespace)) {
      this.last.clear();
      this.floor = this.counter + 1;
    }
    this.last.set(namespace, ++this.counter);
    this.wakeOne(namespace, signal.threadId);
    for (const listener of this.listeners.get(namespace) ?? []) listener(signal);
  }

  /** A woken waiter that will not claim (its caller left) hands its wake to the next one. */
  passOn(namespace: string, threadId: string | undefined): void {
    this.wakeOne(namespace, threadId);
  }

  private wakeOne(namespace: string, threadId: string | undefined): void {
    for (const waiter of this.waiters.get(namespace) ?? []) {
      if (waiter.threadId === undefined || threadId === undefined || waiter.threadId === threadId) {
        waiter.wake();
        return;
      }
    }
  }

  /** Hears the namespace's signals. */
  listen(namespace: string, listener: Listener): () => void {
    return addKeyed(this.listeners, namespace, listener);
  }

  /** How many long polls are waiting, in every namespace (for metrics and tests). */
  get waiting(): number {
    return this.waitingCount;
  }

  /** Resolves true when a signal of the namespace woke this waiter (see emit); false after `timeoutMs` or on abort. */
  wait(namespace: string, threadId: string | undefined, timeoutMs: number, abort?: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const waiter: Waiter = { threadId, wake: () => done(true) };
      let remove: (() => void) | undefined;
      const timer = setTimeout(() => done(false), timeoutMs);
      const onAbort = () => done(false);
      const done = (woken: boolean) => {
        clearTimeout(timer);
        if (remove) {
          remove();
          remove = undefined;
          this.waitingCount--;
        }
        abort?.removeEventListener("abort", onAbort);
        resolve(woken);
      };
      if (abort?.aborted) return done(false);
      abort?.addEventListener("abort", onAbort, { once: true });
      remove = addKeyed(this.waiters, namespace, waiter);
      this.waitingCount++;
    });
  }

  /** One namespace's view. */
  in(namespace: string): NamespaceSignals {
    return new NamespaceSignals(this, namespace);
  }
}

/** One namespace's work signals: what its mailbox, its pulled signals and its WatchDispatchSignals streams use. */
export class NamespaceSignals {
  constructor(
    private readonly signals: WorkSignals,
    readonly namespace: string,
  ) {}

  get version(): number {
    return this.signals.versionOf(this.namespace);
  }

  emit(signal: WorkSignal): void {
    this.signals.emit(this.namespace, signal);
  }

  passOn(threadId: string | undefined): void {
    this.signals.passOn(this.namespace, threadId);
  }

  listen(listener: Listener): () => void {
    return this.signals.listen(this.namespace, listener);
  }

  wait(threadId: string | undefined, timeoutMs: number, abort?: AbortSignal): Promise<boolean> {
    return this.signals.wait(this.namespace, threadId, timeoutMs, abort);
  }
}
