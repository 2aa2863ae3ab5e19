/**
 * A Store whose collection operations each pass a gate before they start.
 * With fast-check's scheduler as the gate (`scheduledGate`), concurrent
 * engine calls interleave at every store operation in an order it picks and
 * replays from its seed, as two server instances' requests do against one
 * database; a test can also run something of its own at a chosen operation.
 * With no gate set it passes straight through. Index creation and change
 * streams are never held back.
 */
import type fc from "fast-check";
import type {
  BulkUpdate,
  BulkWriteResult,
  ChangeStream,
  Collection,
  Doc,
  FindOneAndUpdateOptions,
  FindOptions,
  Filter,
  IndexSpec,
  InsertManyResult,
  SortSpec,
  Store,
  UpdateFilter,
  UpdateResult,
  WatchOptions,
} from "../../src/store/port.js";

/** Called with "<store name> <collection>.<operation>"; the operation starts when it resolves. */
export type Gate = (label: string) => Promise<unknown>;

/** Lets fast-check's scheduler pick when each operation starts. */
export function scheduledGate(s: fc.Scheduler): Gate {
  return (label) => s.schedule(Promise.resolve(label), label);
}

export class GatedStore implements Store {
  /** While set, every collection operation waits for it. */
  gate: Gate | undefined;

  /** @param name Prefixes the gate's labels (which instance asked). */
  constructor(readonly inner: Store, readonly name: string) {}

  get backend() {
    return this.inner.backend;
  }

  get durability() {
    return this.inner.durability;
  }

  collection<T extends Doc>(name: string): Collection<T> {
    return new ScheduledCollection(this.inner.collection<T>(name), (op) => this.turn(`${this.name} ${name}.${op}`));
  }

  watch<T extends Doc = Doc>(options?: WatchOptions): Promise<ChangeStream<T>> {
    return this.inner.watch<T>(options);
  }

  ping(): Promise<void> {
    return this.inner.ping();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private turn(label: string): Promise<unknown> {
    return this.gate ? this.gate(label) : Promise.resolve();
  }
}

class ScheduledCollection<T extends Doc> implements Collection<T> {
  constructor(
    private readonly inner: Collection<T>,
    private readonly turn: (op: string) => Promise<unknown>,
  ) {}

  get name(): string {
    return this.inner.name;
  }

  createIndexes(specs: IndexSpec[]): Promise<void> {
    return this.inner.createIndexes(specs);
  }

  dropIndexes(names: string[]): Promise<void> {
    return this.inner.dropIndexes(names);
  }

  insertOne(doc: T): Promise<void> {
    return this.turn("insertOne").then(() => this.inner.insertOne(doc));
  }

  insertMany(docs: T[]): Promise<InsertManyResult> {
    return this.turn("insertMany").then(() => this.inner.insertMany(docs));
  }

  findOne(filter: Filter<T>, options?: FindOptions): Promise<T | null> {
    return this.turn("findOne").then(() => this.inner.findOne(filter, options));
  }

  find(filter: Filter<T>, options?: FindOptions): Promise<T[]> {
    return this.turn("find").then(() => this.inner.find(filter, options));
  }

  findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options?: FindOneAndUpdateOptions): Promise<T | null> {
    return this.turn("findOneAndUpdate").then(() => this.inner.findOneAndUpdate(filter, update, options));
  }

  updateOne(filter: Filter<T>, update: UpdateFilter<T>, options?: { upsert?: boolean }): Promise<UpdateResult> {
    return this.turn("updateOne").then(() => this.inner.updateOne(filter, update, options));
  }

  updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    return this.turn("updateMany").then(() => this.inner.updateMany(filter, update));
  }

  bulkWrite(operations: BulkUpdate<T>[], options?: { ordered?: boolean }): Promise<BulkWriteResult> {
    return this.turn("bulkWrite").then(() => this.inner.bulkWrite(operations, options));
  }

  deleteOne(filter: Filter<T>): Promise<number> {
    return this.turn("deleteOne").then(() => this.inner.deleteOne(filter));
  }

  deleteMany(filter: Filter<T>): Promise<number> {
    return this.turn("deleteMany").then(() => this.inner.deleteMany(filter));
  }

  countDocuments(filter: Filter<T>): Promise<number> {
    return this.turn("countDocuments").then(() => this.inner.countDocuments(filter));
  }

  firstOfEach(field: string, values: readonly (string | number)[], filter: Filter<T>, sort: SortSpec): Promise<T[]> {
    return this.turn("firstOfEach").then(() => this.inner.firstOfEach(field, values, filter, sort));
  }
}
