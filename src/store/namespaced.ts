/**
 * One namespace's view of a Store: the storage boundary where tenants are
 * isolated, so no use case can forget a namespace filter.
 *
 * Through it, every document written carries the field `ns`; every filter
 * (upsert seeds included) gets `ns: <namespace>`; every index starts with
 * `ns`, so unique keys (dedupe keys, idempotency keys, event ids, one claim
 * per thread) are unique per namespace (stored under the name `ns_<name>`:
 * a deployment that predates namespaces has indexes of the caller's names
 * without `ns`, which MongoDB will not redefine in place; errors and
 * dropIndexes speak the caller's names); and string `_id`s are stored
 * namespace-qualified, because `_id`'s own unique index is the one index
 * that cannot start with `ns`. Returned documents and change events come back
 * as the caller wrote them: `_id` unqualified, no `ns`.
 *
 * Qualifying a string `_id` prefixes `<namespace>\u0001`, except in the
 * default namespace, whose ids are stored as they are: a deployment that
 * predates namespaces keeps its `_id`s (MongoDB cannot change an `_id` in
 * place) and needs only `ns` backfilled. That stays collision-free because no
 * string `_id` may contain U+0001 (domain ids exclude control characters; the
 * engine's composite ids join with U+0000), which this view enforces on every
 * write. Within one namespace qualified ids sort as the unqualified ones do,
 * so keyset paging and `_id` ranges keep their order.
 *
 * Numeric `_id`s (journal positions) are left alone: they come from one
 * global sequence, so they cannot collide across namespaces; whoever
 * allocates them must allocate globally.
 *
 * A filter or update this view cannot scope with certainty (`$where`,
 * `$expr`, a regular expression on `_id`, touching `ns` or `_id` in an
 * update, an update pipeline) is refused with NamespaceScopeError rather than
 * passed through: nothing reaches the underlying store unscoped.
 */
import { DEFAULT_NAMESPACE } from "../domain/auth/namespaces.js";
import {
  type ChangeEvent,
  type ChangeStream,
  type Collection,
  type Doc,
  type DocId,
  DuplicateKeyError,
  type Filter,
  type FindOneAndUpdateOptions,
  type FindOptions,
  type IndexSpec,
  indexName,
  type BulkUpdate,
  type BulkWriteResult,
  type InsertManyResult,
  type ResumeToken,
  type SortSpec,
  type Store,
  StoreError,
  type UpdateFilter,
  type UpdateResult,
  type WatchOptions,
} from "./port.js";

/** The field every document written through a NamespacedStore carries. */
export const NAMESPACE_FIELD = "ns";
/** The namespace whose `_id`s are stored unqualified (see the module comment). */
export { DEFAULT_NAMESPACE };
const SEPARATOR = "\u0001";

/** A call this view cannot scope to its namespace; a bug in the caller, never in the data. */
export class NamespaceScopeError extends StoreError {}

/** Prefix of the stored name of an index a view created (see the module comment). */
const SCOPED_INDEX_PREFIX = "ns_";

/** The name under which a view stores the index the caller names `name`. */
export function scopedIndexName(name: string): string {
  return SCOPED_INDEX_PREFIX + name;
}

/** The caller's name of a stored index (`_id_` and other unscoped ones as they are). */
function callerIndexName(stored: string): string {
  return stored.startsWith(SCOPED_INDEX_PREFIX) ? stored.slice(SCOPED_INDEX_PREFIX.length) : stored;
}

/** A write's outcome, a DuplicateKeyError's index renamed to the caller's name. */
function renamingDuplicates<R>(written: Promise<R>): Promise<R> {
  return written.catch((error: unknown) => {
    if (error instanceof DuplicateKeyError) throw new DuplicateKeyError(error.collection, callerIndexName(error.index), { cause: error });
    throw error;
  });
}

