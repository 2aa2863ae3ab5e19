/**
 * A bounded queue between a producer that pushes (journal tail, change feed)
 * and one consumer that pulls at its own pace (a server stream), with an idle
 * deadline on each pull so the consumer can send heartbeats.
 *
 * Pulling arms nothing per item: waiting is a StreamWaiter (the call's signal
 * registered once, the idle deadline on the shared timer wheel).
 */
import { StreamWaiter } from "./stream-waiter.js";

export type Pulled<T> = { value: T } | { timeout: true } | { closed: true };

export class PushQueue<T> {
  private items: T[] = [];
  /** Index of the oldest item in `items` (taken items before it are compacted away in bulk). */
  private head = 0;
  private ended = false;
  private waiter: StreamWaiter | undefined;

  constructor(readonly capacity = Number.POSITIVE_INFINITY) {}

  get size(): number {
    return this.items.length - this.head;
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Adds an item; false (and nothing added) when the queue is full or closed. */
  push(item: T): boolean {
    if (this.ended || this.size >= this.capacity) return false;
    this.items.push(item);
    this.waiter?.wake();
    return true;
  }

  /** Removes and returns the oldest item, if any. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head]!;
    this.items[this.head++] = undefined as T;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** No more items: what is queued is still taken, then `next` answers `closed`. */
  close(): void {
    this.ended = true;
    this.waiter?.end();
  }

  /**
   * The next item; or `timeout` once nothing was taken for `idleMs`; or
   * `closed` (also once `signal` aborted, which ends the queue's waiting for good).
   */
  async next(idleMs: number, signal?: AbortSignal): Promise<Pulled<T>> {
    const waiter = (this.waiter ??= new StreamWaiter(idleMs));
    if (this.ended) waiter.end();
    waiter.bind(signal, idleMs);
    for (;;) {
      if (signal?.aborted) return { closed: true };
      if (this.size > 0) {
        waiter.sent();
        return { value: this.shift()! };
      }
      const woken = await waiter.wait();
      if (woken === "ended" && this.size === 0) return { closed: true };
      if (woken === "idle" && this.size === 0) {
        waiter.sent();
        return { timeout: true };
      }
    }
  }
}
