/**
 * The memory backend's fast update operators do exactly what mingo's do:
 * same document afterwards, same paths reported changed, on random documents
 * and updates of top-level fields; and they decline what they do not handle.
 */
import fc from "fast-check";
import * as updateOperators from "mingo/operators/update";
import { describe, expect, it } from "vitest";
import { fastOperator } from "../../src/store/memory/fast-update.js";

type Operator = (expr: Record<string, unknown>) => (doc: Record<string, unknown>) => string[];
const MINGO = updateOperators as unknown as Record<string, Operator>;

const FIELDS = ["a", "b", "outbox"];
const scalar = fc.oneof(fc.constant(null), fc.integer({ min: -3, max: 3 }), fc.double({ noNaN: true, min: -5, max: 5 }), fc.constantFrom("", "x", "y", "~"), fc.boolean());
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
  it("leave a document and report its changed paths exactly as mingo's operators do", () => {
    fc.assert(
      fc.property(doc, update, (original, { name, expr }) => {
        const fast = fastOperator(name, expr);
        expect(fast).toBeDefined();
        const mine = structuredClone(original);
        const theirs = structuredClone(original);
        const changedMine = fast!(mine);
        const changedTheirs = MINGO[name]!(expr)(theirs);
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
