/**
 * The memory backend's fast update operators do exactly what its general
 * ones (mingo's, comparing values in BSON order) do:
 * same document afterwards, same paths reported changed, on random documents
 * and updates of top-level fields; and they decline what they do not handle.
 */
import fc from "fast-check";
import { UPDATE_OPERATOR_FUNCTIONS } from "../../src/store/memory/bson-order.js";
import { describe, expect, it } from "vitest";
import { fastOperator } from "../../src/store/memory/fast-update.js";

const GENERAL = UPDATE_OPERATOR_FUNCTIONS;

const FIELDS = ["a", "b", "outbox"];
const scalar = fc.oneof(fc.constant(null), fc.integer({ min: -3, max: 3 }), fc.double({ noNaN: true, min: -5, max: 5 }), fc.constantFrom("", "x", "y", "~", "\uff01", "\u{1f600}"), fc.boolean());
const value = fc.oneof(scalar, fc.array(scalar, { maxLength: 3 }), fc.record({ k: scalar }), fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(10_000) }));
const doc = fc.dictionary(fc.constantFrom(...FIELDS), value, { maxKeys: 3 });

const update = fc.oneof(
  fc.record({ name: fc.constantFrom("$set", "$min", "$max"), expr: fc.dictionary(fc.constantFrom(...FIELDS), value, { minKeys: 1, maxKeys: 3 }) }),
  fc.record({ name: fc.constant("$unset"), expr: fc.dictionary(fc.constantFrom(...FIELDS), fc.constant(""), { minKeys: 1, maxKeys: 3 }) }),
  fc.record({ name: fc.constant("$inc"), expr: fc.dictionary(fc.constantFrom(...FIELDS), fc.integer({ min: -3, max: 3 }), { minKeys: 1, maxKeys: 3 }) }),
  fc.record({
    name: fc.constant("$push"),
    expr: fc.dictionary(
      fc.constantFrom(...FIELDS),
      fc.oneof(scalar, fc.record({ $each: fc.array(value, { maxLength: 3 }) }), fc.record({ $each: fc.array(scalar, { maxLength: 3 }), $slice: fc.integer({ min: -3, max: 3 }) })),
      { minKeys: 1, maxKeys: 2 },
    ),
  }),
);

describe("memory backend: fast update operators", () => {
  it("leave a document and report its changed paths exactly as the general operators do", () => {
    fc.assert(
      fc.property(doc, update, (original, { name, expr }) => {
        const fast = fastOperator(name, expr);
        expect(fast).toBeDefined();
        const mine = structuredClone(original);
        const theirs = structuredClone(original);
        const changedMine = fast!(mine);
        const changedTheirs = GENERAL[name]!(expr)(theirs);
        expect(changedMine).toEqual(changedTheirs);
        expect(mine).toEqual(theirs);
      }),
      { numRuns: 3000 },
    );
  });

  it("decline dotted and positional paths, $-prefixed names, other operators and push modifiers they do not implement", () => {
    expect(fastOperator("$set", { "a.b": 1 })).toBeUndefined();
    expect(fastOperator("$set", { "a.$": 1 })).toBeUndefined();
    expect(fastOperator("$set", { $bad: 1 })).toBeUndefined();
    expect(fastOperator("$pull", { a: 1 })).toBeUndefined();
    expect(fastOperator("$push", { a: { $each: [1], $sort: 1 } })).toBeUndefined();
    expect(fastOperator("$push", { a: { $each: [1], $position: 0 } })).toBeUndefined();
    expect(fastOperator("$inc", { a: "1" })).toBeUndefined();
  });
});