function renamedDuplicates<R extends { duplicates: { position: number; index: string }[] }>(result: R): R {
  return result.duplicates.length === 0 ? result : { ...result, duplicates: result.duplicates.map((d) => ({ position: d.position, index: callerIndexName(d.index) })) };
}

type Plain = Record<string, unknown>;

function isPlainObject(value: unknown): value is Plain {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array) && !(value instanceof Date);
}

/** How one namespace's `_id`s are stored. */
class IdCodec {
  private readonly prefix: string;

  constructor(readonly namespace: string) {
    if (namespace === "" || namespace.includes(SEPARATOR) || namespace.includes("\u0000")) {
      throw new NamespaceScopeError(`namespace ${JSON.stringify(namespace)} must be non-empty without U+0000 or U+0001`);
    }
    this.prefix = namespace === DEFAULT_NAMESPACE ? "" : namespace + SEPARATOR;
  }

  /** A value compared with stored `_id`s (an equality or a range bound); it may contain U+0001 (`"p\u0001"` bounds a prefix). */
  operand(value: unknown): unknown {
    return typeof value === "string" ? this.prefix + value : value;
  }

  /** An `_id` being written. */
  stored(id: DocId): DocId {
    if (typeof id !== "string") return id;
    if (id.includes(SEPARATOR)) throw new NamespaceScopeError(`string _id ${JSON.stringify(id)} contains U+0001, which namespaced ids reserve`);
    return this.prefix + id;
  }

  /** The caller's `_id` of a stored one; a stored id of another namespace here is a scoping bug, so it throws. */
  unqualified(id: DocId): DocId {
    if (typeof id !== "string") return id;
    if (this.prefix === "" ? id.includes(SEPARATOR) : !id.startsWith(this.prefix)) {
      throw new NamespaceScopeError(`document ${JSON.stringify(id)} of another namespace reached namespace ${JSON.stringify(this.namespace)}`);
    }
    return id.slice(this.prefix.length);
  }
}

/** `_id` comparison operators whose operands are ids. */
const ID_VALUE_OPERATORS = new Set(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]);
const ID_LIST_OPERATORS = new Set(["$in", "$nin"]);
/** Operators on `_id` that do not compare it with a value. */
const ID_SHAPE_OPERATORS = new Set(["$exists", "$type"]);
const LOGICAL_OPERATORS = new Set(["$and", "$or", "$nor"]);

/** Whether `path` is `root` or a path inside it (`root.x`), without building `root.`. */
function isUnder(path: string, root: string): boolean {
  return path.startsWith(root) && (path.length === root.length || path.charCodeAt(root.length) === 46);
}

/**
 * The filter, its `_id` conditions qualified; `idPaths` are the keys that
 * hold `_id`s (change events: `documentKey._id` too). A filter of plain
 * conditions (the common case) is copied at once, its id conditions replaced.
 */
function scopeConditions(filter: Plain, codec: IdCodec, idPaths: ReadonlySet<string>, forbidden: string): Plain {
  let scoped: Plain | undefined;
  for (const key in filter) {
    if (idPaths.has(key)) {
      (scoped ??= { ...filter })[key] = scopeIdCondition(filter[key], codec);
    } else if (key.charCodeAt(0) === 36 /* $ */ || isUnder(key, forbidden)) {
      return scopeEachCondition(filter, codec, idPaths, forbidden);
    }
  }
  return scoped ?? { ...filter };
}

/** scopeConditions for filters with operators at the top (logical ones recurse) or that name the forbidden field (refused). */
function scopeEachCondition(filter: Plain, codec: IdCodec, idPaths: ReadonlySet<string>, forbidden: string): Plain {
  const out: Plain = {};
  for (const [key, value] of Object.entries(filter)) {
    if (LOGICAL_OPERATORS.has(key)) {
      if (!Array.isArray(value)) throw new NamespaceScopeError(`${key} takes an array of filters`);
      out[key] = value.map((clause: unknown) => {
        if (!isPlainObject(clause)) throw new NamespaceScopeError(`${key} takes an array of filters`);
        return scopeConditions(clause, codec, idPaths, forbidden);
      });
    } else if (key === "$comment") {
      out[key] = value;
    } else if (key.startsWith("$")) {
      throw new NamespaceScopeError(`a namespaced filter cannot use ${key}: it could reach other namespaces`);
    } else if (isUnder(key, forbidden)) {
      throw new NamespaceScopeError(`a namespaced filter cannot name ${forbidden}: the namespace comes from the view`);
    } else if (idPaths.has(key)) {
      out[key] = scopeIdCondition(value, codec);
    } else {
      out[key] = value;
    }
  }
  return out;
}

