/**
 * A Store that runs each collection operation through one function: the
 * shape every store wrapper shares (the deadline here; fault injection,
 * counting and recording in the tests), written once.
 */
import type {
  BulkUpdate,
  BulkWriteResult,
  ChangeStream,
  Collection,
  Doc,
  Filter,
  FindOneAndUpdateOptions,
  FindOptions,
  IndexSpec,
  InsertManyResult,
  SortSpec,
  Store,
  UpdateFilter,
  UpdateResult,
  WatchOptions,
} from "./port.js";

export type CollectionOperation =
  | "createIndexes" | "dropIndexes" | "insertOne" | "insertMany" | "findOne" | "find" | "findOneAndUpdate"
  | "updateOne" | "updateMany" | "bulkWrite" | "deleteOne" | "deleteMany" | "countDocuments" | "firstOfEach";

/** One collection operation about to run: `run()` performs it on the wrapped store. */
export interface OperationCall<R = unknown> {
  collection: string;
  operation: CollectionOperation;
  /** The arguments as the caller gave them (filter first where there is one). */
  args: readonly unknown[];
  run(): Promise<R>;
}

export interface Interceptor {
  /** Decides how (and whether, and when) the operation runs; returns its outcome. */
  operation<R>(call: OperationCall<R>): Promise<R>;
  /** Opening a change stream; passes straight through when omitted. */
  watch?<T extends Doc>(options: WatchOptions | undefined, open: () => Promise<ChangeStream<T>>): Promise<ChangeStream<T>>;
  ping?(ping: () => Promise<void>): Promise<void>;
}

export class InterceptedStore implements Store {
  private readonly collections = new Map<string, Collection<Doc>>();

  constructor(
    readonly inner: Store,
    private readonly interceptor: Interceptor,
  ) {}

  get backend() {
    return this.inner.backend;
  }

  get durability() {
    return this.inner.durability;
  }

  collection<T extends Doc>(name: string): Collection<T> {
    let collection = this.collections.get(name);
    if (!collection) {
      collection = new InterceptedCollection(this.inner.collection<Doc>(name), this.interceptor);
      this.collections.set(name, collection);
    }
    return collection as unknown as Collection<T>;
  }

  watch<T extends Doc = Doc>(options?: WatchOptions): Promise<ChangeStream<T>> {
    const open = () => this.inner.watch<T>(options);
    return this.interceptor.watch ? this.interceptor.watch(options, open) : open();
  }

  ping(): Promise<void> {
    const ping = () => this.inner.ping();
    return this.interceptor.ping ? this.interceptor.ping(ping) : ping();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

class InterceptedCollection<T extends Doc> implements Collection<T> {
  constructor(
    private readonly inner: Collection<T>,
    private readonly interceptor: Interceptor,
  ) {}

  get name(): string {
    return this.inner.name;
  }

  private call<R>(operation: CollectionOperation, args: readonly unknown[], run: () => Promise<R>): Promise<R> {
    return this.interceptor.operation({ collection: this.inner.name, operation, args, run });
  }

  createIndexes(specs: IndexSpec[]): Promise<void> {
    return this.call("createIndexes", [specs], () => this.inner.createIndexes(specs));
  }

  dropIndexes(names: string[]): Promise<void> {
    return this.call("dropIndexes", [names], () => this.inner.dropIndexes(names));
  }

  insertOne(doc: T): Promise<void> {
    return this.call("insertOne", [doc], () => this.inner.insertOne(doc));
  }

  insertMany(docs: T[]): Promise<InsertManyResult> {
    return this.call("insertMany", [docs], () => this.inner.insertMany(docs));
  }

  findOne(filter: Filter<T>, options?: FindOptions): Promise<T | null> {
    return this.call("findOne", [filter, options], () => this.inner.findOne(filter, options));
  }

  find(filter: Filter<T>, options?: FindOptions): Promise<T[]> {
    return this.call("find", [filter, options], () => this.inner.find(filter, options));
  }

  findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options?: FindOneAndUpdateOptions): Promise<T | null> {
    return this.call("findOneAndUpdate", [filter, update, options], () => this.inner.findOneAndUpdate(filter, update, options));
  }

  updateOne(filter: Filter<T>, update: UpdateFilter<T>, options?: { upsert?: boolean }): Promise<UpdateResult> {
    return this.call("updateOne", [filter, update, options], () => this.inner.updateOne(filter, update, options));
  }

  updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    return this.call("updateMany", [filter, update], () => this.inner.updateMany(filter, update));
  }

  bulkWrite(operations: BulkUpdate<T>[], options?: { ordered?: boolean }): Promise<BulkWriteResult> {
    return this.call("bulkWrite", [operations, options], () => this.inner.bulkWrite(operations, options));
  }

  deleteOne(filter: Filter<T>): Promise<number> {
    return this.call("deleteOne", [filter], () => this.inner.deleteOne(filter));
  }

  deleteMany(filter: Filter<T>): Promise<number> {
    return this.call("deleteMany", [filter], () => this.inner.deleteMany(filter));
  }

  countDocuments(filter: Filter<T>): Promise<number> {
    return this.call("countDocuments", [filter], () => this.inner.countDocuments(filter));
  }

  firstOfEach(field: string, values: readonly (string | number)[], filter: Filter<T>, sort: SortSpec): Promise<T[]> {
    return this.call("firstOfEach", [field, values, filter, sort], () => this.inner.firstOfEach(field, values, filter, sort));
  }
}
