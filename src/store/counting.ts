/**
 * Counts every call through the storage port, by collection and operation:
 * on MongoDB each is a round trip, so calls per job is the figure that
 * decides throughput (DESIGN.md, "Cost"). The server wraps whichever backend
 * it runs on and exports the counts as `mailroom_store_operations_total`.
 *
 * A call costs one typed-array increment: the counters of a collection are
 * allocated once, when the collection is first asked for, and the wrapped
 * collection is reused from then on.
 */
import type {
  ChangeStream,
  Collection,
  Doc,
  Filter,
  FindOneAndUpdateOptions,
  FindOptions,
  IndexSpec,
  InsertManyResult,
  Store,
  UpdateFilter,
  UpdateResult,
  WatchOptions,
} from "./port.js";

/** The port's collection operations, in counter order. */
export const COLLECTION_OPERATIONS = [
  "createIndexes",
  "insertOne",
  "insertMany",
  "findOne",
  "find",
  "findOneAndUpdate",
  "updateOne",
  "updateMany",
  "deleteOne",
  "deleteMany",
  "countDocuments",
] as const;

/** The port's store-wide operations (a change stream counts once, when opened). */
export const STORE_OPERATIONS = ["watch", "ping", "close"] as const;

export type CollectionOperation = (typeof COLLECTION_OPERATIONS)[number];
export type StoreOperation = (typeof STORE_OPERATIONS)[number];

/** The collection label of store-wide operations, which belong to no one collection. */
export const STORE_WIDE = "*";

const op = Object.fromEntries(COLLECTION_OPERATIONS.map((name, index) => [name, index])) as Record<CollectionOperation, number>;
const storeOp = Object.fromEntries(STORE_OPERATIONS.map((name, index) => [name, index])) as Record<StoreOperation, number>;

/** Calls through the port so far. Labels stay bounded: collections are the engine's fixed names. */
export class StoreOperationCounts {
  private readonly collections = new Map<string, Float64Array>();
  private readonly storeWide = new Float64Array(STORE_OPERATIONS.length);

  /** The counters of one collection, created (all zero) on first use. */
  countersOf(collection: string): Float64Array {
    let counters = this.collections.get(collection);
    if (!counters) {
      counters = new Float64Array(COLLECTION_OPERATIONS.length);
      this.collections.set(collection, counters);
    }
    return counters;
  }

  countStoreWide(operation: StoreOperation): void {
    this.storeWide[storeOp[operation]]!++;
  }

  /** Every (collection, operation) pair known so far with its count, zeros included. */
  forEach(visit: (collection: string, operation: CollectionOperation | StoreOperation, count: number) => void): void {
    for (const [collection, counters] of this.collections) {
      COLLECTION_OPERATIONS.forEach((operation, index) => visit(collection, operation, counters[index]!));
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
      collection = new CountingCollection(this.inner.collection<Doc>(name), this.counts.countersOf(name));
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

class CountingCollection<T extends Doc> implements Collection<T> {
  constructor(
    private readonly inner: Collection<T>,
    private readonly counters: Float64Array,
  ) {}

  get name(): string {
    return this.inner.name;
  }

  createIndexes(specs: IndexSpec[]): Promise<void> {
    this.counters[op.createIndexes]!++;
    return this.inner.createIndexes(specs);
  }

  insertOne(doc: T): Promise<void> {
    this.counters[op.insertOne]!++;
    return this.inner.insertOne(doc);
  }

  insertMany(docs: T[]): Promise<InsertManyResult> {
    this.counters[op.insertMany]!++;
    return this.inner.insertMany(docs);
  }

  findOne(filter: Filter<T>, options?: FindOptions): Promise<T | null> {
    this.counters[op.findOne]!++;
    return this.inner.findOne(filter, options);
  }

  find(filter: Filter<T>, options?: FindOptions): Promise<T[]> {
    this.counters[op.find]!++;
    return this.inner.find(filter, options);
  }

  findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options?: FindOneAndUpdateOptions): Promise<T | null> {
    this.counters[op.findOneAndUpdate]!++;
    return this.inner.findOneAndUpdate(filter, update, options);
  }

  updateOne(filter: Filter<T>, update: UpdateFilter<T>, options?: { upsert?: boolean }): Promise<UpdateResult> {
    this.counters[op.updateOne]!++;
    return this.inner.updateOne(filter, update, options);
  }

  updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    this.counters[op.updateMany]!++;
    return this.inner.updateMany(filter, update);
  }

  deleteOne(filter: Filter<T>): Promise<number> {
    this.counters[op.deleteOne]!++;
    return this.inner.deleteOne(filter);
  }

  deleteMany(filter: Filter<T>): Promise<number> {
    this.counters[op.deleteMany]!++;
    return this.inner.deleteMany(filter);
  }

  countDocuments(filter: Filter<T>): Promise<number> {
    this.counters[op.countDocuments]!++;
    return this.inner.countDocuments(filter);
  }
}