function scopeIdCondition(condition: unknown, codec: IdCodec): unknown {
  if (!isPlainObject(condition)) {
    if (Array.isArray(condition) || condition instanceof RegExp) throw new NamespaceScopeError("an _id condition must be a value or operators");
    return codec.operand(condition);
  }
  const out: Plain = {};
  for (const [operator, operand] of Object.entries(condition)) {
    if (ID_VALUE_OPERATORS.has(operator)) {
      out[operator] = codec.operand(operand);
    } else if (ID_LIST_OPERATORS.has(operator)) {
      if (!Array.isArray(operand)) throw new NamespaceScopeError(`_id ${operator} takes an array`);
      out[operator] = operand.map((value: unknown) => codec.operand(value));
    } else if (ID_SHAPE_OPERATORS.has(operator)) {
      out[operator] = operand;
    } else if (operator === "$not" && isPlainObject(operand)) {
      out[operator] = scopeIdCondition(operand, codec);
    } else {
      // $regex and anything else: no mapping keeps its meaning within one namespace.
      throw new NamespaceScopeError(`a namespaced filter cannot use ${operator} on _id`);
    }
  }
  return out;
}

const ID_PATHS = new Set(["_id"]);

/** Whether an `_id` condition names string ids only, by equality or `$in` (so it selects within one namespace). */
function pinsStringId(condition: unknown): boolean {
  if (typeof condition === "string") return true;
  if (!isPlainObject(condition)) return false;
  const operators = Object.keys(condition);
  if (operators.length !== 1) return false;
  const [operator] = operators;
  if (operator === "$eq") return typeof condition.$eq === "string";
  return operator === "$in" && Array.isArray(condition.$in) && condition.$in.length > 0 && condition.$in.every((id) => typeof id === "string");
}

/** Refuses updates that would move a document between namespaces or rewrite its `_id`. */
function checkUpdate(update: unknown): void {
  if (!isPlainObject(update)) throw new NamespaceScopeError("a namespaced update must be a document of update operators (no pipelines)");
  for (const [operator, fields] of Object.entries(update)) {
    if (!operator.startsWith("$")) throw new NamespaceScopeError("a namespaced update cannot replace a whole document");
    if (!isPlainObject(fields)) continue;
    for (const path in fields) {
      checkUpdatedPath(path);
      if (operator === "$rename") checkUpdatedPath(String(fields[path]));
    }
  }
}

/** The root of an updated path (`a` of `a.b`) may be neither `ns` nor `_id`. */
function checkUpdatedPath(path: string): void {
  if (isUnder(path, NAMESPACE_FIELD)) throw new NamespaceScopeError(`a namespaced update cannot change ${NAMESPACE_FIELD}`);
  if (isUnder(path, "_id")) throw new NamespaceScopeError("a namespaced update cannot change _id");
}

function scopeIndex(spec: IndexSpec): IndexSpec {
  if (NAMESPACE_FIELD in spec.key) throw new NamespaceScopeError(`index ${indexName(spec)} names ${NAMESPACE_FIELD}: the view puts it first itself`);
  if (spec.partialFilterExpression && "_id" in spec.partialFilterExpression) {
    throw new NamespaceScopeError(`index ${indexName(spec)}: a partial filter on _id cannot be namespaced`);
  }
  // Errors name it as the caller's spec would be (see renamingDuplicates).
  return { ...spec, name: scopedIndexName(indexName(spec)), key: { [NAMESPACE_FIELD]: 1, ...spec.key } };
}

