/**
 * A Store that counts the calls made through it, by "collection.operation"
 * (and "watch"), so a test can bound how many store operations something
 * costs (on MongoDB, each is a majority round trip).
 */
import { InterceptedStore } from "../../src/store/intercept.js";
import type { Store } from "../../src/store/port.js";

export class CountingStore extends InterceptedStore {
  readonly counts = new Map<string, number>();

  constructor(inner: Store) {
    super(inner, {
      operation: (call) => {
        this.count(`${call.collection}.${call.operation}`);
        return call.run();
      },
      watch: (_options, open) => {
        this.count("watch");
        return open();
      },
    });
  }

  /** Calls counted so far whose label starts with `prefix` ("events." for one collection, "" for all). */
  total(prefix = ""): number {
    let sum = 0;
    for (const [label, count] of this.counts) if (label.startsWith(prefix)) sum += count;
    return sum;
  }

  reset(): void {
    this.counts.clear();
  }

  private count(label: string): void {
    this.counts.set(label, (this.counts.get(label) ?? 0) + 1);
  }
}
