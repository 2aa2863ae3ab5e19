/**
 * A collection of the memory backend. Filter, update and sort semantics are
 * mingo's (MongoDB's query language); indexes are ordered trees; every write
 * is applied synchronously, so each call is atomic with respect to every
 * other call, like a single-document write in MongoDB.
 */
import { Query, update as applyModifier } from "mingo";
import { compare, resolve, setValue } from "mingo/util";
import { v7 as uuidv7 } from "uuid";
import {
  type Collection,
  type Doc,
  type DocId,
  DuplicateKeyError,
  type Filter,
  type FindOneAndUpdateOptions,
  type FindOptions,
  type IndexSpec,
  type InsertManyResult,
  type SortSpec,
  StoreError,
  type UpdateFilter,
  type UpdateResult,
  indexName,
} from "../port.js";
import { OrderedIndex } from "./ordered-index.js";
import { plan } from "./planner.js";

type AnyDoc = Doc & Record<string, unknown>;
type Modifier = Record<string, Record<string, unknown>>;

/** What a collection reports about its last query, like MongoDB's explain. */
export interface QueryStats {
  plan: "id" | "index" | "scan";
  index?: string;
  docsExamined: number;
}

export interface ChangeSink {
  emit(change: {
    operationType: "insert" | "update" | "delete";
    collection: string;
    documentKey: { _id: DocId };
    fullDocument?: AnyDoc;
    updateDescription?: { updatedFields: Record<string, unknown>; removedFields: string[] };
  }): void;
}

const UPDATE_OPERATORS = new Set([
  "$set", "$unset", "$inc", "$min", "$max", "$mul", "$push", "$pull", "$pullAll", "$addToSet", "$pop", "$rename", "$currentDate", "$setOnInsert",
]);

/** Map keys for ids: a string "1" and a number 1 are different ids, as in MongoDB. */
function idKey(id: DocId): string {
  return typeof id === "number" ? `n:${id}` : `s:${id}`;
}

/** Drops `undefined` values, as the driver does with `ignoreUndefined`. */
function withoutUndefined<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v) => withoutUndefined(v)) as T;
  if (value && typeof value === "object" && !(value instanceof Uint8Array) && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = withoutUndefined(v);
    return out as T;
  }
  return value;
}

function copy<T>(value: T): T {
  return structuredClone(value);
}

function sortComparator(sort: SortSpec): (a: AnyDoc, b: AnyDoc) => number {
  const fields = Object.entries(sort);
  return (a, b) => {
    for (const [field, direction] of fields) {
      const c = compare(resolve(a, field) ?? null, resolve(b, field) ?? null);
      if (c !== 0) return c * direction;
    }
    return 0;
  };
}

export class MemoryCollection<T extends Doc> implements Collection<T> {
  private readonly docs = new Map<string, AnyDoc>();
  private readonly indexes = new Map<string, OrderedIndex>();
  lastQuery: QueryStats = { plan: "scan", docsExamined: 0 };

  constructor(
    readonly name: string,
    private readonly changes: ChangeSink,
  ) {
    // Like MongoDB's implicit _id index: ranges and sorts on _id walk it.
    // (Uniqueness of _id is kept by the document map itself.)
    this.indexes.set("_id_", new OrderedIndex({ key: { _id: 1 }, name: "_id_" }));
  }

  async createIndexes(specs: IndexSpec[]): Promise<void> {
    for (const spec of specs) {
      const name = indexName(spec);
      if (this.indexes.has(name)) continue;
      const index = new OrderedIndex(spec);
      for (const doc of this.docs.values()) {
        const other = index.conflict(doc);
        if (other !== undefined) throw new DuplicateKeyError(this.name, name);
        index.add(doc);
      }
      this.indexes.set(name, index);
    }
  }

  async insertOne(doc: T): Promise<void> {
    this.insert(doc as unknown as AnyDoc);
  }

