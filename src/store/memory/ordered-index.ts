/**
 * One index of a memory collection: document ids ordered by the index key
 * (MongoDB's BSON comparison order, per-field direction, `_id` as tie-break),
 * so equality lookups, ranges and sorted scans visit only what they need.
 */
import btreeModule from "sorted-btree";
import { Query } from "mingo";
import { compare, resolve } from "mingo/util";
import { type DocId, type IndexSpec, indexName } from "../port.js";

// sorted-btree is CommonJS with `exports.default`. Node's ESM loader makes the
// default import `module.exports` (the class is its `default`); bundlers that
// honour `__esModule` hand out the class itself.
type BTreeClass = typeof btreeModule.default;
const loaded: unknown = btreeModule;
const BTree: BTreeClass = typeof loaded === "function" ? (loaded as BTreeClass) : (loaded as { default: BTreeClass }).default;

/** Sentinels that sort below / above every value, for range bounds. */
export const MIN_KEY = Symbol("MinKey");
export const MAX_KEY = Symbol("MaxKey");
type KeyPart = unknown;

export interface KeyRange {
  /** Inclusive lower bound (may end with MIN_KEY). */
  low: KeyPart[];
  /** Inclusive upper bound (may end with MAX_KEY). */
  high: KeyPart[];
}

function compareParts(a: KeyPart, b: KeyPart): number {
  if (a === b) return 0;
  if (a === MIN_KEY || b === MAX_KEY) return -1;
  if (a === MAX_KEY || b === MIN_KEY) return 1;
  // MongoDB indexes a missing field as null.
  return compare(a ?? null, b ?? null);
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
  private readonly partial: Query | undefined;
  /** The fields the key and partial filter read; undefined when not known (the filter nests operators). */
  private readonly reads: string[] | undefined;
  /** Set once a document holds an array in an indexed field: the index then only serves uniqueness checks. */
  multikey = false;
  private readonly tree;
  /** Which key fields are dotted paths (the others are read directly). */
  private readonly nested: boolean[];

  constructor(readonly spec: IndexSpec) {
    this.name = indexName(spec);
    this.fields = Object.keys(spec.key);
    this.directions = Object.values(spec.key);
    this.unique = spec.unique === true;
    this.partial = spec.partialFilterExpression ? new Query(spec.partialFilterExpression) : undefined;
    const filterFields = Object.keys(spec.partialFilterExpression ?? {});
    this.reads = filterFields.some((f) => f.startsWith("$")) ? undefined : [...this.fields, ...filterFields];
    this.tree = new BTree<KeyPart[], DocId>(undefined, (a, b) => this.compareKeys(a, b));
    this.nested = this.fields.map((field) => field.includes("."));
  }

  /** Compares full or partial keys; a shorter key equals any key it prefixes. */
  private compareKeys(a: KeyPart[], b: KeyPart[]): number {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
      const c = compareParts(a[i], b[i]);
      if (c !== 0) {
        // Sentinels bound ranges in tree order, whatever the field's direction.
        const sentinel = a[i] === MIN_KEY || a[i] === MAX_KEY || b[i] === MIN_KEY || b[i] === MAX_KEY;
        return sentinel || i >= this.directions.length ? c : c * this.directions[i]!;
      }
    }
    return 0;
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
    return this.partial === undefined || this.partial.test(doc as Record<string, unknown>);
  }

  /** The index key of a document (without the `_id` tie-break). */
  keyOf(doc: object): KeyPart[] {
    return this.fields.map((field, i) => {
      const value = this.nested[i] ? resolve(doc as Record<string, never>, field) : (doc as Record<string, unknown>)[field];
      if (Array.isArray(value)) this.multikey = true;
      return value ?? null;
    });
  }

  add(doc: { _id: DocId }): void {
    if (this.covers(doc)) this.tree.set([...this.keyOf(doc), doc._id], doc._id);
  }

  remove(doc: { _id: DocId }): void {
    if (this.covers(doc)) this.tree.delete([...this.keyOf(doc), doc._id]);
  }

  /** The id of another covered document with the same key, if any (unique indexes). */
  conflict(doc: { _id: DocId }): DocId | undefined {
    if (!this.unique || !this.covers(doc)) return undefined;
    const key = this.keyOf(doc);
    for (const id of this.ids({ low: [...key, MIN_KEY], high: [...key, MAX_KEY] })) {
      if (compare(id, doc._id) !== 0) return id;
    }
    return undefined;
  }

  /** Ids in the range, in index order (or reversed). */
  *ids(range: KeyRange, reverse = false): Generator<DocId> {
    if (!reverse) {
      for (const [key, id] of this.tree.entries(range.low)) {
        if (this.compareKeys(key, range.high) > 0) return;
        yield id;
      }
    } else {
      for (const [key, id] of this.tree.entriesReversed(range.high)) {
        if (this.compareKeys(key, range.low) < 0) return;
        yield id;
      }
    }
  }

  get size(): number {
    return this.tree.size;
  }
}
