/**
 * String order as MongoDB has it. BSON compares strings by their UTF-8 bytes,
 * which is Unicode code point order; JavaScript's `<` and `localeCompare`
 * compare UTF-16 code units, which differ from it whenever a character above
 * U+FFFF (a surrogate pair, 0xD800-0xDFFF) meets one in U+E000-U+FFFF: "\uFF01"
 * is below "\u{1F600}" in BSON and above it in JavaScript. Anything the engine
 * orders or compares in JavaScript that MongoDB also orders (ids, ranks, page
 * keys) must use this, or the two disagree about "after".
 */

/** Negative, zero or positive as `a` sorts before, with or after `b` in UTF-8 byte (code point) order. */
export function compareUtf8(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      // Below 0xD800 code units are code points. From there on, a surrogate
      // (the start of a code point above U+FFFF) sorts after U+E000-U+FFFF.
      if (x < 0xd800 || y < 0xd800) return x - y;
      return rank(x) - rank(y);
    }
  }
  return a.length - b.length;
}

/** Surrogates moved above U+E000-U+FFFF, keeping each group's own order. */
function rank(unit: number): number {
  return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}

/** Whether a string holds a lone surrogate (which UTF-8, and so BSON and protobuf, cannot carry: it becomes U+FFFD). */
export function hasLoneSurrogate(value: string): boolean {
  return LONE_SURROGATE.test(value);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
