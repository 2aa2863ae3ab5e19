/**
 * The mongo backend: the storage port over the official MongoDB driver, on a
 * replica set (change streams and majority writes need one). Writes are
 * acknowledged only once a majority has journaled them; reads use majority
 * read concern, so nothing is ever answered from a write that could roll back.
 */
import {
  type ChangeStreamDocument,
  type Db,
  type Document as MongoDocument,
  type Collection as MongoCollection,
  MongoBulkWriteError,
  MongoClient,
  MongoError,
  MongoNetworkError,
  MongoServerError,
  MongoServerSelectionError,
  type ChangeStream as MongoChangeStream,
} from "mongodb";
import {
  type BulkUpdate,
  type BulkWriteResult,
  type ChangeEvent,
  type ChangeStream,
  ChangeStreamHistoryLostError,
  type Collection,
  type Doc,
  type DocId,
  DuplicateKeyError,
  type Durability,
  type Filter,
  type FindOneAndUpdateOptions,
  type FindOptions,
  type IndexSpec,
  type InsertManyResult,
  type ResumeToken,
  type Store,
  StoreError,
  StoreUnavailableError,
  type UpdateFilter,
  type UpdateResult,
  indexName,
} from "../port.js";

const DUPLICATE_KEY = 11000;
/** Change stream errors after which resuming is impossible. */
const HISTORY_LOST = new Set([286 /* ChangeStreamHistoryLost */, 280 /* ChangeStreamFatalError */, 260 /* InvalidResumeToken */]);

function isUnavailable(error: unknown): boolean {
  return (
    error instanceof MongoNetworkError ||
    error instanceof MongoServerSelectionError ||
    (error instanceof MongoError && (error.hasErrorLabel("RetryableWriteError") || error.hasErrorLabel("TransientTransactionError")))
  );
}

/** Which index a duplicate key error names (server message: "... index: name dup key: ..."). */
function duplicateIndex(error: MongoServerError | { errmsg?: string; message?: string }): string {
  const text = ("errmsg" in error && error.errmsg) || error.message || "";
  return /index: (\S+)/.exec(text)?.[1] ?? "unknown";
}

/** Translates a driver error into the port's typed errors. */
function translate(collection: string, error: unknown): unknown {
  if (error instanceof MongoServerError && error.code === DUPLICATE_KEY) {
    return new DuplicateKeyError(collection, duplicateIndex(error), { cause: error });
  }
  if (isUnavailable(error)) return new StoreUnavailableError(`MongoDB unavailable during an operation on ${collection}`, { cause: error });
  return error;
}

/**
 * A document as the port hands it out: every byte string a Uint8Array of its
 * own. With `promoteBuffers` the driver returns BSON binary as Node Buffers
 * that are views into the whole server reply, so one event's bytes kept in
 * memory (the journal tail's recent events, an outbox entry of a returned
 * dispatch) would keep the entire reply alive, payloads and all; and a Buffer
 * is not the plain Uint8Array the memory backend returns (it compares unequal
 * to one, and its slice() shares memory). Changes the driver's fresh result in place.
 */
function fromStored<T>(value: T): T {
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Uint8Array) return new Uint8Array(value) as T;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = fromStored(value[i]);
    return value;
  }
  // Only plain documents: leave the driver's BSON value classes (ObjectId, Long, ...) as they are.
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  const doc = value as Record<string, unknown>;
  for (const key of Object.keys(doc)) doc[key] = fromStored(doc[key]);
  return value;
}

/** Runs a driver call, translating its errors into the port's typed errors. */
async function guard<R>(collection: string, call: () => Promise<R>): Promise<R> {
  try {
    return await call();
  } catch (error) {
    throw translate(collection, error);
  }
}

class MongoBackedCollection<T extends Doc> implements Collection<T> {
  constructor(private readonly collection: MongoCollection<MongoDocument>) {}

  get name(): string {
    return this.collection.collectionName;
  }

