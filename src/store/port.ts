/**
 * The storage port: the narrow slice of the MongoDB driver that the engine is
 * written against, once, for both backends (`mongo` and `memory`).
 *
 * Query and update documents use MongoDB's own language (the driver's types are
 * reused here so both backends are held to the same grammar). There are no
 * multi-document transactions: every state transition is a single conditional
 * document update, and uniqueness is enforced by unique indexes.
 */
import type { Filter, Sort, UpdateFilter } from "mongodb";

export type { Filter, Sort, UpdateFilter };

/** Every stored document has an `_id`; ours are strings or numbers. */
export type DocId = string | number;
export interface Doc {
  _id: DocId;
}

export type SortSpec = Record<string, 1 | -1>;

export interface IndexSpec {
  /** Field paths in order, 1 ascending, -1 descending. */
  key: SortSpec;
  /** Index name; derived from the key when omitted (as MongoDB does). */
  name?: string;
  unique?: boolean;
  /** Only documents matching this filter are indexed (MongoDB partial index). */
  partialFilterExpression?: Record<string, unknown>;
}

export interface FindOptions {
  sort?: SortSpec;
  limit?: number;
  skip?: number;
  /**
   * The read follows this process's own write (a bulk write read back to see
   * which updates won) and must see it. Reads are majority reads, and on
   * MongoDB a majority read is guaranteed to see an earlier majority write of
   * the same client only in a causally consistent session; this reads the
   * primary's latest data instead ("local"), which includes that write (a
   * concurrent write of another client it sees may not be majority-confirmed
   * yet).
   */
  readOwnWrites?: boolean;
}

export interface FindOneAndUpdateOptions {
  sort?: SortSpec;
  /** Which version to return; MongoDB's default is "before", ours is "after". */
  returnDocument?: "before" | "after";
  upsert?: boolean;
}

export interface UpdateResult {
  matchedCount: number;
  modifiedCount: number;
  /** Set when an upsert inserted a document. */
  upsertedId?: DocId;
}

export interface InsertManyResult {
  insertedCount: number;
  /** Documents refused by a unique index: their position in the input and the index's name. */
  duplicates: { position: number; index: string }[];
}

/** One conditional update of a bulk write (the only kind the engine needs). */
export interface BulkUpdate<T extends Doc> {
  updateOne: { filter: Filter<T>; update: UpdateFilter<T>; upsert?: boolean };
}

export interface BulkWriteResult {
  matchedCount: number;
  modifiedCount: number;
  upsertedCount: number;
  /** Operations a unique index refused: their position in the input and the index's name. */
  duplicates: { position: number; index: string }[];
  /**
   * How many operations were attempted: all of them when unordered; when
   * ordered, those up to and including the first refused one.
   */
  attempted: number;
}

export interface Collection<T extends Doc> {
  readonly name: string;
  /** Creates the indexes if missing (idempotent). */
  createIndexes(specs: IndexSpec[]): Promise<void>;
  /** Drops these indexes by name where they exist (idempotent): indexes an earlier version created and this one no longer uses. */
  dropIndexes(names: string[]): Promise<void>;
  /** @throws DuplicateKeyError when a unique index refuses the document. */
  insertOne(doc: T): Promise<void>;
  /** Unordered: every document a unique index does not refuse is inserted. */
  insertMany(docs: T[]): Promise<InsertManyResult>;
  findOne(filter: Filter<T>, options?: FindOptions): Promise<T | null>;
  find(filter: Filter<T>, options?: FindOptions): Promise<T[]>;
  /**
   * Atomically updates the first matching document (in `sort` order) and
   * returns it; null when nothing matched (and no upsert).
   * @throws DuplicateKeyError when the update would violate a unique index.
   */
  findOneAndUpdate(
    filter: Filter<T>,
    update: UpdateFilter<T>,
    options?: FindOneAndUpdateOptions,
  ): Promise<T | null>;
  updateOne(filter: Filter<T>, update: UpdateFilter<T>, options?: { upsert?: boolean }): Promise<UpdateResult>;
  updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult>;
  /**
   * Many conditional updates in one round trip. Each is atomic on its own
   * document, as `updateOne`; together they are not a transaction. Unordered
   * (the default): every operation is attempted, in any order. Ordered: in
   * input order, stopping at the first one a unique index refuses. The result
   * says how many matched, not which: read the documents back to see which won.
   */
  bulkWrite(operations: BulkUpdate<T>[], options?: { ordered?: boolean }): Promise<BulkWriteResult>;
  deleteOne(filter: Filter<T>): Promise<number>;
  deleteMany(filter: Filter<T>): Promise<number>;
  countDocuments(filter: Filter<T>): Promise<number>;
  /**
   * For each of `values`, the first document in `sort` order among those
   * matching `filter` whose `field` holds that value: at most one per value,
   * in one round trip (on MongoDB an aggregation of one sub-pipeline a
   * value, each answered by a seek in an index on `field` then the sort
   * fields; one round trip a 500 values).
   */
  firstOfEach(field: string, values: readonly (string | number)[], filter: Filter<T>, sort: SortSpec): Promise<T[]>;
}

