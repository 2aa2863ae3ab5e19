/**
 * The memory backend's direct filter test answers exactly as its general
 * one (mingo, strings in BSON order) on random documents and filters of the
 * simple shapes, including documents holding arrays, documents and dates in
 * the tested fields (those go to the general test); and it declines shapes
 * it does not handle.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { generalFilter } from "../../src/store/memory/bson-order.js";
import { simpleFilter } from "../../src/store/memory/simple-filter.js";

const FIELDS = ["a", "b", "status"];
const scalar = fc.oneof(
  fc.constant(null),
  fc.integer({ min: -3, max: 3 }),
  fc.double({ noNaN: true, min: -5, max: 5 }),
  fc.constantFrom(0, -0, Infinity, -Infinity),
  fc.constantFrom("", "x", "y", "~", "\uff01", "\u{1f600}", "QUEUED", "CLAIMED"),
  fc.boolean(),
);
const value = fc.oneof(scalar, scalar, scalar, fc.array(scalar, { maxLength: 3 }), fc.record({ k: scalar }).map((inner) => ({ ...inner })), fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(10_000) }));
// Plain objects, as stored documents are (mingo does not take objects without a prototype).
const doc = fc.dictionary(fc.constantFrom(...FIELDS), value, { maxKeys: 3 }).map((fields) => ({ ...fields }));
const rangeOperand = fc.oneof(fc.integer({ min: -3, max: 3 }), fc.constantFrom(Infinity, -Infinity, "", "x", "~", "\uff01", "\u{1f600}"));
const operators = fc.oneof(
  fc.record({ $eq: scalar }),
  fc.record({ $ne: scalar }),
  fc.record({ $in: fc.array(scalar, { maxLength: 4 }) }),
  fc.record({ $nin: fc.array(scalar, { maxLength: 4 }) }),
  fc.record({ $exists: fc.boolean() }),
  fc.record({ $gt: rangeOperand }),
  fc.record({ $gte: rangeOperand }),
  fc.record({ $lt: rangeOperand }),
  fc.record({ $lte: rangeOperand }),
  fc.record({ $gte: rangeOperand, $lt: rangeOperand }),
  fc.record({ $exists: fc.constant(true), $ne: scalar }),
);
const filter = fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(scalar, operators.map((operator) => ({ ...operator }))), { maxKeys: 3 }).map((fields) => ({ ...fields }));

describe("memory backend: direct filter test", () => {
  it("matches exactly the documents the general filter matches", () => {
    fc.assert(
      fc.property(filter, fc.array(doc, { minLength: 1, maxLength: 5 }), (conditions, docs) => {
        const general = generalFilter(conditions);
        const simple = simpleFilter(conditions, () => general);
        expect(simple).toBeDefined();
        for (const candidate of docs) expect(simple!(candidate)).toBe(general.test(candidate));
      }),
      { numRuns: 5000 },
    );
  });

  it("declines dotted fields, logical operators, operands that are documents, arrays, dates or NaN, and other operators", () => {
    const never = () => generalFilter({});
    expect(simpleFilter({ "a.b": 1 }, never)).toBeUndefined();
    expect(simpleFilter({ $or: [{ a: 1 }] }, never)).toBeUndefined();
    expect(simpleFilter({ a: { k: 1 } }, never)).toBeUndefined();
    expect(simpleFilter({ a: [1] }, never)).toBeUndefined();
    expect(simpleFilter({ a: new Date(0) }, never)).toBeUndefined();
    expect(simpleFilter({ a: Number.NaN }, never)).toBeUndefined();
    expect(simpleFilter({ a: { $gt: null } }, never)).toBeUndefined();
    expect(simpleFilter({ a: { $size: 1 } }, never)).toBeUndefined();
    expect(simpleFilter({ a: {} }, never)).toBeUndefined();
  });
});