class NamespacedCollection<T extends Doc> implements Collection<T> {
  constructor(
    private readonly raw: Collection<Doc>,
    private readonly codec: IdCodec,
  ) {}

  get name(): string {
    return this.raw.name;
  }

  async createIndexes(specs: IndexSpec[]): Promise<void> {
    return this.raw.createIndexes(specs.map(scopeIndex));
  }

  /** Index names are the caller's (each names the namespace-first version of the index). */
  async dropIndexes(names: string[]): Promise<void> {
    return this.raw.dropIndexes(names.map(scopedIndexName));
  }

  async insertOne(doc: T): Promise<void> {
    const stored = this.stored(doc);
    return renamingDuplicates(this.raw.insertOne(stored));
  }

  async insertMany(docs: T[]): Promise<InsertManyResult> {
    return renamedDuplicates(await this.raw.insertMany(docs.map((doc) => this.stored(doc))));
  }

  async findOne(filter: Filter<T>, options?: FindOptions): Promise<T | null> {
    return this.returned(await this.raw.findOne(this.filter(filter), options));
  }

  async find(filter: Filter<T>, options?: FindOptions): Promise<T[]> {
    return (await this.raw.find(this.filter(filter), options)).map((doc) => this.returned(doc)!);
  }

  async findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options?: FindOneAndUpdateOptions): Promise<T | null> {
    checkUpdate(update);
    const scoped = this.write(filter, update, options?.upsert);
    return this.returned(await renamingDuplicates(this.raw.findOneAndUpdate(scoped.filter, scoped.update, options)));
  }

  async updateOne(filter: Filter<T>, update: UpdateFilter<T>, options?: { upsert?: boolean }): Promise<UpdateResult> {
    checkUpdate(update);
    const scoped = this.write(filter, update, options?.upsert);
    const result = await renamingDuplicates(this.raw.updateOne(scoped.filter, scoped.update, options));
    return result.upsertedId === undefined ? result : { ...result, upsertedId: this.codec.unqualified(result.upsertedId) };
  }

  async bulkWrite(operations: BulkUpdate<T>[], options?: { ordered?: boolean }): Promise<BulkWriteResult> {
    const scoped = operations.map(({ updateOne }) => {
      checkUpdate(updateOne.update);
      return { updateOne: { ...this.write(updateOne.filter, updateOne.update, updateOne.upsert), ...(updateOne.upsert ? { upsert: true } : {}) } };
    });
    return renamedDuplicates(await this.raw.bulkWrite(scoped, options));
  }

  async updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    checkUpdate(update);
    return renamingDuplicates(this.raw.updateMany(this.filter(filter), update as UpdateFilter<Doc>));
  }

  async deleteOne(filter: Filter<T>): Promise<number> {
    return this.raw.deleteOne(this.filter(filter));
  }

  async deleteMany(filter: Filter<T>): Promise<number> {
    return this.raw.deleteMany(this.filter(filter));
  }

  async countDocuments(filter: Filter<T>): Promise<number> {
    return this.raw.countDocuments(this.filter(filter));
  }

  async firstOfEach(field: string, values: readonly (string | number)[], filter: Filter<T>, sort: SortSpec): Promise<T[]> {
    if (field === "_id" || field === "ns") throw new NamespaceScopeError(`firstOfEach over ${field} cannot be scoped`);
    const found = await this.raw.firstOfEach(field, values, this.filter(filter), sort);
    return found.map((doc) => this.returned(doc)!);
  }

  /**
   * The filter within the namespace. A string `_id` named by equality (or
   * `$in`) already pins it: a stored string id belongs to one namespace
   * (qualified ids carry theirs; the default namespace's have no U+0001), so
   * `ns` is left out there, and a lookup by id costs what it did before
   * namespaces (an index on `_id` alone answers it, with nothing left to test).
   */
  private filter(filter: Filter<T>, forUpsert = false): Filter<Doc> {
    if (!isPlainObject(filter)) throw new NamespaceScopeError("a filter must be a document");
    const scoped = scopeConditions(filter, this.codec, ID_PATHS, NAMESPACE_FIELD);
    if (forUpsert || !pinsStringId(filter._id)) scoped[NAMESPACE_FIELD] = this.codec.namespace;
    return scoped as Filter<Doc>;
  }

  /**
   * An update's filter and update within the namespace. An upsert inserts its
   * filter's equality fields: the `_id` must be one, so the inserted id is
   * qualified and checked; the namespace goes in as `ns` in the filter, or
   * (a string id pins the namespace, see `filter`) in `$setOnInsert`.
   */
  private write(filter: Filter<T>, update: UpdateFilter<T>, upsert?: boolean): { filter: Filter<Doc>; update: UpdateFilter<Doc> } {
    if (!upsert) return { filter: this.filter(filter), update: update as UpdateFilter<Doc> };
    const id: unknown = (filter as Plain)._id;
    if (typeof id !== "string" && typeof id !== "number") throw new NamespaceScopeError("a namespaced upsert needs an _id equality in its filter");
    this.codec.stored(id);
    if (typeof id !== "string") return { filter: this.filter(filter, true), update: update as UpdateFilter<Doc> };
    const onInsert = { ...((update as Plain).$setOnInsert as Plain | undefined), [NAMESPACE_FIELD]: this.codec.namespace };
    return { filter: this.filter(filter), update: { ...update, $setOnInsert: onInsert } as UpdateFilter<Doc> };
  }

  private stored(doc: T): Doc {
    if (NAMESPACE_FIELD in doc) throw new NamespaceScopeError(`a namespaced document cannot carry its own ${NAMESPACE_FIELD}`);
    return { ...doc, _id: this.codec.stored(doc._id), ns: this.codec.namespace };
  }

  private returned(doc: Doc | null): T | null {
    return doc === null ? null : unstored<T>(doc, this.codec);
  }
}

