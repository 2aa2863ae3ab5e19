/**
 * String order as BSON has it: UTF-8 bytes, not JavaScript's UTF-16 code units.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compareUtf8, hasLoneSurrogate } from "../../src/domain/order.js";

const utf8Order = (a: string, b: string) => Math.sign(Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));

describe("compareUtf8 orders strings as their UTF-8 bytes (BSON's order)", () => {
  it("puts U+FF01 before U+1F600, which JavaScript's < orders the other way", () => {
    expect("\u{1F600}" < "\uFF01").toBe(true);
    expect(compareUtf8("\uFF01", "\u{1F600}")).toBeLessThan(0);
    expect(compareUtf8("\u{1F600}", "\uFF01")).toBeGreaterThan(0);
  });

  it("agrees with a byte comparison of the UTF-8 encodings for any well-formed strings", () => {
    const text = fc.string({ unit: "binary", maxLength: 8 });
    fc.assert(fc.property(text, text, (a, b) => {
      expect(Math.sign(compareUtf8(a, b))).toBe(utf8Order(a, b));
    }), { numRuns: 2000 });
  });

  it("is zero only for equal strings, and a prefix sorts first", () => {
    expect(compareUtf8("abc", "abc")).toBe(0);
    expect(compareUtf8("ab", "abc")).toBeLessThan(0);
    expect(compareUtf8("", "a")).toBeLessThan(0);
  });
});

describe("hasLoneSurrogate finds what UTF-8 cannot carry", () => {
  it("accepts well-formed strings, pairs included", () => {
    expect(hasLoneSurrogate("plain")).toBe(false);
    expect(hasLoneSurrogate("smile \u{1F600}")).toBe(false);
  });

  it("finds a lone high or low surrogate anywhere", () => {
    expect(hasLoneSurrogate("a\uD800")).toBe(true);
    expect(hasLoneSurrogate("\uDC00a")).toBe(true);
    expect(hasLoneSurrogate("\uDC00\uD800")).toBe(true);
  });
});
