/**
 * A bounded queue between a producer that pushes (journal tail, change feed)
 * and one consumer that pulls at its own pace (a server stream), with a
 * timeout on each pull so the consumer can send heartbeats when idle.
 */
export type Pulled<T> = { value: T } | { timeout: true } | { closed: true };

export class PushQueue<T> {
  private items: T[] = [];
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(readonly capacity = Number.POSITIVE_INFINITY) {}

  get size(): number {
    return this.items.length;
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Adds an item; false (and nothing added) when the queue is full or closed. */
  push(item: T): boolean {
    if (this.ended || this.items.length >= this.capacity) return false;
    this.items.push(item);
    this.wake?.();
    return true;
  }

  /** Removes and returns the oldest item, if any. */
  shift(): T | undefined {
    return this.items.shift();
  }

  close(): void {
    this.ended = true;
    this.wake?.();
  }

  /** The next item; or `timeout` after `timeoutMs`; or `closed` (also when `signal` aborts). */
  async next(timeoutMs: number, signal?: AbortSignal): Promise<Pulled<T>> {
    for (;;) {
      if (this.items.length > 0) return { value: this.items.shift()! };
      if (this.ended || signal?.aborted) return { closed: true };
      const outcome = await new Promise<"woken" | "timeout">((resolve) => {
        const timer = setTimeout(() => done("timeout"), timeoutMs);
        const onAbort = () => done("woken");
        const done = (how: "woken" | "timeout") => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          this.wake = undefined;
          resolve(how);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        this.wake = () => done("woken");
      });
      if (outcome === "timeout" && this.items.length === 0) return { timeout: true };
    }
  }
}