  async insertMany(docs: T[]): Promise<InsertManyResult> {
    const duplicates: InsertManyResult["duplicates"] = [];
    let insertedCount = 0;
    docs.forEach((doc, position) => {
      try {
        this.insert(doc as unknown as AnyDoc);
        insertedCount++;
      } catch (error) {
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

  async findOneAndUpdate(filter: Filter<T>, update: UpdateFilter<T>, options: FindOneAndUpdateOptions = {}): Promise<T | null> {
    const modifier = this.checkModifier(update);
    const [target] = this.select(filter as Record<string, unknown>, { sort: options.sort, limit: 1 });
    if (!target) {
      if (!options.upsert) return null;
      const inserted = this.upsert(filter as Record<string, unknown>, modifier);
      return options.returnDocument === "before" ? null : (copy(inserted) as unknown as T);
    }
    const before = copy(target);
    const after = this.modify(target, modifier);
    return copy(options.returnDocument === "before" ? before : after) as unknown as T;
  }

  async updateOne(filter: Filter<T>, update: UpdateFilter<T>, options: { upsert?: boolean } = {}): Promise<UpdateResult> {
    const modifier = this.checkModifier(update);
    const [target] = this.select(filter as Record<string, unknown>, { limit: 1 });
    if (!target) {
      if (!options.upsert) return { matchedCount: 0, modifiedCount: 0 };
      const inserted = this.upsert(filter as Record<string, unknown>, modifier);
      return { matchedCount: 0, modifiedCount: 0, upsertedId: inserted._id };
    }
    const before = this.docs.get(idKey(target._id));
    const after = this.modify(target, modifier);
    return { matchedCount: 1, modifiedCount: after === before ? 0 : 1 };
  }

  async updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<UpdateResult> {
    const modifier = this.checkModifier(update);
    const targets = this.select(filter as Record<string, unknown>, {});
    let modifiedCount = 0;
    for (const target of targets) {
      if (this.modify(target, modifier) !== target) modifiedCount++;
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

  /** Current version of a document, for change streams' "updateLookup". */
  lookup(id: DocId): AnyDoc | undefined {
    const doc = this.docs.get(idKey(id));
    return doc ? copy(doc) : undefined;
  }

  // ---- internals -------------------------------------------------------

  private insert(input: AnyDoc): AnyDoc {
    if (input._id === undefined || input._id === null) throw new StoreError(`${this.name}: documents need an _id`);
    const doc = withoutUndefined(copy(input));
    if (this.docs.has(idKey(doc._id))) throw new DuplicateKeyError(this.name, "_id_");
    this.assertUnique(doc);
    this.docs.set(idKey(doc._id), doc);
    for (const index of this.indexes.values()) index.add(doc);
    this.changes.emit({ operationType: "insert", collection: this.name, documentKey: { _id: doc._id }, fullDocument: copy(doc) });
    return doc;
  }

  private remove(doc: AnyDoc): void {
    this.docs.delete(idKey(doc._id));
    for (const index of this.indexes.values()) index.remove(doc);
    this.changes.emit({ operationType: "delete", collection: this.name, documentKey: { _id: doc._id } });
  }

  /** Applies a modifier to a stored document; returns the stored version after (the same object when nothing changed). */
  private modify(target: AnyDoc, modifier: Modifier): AnyDoc {
    const { $setOnInsert: _ignored, ...ops } = modifier;
    const next = copy(target);
    const changed = Object.keys(ops).length === 0 ? [] : applyModifier(next, withoutUndefined(ops) as never, undefined, undefined, { cloneMode: "deep" });
    if (changed.length === 0) return target;
    if (compare(next._id, target._id) !== 0) {
      throw new StoreError(`${this.name}: an update may not change _id`);
    }
    this.assertUnique(next, target._id);
    for (const index of this.indexes.values()) index.remove(target);
    this.docs.set(idKey(next._id), next);
    for (const index of this.indexes.values()) index.add(next);
    const updatedFields: Record<string, unknown> = {};
    const removedFields: string[] = [];
    for (const path of changed) {
      const value = resolve(next, path);
      if (value === undefined) removedFields.push(path);
      else updatedFields[path] = copy(value);
    }
    this.changes.emit({ operationType: "update", collection: this.name, documentKey: { _id: next._id }, updateDescription: { updatedFields, removedFields } });
    return next;
  }

  /** Builds the document an upsert inserts: the filter's equality fields, then $setOnInsert, then the update. */
  private upsert(filter: Record<string, unknown>, modifier: Modifier): AnyDoc {
    const seed: Record<string, unknown> = {};
    for (const [field, condition] of Object.entries(filter)) {
      if (field.startsWith("$")) continue;
      const isOperators = typeof condition === "object" && condition !== null && !Array.isArray(condition) &&
        Object.keys(condition).some((k) => k.startsWith("$"));
      if (!isOperators) setValue(seed, field, copy(condition));
      else if ("$eq" in (condition as object)) setValue(seed, field, copy((condition as { $eq: unknown }).$eq));
    }
    if (seed._id === undefined) seed._id = uuidv7();
    const { $setOnInsert, ...ops } = modifier;
    for (const [field, value] of Object.entries($setOnInsert ?? {})) setValue(seed, field, copy(value));
    if (Object.keys(ops).length > 0) applyModifier(seed, withoutUndefined(ops) as never);
    return this.insert(seed as AnyDoc);
  }

  private checkModifier(update: unknown): Modifier {
    if (Array.isArray(update)) throw new StoreError("aggregation pipeline updates are not part of the storage port");
    const keys = Object.keys(update as object);
    if (keys.length === 0 || !keys.every((k) => UPDATE_OPERATORS.has(k))) {
      throw new StoreError(`update must use only update operators (${[...UPDATE_OPERATORS].join(", ")}); got ${keys.join(", ") || "nothing"}`);
    }
    return update as Modifier;
  }

  private assertUnique(doc: AnyDoc, self?: DocId): void {
    for (const index of this.indexes.values()) {
      const other = index.conflict(doc);
      if (other !== undefined && (self === undefined || compare(other, self) !== 0)) {
        throw new DuplicateKeyError(this.name, index.name);
      }
    }
  }

  /** The stored (not copied) documents matching, in sort order, after skip/limit. */
  private select(filter: Record<string, unknown>, options: FindOptions): AnyDoc[] {
    const query = new Query(filter);
    const chosen = plan(filter, options.sort, this.indexes.values());
    const skip = options.skip ?? 0;
    const limit = options.limit && options.limit > 0 ? options.limit : Infinity;
    let examined = 0;
    const matches: AnyDoc[] = [];
    const candidates = (): Iterable<AnyDoc> => {
      switch (chosen.kind) {
        case "id":
          return chosen.ids.map((id) => this.docs.get(idKey(id))).filter((d): d is AnyDoc => d !== undefined);
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
      if (!query.test(doc)) continue;
      matches.push(doc);
      if (ordered && matches.length >= skip + limit) break;
    }
    this.lastQuery = { plan: chosen.kind, index: chosen.kind === "index" ? chosen.index.name : undefined, docsExamined: examined };
    if (!ordered) matches.sort(sortComparator(options.sort!));
    return matches.slice(skip, skip + limit);
  }
}
