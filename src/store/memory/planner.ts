/**
 * Picks how a memory collection answers a query, the way MongoDB's planner
 * would for the simple shapes the engine uses: an `_id` lookup, else the index
 * with the longest equality prefix, walked in index order when that order is
 * the requested sort. Between indexes with as many equality fields, one that
 * yields the sort wins over one that only bounds a range: it stops at the
 * first `limit` matches, where the range must be read whole and then sorted
 * (MongoDB's trial runs pick it for a claim's head-of-thread query, where most
 * queued dispatches are already available). An index that only yields the
 * sort (no equality, no range) is walked whole, in order, up to the limit.
 * The plan only narrows the candidates; the full filter is always applied to
 * each one.
 */
import { type KeyRange, MAX_KEY, MIN_KEY, type OrderedIndex } from "./ordered-index.js";
import type { DocId, SortSpec } from "../port.js";

export type Plan =
  | { kind: "id"; ids: DocId[] }
  /**
   * Walks each range in turn; `sorted` when that yields the requested order.
   * `equallyGood` names every index that scored as well as the one chosen
   * (MongoDB's trial runs may pick any of them).
   */
  | { kind: "index"; index: OrderedIndex; ranges: KeyRange[]; reverse: boolean; sorted: boolean; equallyGood: string[]; pinned: string[] }
  | { kind: "scan" };

type Filter = Record<string, unknown>;

const scalarTypes = new Set(["string", "number", "boolean"]);

function isScalar(value: unknown): value is string | number | boolean | null {
  return value === null || scalarTypes.has(typeof value);
}

function isOperatorObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array) &&
    Object.keys(value).length > 0 && Object.keys(value).every((k) => k.startsWith("$"));
}

/** The value a top-level condition pins the field to, if it is a plain equality. */
function equalityValue(condition: unknown): { value: unknown } | undefined {
  if (isScalar(condition)) return { value: condition };
  if (isOperatorObject(condition) && Object.keys(condition).length === 1 && isScalar(condition.$eq)) {
    return { value: condition.$eq };
  }
  return undefined;
}

/** Inclusive bounds a top-level condition puts on the field ($gt/$lt become inclusive; the filter re-checks). */
function rangeBounds(condition: unknown): { low?: unknown; high?: unknown } | undefined {
  if (!isOperatorObject(condition)) return undefined;
  const bounds: { low?: unknown; high?: unknown } = {};
  for (const op of ["$gt", "$gte"]) if (isScalar(condition[op])) bounds.low = condition[op];
  for (const op of ["$lt", "$lte"]) if (isScalar(condition[op])) bounds.high = condition[op];
  // MongoDB compares within a type ("type bracketing"): `$lte: 5` matches only
  // numbers, so a one-sided numeric range need not visit nulls or strings.
  if (typeof bounds.high === "number" && bounds.low === undefined) bounds.low = -Infinity;
  if (typeof bounds.low === "number" && bounds.high === undefined) bounds.high = Infinity;
  return bounds.low === undefined && bounds.high === undefined ? undefined : bounds;
}

/** The values an `$in` condition allows, when they are all scalars. */
function inValues(condition: unknown): unknown[] | undefined {
  if (isOperatorObject(condition) && Object.keys(condition).length === 1 && Array.isArray(condition.$in) && condition.$in.length > 0 &&
      condition.$in.every(isScalar)) {
    return condition.$in;
  }
  return undefined;
}

/**
 * Whether the filter implies the index's partial filter, so every matching
 * document is in the index. Only the shapes the engine uses are recognised:
 * `{field: {$exists: true}}` implied by a non-null equality, `$in` or range,
 * and a scalar equality implied by the same equality.
 */
function impliesPartial(index: OrderedIndex, filter: Filter): boolean {
  const partial = index.spec.partialFilterExpression;
  if (!partial) return true;
  return Object.entries(partial).every(([field, required]) => {
    const eq = equalityValue(filter[field]);
    const values = eq ? [eq.value] : inValues(filter[field]);
    if (isOperatorObject(required) && Object.keys(required).length === 1 && required.$exists === true) {
      return (values !== undefined && values.every((v) => v !== null)) || rangeBounds(filter[field]) !== undefined;
    }
    return isScalar(required) && eq !== undefined && eq.value === required;
  });
}

/**
 * How many equalities an index's partial filter stands for: an index of only
 * the documents with `status: "QUEUED"` narrows like a leading equality on
 * `status` (call only when the filter implies the partial filter).
 */
function partialEqualities(index: OrderedIndex): number {
  return Object.values(index.spec.partialFilterExpression ?? {}).filter(isScalar).length;
}

