/**
 * A collection of the memory backend. Filter, update and sort semantics are
 * mingo's (MongoDB's query language); indexes are ordered trees; every write
 * is applied synchronously, so each call is atomic with respect to every
 * other call, like a single-document write in MongoDB.
 */
import { compare, resolve, setValue } from "mingo/util";
import { v7 as uuidv7 } from "uuid";
import {
  type BulkUpdate,
  type BulkWriteResult,
  type Collection,
  type Doc,
  type DocId,
  DuplicateKeyError,
  type Filter,
  type FindOneAndUpdateOptions,
  type FindOptions,
  type IndexSpec,
  type InsertManyResult,
  DocumentTooLargeError,
  MAX_DOCUMENT_BYTES,
  type SortSpec,
  StoreError,
  type UpdateFilter,
  type UpdateResult,
  indexName,
} from "../port.js";
import { bsonSizeNear } from "./bson-size.js";
import { compareValues, compileFilter, UPDATE_OPERATOR_FUNCTIONS } from "./bson-order.js";
import { approxBytes, MemoryBudget } from "./budget.js";
import { OrderedIndex } from "./ordered-index.js";
import { fastOperator } from "./fast-update.js";
import { plan } from "./planner.js";

type AnyDoc = Doc & Record<string, unknown>;
type Modifier = Record<string, Record<string, unknown>>;

/** What a collection reports about its last query, like MongoDB's explain. */
export interface QueryStats {
  plan: "id" | "index" | "scan";
  index?: string;
  docsExamined: number;
}

/** How a query would run, without running it (MongoDB: the winning plan of `explain`). */
export interface QueryPlanSummary {
  plan: "id" | "index" | "scan";
  index?: string;
  /** The matches would be collected whole and sorted in memory (MongoDB: a SORT stage). */
  blockingSort: boolean;
  /** Indexes the planner rates as good as `index` for this query (`index` among them). */
  equallyGood?: string[];
}

/** A change as a collection reports it (the change log keeps it compact and builds MongoDB's shape when read). */
export interface StoreChange {
  operationType: "insert" | "update" | "delete";
  collection: string;
  id: DocId;
  /** Inserts: the stored document (shared, never changed in place). */
  fullDocument?: AnyDoc;
  /** Updates: the paths written, with their values, and the paths removed. */
  updated?: Array<[string, unknown]>;
  removed?: string[];
  /** Approximate bytes the change holds (its document or the values its update wrote). */
  bytes: number;
}

export interface ChangeSink {
  emit(change: StoreChange): void;
}

/** The approximate bytes a top-level field takes in a document (0 when absent). */
function fieldBytes(doc: AnyDoc, field: string): number {
  const value = doc[field];
  return value === undefined ? 0 : 2 + field.length + approxBytes(value);
}

const UPDATE_OPERATORS = new Set([
  "$set", "$unset", "$inc", "$min", "$max", "$mul", "$push", "$pull", "$pullAll", "$addToSet", "$pop", "$rename", "$currentDate", "$setOnInsert",
]);

/** Map keys for ids: a string "1" and a number 1 are different ids, as in MongoDB. */
function idKey(id: DocId): string {
  return typeof id === "number" ? `n:${id}` : `s:${id}`;
}

/**
 * A copy the store owns of a value a caller passed in, without `undefined`
 * fields (as the driver does with `ignoreUndefined`): plain objects, arrays,
 * bytes and dates are copied directly; anything else is turned into data the
 * way `structuredClone` does (and then has its `undefined` fields dropped).
 */