/**
 * A document read from the underlying store, as its namespace's view returns
 * it, with that namespace: what a store-wide sweeper needs to act on it
 * through the view. A document without `ns` was written before namespaces
 * (and not backfilled yet): it is the default namespace's.
 */
export function ownerOf<T extends Doc>(stored: Doc): { namespace: string; doc: T } {
  const { ns: namespace, ...rest } = stored as Doc & { ns?: unknown };
  const codec = codecOf(typeof namespace === "string" ? namespace : DEFAULT_NAMESPACE);
  rest._id = codec.unqualified(stored._id);
  return { namespace: codec.namespace, doc: rest as unknown as T };
}

/** The namespace of a document read from the underlying store (default when it has none: see ownerOf). */
export function namespaceOf(stored: object): string {
  const namespace = (stored as Plain)[NAMESPACE_FIELD];
  return typeof namespace === "string" ? namespace : DEFAULT_NAMESPACE;
}

const codecs = new Map<string, IdCodec>();
/** Codecs are small and stateless; a few are kept (namespaces are unbounded when JWTs name them). */
function codecOf(namespace: string): IdCodec {
  let codec = codecs.get(namespace);
  if (!codec) {
    if (codecs.size >= 1024) codecs.clear();
    codecs.set(namespace, (codec = new IdCodec(namespace)));
  }
  return codec;
}

function unstored<T extends Doc>(doc: Doc, codec: IdCodec): T {
  const { ns: namespace, ...rest } = doc as Doc & { ns?: unknown };
  // Without `ns`: written before namespaces (found by its id before the start-up backfill reached it), the default namespace's.
  if (namespace !== codec.namespace && !(namespace === undefined && codec.namespace === DEFAULT_NAMESPACE)) throw new NamespaceScopeError(`a document of namespace ${JSON.stringify(namespace)} reached namespace ${JSON.stringify(codec.namespace)}`);
  rest._id = codec.unqualified(doc._id);
  return rest as unknown as T;
}

