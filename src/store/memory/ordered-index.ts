/**
 * One index of a memory collection: document ids ordered by the index key
 * (MongoDB's BSON comparison order, strings by UTF-8 bytes, per-field direction, `_id` as tie-break),
 * so equality lookups, ranges and sorted scans visit only what they need.
 * Keys are kept encoded as strings whose plain order is that order
 * (index-keys.ts): compact, and compared natively.
 */
import btreeModule from "sorted-btree";
import { resolve } from "mingo/util";
import { compileFilter } from "./bson-order.js";
import { encodeKey, MAX_PART, MIN_PART } from "./index-keys.js";
import { type DocId, type IndexSpec, indexName } from "../port.js";

// sorted-btree is CommonJS with `exports.default`. Node's ESM loader makes the
// default import `module.exports` (the class is its `default`); bundlers that
// honour `__esModule` hand out the class itself.
type BTreeClass = typeof btreeModule.default;
const loaded: unknown = btreeModule;
const BTree: BTreeClass = typeof loaded === "function" ? (loaded as BTreeClass) : (loaded as { default: BTreeClass }).default;

/** Sentinels that sort below / above every value, for range bounds. */
export const MIN_KEY = MIN_PART;
export const MAX_KEY = MAX_PART;
type KeyPart = unknown;

export interface KeyRange {
  /** Inclusive lower bound (may end with MIN_KEY). */
  low: KeyPart[];
  /** Inclusive upper bound (may end with MAX_KEY). */
  high: KeyPart[];
}

const byString = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The partial filter as a test: a plain equality or `$exists: true` on a
 * top-level field is checked directly (the shapes the engine uses), anything
 * else, or a document holding an array or a document there, by mingo.
 */
function coverage(partial: Record<string, unknown> | undefined): ((doc: Record<string, unknown>) => boolean) | undefined {
  if (!partial) return undefined;
  const query = compileFilter(partial);
  const simple = Object.entries(partial).every(([field, required]) =>
    !field.includes(".") && !field.startsWith("$") &&
    (required === null || ["string", "number", "boolean"].includes(typeof required) ||
      (typeof required === "object" && Object.keys(required).length === 1 && (required as { $exists?: unknown }).$exists === true)));
  if (!simple) return (doc) => query.test(doc);
  const checks = Object.entries(partial);
  return (doc) => {
    for (const [field, required] of checks) {
      const value = doc[field];
      if (value !== null && typeof value === "object" && !(value instanceof Date)) return query.test(doc);
      if (typeof required === "object" && required !== null) {
        if (value === undefined) return false;
      } else if (value !== required) {
        return false;
      }
    }
    return true;
  };
}

/** Whether `path` is a proper prefix of `of` (`a` of `a.b`), without building `a.`. */
function isPrefixPath(path: string, of: string): boolean {
  return of.length > path.length && of.charCodeAt(path.length) === 46 && of.startsWith(path);
}

export class OrderedIndex {
  readonly name: string;
  readonly fields: string[];
  readonly directions: (1 | -1)[];
  readonly unique: boolean;
  private readonly partial: ((doc: Record<string, unknown>) => boolean) | undefined;
  /** The fields the key and partial filter read; undefined when not known (the filter nests operators). */
  private readonly reads: string[] | undefined;
  /** Directions of a full key: the fields', then the `_id` tie-break (ascending). */
  private readonly keyDirections: (1 | -1)[];
  /** Whether every field is top-level (read directly, not by path). */
  private readonly topLevel: boolean;
  /** Whether the key's last field is `_id`, which makes it unique. */
  private readonly endsWithId: boolean;
  /** Set once a document holds an array in an indexed field: the index then only serves uniqueness checks. */
  multikey = false;
  /** Encoded keys (index-keys.ts: string order is index order) to document ids. */
  private readonly tree;

  constructor(readonly spec: IndexSpec) {
    this.name = indexName(spec);
    this.fields = Object.keys(spec.key);
    this.directions = Object.values(spec.key);
    this.keyDirections = [...this.directions, 1];
    this.topLevel = this.fields.every((field) => !field.includes("."));
    this.endsWithId = this.fields[this.fields.length - 1] === "_id";
    this.unique = spec.unique === true;
    this.partial = coverage(spec.partialFilterExpression);
    const filterFields = Object.keys(spec.partialFilterExpression ?? {});
    this.reads = filterFields.some((f) => f.startsWith("$")) ? undefined : [...this.fields, ...filterFields];
    this.tree = new BTree<string, DocId>(undefined, byString);
  }

  /**
   * Whether writing these paths (cut before any positional `$` segment) may
   * change a document's key or whether the index covers it.
   */
  readsAny(paths: readonly string[]): boolean {
    if (this.reads === undefined) return true;
    for (const path of paths) {
      for (const field of this.reads) {
        if (path === field || isPrefixPath(path, field) || isPrefixPath(field, path)) return true;
      }
    }
    return false;
  }

  covers(doc: object): boolean {
    return this.partial === undefined || this.partial(doc as Record<string, unknown>);
  }

  /** The index key of a document (without the `_id` tie-break); MongoDB indexes a missing field as null. */
  keyOf(doc: object): KeyPart[] {
    return this.fields.map((field) => {
      const value = this.topLevel ? (doc as Record<string, unknown>)[field] : resolve(doc as Record<string, never>, field);
      if (Array.isArray(value)) this.multikey = true;
      return value ?? null;
    });
  }

  private encoded(doc: { _id: DocId }): string {
    const key = this.keyOf(doc);
    // Ending with _id, the key is unique already: no tie-break needed.
    if (!this.endsWithId) key.push(doc._id);
    return encodeKey(key, this.keyDirections);
  }

  add(doc: { _id: DocId }): void {
    if (this.covers(doc)) this.tree.set(this.encoded(doc), doc._id);
  }

  remove(doc: { _id: DocId }): void {
    if (this.covers(doc)) this.tree.delete(this.encoded(doc));
  }

  /** The id of another covered document with the same key, if any (unique indexes). */
  conflict(doc: { _id: DocId }): DocId | undefined {
    if (!this.unique || !this.covers(doc)) return undefined;
    const key = this.keyOf(doc);
    for (const id of this.ids({ low: [...key, MIN_KEY], high: [...key, MAX_KEY] })) {
      if (id !== doc._id) return id;
    }
    return undefined;
  }

  /** Ids in the range, in index order (or reversed). */
  *ids(range: KeyRange, reverse = false): Generator<DocId> {
    const low = encodeKey(range.low, this.keyDirections);
    const high = encodeKey(range.high, this.keyDirections);
    if (!reverse) {
      for (const [key, id] of this.tree.entries(low)) {
        if (key > high) return;
        yield id;
      }
    } else {
      for (const [key, id] of this.tree.entriesReversed(high)) {
        if (key < low) return;
        yield id;
      }
    }
  }

  get size(): number {
    return this.tree.size;
  }
}