function ownCopy<T>(value: T): T {
  if (value === null || typeof value !== "object") {
    // structuredClone refuses functions and symbols: so do we.
    return typeof value === "function" || typeof value === "symbol" ? structuredClone(value) : value;
  }
  if (Array.isArray(value)) return value.map((v) => ownCopy(v)) as T;
  if (value instanceof Uint8Array) return new Uint8Array(value) as T;
  if (value instanceof Date) return new Date(value.getTime()) as T;
  const proto = Object.getPrototypeOf(value) as unknown;
  const source = proto === Object.prototype || proto === null ? (value as Record<string, unknown>) : (structuredClone(value) as Record<string, unknown>);
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(source)) {
    const v = source[key];
    if (v !== undefined) out[key] = ownCopy(v);
  }
  return out as T;
}

/**
 * A copy of a stored document (or part of one) for a caller. Stored documents
 * only hold what `ownCopy` produces (plain objects, arrays, bytes, dates and
 * primitives), so this is `structuredClone` for them, several times faster.
 */
function copy<T>(value: T): T {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => copy(v)) as T;
  if (value instanceof Uint8Array) return new Uint8Array(value) as T;
  if (value instanceof Date) return new Date(value.getTime()) as T;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) out[key] = copy((value as Record<string, unknown>)[key]);
  return out as T;
}

/**
 * A copy of the containers (objects and arrays) of a stored value, sharing its
 * bytes and dates, which no update operator changes in place: what an update
 * may mutate before the result replaces the stored document.
 */
function copyContainers<T>(value: T): T {
  if (value === null || typeof value !== "object" || value instanceof Uint8Array || value instanceof Date) return value;
  if (Array.isArray(value)) return value.map((v) => copyContainers(v)) as T;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) out[key] = copyContainers((value as Record<string, unknown>)[key]);
  return out as T;
}

/**
 * mingo's update operators (its public `mingo/operators/update` module, with
 * `$min`/`$max` ordering strings as MongoDB does), used one by one: the
 * semantics stay mingo's. mingo's `update()` builds a new operator context
 * for every call (copying its operator tables), which cost more than
 * everything else a write does; each operator function here runs with
 * mingo's own prebuilt default options instead ("copy" clone mode: the
 * values it writes are the store's own copies, see `compileUpdate`). What
 * `update()` checks across operators before applying any (paths that
 * conflict) is checked in `compileUpdate`; each operator checks its own paths
 * (no `$`-prefixed or `_id` paths) and arguments.
 */
const OPERATOR_FUNCTIONS = UPDATE_OPERATOR_FUNCTIONS;

/** Throws when two paths of one update overlap (`a` and `a` or `a.b`), as MongoDB and mingo's `update()` do. */
function assertNoConflicts(paths: string[]): void {
  for (let i = 0; i < paths.length; i++) {
    for (let j = i + 1; j < paths.length; j++) {
      const a = paths[i]!;
      const b = paths[j]!;
      if (a === b || b.startsWith(`${a}.`) || a.startsWith(`${b}.`)) {
        throw new StoreError(`updating the path '${b}' would create a conflict at '${a.length < b.length ? a : b}'`);
      }
    }
  }
}

/** An update's operators, ready to apply to any number of documents. */
interface CompiledUpdate {
  /** The top-level fields its paths start with (where it may write). */
  fields: Set<string>;
  /** The paths it may write, each cut before its first positional (`$`) segment. */
  paths: string[];
  /** Applies it to `doc` in place; returns the paths changed, sorted. */
  apply(doc: Record<string, unknown>): string[];
}

/** Compiles update operators (without $setOnInsert); undefined when there are none. */
function compileUpdate(given: Modifier): CompiledUpdate | undefined {
  const names = Object.keys(given);
  if (names.length === 0) return undefined;
  // Values the store owns: an operator shares (or shallowly copies) them into documents.
  const ops = ownCopy(given);
  const paths: string[] = [];
  for (const name of names) {
    const expr = ops[name]!;
    for (const path of Object.keys(expr)) paths.push(path);
    if (name === "$rename") for (const target of Object.values(expr)) paths.push(String(target));
  }
  if (paths.length > 1) assertNoConflicts(paths);
  const fields = new Set(paths.map((path) => (path.includes(".") ? path.slice(0, path.indexOf(".")) : path)));
  const fns = names.map((name) => fastOperator(name, ops[name]!) ?? OPERATOR_FUNCTIONS[name]!(ops[name]!));
  return {
    fields,
    paths: paths.map((path) => (path.includes(".$") ? path.slice(0, path.indexOf(".$")) : path)),
    apply(doc) {
      const changed: string[] = [];
      for (const fn of fns) for (const path of fn(doc)) changed.push(path);
      return changed.length > 1 ? changed.sort() : changed;
    },
  };
}