function idsFromFilter(filter: Filter): DocId[] | undefined {
  const condition = filter._id;
  const eq = equalityValue(condition);
  if (eq && (typeof eq.value === "string" || typeof eq.value === "number")) return [eq.value];
  if (isOperatorObject(condition) && Object.keys(condition).length === 1 && Array.isArray(condition.$in) &&
      condition.$in.every((v) => typeof v === "string" || typeof v === "number")) {
    return condition.$in as DocId[];
  }
  return undefined;
}

/** Whether walking `index` after `prefix` equality fields yields `sort` order (forward or reversed). */
function sortAlignment(index: OrderedIndex, prefix: number, sort: SortSpec | undefined): { sorted: boolean; reverse: boolean } {
  const sortFields = Object.entries(sort ?? {});
  if (sortFields.length === 0) return { sorted: true, reverse: false };
  let reverse: boolean | undefined;
  for (let i = 0; i < sortFields.length; i++) {
    const [field, direction] = sortFields[i]!;
    const at = prefix + i;
    if (at >= index.fields.length) {
      // Past the index fields the order is by _id ascending.
      if (field !== "_id" || i !== sortFields.length - 1) return { sorted: false, reverse: false };
      const flip = direction !== 1;
      return reverse === undefined || reverse === flip ? { sorted: true, reverse: flip } : { sorted: false, reverse: false };
    }
    if (index.fields[at] !== field) return { sorted: false, reverse: false };
    const flip = index.directions[at] !== direction;
    if (reverse !== undefined && reverse !== flip) return { sorted: false, reverse: false };
    reverse = flip;
  }
  return { sorted: true, reverse: reverse ?? false };
}

export function plan(filter: Filter, sort: SortSpec | undefined, indexes: Iterable<OrderedIndex>): Plan {
  const ids = idsFromFilter(filter);
  if (ids) return { kind: "id", ids };

  let equallyGood: string[] = [];
  let best: { index: OrderedIndex; prefix: unknown[]; choices?: unknown[]; range?: { low?: unknown; high?: unknown }; score: number; sorted: boolean; reverse: boolean } | undefined;
  for (const index of indexes) {
    // Multikey indexes cannot be walked by scalar keys.
    if (index.multikey || !impliesPartial(index, filter)) continue;
    const prefix: unknown[] = [];
    let choices: unknown[] | undefined;
    for (const field of index.fields) {
      const eq = equalityValue(filter[field]);
      if (eq) {
        prefix.push(eq.value);
        continue;
      }
      // One `$in` ends the prefix: each of its values is a range of its own.
      choices = inValues(filter[field]);
      break;
    }
    const equalities = prefix.length + (choices ? 1 : 0);
    const nextField = index.fields[equalities];
    const range = nextField === undefined ? undefined : rangeBounds(filter[nextField]);
    const alignment = choices && choices.length > 1 ? { sorted: false, reverse: false } : sortAlignment(index, equalities, sort);
    const givesSort = sort !== undefined && Object.keys(sort).length > 0 && alignment.sorted;
    if (equalities === 0 && !range && !givesSort) continue;
    // Equality fields matter most, then not having to sort, then a range.
    const score = (equalities + partialEqualities(index)) * 4 + (alignment.sorted ? 2 : 0) + (range ? 1 : 0);
    if (!best || score > best.score) {
      best = { index, prefix, choices, range, score, ...alignment };
      equallyGood = [index.name];
    } else if (score === best.score) {
      equallyGood.push(index.name);
    }
  }
  if (!best) return { kind: "scan" };

  const { index, prefix, choices, range } = best;
  const prefixes = choices ? choices.map((value) => [...prefix, value]) : [prefix];
  const ranges = prefixes.map((values) => {
    const low: unknown[] = [...values];
    const high: unknown[] = [...values];
    if (range) {
      // Tree order follows the field's direction: on a descending field the
      // upper value bound comes first.
      const descending = index.directions[values.length] === -1;
      const first = descending ? range.high : range.low;
      const last = descending ? range.low : range.high;
      if (first !== undefined) low.push(first);
      if (last !== undefined) high.push(last);
    }
    low.push(MIN_KEY);
    high.push(MAX_KEY);
    return { low, high };
  });
  // The leading fields every candidate has exactly (a scalar key, not null, on an index without arrays).
  const pinned = index.multikey ? [] : index.fields.slice(0, prefix.length).filter((_, i) => prefix[i] !== null && typeof prefix[i] !== "object");
  return { kind: "index", index, ranges, reverse: best.reverse, sorted: best.sorted, equallyGood, pinned };
}
