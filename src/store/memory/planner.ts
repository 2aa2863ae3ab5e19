/**
 * Picks how a memory collection answers a query, the way MongoDB's planner
 * would for the simple shapes the engine uses: an `_id` lookup, else the index
 * with the longest equality prefix (plus a range on the next field), walked in
 * index order when that order is the requested sort. The plan only narrows the
 * candidates; the full filter is always applied to each one.
 */
import { type KeyRange, MAX_KEY, MIN_KEY, type OrderedIndex } from "./ordered-index.js";
import type { DocId, SortSpec } from "../port.js";

export type Plan =
  | { kind: "id"; ids: DocId[] }
  | { kind: "index"; index: OrderedIndex; range: KeyRange; reverse: boolean; sorted: boolean }
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

  let best: { index: OrderedIndex; prefix: unknown[]; range?: { low?: unknown; high?: unknown }; score: number; sorted: boolean; reverse: boolean } | undefined;
  for (const index of indexes) {
    // Partial indexes hold only some documents; multikey ones cannot be walked by scalar keys.
    if (index.spec.partialFilterExpression || index.multikey) continue;
    const prefix: unknown[] = [];
    for (const field of index.fields) {
      const eq = equalityValue(filter[field]);
      if (!eq) break;
      prefix.push(eq.value);
    }
    const nextField = index.fields[prefix.length];
    const range = nextField === undefined ? undefined : rangeBounds(filter[nextField]);
    if (prefix.length === 0 && !range) continue;
    const alignment = sortAlignment(index, prefix.length, sort);
    // Equality fields matter most, then a range, then not having to sort.
    const score = prefix.length * 4 + (range ? 2 : 0) + (alignment.sorted ? 1 : 0);
    if (!best || score > best.score) best = { index, prefix, range, score, ...alignment };
  }
  if (!best) return { kind: "scan" };

  const { index, prefix, range } = best;
  const low: unknown[] = [...prefix];
  const high: unknown[] = [...prefix];
  if (range) {
    // Tree order follows the field's direction: on a descending field the
    // upper value bound comes first.
    const descending = index.directions[prefix.length] === -1;
    const first = descending ? range.high : range.low;
    const last = descending ? range.low : range.high;
    if (first !== undefined) low.push(first);
    if (last !== undefined) high.push(last);
  }
  low.push(MIN_KEY);
  high.push(MAX_KEY);
  return { kind: "index", index, range: { low, high }, reverse: best.reverse, sorted: best.sorted };
}
