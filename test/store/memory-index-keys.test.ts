/**
 * The memory backend's index keys: plain string order of encoded keys is
 * MongoDB's index order (BSON types, numbers by value, strings by UTF-8
 * bytes), field by field, ascending or descending; range bounds enclose
 * exactly the keys with their prefix.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MAX_PART, MIN_PART, encodeKey, encodeValue } from "../../src/store/memory/index-keys.js";

type Value = null | number | string | boolean;

const TYPE_ORDER = (v: Value): number => (v === null ? 0 : typeof v === "number" ? 1 : typeof v === "string" ? 2 : 3);

/** BSON's order (MongoDB's "Comparison/Sort Order") for the values indexes hold. */
function bsonCompare(a: Value, b: Value): number {
  const types = TYPE_ORDER(a) - TYPE_ORDER(b);
  if (types !== 0) return Math.sign(types);
  if (typeof a === "number" && typeof b === "number") {
    if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b) ? 0 : Number.isNaN(a) ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (typeof a === "string" && typeof b === "string") return Math.sign(Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  return 0;
}

const sign = (n: number) => (n < 0 ? -1 : n > 0 ? 1 : 0);
const stringOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

// Strings from every plane (with NUL, U+FF01 and U+1F600, which UTF-16 and UTF-8 order differently); no lone surrogates (refused as ids).
const text = fc.oneof(fc.string({ maxLength: 6, unit: "grapheme" }), fc.constantFrom("", "\u0000", "a\u0000", "a", "ab", "\uff01", "\u{1f600}", "\ue000", "\uffff"));
const value: fc.Arbitrary<Value> = fc.oneof(
  fc.constant(null),
  fc.double(),
  fc.integer(),
  fc.constantFrom(0, -0, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, Infinity, -Infinity, Number.NaN, 1767225600123),
  text,
  fc.boolean(),
);

describe("memory index keys", () => {
  it("order single values as BSON does", () => {
    fc.assert(fc.property(value, value, (a, b) => {
      expect(sign(stringOrder(encodeValue(a), encodeValue(b)))).toBe(bsonCompare(a, b));
    }), { numRuns: 5000 });
  });

  it("order composite keys field by field, each ascending or descending", () => {
    const directions = fc.array(fc.constantFrom<1 | -1>(1, -1), { minLength: 1, maxLength: 3 });
    fc.assert(fc.property(directions.chain((dirs) => fc.tuple(fc.constant(dirs), fc.tuple(...dirs.map(() => value)), fc.tuple(...dirs.map(() => value)))), ([dirs, a, b]) => {
      let expected = 0;
      for (let i = 0; i < dirs.length && expected === 0; i++) expected = bsonCompare(a[i]!, b[i]!) * dirs[i]!;
      expect(sign(stringOrder(encodeKey(a, dirs), encodeKey(b, dirs)))).toBe(sign(expected));
    }), { numRuns: 5000 });
  });

  it("bounds a range: [prefix + MIN, prefix + MAX] holds exactly the keys that start with the prefix's values", () => {
    const dirs: Array<1 | -1> = [1, -1, 1];
    fc.assert(fc.property(value, value, value, value, (p, q, r, other) => {
      const low = encodeKey([p, MIN_PART], dirs);
      const high = encodeKey([p, MAX_PART], dirs);
      const inside = encodeKey([p, q, r], dirs);
      expect(low <= inside && inside <= high).toBe(true);
      const outside = encodeKey([other, q, r], dirs);
      expect(low <= outside && outside <= high).toBe(bsonCompare(other, p) === 0);
    }), { numRuns: 3000 });
  });
});
