/**
 * The memory backend compares values as MongoDB does. mingo compares strings
 * as JavaScript does (UTF-16 code units); BSON compares their UTF-8 bytes,
 * and the two disagree where a character above U+FFFF meets one in
 * U+E000-U+FFFF. So wherever the memory backend orders strings (index keys,
 * sorts, `$gt`/`$gte`/`$lt`/`$lte` conditions, `$min`/`$max` updates) it uses
 * `compareUtf8`; every other comparison stays mingo's. (Aggregation
 * expressions such as `$expr: {$gt: [...]}` are mingo's own: nothing the
 * engine writes compares strings in them.)
 */
import { Context } from "mingo/core";
import * as expressionOperators from "mingo/operators/expression";
import * as queryOperators from "mingo/operators/query";
import * as updateOperators from "mingo/operators/update";
import { Query } from "mingo/query";
import { compare, resolve, setValue } from "mingo/util";
import { compareUtf8 } from "../../domain/order.js";
import { simpleFilter } from "./simple-filter.js";

/** MongoDB's order of two values (strings by UTF-8 bytes). */
export function compareValues(a: unknown, b: unknown): number {
  return typeof a === "string" && typeof b === "string" ? compareUtf8(a, b) : compare(a, b);
}

type QueryOperator = (selector: string, value: unknown, options: unknown) => (doc: Record<string, unknown>) => boolean;
const QUERY_FUNCTIONS = queryOperators as unknown as Record<string, QueryOperator>;

/** A range operator that compares a string operand by UTF-8 bytes (any other operand is mingo's business). */
function rangeOperator(name: string, holds: (order: number) => boolean): QueryOperator {
  const original = QUERY_FUNCTIONS[name]!;
  return (selector, value, options) => {
    if (typeof value !== "string") return original(selector, value, options);
    return (doc) => {
      // As mingo and MongoDB: an array field matches when one of its elements does; only strings compare with a string.
      const found: unknown = resolve(doc, selector, { unwrapArray: true });
      const candidates = Array.isArray(found) ? found : [found];
      return candidates.some((candidate) => typeof candidate === "string" && holds(compareUtf8(candidate, value)));
    };
  };
}

const QUERY_OPERATORS = {
  ...queryOperators,
  $gt: rangeOperator("$gt", (order) => order > 0),
  $gte: rangeOperator("$gte", (order) => order >= 0),
  $lt: rangeOperator("$lt", (order) => order < 0),
  $lte: rangeOperator("$lte", (order) => order <= 0),
};

/**
 * Filters are compiled with query operators only (building a mingo Query
 * copies its context's operator tables, and the expression operators are most
 * of mingo's); filters that evaluate expressions get the expression operators too.
 */
const QUERY_CONTEXT = Context.init({ query: QUERY_OPERATORS });
const EXPRESSION_CONTEXT = Context.init({ query: QUERY_OPERATORS, expression: expressionOperators });
const EXPRESSION_KEYS = new Set(["$expr", "$where", "$function", "$jsonSchema"]);

function needsExpressions(value: unknown): boolean {
  if (value === null || typeof value !== "object" || value instanceof Uint8Array || value instanceof Date) return false;
  if (Array.isArray(value)) return value.some(needsExpressions);
  for (const key of Object.keys(value)) {
    if (EXPRESSION_KEYS.has(key) || needsExpressions((value as Record<string, unknown>)[key])) return true;
  }
  return false;
}

/** A filter compiled by mingo (with strings ordered by UTF-8 bytes): any shape. */
export function generalFilter(filter: Record<string, unknown>): { test(doc: object): boolean } {
  return new Query(filter, { context: needsExpressions(filter) ? EXPRESSION_CONTEXT : QUERY_CONTEXT });
}

/** A filter (MongoDB's query language) compiled for testing documents: the simple shapes directly, any other by mingo. */
export function compileFilter(filter: Record<string, unknown>): { test(doc: object): boolean } {
  const general = () => generalFilter(filter);
  const simple = simpleFilter(filter, general);
  return simple ? { test: (doc) => simple(doc as Record<string, unknown>) } : general();
}

export type UpdateOperator = (expr: Record<string, unknown>) => (doc: Record<string, unknown>) => string[];
const UPDATE_FUNCTIONS = updateOperators as unknown as Record<string, UpdateOperator>;

/** `$min`/`$max` with string values compared by UTF-8 bytes; other values (and positional paths) are mingo's. */
function extremeOperator(name: "$min" | "$max"): UpdateOperator {
  const original = UPDATE_FUNCTIONS[name]!;
  const replaces = name === "$min" ? (order: number) => order < 0 : (order: number) => order > 0;
  return (expr) => {
    const ours = Object.entries(expr).filter(([path, value]) => typeof value === "string" && !path.includes("$"));
    if (ours.length === 0) return original(expr);
    const rest = Object.fromEntries(Object.entries(expr).filter((entry) => !ours.includes(entry)));
    const others = Object.keys(rest).length > 0 ? original(rest) : undefined;
    return (doc) => {
      const changed = others ? others(doc) : [];
      for (const [path, value] of ours) {
        const current: unknown = resolve(doc, path);
        if (current === undefined || replaces(compareValues(value, current))) {
          setValue(doc, path, value);
          changed.push(path);
        }
      }
      return changed;
    };
  };
}

/** mingo's update operators, `$min` and `$max` comparing strings as MongoDB does. */
export const UPDATE_OPERATOR_FUNCTIONS: Record<string, UpdateOperator> = {
  ...UPDATE_FUNCTIONS,
  $min: extremeOperator("$min"),
  $max: extremeOperator("$max"),
};