/** Same key (fields, order and directions), uniqueness and partial filter. */
function sameIndex(a: IndexSpec, b: IndexSpec): boolean {
  return JSON.stringify(Object.entries(a.key)) === JSON.stringify(Object.entries(b.key)) &&
    (a.unique === true) === (b.unique === true) &&
    JSON.stringify(a.partialFilterExpression ?? null) === JSON.stringify(b.partialFilterExpression ?? null);
}

function sortComparator(sort: SortSpec): (a: AnyDoc, b: AnyDoc) => number {
  const fields = Object.entries(sort);
  return (a, b) => {
    for (const [field, direction] of fields) {
      const c = compareValues(resolve(a, field) ?? null, resolve(b, field) ?? null);
      if (c !== 0) return c * direction;
    }
    return 0;
  };
}

/** The same fields in a new object (which V8 lays out compactly again). */
function compacted(doc: AnyDoc): AnyDoc {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(doc)) out[key] = doc[key];
  return out as AnyDoc;
}

/** Whether a query ranges over or sorts by _id (an equality or `$in` is answered by the document map). */
function needsIdIndex(filter: Record<string, unknown>, sort: SortSpec | undefined): boolean {
  if (sort && Object.keys(sort)[0] === "_id") return true;
  const condition = filter._id;
  return typeof condition === "object" && condition !== null && ["$gt", "$gte", "$lt", "$lte"].some((op) => op in condition);
}

export class MemoryCollection<T extends Doc> implements Collection<T> {
  private readonly docs = new Map<string, AnyDoc>();
  /** Approximate bytes of each stored document (what it holds of the budget). */
  private readonly indexes = new Map<string, OrderedIndex>();
  lastQuery: QueryStats = { plan: "scan", docsExamined: 0 };

  constructor(
    readonly name: string,
    private readonly changes: ChangeSink,
    private readonly budget: MemoryBudget = new MemoryBudget(),
  ) {
    // MongoDB's implicit _id index (for ranges and sorts on _id) is built the
    // first time a query needs it (see select): most collections are only
    // looked up by _id, which the document map answers, and an index entry
    // per document would cost them memory and time on every write for
    // nothing. (Uniqueness of _id is kept by the document map itself.)
  }

  async createIndexes(specs: IndexSpec[]): Promise<void> {
    for (const spec of specs) {
      const name = indexName(spec);
      // As MongoDB: creating an existing index again is a no-op, but not with
      // another key or options under its name (IndexKeySpecsConflict, code 86,
      // or IndexOptionsConflict, 85), nor under another name (85).
      const existing = this.indexes.get(name);
      if (existing) {
        if (!sameIndex(existing.spec, spec)) {
          throw new StoreError(`${this.name}: an index named ${name} exists with another key or options; drop it before creating it anew`);
        }
        continue;
      }
      const twin = [...this.indexes.values()].find((index) => sameIndex(index.spec, spec));
      if (twin) throw new StoreError(`${this.name}: index ${name} already exists with a different name (${twin.name})`);
      const index = new OrderedIndex(spec);
      for (const doc of this.docs.values()) {
        const other = index.conflict(doc);
        if (other !== undefined) throw new DuplicateKeyError(this.name, name);
        index.add(doc);
      }
      this.indexes.set(name, index);
    }
  }