  async createIndexes(specs: IndexSpec[]): Promise<void> {
    if (specs.length === 0) return;
    await guard(this.name, () =>
      this.collection.createIndexes(
        specs.map((spec) => ({
          key: spec.key,
          name: indexName(spec),
          ...(spec.unique ? { unique: true } : {}),
          ...(spec.partialFilterExpression ? { partialFilterExpression: spec.partialFilterExpression } : {}),
        })),
      ),
    );
  }

  async dropIndexes(names: string[]): Promise<void> {
    for (const name of names) {
      try {
        await this.collection.dropIndex(name);
      } catch (error) {
        // IndexNotFound (27) and NamespaceNotFound (26): nothing to drop.
        if (error instanceof MongoServerError && (error.code === 27 || error.code === 26)) continue;
        throw translate(this.name, error);
      }
    }
  }

  async insertOne(doc: T): Promise<void> {
    await guard(this.name, () => this.collection.insertOne({ ...doc } as MongoDocument));
  }

  async insertMany(docs: T[]): Promise<InsertManyResult> {
    if (docs.length === 0) return { insertedCount: 0, duplicates: [] };
    try {
      const result = await this.collection.insertMany(docs.map((d) => ({ ...d }) as MongoDocument), { ordered: false });
      return { insertedCount: result.insertedCount, duplicates: [] };
    } catch (error) {
      // Checked before translate(): a bulk error carries the code of its first
      // write error, and only some of its documents were refused.
      if (error instanceof MongoBulkWriteError) {
        const writeErrors = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors];
        if (writeErrors.length > 0 && writeErrors.every((w) => w.code === DUPLICATE_KEY)) {
          const duplicates = writeErrors.map((w) => ({ position: w.index, index: duplicateIndex({ errmsg: w.errmsg }) }));
          return { insertedCount: error.result.insertedCount, duplicates: duplicates.sort((a, b) => a.position - b.position) };
        }
      }
      throw translate(this.name, error);
    }
  }

  async findOne(filter: Filter<T>, options: FindOptions = {}): Promise<T | null> {
    return fromStored((await guard(this.name, () => this.collection.findOne(filter as Filter<MongoDocument>, findOptions(options)))) as T | null);
  }

  async find(filter: Filter<T>, options: FindOptions = {}): Promise<T[]> {
    return fromStored((await guard(this.name, () => this.collection.find(filter as Filter<MongoDocument>, findOptions(options)).toArray())) as unknown as T[]);
  }

  async findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options: FindOneAndUpdateOptions = {}): Promise<T | null> {
    return fromStored((await guard(this.name, () =>
      this.collection.findOneAndUpdate(filter as Filter<MongoDocument>, update as UpdateFilter<MongoDocument>, {
        returnDocument: options.returnDocument ?? "after",
        ...(options.sort ? { sort: options.sort } : {}),
        ...(options.upsert ? { upsert: true } : {}),
      }),
    )) as T | null);
  }

  async updateOne(filter: Filter<T>, update: UpdateFilter<T>, options: { upsert?: boolean } = {}): Promise<UpdateResult> {
    const result = await guard(this.name, () =>
      this.collection.updateOne(filter as Filter<MongoDocument>, update as UpdateFilter<MongoDocument>, options.upsert ? { upsert: true } : {}),
    );
    return {
      matchedCount: result.matchedCount,
      modifiedCount: result.modifiedCount,
      ...(result.upsertedId !== null && result.upsertedId !== undefined ? { upsertedId: result.upsertedId as unknown as DocId } : {}),
    };
  }

  async updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    const result = await guard(this.name, () => this.collection.updateMany(filter as Filter<MongoDocument>, update as UpdateFilter<MongoDocument>));
    return { matchedCount: result.matchedCount, modifiedCount: result.modifiedCount };
  }

  async bulkWrite(operations: BulkUpdate<T>[], options: { ordered?: boolean } = {}): Promise<BulkWriteResult> {
    if (operations.length === 0) return { matchedCount: 0, modifiedCount: 0, upsertedCount: 0, duplicates: [], attempted: 0 };
    const ordered = options.ordered === true;
    const models = operations.map(({ updateOne }) => ({
      updateOne: {
        filter: updateOne.filter as Filter<MongoDocument>,
        update: updateOne.update as UpdateFilter<MongoDocument>,
        ...(updateOne.upsert ? { upsert: true } : {}),
      },
    }));
    try {
      const result = await this.collection.bulkWrite(models, { ordered });
      return { matchedCount: result.matchedCount, modifiedCount: result.modifiedCount, upsertedCount: result.upsertedCount, duplicates: [], attempted: operations.length };
    } catch (error) {
      // As in insertMany: a bulk error whose write errors are all duplicate
      // keys is a partial success; anything else is translated and thrown.
      if (error instanceof MongoBulkWriteError) {
        const writeErrors = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors];
        if (writeErrors.length > 0 && writeErrors.every((w) => w.code === DUPLICATE_KEY)) {
          const duplicates = writeErrors.map((w) => ({ position: w.index, index: duplicateIndex({ errmsg: w.errmsg }) })).sort((a, b) => a.position - b.position);
          return {
            matchedCount: error.result.matchedCount,
            modifiedCount: error.result.modifiedCount,
            upsertedCount: error.result.upsertedCount,
            duplicates,
            attempted: ordered ? duplicates[0]!.position + 1 : operations.length,
          };
        }
      }
      throw translate(this.name, error);
    }
  }

  async deleteOne(filter: Filter<T>): Promise<number> {
    return (await guard(this.name, () => this.collection.deleteOne(filter as Filter<MongoDocument>))).deletedCount;
  }

  async deleteMany(filter: Filter<T>): Promise<number> {
    return (await guard(this.name, () => this.collection.deleteMany(filter as Filter<MongoDocument>))).deletedCount;
  }

  async countDocuments(filter: Filter<T>): Promise<number> {
    return guard(this.name, () => this.collection.countDocuments(filter as Filter<MongoDocument>));
  }
}

