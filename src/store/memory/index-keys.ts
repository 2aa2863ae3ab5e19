/**
 * Index keys of the memory backend as single strings whose plain string
 * order (`<`, UTF-16 code units) is MongoDB's index order: BSON's order of
 * types, then of values (numbers by value, strings by their UTF-8 bytes), per
 * field ascending or descending, field after field.
 *
 * A string per entry instead of an array of values: an index entry costs a
 * fraction of the memory, and comparing two keys is one native string
 * comparison instead of a call per field through a general comparator.
 *
 * Each field's value is a type tag, then:
 * - a number: 4 code units holding its IEEE 754 bits, made order-preserving
 *   (sign bit flipped for positives, all bits for negatives);
 * - a string: its code units remapped so that code-unit order is code point
 *   order (which is UTF-8 byte order), U+0000 escaped, and a terminator, so
 *   that a string sorts before its extensions;
 * - other values (rare in indexes): their type's tag and a canonical JSON
 *   text, which orders them consistently though not as BSON would.
 * A descending field's code units are inverted (0xFFFF - c).
 */

/** A key part that sorts below / above every value (range bounds). */
export const MIN_PART = Symbol("MinKey");
export const MAX_PART = Symbol("MaxKey");

// BSON comparison order of types (MongoDB "Comparison/Sort Order").
const TAG_NULL = 0x10; // null and missing
const TAG_NUMBER = 0x20;
const TAG_STRING = 0x30;
const TAG_OBJECT = 0x40;
const TAG_ARRAY = 0x50;
const TAG_BINARY = 0x60;
const TAG_BOOLEAN = 0x80;
const TAG_DATE = 0x90;
const TAG_OTHER = 0xa0;

/** Appended to a range's upper bound: above any encoded continuation (tags and inverted tags stay below it). */
export const TOP = "\uffff";

const f64 = new Float64Array(1);
const u16 = new Uint16Array(f64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function encodeNumber(value: number): string {
  // One NaN, lowest of the numbers as in BSON; -0 equals 0.
  f64[0] = Number.isNaN(value) ? Number.NEGATIVE_INFINITY : value === 0 ? 0 : value;
  let units = LITTLE_ENDIAN ? [u16[3]!, u16[2]!, u16[1]!, u16[0]!] : [u16[0]!, u16[1]!, u16[2]!, u16[3]!];
  if (units[0]! & 0x8000) units = units.map((u) => 0xffff - u);
  else units[0] = units[0]! | 0x8000;
  if (Number.isNaN(value)) units[3] = units[3]! - 1; // just below -Infinity
  return String.fromCharCode(...units);
}

function encodeString(value: string): string {
  let out = "";
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0) out += "\u0000\u0001";
    else if (c >= 0xd800 && c <= 0xdfff) out += String.fromCharCode(c + 0x2000);
    else if (c >= 0xe000) out += String.fromCharCode(c - 0x800);
    else out += value[i];
  }
  return `${out}\u0000\u0000`;
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v instanceof Uint8Array) return Array.from(v);
    if (v !== null && typeof v === "object" && !Array.isArray(v)) return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)));
    return v;
  });
}

/** One field's value as it sorts ascending. */
export function encodeValue(value: unknown): string {
  if (value === null || value === undefined) return String.fromCharCode(TAG_NULL);
  switch (typeof value) {
    case "number":
      return String.fromCharCode(TAG_NUMBER) + encodeNumber(value);
    case "string":
      return String.fromCharCode(TAG_STRING) + encodeString(value);
    case "boolean":
      return String.fromCharCode(TAG_BOOLEAN, value ? 1 : 0);
    default:
  }
  if (value instanceof Date) return String.fromCharCode(TAG_DATE) + encodeNumber(value.getTime());
  if (value instanceof Uint8Array) return String.fromCharCode(TAG_BINARY) + encodeString(canonical(value));
  if (Array.isArray(value)) return String.fromCharCode(TAG_ARRAY) + encodeString(canonical(value));
  if (typeof value === "object") return String.fromCharCode(TAG_OBJECT) + encodeString(canonical(value));
  return String.fromCharCode(TAG_OTHER) + encodeString(String(value));
}

function invert(encoded: string): string {
  let out = "";
  for (let i = 0; i < encoded.length; i++) out += String.fromCharCode(0xffff - encoded.charCodeAt(i));
  return out;
}

/**
 * Encodes key parts field by field (direction 1 or -1 each). A MIN_PART or
 * MAX_PART ends the key: nothing, or TOP, after the parts before it.
 */
export function encodeKey(parts: readonly unknown[], directions: readonly (1 | -1)[]): string {
  let out = "";
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (part === MIN_PART) return out;
    if (part === MAX_PART) return out + TOP;
    const encoded = encodeValue(part);
    out += (directions[i] ?? 1) === -1 ? invert(encoded) : encoded;
  }
  return out;
}
