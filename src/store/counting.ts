/**
 * Counts every call through the storage port, by collection and operation:
 * on MongoDB each is a round trip, so calls per job is the figure that
 * decides throughput (DESIGN.md, "Cost"). The server wraps whichever backend
 * it runs on and exports the counts as `mailroom_store_operations_total`.
 *
 * A call costs one typed-array increment: a collection's counters and its
 * counting methods are made once, when the collection is first asked for,
 * and the wrapped collection is reused from then on.
 *
 * The wrapper counts every method the backend's collection has rather than a
 * list written here, so an operation added to the port is counted (and
 * forwarded) without touching this file.
 */
import type { ChangeStream, Collection, Doc, Store, WatchOptions } from "./port.js";

/**
 * The port's collection operations at the time of writing (and the bulk
 * operations being added): their series are exported from start-up, at 0
 * until called. Any other method a backend's collection has is counted too,
 * its series appearing at its first call.
 */
export const PORT_OPERATIONS: ReadonlySet<string> = new Set([
  "createIndexes",
  "dropIndexes",
  "insertOne",
  "insertMany",
  "findOne",
  "find",
  "findOneAndUpdate",
  "updateOne",
  "updateMany",
  "bulkWrite",
  "deleteOne",
  "deleteMany",
  "countDocuments",
]);

/** The port's store-wide operations (a change stream counts once, when opened). */
export const STORE_OPERATIONS = ["watch", "ping", "close"] as const;
export type StoreOperation = (typeof STORE_OPERATIONS)[number];

/** The collection label of store-wide operations, which belong to no one collection. */
export const STORE_WIDE = "*";

interface CollectionCounters {
  operations: string[];
  counts: Float64Array;
}

/** Calls through the port so far. Labels stay bounded: collections are the engine's fixed names, operations the port's. */
export class StoreOperationCounts {
  private readonly collections = new Map<string, CollectionCounters>();
  private readonly storeWide = new Float64Array(STORE_OPERATIONS.length);

  /** Zeroed counters for `operations` of `collection`, in that order (one set per collection). */
  register(collection: string, operations: string[]): Float64Array {
    const counters = { operations, counts: new Float64Array(operations.length) };
    this.collections.set(collection, counters);
    return counters.counts;
  }

  countStoreWide(operation: StoreOperation): void {
    this.storeWide[STORE_OPERATIONS.indexOf(operation)]!++;
  }

  /** Every (collection, operation) pair with its count: the port's operations from start-up, others once called. */
  forEach(visit: (collection: string, operation: string, count: number) => void): void {
    for (const [collection, { operations, counts }] of this.collections) {
      operations.forEach((operation, index) => {
        const count = counts[index]!;
        if (count > 0 || PORT_OPERATIONS.has(operation)) visit(collection, operation, count);
      });
    }
    STORE_OPERATIONS.forEach((operation, index) => visit(STORE_WIDE, operation, this.storeWide[index]!));
  }
}

export class CountingStore implements Store {
  private readonly wrapped = new Map<string, Collection<Doc>>();

  constructor(
    readonly inner: Store,
    readonly counts: StoreOperationCounts,
  ) {}

  get backend() {
    return this.inner.backend;
  }

  get durability() {
    return this.inner.durability;
  }

  collection<T extends Doc>(name: string): Collection<T> {
    let collection = this.wrapped.get(name);
    if (!collection) {
      collection = countingCollection(this.inner.collection<Doc>(name), name, this.counts);
      this.wrapped.set(name, collection);
    }
    return collection as unknown as Collection<T>;
  }

  watch<T extends Doc = Doc>(options?: WatchOptions): Promise<ChangeStream<T>> {
    this.counts.countStoreWide("watch");
    return this.inner.watch<T>(options);
  }

  ping(): Promise<void> {
    this.counts.countStoreWide("ping");
    return this.inner.ping();
  }

  close(): Promise<void> {
    this.counts.countStoreWide("close");
    return this.inner.close();
  }
}

type Method = (this: unknown, a?: unknown, b?: unknown, c?: unknown, d?: unknown) => unknown;

/** Every method of the collection's class (and its ancestors), "constructor" aside. */
function methodsOf(collection: object): string[] {
  const names = new Set<string>();
  for (let proto: object | null = collection; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto) as object | null) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (key === "constructor" || key === "name") continue;
      const descriptor = Object.getOwnPropertyDescriptor(proto, key);
      if (typeof descriptor?.value === "function") names.add(key);
    }
  }
  return [...names];
}

/**
 * The collection with each method counting its calls. Port methods take at
 * most three arguments; four fixed parameters forward them without the
 * array a rest parameter would allocate per call.
 */
function countingCollection(inner: Collection<Doc>, name: string, counts: StoreOperationCounts): Collection<Doc> {
  const operations = methodsOf(inner);
  const counters = counts.register(name, operations);
  const wrapper: Record<string, unknown> = { name: inner.name };
  operations.forEach((operation, index) => {
    const method = (inner as unknown as Record<string, Method>)[operation]!;
    wrapper[operation] = (a?: unknown, b?: unknown, c?: unknown, d?: unknown) => {
      counters[index]!++;
      return method.call(inner, a, b, c, d);
    };
  });
  return wrapper as unknown as Collection<Doc>;
}