  async dropIndexes(names: string[]): Promise<void> {
    for (const name of names) if (name !== "_id_") this.indexes.delete(name);
  }

  async insertOne(doc: T): Promise<void> {
    this.insert(doc as unknown as AnyDoc);
  }

  async insertMany(docs: T[]): Promise<InsertManyResult> {
    // As the driver: a document of 16 MiB or more fails the whole call before anything is sent.
    for (const doc of docs) this.assertFits(doc as unknown as AnyDoc, MAX_DOCUMENT_BYTES - 1);
    const owned = docs.map((doc) => this.owned(doc as unknown as AnyDoc));
    const sizes = owned.map((doc) => approxBytes(doc));
    // Room for all of them, or none is inserted.
    this.budget.take(sizes.reduce((a, b) => a + b, 0), Math.max(...sizes));
    const duplicates: InsertManyResult["duplicates"] = [];
    let insertedCount = 0;
    owned.forEach((doc, position) => {
      try {
        this.store(doc, sizes[position]!);
        insertedCount++;
      } catch (error) {
        this.budget.take(-sizes[position]!);
        if (!(error instanceof DuplicateKeyError)) throw error;
        duplicates.push({ position, index: error.index });
      }
    });
    return { insertedCount, duplicates };
  }

  async findOne(filter: Filter<T>, options: FindOptions = {}): Promise<T | null> {
    const [first] = this.select(filter as Record<string, unknown>, { ...options, limit: 1 });
    return first ? (copy(first) as unknown as T) : null;
  }

  async find(filter: Filter<T>, options: FindOptions = {}): Promise<T[]> {
    return this.select(filter as Record<string, unknown>, options).map((d) => copy(d) as unknown as T);
  }

  async countDocuments(filter: Filter<T>): Promise<number> {
    return this.select(filter as Record<string, unknown>, {}).length;
  }

  async firstOfEach(field: string, values: readonly (string | number)[], filter: Filter<T>, sort: SortSpec): Promise<T[]> {
    const out: T[] = [];
    for (const value of new Set(values)) {
      const [first] = this.select({ ...(filter as Record<string, unknown>), [field]: value }, { sort, limit: 1 });
      if (first) out.push(copy(first) as unknown as T);
    }
    return out;
  }