function findOptions(options: FindOptions): { sort?: Record<string, 1 | -1>; limit?: number; skip?: number } {
  return {
    ...(options.sort ? { sort: options.sort } : {}),
    ...(options.limit ? { limit: options.limit } : {}),
    ...(options.skip ? { skip: options.skip } : {}),
  };
}

class MongoBackedChangeStream<T extends Doc> implements ChangeStream<T> {
  private lastToken: ResumeToken | undefined;

  constructor(
    private readonly stream: MongoChangeStream<MongoDocument, ChangeStreamDocument<MongoDocument>>,
    private readonly buffered: ChangeStreamDocument<MongoDocument>[],
    startToken: ResumeToken | undefined,
  ) {
    this.lastToken = startToken;
  }

  get resumeToken(): ResumeToken | undefined {
    return this.lastToken;
  }

  async close(): Promise<void> {
    await this.stream.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChangeEvent<T>> {
    try {
      while (this.buffered.length > 0) yield this.convert(this.buffered.shift()!);
      for await (const change of this.stream) yield this.convert(change);
    } catch (error) {
      if (this.stream.closed && !(error instanceof MongoServerError)) return;
      throw translateStreamError(error);
    }
  }

  private convert(change: ChangeStreamDocument<MongoDocument>): ChangeEvent<T> {
    this.lastToken = change._id as ResumeToken;
    const operationType = change.operationType;
    if (operationType !== "insert" && operationType !== "update" && operationType !== "replace" && operationType !== "delete") {
      throw new StoreError(`unexpected change stream event ${operationType}`);
    }
    const event: ChangeEvent<T> = {
      token: change._id as ResumeToken,
      operationType,
      collection: change.ns.coll ?? "",
      documentKey: { _id: change.documentKey._id as unknown as DocId },
    };
    if ("fullDocument" in change && change.fullDocument) event.fullDocument = fromStored(change.fullDocument) as unknown as T;
    if (operationType === "update") {
      event.updateDescription = {
        updatedFields: fromStored(change.updateDescription.updatedFields ?? {}),
        removedFields: change.updateDescription.removedFields ?? [],
      };
    }
    return event;
  }
}

function translateStreamError(error: unknown): unknown {
  if (error instanceof MongoServerError && typeof error.code === "number" && HISTORY_LOST.has(error.code)) {
    return new ChangeStreamHistoryLostError("change stream cannot resume: its position is no longer in the oplog", { cause: error });
  }
  if (isUnavailable(error)) return new StoreUnavailableError("MongoDB unavailable while reading a change stream", { cause: error });
  return error;
}

export class MongoStore implements Store {
  readonly backend = "mongo" as const;
  readonly durability: Durability = {
    durable: true,
    description: "MongoDB replica set, writes acknowledged by a majority (journaled), majority reads",
  };
  private readonly db: Db;

