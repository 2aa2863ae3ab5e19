/**
 * A Store that counts every collection operation by "<collection>.<operation>"
 * (index creation aside): what a test asserts about round trips per call.
 */
import type { Collection, Doc, Store } from "../../src/store/port.js";

export class CountingStore implements Store {
  readonly counts = new Map<string, number>();

  constructor(readonly inner: Store) {}

  get backend() {
    return this.inner.backend;
  }

  get durability() {
    return this.inner.durability;
  }

  /** Operations counted since the last reset, in total or for keys starting with `prefix`. */
  total(prefix = ""): number {
    let sum = 0;
    for (const [key, n] of this.counts) if (key.startsWith(prefix)) sum += n;
    return sum;
  }

  reset(): void {
    this.counts.clear();
  }

  collection<T extends Doc>(name: string): Collection<T> {
    const inner = this.inner.collection<T>(name);
    const counts = this.counts;
    return new Proxy(inner, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== "function" || prop === "createIndexes" || prop === "constructor") return value;
        return (...args: unknown[]) => {
          const key = `${name}.${String(prop)}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  }

  watch: Store["watch"] = (options) => this.inner.watch(options);
  ping(): Promise<void> {
    return this.inner.ping();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