  async findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options: FindOneAndUpdateOptions = {}): Promise<T | null> {
    const { modifier, update: compiled } = this.checkModifier(update);
    const [target] = this.select(filter as Record<string, unknown>, { sort: options.sort, limit: 1 });
    if (!target) {
      if (!options.upsert) return null;
      const inserted = this.upsert(filter as Record<string, unknown>, modifier, compiled);
      return options.returnDocument === "before" ? null : (copy(inserted) as unknown as T);
    }
    // Stored documents are never changed in place (an update stores a new
    // version), so the version before needs no copy until it is returned.
    const after = this.modify(target, compiled);
    return copy(options.returnDocument === "before" ? target : after) as unknown as T;
  }

  async updateOne(filter: Filter<T>, update: UpdateFilter<T>, options: { upsert?: boolean } = {}): Promise<UpdateResult> {
    return this.updateOneNow(filter as Record<string, unknown>, this.checkModifier(update), options.upsert === true);
  }

  async bulkWrite(operations: BulkUpdate<T>[], options: { ordered?: boolean } = {}): Promise<BulkWriteResult> {
    // Checked before any is applied, as the driver validates a whole batch.
    const checked = operations.map(({ updateOne }) => this.checkModifier(updateOne.update));
    const result: BulkWriteResult = { matchedCount: 0, modifiedCount: 0, upsertedCount: 0, duplicates: [], attempted: 0 };
    for (const [position, { updateOne }] of operations.entries()) {
      result.attempted++;
      try {
        const outcome = this.updateOneNow(updateOne.filter as Record<string, unknown>, checked[position]!, updateOne.upsert === true);
        result.matchedCount += outcome.matchedCount;
        result.modifiedCount += outcome.modifiedCount;
        if (outcome.upsertedId !== undefined) result.upsertedCount++;
      } catch (error) {
        if (!(error instanceof DuplicateKeyError)) throw error;
        result.duplicates.push({ position, index: error.index });
        if (options.ordered) break;
      }
    }
    return result;
  }

  private updateOneNow(filter: Record<string, unknown>, checked: { modifier: Modifier; update: CompiledUpdate | undefined }, upsert: boolean): UpdateResult {
    const { modifier, update: compiled } = checked;
    const [target] = this.select(filter, { limit: 1 });
    if (!target) {
      if (!upsert) return { matchedCount: 0, modifiedCount: 0 };
      const inserted = this.upsert(filter, modifier, compiled);
      return { matchedCount: 0, modifiedCount: 0, upsertedId: inserted._id };
    }
    const before = this.docs.get(idKey(target._id));
    const after = this.modify(target, compiled);
    return { matchedCount: 1, modifiedCount: after === before ? 0 : 1 };
  }

  async updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    const { update: compiled } = this.checkModifier(update);
    const targets = this.select(filter as Record<string, unknown>, {});
    let modifiedCount = 0;
    for (const target of targets) {
      if (this.modify(target, compiled) !== target) modifiedCount++;
    }
    return { matchedCount: targets.length, modifiedCount };
  }

  async deleteOne(filter: Filter<T>): Promise<number> {
    const [target] = this.select(filter as Record<string, unknown>, { limit: 1 });
    if (!target) return 0;
    this.remove(target);
    return 1;
  }

  async deleteMany(filter: Filter<T>): Promise<number> {
    const targets = this.select(filter as Record<string, unknown>, {});
    for (const target of targets) this.remove(target);
    return targets.length;
  }

  /** How a find with this filter and sort would be answered; reads no document. */
  explain(filter: Filter<T>, options: FindOptions = {}): QueryPlanSummary {
    const chosen = plan(filter as Record<string, unknown>, options.sort, this.indexes.values());
    const sorting = options.sort !== undefined && Object.keys(options.sort).length > 0;
    const inOrder = chosen.kind === "index" ? chosen.sorted : chosen.kind === "id" && chosen.ids.length <= 1;
    const index = chosen.kind === "index" ? { index: chosen.index.name, equallyGood: chosen.equallyGood } : {};
    return { plan: chosen.kind, ...index, blockingSort: sorting && !inOrder };
  }

  /** Current version of a document, for change streams' "updateLookup". */
  lookup(id: DocId): AnyDoc | undefined {
    const doc = this.docs.get(idKey(id));
    return doc ? copy(doc) : undefined;
  }

  // ---- internals -------------------------------------------------------

  private insert(input: AnyDoc): AnyDoc {
    const doc = this.owned(input);
    const size = approxBytes(doc);
    this.budget.take(size, size);
    try {
      return this.store(doc, size);
    } catch (error) {
      this.budget.take(-size);
      throw error;
    }
  }

  /** The store's own copy of a document to insert. */
  private owned(input: AnyDoc): AnyDoc {
    if (input._id === undefined || input._id === null) throw new StoreError(`${this.name}: documents need an _id`);
    const doc = ownCopy(input);
    this.assertFits(doc);
    return doc;
  }

  /** Stores a new document whose `size` the budget already holds. */
  private store(doc: AnyDoc, size: number): AnyDoc {
    if (this.docs.has(idKey(doc._id))) throw new DuplicateKeyError(this.name, "_id_");
    this.assertUnique(doc);
    this.docs.set(idKey(doc._id), doc);
    for (const index of this.indexes.values()) index.add(doc);
    this.changes.emit({ operationType: "insert", collection: this.name, id: doc._id, fullDocument: doc, bytes: size });
    return doc;
  }

  private remove(doc: AnyDoc): void {
    const key = idKey(doc._id);
    this.docs.delete(key);
    // A document's size is additive over its top-level fields, so what it
    // takes now is what it was inserted with plus what its updates grew it by.
    this.budget.take(-approxBytes(doc));
    for (const index of this.indexes.values()) index.remove(doc);
    this.changes.emit({ operationType: "delete", collection: this.name, id: doc._id, bytes: 0 });
  }

  /**
   * Applies an update to a stored document; returns the stored version after
   * (the same object when nothing changed).
   *
   * Stored documents are never changed in place: the new version shares every
   * top-level field the update does not touch with the old one (and with the
   * change log), and gets its own copy of those it may write to.
   */
  private modify(target: AnyDoc, update: CompiledUpdate | undefined): AnyDoc {
    if (update === undefined) return target;
    let next: AnyDoc = { ...target };
    for (const field of update.fields) {
      if (Object.hasOwn(next, field)) next[field] = copyContainers(next[field]);
    }
    const changed = update.apply(next);
    if (changed.length === 0) return target;
    if (compare(next._id, target._id) !== 0) {
      throw new StoreError(`${this.name}: an update may not change _id`);
    }
    // Pairs, not an object keyed by path: every combination of paths would be a hidden class of its own.
    const updated: Array<[string, unknown]> = [];
    const removedFields: string[] = [];
    for (const path of changed) {
      const value = resolve(next, path);
      if (value === undefined) removedFields.push(path);
      else updated.push([path, value]);
    }
    // A deleted property turns an object into a hash table (V8 "dictionary
    // mode", several times the size): a document that lost a top-level field
    // is stored as a fresh object with the fields it has left.
    if (removedFields.some((path) => !path.includes("."))) next = compacted(next);
    this.assertFits(next);
    // Indexes whose key and partial filter read none of the paths written keep their entry.
    const affected = [...this.indexes.values()].filter((index) => index.readsAny(update.paths));
    this.assertUnique(next, target._id, affected);
    // Only the top-level fields the update may write can change the document's size.
    let grow = 0;
    for (const field of update.fields) grow += fieldBytes(next, field) - fieldBytes(target, field);
    this.budget.take(grow);
    const key = idKey(next._id);
    for (const index of affected) index.remove(target);
    this.docs.set(key, next);
    for (const index of affected) index.add(next);
    let bytes = 0;
    for (const [path, value] of updated) bytes += path.length + approxBytes(value);
    this.changes.emit({ operationType: "update", collection: this.name, id: next._id, updated, removed: removedFields, bytes });
    return next;
  }

  /** Builds the document an upsert inserts: the filter's equality fields, then $setOnInsert, then the update. */
  private upsert(filter: Record<string, unknown>, modifier: Modifier, update: CompiledUpdate | undefined): AnyDoc {
    const seed: Record<string, unknown> = {};
    for (const [field, condition] of Object.entries(filter)) {
      if (field.startsWith("$")) continue;
      const isOperators = typeof condition === "object" && condition !== null && !Array.isArray(condition) &&
        Object.keys(condition).some((k) => k.startsWith("$"));
      if (!isOperators) setValue(seed, field, ownCopy(condition));
      else if ("$eq" in (condition as object)) setValue(seed, field, ownCopy((condition as { $eq: unknown }).$eq));
    }
    if (seed._id === undefined) seed._id = uuidv7();
    for (const [field, value] of Object.entries(modifier.$setOnInsert ?? {})) setValue(seed, field, ownCopy(value));
    update?.apply(seed);
    return this.insert(seed as AnyDoc);
  }

  /** Checks an update and compiles its operators (but $setOnInsert, which only an upsert applies). */
  private checkModifier(given: unknown): { modifier: Modifier; update: CompiledUpdate | undefined } {
    if (Array.isArray(given)) throw new StoreError("aggregation pipeline updates are not part of the storage port");
    const keys = Object.keys(given as object);
    if (keys.length === 0 || !keys.every((k) => UPDATE_OPERATORS.has(k))) {
      throw new StoreError(`update must use only update operators (${[...UPDATE_OPERATORS].join(", ")}); got ${keys.join(", ") || "nothing"}`);
    }
    const modifier = given as Modifier;
    const { $setOnInsert: onInsert, ...ops } = modifier;
    // MongoDB checks $setOnInsert's paths against the other operators' too, upsert or not.
    if (onInsert) assertNoConflicts(Object.values(modifier).flatMap((expr) => Object.keys(expr)));
    return { modifier, update: compileUpdate(ops) };
  }

  private buildIdIndex(): void {
    const index = new OrderedIndex({ key: { _id: 1 }, name: "_id_" });
    for (const doc of this.docs.values()) index.add(doc);
    this.indexes.set("_id_", index);
  }

  /** As MongoDB: a stored document (as inserted, or as an update leaves it) is at most 16 MiB of BSON. */
  private assertFits(doc: AnyDoc, maxBytes = MAX_DOCUMENT_BYTES): void {
    if (bsonSizeNear(doc, maxBytes + 1) > maxBytes) throw new DocumentTooLargeError(this.name);
  }

  private assertUnique(doc: AnyDoc, self?: DocId, indexes: Iterable<OrderedIndex> = this.indexes.values()): void {
    for (const index of indexes) {
      const other = index.conflict(doc);
      if (other !== undefined && (self === undefined || compare(other, self) !== 0)) {
        throw new DuplicateKeyError(this.name, index.name);
      }
    }
  }

  /** The stored (not copied) documents matching, in sort order, after skip/limit. */
  private select(filter: Record<string, unknown>, options: FindOptions): AnyDoc[] {
    if (!this.indexes.has("_id_") && needsIdIndex(filter, options.sort)) this.buildIdIndex();
    const chosen = plan(filter, options.sort, this.indexes.values());
    // An id plan fetches exactly the documents whose _id the filter's _id
    // condition names, and an index plan exactly those whose pinned fields
    // equal the filter's: only the rest of the filter is left to test.
    const tested = chosen.kind === "id" ? ["_id"] : chosen.kind === "index" ? chosen.pinned : [];
    const rest = tested.length === 0 ? filter : Object.fromEntries(Object.entries(filter).filter(([field]) => !tested.includes(field)));
    const query = Object.keys(rest).length === 0 ? undefined : compileFilter(rest);
    const skip = options.skip ?? 0;
    const limit = options.limit && options.limit > 0 ? options.limit : Infinity;
    let examined = 0;
    const matches: AnyDoc[] = [];
    const candidates = (): Iterable<AnyDoc> => {
      switch (chosen.kind) {
        case "id": {
          // Each document once, even when `$in` names its id twice.
          const keys = new Set(chosen.ids.map(idKey));
          return [...keys].map((key) => this.docs.get(key)).filter((d): d is AnyDoc => d !== undefined);
        }
        case "index":
          return (function* (docs: Map<string, AnyDoc>) {
            for (const range of chosen.ranges) {
              for (const id of chosen.index.ids(range, chosen.reverse)) yield docs.get(idKey(id))!;
            }
          })(this.docs);
        case "scan":
          return this.docs.values();
      }
    };
    // When candidates arrive in the requested order we can stop at the limit.
    const ordered = !options.sort || (chosen.kind === "index" && chosen.sorted);
    for (const doc of candidates()) {
      examined++;
      if (query && !query.test(doc)) continue;
      matches.push(doc);
      if (ordered && matches.length >= skip + limit) break;
    }
    this.lastQuery = { plan: chosen.kind, index: chosen.kind === "index" ? chosen.index.name : undefined, docsExamined: examined };
    if (!ordered) matches.sort(sortComparator(options.sort!));
    return matches.slice(skip, skip + limit);
  }
}