  private constructor(
    private readonly client: MongoClient,
    databaseName: string,
    private readonly onClose?: () => Promise<void>,
  ) {
    this.db = client.db(databaseName);
  }

  /**
   * Connects and checks that the deployment can serve Mailroom (a replica set
   * or sharded cluster: change streams need one).
   */
  static async connect(uri: string, databaseName: string, options: { onClose?: () => Promise<void> } = {}): Promise<MongoStore> {
    const client = new MongoClient(uri, {
      writeConcern: { w: "majority", journal: true },
      readConcern: { level: "majority" },
      readPreference: "primary",
      ignoreUndefined: true,
      promoteBuffers: true,
      serverSelectionTimeoutMS: 10_000,
      appName: "mailroom",
    });
    try {
      await client.connect();
      const hello = await client.db("admin").command({ hello: 1 });
      if (!hello.setName && hello.msg !== "isdbgrid") {
        throw new StoreError("MongoDB at MONGODB_URI is a standalone server; Mailroom needs a replica set (change streams and majority writes need one). Start mongod with --replSet and run rs.initiate().");
      }
    } catch (error) {
      await client.close().catch(() => undefined);
      await options.onClose?.();
      if (error instanceof StoreError) throw error;
      throw new StoreUnavailableError(`cannot connect to MongoDB: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    return new MongoStore(client, databaseName, options.onClose);
  }

  collection<T extends Doc>(name: string): Collection<T> {
    return new MongoBackedCollection<T>(this.db.collection(name));
  }

  async watch<T extends Doc = Doc>(options: { collections?: string[]; match?: Record<string, unknown>[]; resumeAfter?: ResumeToken; fullDocument?: "default" | "updateLookup" } = {}): Promise<ChangeStream<T>> {
    const pipeline: MongoDocument[] = [];
    if (options.collections) pipeline.push({ $match: { "ns.coll": { $in: options.collections } } });
    for (const stage of options.match ?? []) pipeline.push({ $match: stage });
    const stream = this.db.watch(pipeline, {
      ...(options.resumeAfter ? { resumeAfter: options.resumeAfter } : {}),
      ...(options.fullDocument === "updateLookup" ? { fullDocument: "updateLookup" as const } : {}),
    });
    // The driver opens the server-side cursor lazily; open it now so the
    // stream covers every change committed after watch() resolves.
    const buffered: ChangeStreamDocument<MongoDocument>[] = [];
    try {
      const first = await stream.tryNext();
      if (first) buffered.push(first);
    } catch (error) {
      await stream.close().catch(() => undefined);
      throw translateStreamError(error);
    }
    return new MongoBackedChangeStream<T>(stream, buffered, options.resumeAfter ?? (stream.resumeToken as ResumeToken | undefined));
  }

  async ping(): Promise<void> {
    try {
      await this.db.command({ ping: 1 });
    } catch (error) {
      throw new StoreUnavailableError("MongoDB does not answer ping", { cause: error });
    }
  }

  async close(): Promise<void> {
    await this.client.close();
    await this.onClose?.();
  }

  /** Drops the database (tests only). */
  async dropDatabase(): Promise<void> {
    await this.db.dropDatabase();
  }
}
