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
  MongoClient,
  type ChangeStream as MongoChangeStream,
} from "mongodb";
import {
  type BulkUpdate,
  type BulkWriteResult,
  type ChangeEvent,
  type ChangeStream,
  ChangeStreamInvalidatedError,
  type Collection,
  type Doc,
  type DocId,
  type Durability,
  type Filter,
  type FindOneAndUpdateOptions,
  type FindOptions,
  type IndexSpec,
  type InsertManyResult,
  type ResumeToken,
  type SortSpec,
  type Store,
  StoreError,
  StoreUnavailableError,
  type UpdateFilter,
  type UpdateResult,
  indexName,
} from "../port.js";
import { DEFAULT_STORE_TIMEOUT_MS } from "../deadline.js";
import { isNothingToDrop, partlyRefused, partlyRefusedUpdates, translateError, translateStreamError } from "./errors.js";

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
    throw translateError(collection, error);
  }
}

class MongoBackedCollection<T extends Doc> implements Collection<T> {
  /** Every command carries it: the server gives up (MaxTimeMSExpired) instead of working on for a caller that has gone. */
  private readonly limit: { maxTimeMS: number };

  constructor(
    private readonly collection: MongoCollection<MongoDocument>,
    timeoutMs: number,
  ) {
    this.limit = { maxTimeMS: timeoutMs };
  }

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
        this.limit,
      ),
    );
  }

  async dropIndexes(names: string[]): Promise<void> {
    for (const name of names) {
      try {
        await this.collection.dropIndex(name, this.limit);
      } catch (error) {
        if (isNothingToDrop(error)) continue;
        throw translateError(this.name, error);
      }
    }
  }

  async insertOne(doc: T): Promise<void> {
    await guard(this.name, () => this.collection.insertOne({ ...doc } as MongoDocument, this.limit));
  }

  async insertMany(docs: T[]): Promise<InsertManyResult> {
    if (docs.length === 0) return { insertedCount: 0, duplicates: [] };
    try {
      const result = await this.collection.insertMany(docs.map((d) => ({ ...d }) as MongoDocument), { ordered: false, ...this.limit });
      return { insertedCount: result.insertedCount, duplicates: [] };
    } catch (error) {
      const refused = partlyRefused(error);
      if (refused) return refused;
      throw translateError(this.name, error);
    }
  }

  async findOne(filter: Filter<T>, options: FindOptions = {}): Promise<T | null> {
    return fromStored((await guard(this.name, () => this.collection.findOne(filter as Filter<MongoDocument>, { ...findOptions(options), ...this.limit }))) as T | null);
  }

  async find(filter: Filter<T>, options: FindOptions = {}): Promise<T[]> {
    return fromStored((await guard(this.name, () => this.collection.find(filter as Filter<MongoDocument>, { ...findOptions(options), ...this.limit }).toArray())) as unknown as T[]);
  }

  async findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options: FindOneAndUpdateOptions = {}): Promise<T | null> {
    return fromStored((await guard(this.name, () =>
      this.collection.findOneAndUpdate(filter as Filter<MongoDocument>, update as UpdateFilter<MongoDocument>, {
        returnDocument: options.returnDocument ?? "after",
        ...(options.sort ? { sort: options.sort } : {}),
        ...(options.upsert ? { upsert: true } : {}),
        ...this.limit,
      }),
    )) as T | null);
  }

  async updateOne(filter: Filter<T>, update: UpdateFilter<T>, options: { upsert?: boolean } = {}): Promise<UpdateResult> {
    const result = await guard(this.name, () =>
      this.collection.updateOne(filter as Filter<MongoDocument>, update as UpdateFilter<MongoDocument>, { ...(options.upsert ? { upsert: true } : {}), ...this.limit }),
    );
    return {
      matchedCount: result.matchedCount,
      modifiedCount: result.modifiedCount,
      ...(result.upsertedId !== null && result.upsertedId !== undefined ? { upsertedId: result.upsertedId as unknown as DocId } : {}),
    };
  }

  async updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    const result = await guard(this.name, () => this.collection.updateMany(filter as Filter<MongoDocument>, update as UpdateFilter<MongoDocument>, this.limit));
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
      const result = await this.collection.bulkWrite(models, { ordered, ...this.limit });
      return { matchedCount: result.matchedCount, modifiedCount: result.modifiedCount, upsertedCount: result.upsertedCount, duplicates: [], attempted: operations.length };
    } catch (error) {
      // As in insertMany: refused only by unique indexes is a partial success.
      const refused = partlyRefusedUpdates(error);
      if (refused) return { ...refused, attempted: ordered ? refused.duplicates[0]!.position + 1 : operations.length };
      throw translateError(this.name, error);
    }
  }

  async deleteOne(filter: Filter<T>): Promise<number> {
    return (await guard(this.name, () => this.collection.deleteOne(filter as Filter<MongoDocument>, this.limit))).deletedCount;
  }

  async deleteMany(filter: Filter<T>): Promise<number> {
    return (await guard(this.name, () => this.collection.deleteMany(filter as Filter<MongoDocument>, this.limit))).deletedCount;
  }

  async countDocuments(filter: Filter<T>): Promise<number> {
    return guard(this.name, () => this.collection.countDocuments(filter as Filter<MongoDocument>, this.limit));
  }

  async firstOfEach(field: string, values: readonly (string | number)[], filter: Filter<T>, sort: SortSpec): Promise<T[]> {
    const distinct = [...new Set(values)];
    const found: T[] = [];
    // One sub-pipeline a value, each an index seek that takes one document,
    // joined by $unionWith: a seek per value whatever the index's prefix (a
    // $group taking $first seeks per value only when MongoDB picks a
    // DISTINCT_SCAN, which a namespace's `ns` ahead of `field` can prevent).
    for (let i = 0; i < distinct.length; i += FIRST_OF_EACH_CHUNK) {
      const [head, ...rest] = distinct.slice(i, i + FIRST_OF_EACH_CHUNK).map((value) => [
        { $match: { ...(filter as MongoDocument), [field]: value } },
        { $sort: sort },
        { $limit: 1 },
      ]);
      const pipeline = [...head!, ...rest.map((stages) => ({ $unionWith: { coll: this.name, pipeline: stages } }))];
      found.push(...fromStored((await guard(this.name, () => this.collection.aggregate(pipeline, this.limit).toArray())) as unknown as T[]));
    }
    return found;
  }
}

