/**
 * The update operators the engine uses on every transition ($set, $unset,
 * $inc, $min, $max, and $push with $each/$slice), for top-level fields only,
 * applied without mingo's per-call path analysis (which builds a path graph
 * and validators on every application: most of the cost of a write). Each
 * does exactly what the backend's general operator of the same name (mingo's,
 * with values compared in BSON order: bson-order.ts) does for a top-level
 * field (test/store/memory-fast-update.test.ts checks them against it on
 * random documents and updates); anything else (dotted or positional paths,
 * other operators or modifiers) goes to the general operators.
 */
import { isEqual } from "mingo/util";
import { compareValues as compare } from "./bson-order.js";

/** Applies an operator to a document in place; returns the paths it changed, sorted (as mingo's operators do). */
export type AppliedOperator = (doc: Record<string, unknown>) => string[];

const PLAIN_FIELD = /^[^.$]+$/;

function plainFields(expr: Record<string, unknown>): boolean {
  for (const key of Object.keys(expr)) if (!PLAIN_FIELD.test(key) || key === "__proto__") return false;
  return true;
}

/** mingo's "copy" clone mode: what it stores of a value an operator writes. */
function copyValue(value: unknown): unknown {
  if (value instanceof Date) return new Date(value);
  if (Array.isArray(value)) return value.slice();
  if (value instanceof RegExp) return new RegExp(value);
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) return Object.assign({}, value);
  return value;
}

type FieldRule = (doc: Record<string, unknown>, field: string, value: unknown) => boolean;

const RULES: Record<string, FieldRule> = {
  $set(doc, field, value) {
    if (isEqual(doc[field], value)) return false;
    doc[field] = copyValue(value);
    return true;
  },
  $unset(doc, field) {
    if (!Object.hasOwn(doc, field)) return false;
    const previous = doc[field];
    delete doc[field];
    return previous !== undefined;
  },
  $inc(doc, field, value) {
    const previous = doc[field];
    if (typeof previous !== "number" && previous !== undefined) return false;
    const next = ((previous as number | undefined) || 0) + (value as number);
    doc[field] = next;
    return next !== previous;
  },
  $min(doc, field, value) {
    if (doc[field] !== undefined && compare(doc[field], value) < 1) return false;
    doc[field] = value;
    return true;
  },
  $max(doc, field, value) {
    if (compare(doc[field], value) > -1) return false;
    doc[field] = value;
    return true;
  },
};

/** `$push` of `{$each: [...], $slice?: n}` or of one value. */
function push(doc: Record<string, unknown>, field: string, spec: unknown): boolean {
  const each = isEachSpec(spec) ? spec.$each : [spec];
  const slice = isEachSpec(spec) ? spec.$slice : undefined;
  const array = doc[field];
  if (!Array.isArray(array)) {
    if (array !== undefined) return false;
    doc[field] = each.slice();
    return true;
  }
  const previous = array.slice(0, slice || array.length);
  const oldSize = array.length;
  array.push(...each.slice());
  if (typeof slice === "number") {
    if (slice < 0) array.splice(0, array.length + slice);
    else array.splice(slice);
  }
  return oldSize !== array.length || !isEqual(previous, array);
}

function isEachSpec(spec: unknown): spec is { $each: unknown[]; $slice?: number } {
  return typeof spec === "object" && spec !== null && !Array.isArray(spec) && "$each" in spec;
}

/** A push spec the fast path takes: a plain value, or $each (an array) with an optional integer $slice and nothing else. */
function simplePush(spec: unknown): boolean {
  if (typeof spec !== "object" || spec === null || Array.isArray(spec) || spec instanceof Uint8Array || spec instanceof Date) return true;
  const keys = Object.keys(spec);
  if (!keys.some((k) => k.startsWith("$"))) return true;
  const { $each, $slice } = spec as { $each?: unknown; $slice?: unknown };
  return keys.every((k) => k === "$each" || k === "$slice") && Array.isArray($each) && ($slice === undefined || Number.isInteger($slice));
}

/** The fast form of an operator, or undefined when mingo must apply it. */
export function fastOperator(name: string, expr: Record<string, unknown>): AppliedOperator | undefined {
  if (!plainFields(expr)) return undefined;
  const fields = Object.keys(expr);
  if (name === "$push") {
    if (!fields.every((field) => simplePush(expr[field]))) return undefined;
    return (doc) => fields.filter((field) => push(doc, field, expr[field])).sort();
  }
  const rule = RULES[name];
  if (!rule) return undefined;
  // As mingo: $inc refuses a non-numeric amount when the update is built.
  if (name === "$inc" && !fields.every((field) => typeof expr[field] === "number")) return undefined;
  return (doc) => fields.filter((field) => rule(doc, field, expr[field])).sort();
}