/** Change events of one namespace, unqualified. */
class NamespacedChangeStream<T extends Doc> implements ChangeStream<T> {
  constructor(
    private readonly raw: ChangeStream<Doc>,
    private readonly codec: IdCodec,
  ) {}

  get resumeToken(): ResumeToken | undefined {
    return this.raw.resumeToken;
  }

  close(): Promise<void> {
    return this.raw.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<ChangeEvent<T>> {
    const changes = this.raw[Symbol.asyncIterator]();
    return {
      next: async () => {
        const next = await changes.next();
        return next.done ? next : { done: false, value: this.unstored(next.value) };
      },
      return: async (value?: unknown) => {
        await changes.return?.(value);
        return { done: true, value: undefined };
      },
    };
  }

  private unstored(change: ChangeEvent<Doc>): ChangeEvent<T> {
    const { fullDocument, ...rest } = change;
    const out: ChangeEvent<T> = { ...rest, documentKey: { _id: this.codec.unqualified(change.documentKey._id) } };
    if (fullDocument) out.fullDocument = unstored<T>(fullDocument, this.codec);
    if (change.updateDescription) {
      const { [NAMESPACE_FIELD]: _ignored, ...updatedFields } = change.updateDescription.updatedFields;
      out.updateDescription = { updatedFields, removedFields: change.updateDescription.removedFields.filter((field) => field !== NAMESPACE_FIELD) };
    }
    return out;
  }
}

/** The change event paths that hold a document's `_id`. */
const CHANGE_ID_PATHS = new Set(["documentKey._id", "fullDocument._id"]);

export class NamespacedStore implements Store {
  private readonly codec: IdCodec;

  /** @throws NamespaceScopeError for an empty namespace or one containing U+0000 or U+0001. */
  constructor(
    private readonly raw: Store,
    readonly namespace: string,
  ) {
    this.codec = new IdCodec(namespace);
  }

  get backend(): Store["backend"] {
    return this.raw.backend;
  }

  get durability(): Store["durability"] {
    return this.raw.durability;
  }

  collection<T extends Doc>(name: string): Collection<T> {
    return new NamespacedCollection<T>(this.raw.collection<Doc>(name), this.codec);
  }

  /**
   * Changes to this namespace's documents. A document is recognised by its
   * `ns` (inserts, replaces, looked-up updates) or by its qualified string
   * `_id` (also deletes and updates without a looked-up document); a change
   * without either (a numeric `_id` deleted or updated without lookup) is not
   * delivered, since nothing says whose it was.
   */
  async watch<T extends Doc = Doc>(options: WatchOptions = {}): Promise<ChangeStream<T>> {
    const match = (options.match ?? []).map((stage) => scopeConditions(stage, this.codec, CHANGE_ID_PATHS, `fullDocument.${NAMESPACE_FIELD}`));
    const mine = { $or: [{ [`fullDocument.${NAMESPACE_FIELD}`]: this.namespace }, { "documentKey._id": this.idRange() }] };
    const raw = await this.raw.watch<Doc>({ ...options, match: [mine, ...match] });
    return new NamespacedChangeStream<T>(raw, this.codec);
  }

  ping(): Promise<void> {
    return this.raw.ping();
  }

  /** A view does not own the store it looks through: whoever opened that store closes it. */
  async close(): Promise<void> {}

  /** The stored string `_id`s of this namespace, as a range (the default namespace's: every string without U+0001 sorts anywhere, so none). */
  private idRange(): Plain {
    if (this.namespace === DEFAULT_NAMESPACE) return { $type: "string", $not: { $regex: SEPARATOR } };
    return { $gte: this.namespace + SEPARATOR, $lt: this.namespace + String.fromCharCode(SEPARATOR.charCodeAt(0) + 1) };
  }
}