/** Values per firstOfEach aggregation: well within MongoDB's 1,000 stages a pipeline. */
const FIRST_OF_EACH_CHUNK = 500;

function findOptions(options: FindOptions): { sort?: Record<string, 1 | -1>; limit?: number; skip?: number; readConcern?: { level: "local" } } {
  return {
    ...(options.sort ? { sort: options.sort } : {}),
    ...(options.limit ? { limit: options.limit } : {}),
    ...(options.skip ? { skip: options.skip } : {}),
    // The client reads the primary; "local" there includes this client's acknowledged writes.
    ...(options.readOwnWrites ? { readConcern: { level: "local" as const } } : {}),
  };
}

class MongoBackedChangeStream<T extends Doc> implements ChangeStream<T> {
  private lastToken: ResumeToken | undefined;
  /** Set by close(): only then does the stream end quietly. */
  private closing = false;

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
    this.closing = true;
    await this.stream.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChangeEvent<T>> {
    try {
      while (this.buffered.length > 0) yield this.convert(this.buffered.shift()!);
      for await (const change of this.stream) yield this.convert(change);
    } catch (error) {
      // The driver closes the stream itself when a resume fails (a network or
      // server selection error): that is a failure to report, not an end.
      if (this.closing) return;
      throw translateStreamError(error);
    }
    if (!this.closing) throw new StoreUnavailableError("MongoDB ended the change stream");
  }

  private convert(change: ChangeStreamDocument<MongoDocument>): ChangeEvent<T> {
    this.lastToken = change._id as ResumeToken;
    const operationType = change.operationType;
    if (operationType === "invalidate") throw new ChangeStreamInvalidatedError("the change stream was invalidated (a collection or the database was dropped or renamed)");
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

export interface MongoStoreOptions {
  /** Called after the client closed (stops a server-started mongod). */
  onClose?: () => Promise<void>;
  /**
   * The time bound of one store call (--store-timeout-ms): commands carry it
   * as maxTimeMS, majority writes as wtimeout, and server selection and
   * connection checkout give up after it.
   */
  timeoutMs?: number;
  /** What the start-up log says about durability (default: a replica set's majority writes). */
  durability?: Durability;
}

export const REPLICA_SET_DURABILITY: Durability = {
  durable: true,
  description: "MongoDB replica set, writes acknowledged by a majority (journaled), majority reads",
};

export class MongoStore implements Store {
  readonly backend = "mongo" as const;
  readonly durability: Durability;
  private readonly db: Db;

  private constructor(
    private readonly client: MongoClient,
    databaseName: string,
    private readonly options: MongoStoreOptions & { timeoutMs: number },
  ) {
    this.db = client.db(databaseName);
    this.durability = options.durability ?? REPLICA_SET_DURABILITY;
  }

  /**
   * Connects and checks that the deployment can serve Mailroom (a replica set
   * or sharded cluster: change streams need one).
   */
  static async connect(uri: string, databaseName: string, options: MongoStoreOptions = {}): Promise<MongoStore> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
    // Driver 7 ignores `timeoutMS` (client-side operation timeouts were
    // withdrawn), so the bound is made of the settings that still work; the
    // engine's deadline (src/store/deadline.ts) cuts whatever they miss.
    const client = new MongoClient(uri, {
      writeConcern: { w: "majority", journal: true, wtimeoutMS: timeoutMs },
      readConcern: { level: "majority" },
      readPreference: "primary",
      ignoreUndefined: true,
      promoteBuffers: true,
      serverSelectionTimeoutMS: Math.min(10_000, timeoutMs),
      waitQueueTimeoutMS: timeoutMs,
      // Above every server-side bound (maxTimeMS, then wtimeout, and a change
      // stream's 1 s await), so it only fires on a connection that went silent.
      socketTimeoutMS: 2 * timeoutMs + 5_000,
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
    return new MongoStore(client, databaseName, { ...options, timeoutMs });
  }

  collection<T extends Doc>(name: string): Collection<T> {
    return new MongoBackedCollection<T>(this.db.collection(name), this.options.timeoutMs);
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
    await this.options.onClose?.();
  }

  /**
   * MongoDB's winning plan for a find (filter, sort, limit): which index, and
   * whether it sorts in memory. For tests and diagnostics.
   */
  async explainFind(collection: string, filter: Record<string, unknown>, options: FindOptions = {}): Promise<MongoDocument> {
    const explained = await this.db.collection(collection).find(filter, findOptions(options)).explain("queryPlanner");
    return (explained.queryPlanner as MongoDocument | undefined)?.winningPlan as MongoDocument;
  }

  /** Drops the database (tests only). */
  async dropDatabase(): Promise<void> {
    await this.db.dropDatabase();
  }
}
