/**
 * Filters of the shapes the engine sends on its hot paths (top-level fields
 * compared with strings, numbers, booleans or null: equality, `$in`, `$nin`,
 * `$ne`, `$exists`, `$gt`/`$gte`/`$lt`/`$lte`) tested without mingo. Compiling
 * a mingo Query for every conditional update was most of an update's cost.
 *
 * Semantics are MongoDB's for scalar document values; a document holding an
 * array, a document, a date or bytes in a tested field goes to the general
 * matcher (mingo, via `general`), which knows array and type-bracketing rules.
 */
import { compareUtf8 } from "../../domain/order.js";

type Scalar = string | number | boolean | null;
type Check = (value: unknown) => boolean;

const RANGES: Record<string, (order: number) => boolean> = {
  $gt: (order) => order > 0,
  $gte: (order) => order >= 0,
  $lt: (order) => order < 0,
  $lte: (order) => order <= 0,
};

function isScalar(value: unknown): value is Scalar {
  return value === null || typeof value === "string" || typeof value === "boolean" || (typeof value === "number" && !Number.isNaN(value));
}

/** MongoDB equality of a scalar document value with a scalar operand (null matches a missing field too). */
function equals(operand: Scalar): Check {
  return operand === null ? (value) => value === null || value === undefined : (value) => value === operand;
}

function range(holds: (order: number) => boolean, operand: unknown): Check | undefined {
  if (typeof operand === "number" && !Number.isNaN(operand)) return (value) => typeof value === "number" && holds(value < operand ? -1 : value > operand ? 1 : 0);
  if (typeof operand === "string") return (value) => typeof value === "string" && holds(compareUtf8(value, operand));
  return undefined;
}

/** A condition on one field as a check, or undefined when it is not of a simple shape. */
function condition(operand: unknown): Check | undefined {
  if (isScalar(operand)) return equals(operand);
  if (typeof operand !== "object" || Array.isArray(operand) || operand instanceof Date || operand instanceof Uint8Array) return undefined;
  const checks: Check[] = [];
  for (const [operator, argument] of Object.entries(operand as Record<string, unknown>)) {
    let check: Check | undefined;
    if (operator === "$eq" && isScalar(argument)) check = equals(argument);
    else if (operator === "$ne" && isScalar(argument)) {
      const eq = equals(argument);
      check = (value) => !eq(value);
    } else if ((operator === "$in" || operator === "$nin") && Array.isArray(argument) && argument.every(isScalar)) {
      const any = anyOf(argument);
      check = operator === "$in" ? any : (value) => !any(value);
    } else if (operator === "$exists" && typeof argument === "boolean") {
      check = argument ? (value) => value !== undefined : (value) => value === undefined;
    } else if (operator in RANGES) {
      check = range(RANGES[operator]!, argument);
    }
    if (!check) return undefined;
    checks.push(check);
  }
  if (checks.length === 0) return undefined;
  return checks.length === 1 ? checks[0] : (value) => checks.every((check) => check(value));
}

function anyOf(operands: readonly Scalar[]): Check {
  const withNull = operands.includes(null);
  const set = new Set<unknown>(operands.filter((operand) => operand !== null));
  return (value) => set.has(value) || (withNull && (value === null || value === undefined));
}

/**
 * The filter as a test when every condition is of a simple shape, else
 * undefined. `general` answers for documents whose tested fields are not
 * scalars; it is made on first need.
 */
export function simpleFilter(filter: Record<string, unknown>, general: () => { test(doc: object): boolean }): ((doc: Record<string, unknown>) => boolean) | undefined {
  const fields: string[] = [];
  const checks: Check[] = [];
  for (const [field, operand] of Object.entries(filter)) {
    if (field.startsWith("$") || field.includes(".")) return undefined;
    const check = condition(operand);
    if (!check) return undefined;
    fields.push(field);
    checks.push(check);
  }
  let fallback: { test(doc: object): boolean } | undefined;
  return (doc) => {
    for (let i = 0; i < fields.length; i++) {
      const value = doc[fields[i]!];
      if (value !== null && typeof value === "object") return (fallback ??= general()).test(doc);
      if (typeof value === "number" && Number.isNaN(value)) return (fallback ??= general()).test(doc);
      if (typeof value === "bigint") return (fallback ??= general()).test(doc);
    }
    for (let i = 0; i < fields.length; i++) {
      if (!checks[i]!(doc[fields[i]!])) return false;
    }
    return true;
  };
}