/**
 * An opaque, JSON-serialisable position in the change stream. Keep the token of
 * the last change you processed and pass it as `resumeAfter` to continue with
 * the next one: nothing is lost or repeated.
 */
export type ResumeToken = Readonly<Record<string, unknown>>;

export type OperationType = "insert" | "update" | "replace" | "delete";

/** A change, normalised from MongoDB's change event document. */
export interface ChangeEvent<T extends Doc = Doc> {
  token: ResumeToken;
  operationType: OperationType;
  collection: string;
  documentKey: { _id: DocId };
  /** Inserts and replaces always; updates only with fullDocument "updateLookup" (the document as it is when the change is read). */
  fullDocument?: T;
  updateDescription?: { updatedFields: Record<string, unknown>; removedFields: string[] };
}

export interface WatchOptions {
  /** Only changes to these collections; all collections when omitted. */
  collections?: string[];
  /**
   * Further `$match` stages, written against MongoDB's change event shape
   * (`operationType`, `ns.coll`, `fullDocument.<field>`, `documentKey._id`).
   */
  match?: Record<string, unknown>[];
  /** Continue after this token. Without it the stream starts at "now". */
  resumeAfter?: ResumeToken;
  fullDocument?: "default" | "updateLookup";
}

/**
 * A change stream. Consume it with `for await` (which gives backpressure).
 * Iteration throws ChangeStreamHistoryLostError when the position it must
 * resume from is no longer retained; that is not resumable.
 */
export interface ChangeStream<T extends Doc = Doc> extends AsyncIterable<ChangeEvent<T>> {
  /** Token of the last change handed out (or the resume token it started from). */
  readonly resumeToken: ResumeToken | undefined;
  close(): Promise<void>;
}

export interface Durability {
  /** True when an acknowledged write survives a process or machine restart. */
  durable: boolean;
  /** One line for the start-up log, e.g. "majority-acknowledged, journaled". */
  description: string;
}

export interface Store {
  readonly backend: "mongo" | "memory";
  readonly durability: Durability;
  collection<T extends Doc>(name: string): Collection<T>;
  /**
   * One database-wide change stream (filter with `collections` / `match`).
   * Resolves once the stream is established: every change committed after
   * that is delivered (MongoDB opens change stream cursors lazily; this does not).
   */
  watch<T extends Doc = Doc>(options?: WatchOptions): Promise<ChangeStream<T>>;
  /** Resolves when the store answers; rejects with StoreUnavailableError. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Base of the store's typed errors. */
export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A unique index refused a write. */
export class DuplicateKeyError extends StoreError {
  constructor(
    readonly collection: string,
    readonly index: string,
    options?: { cause?: unknown },
  ) {
    super(`duplicate key in ${collection} index ${index}`, options);
  }
}

/** The change stream cannot resume: its position is no longer retained (MongoDB code 286). */
export class ChangeStreamHistoryLostError extends StoreError {}

/**
 * The change stream was invalidated (its collection or database was dropped or
 * renamed); open a new one.
 */
export class ChangeStreamInvalidatedError extends StoreError {}

/**
 * The store has no room for the write (the memory backend, past its
 * configured size); nothing was written. Retrying helps only once data was
 * deleted (retention does that) or the limit raised.
 */
export class StoreFullError extends StoreError {
  constructor(
    readonly maxBytes: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The store could not be reached, or did not answer (or confirm a write with
 * a majority) within its time bound; the operation may or may not have been
 * applied, and may be retried.
 */
export class StoreUnavailableError extends StoreError {}

/** MongoDB's limit on a stored document's BSON size (16 MiB); both backends refuse larger documents. */
export const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;

/** A document (as inserted, or as an update would leave it) is larger than MAX_DOCUMENT_BYTES; nothing was written. */
export class DocumentTooLargeError extends StoreError {
  constructor(
    readonly collection: string,
    options?: { cause?: unknown },
  ) {
    super(`a document in ${collection} would be larger than MongoDB's ${MAX_DOCUMENT_BYTES} byte limit`, options);
  }
}

/** Derives an index name from its key the way MongoDB does: `a_1_b_-1`. */
export function indexName(spec: IndexSpec): string {
  return spec.name ?? Object.entries(spec.key).map(([field, dir]) => `${field}_${dir}`).join("_");
}
