/**
 * Index keys of the memory backend as single strings whose plain string
 * order (`<`) is MongoDB's index order: BSON's order of types, then of values
 * (numbers by value, strings by their UTF-8 bytes), per field ascending or
 * descending, field after field.
 *
 * A string per entry instead of an array of values: an index entry costs a
 * fraction of the memory (every character is a byte, 0 to 255, so V8 keeps
 * the string one byte per character), and comparing two keys is one native
 * string comparison instead of a call per field through a comparator.
 *
 * Each field's value is a type tag, then:
 * - a number: the 8 bytes of its IEEE 754 value, big-endian, made
 *   order-preserving (sign bit flipped for positives, all bits for negatives);
 * - a string: its UTF-8 bytes (so byte order is UTF-8 order), 0x00 escaped as
 *   0x00 0x01, then the terminator 0x00 0x00, so that a string sorts before
 *   its extensions;
 * - other values (rare in indexes): their type's tag and a canonical JSON
 *   text, which orders them consistently though not as BSON would.
 * A descending field's bytes are inverted (0xFF - b).
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

/**
 * Appended to a range's upper bound: above the first character of any field
 * that may follow (a tag, 0x10 to 0xA0, or an inverted one, 0x5F to 0xEF).
 */
export const TOP = "\u00ff";

const f64 = new Float64Array(1);
const bytes = new Uint8Array(f64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function encodeNumber(value: number): string {
  // One NaN, lowest of the numbers as in BSON; -0 equals 0.
  f64[0] = Number.isNaN(value) ? Number.NEGATIVE_INFINITY : value === 0 ? 0 : value;
  const big = LITTLE_ENDIAN ? [bytes[7]!, bytes[6]!, bytes[5]!, bytes[4]!, bytes[3]!, bytes[2]!, bytes[1]!, bytes[0]!] : [...bytes];
  const negative = (big[0]! & 0x80) !== 0;
  for (let i = 0; i < 8; i++) big[i] = negative ? 0xff - big[i]! : big[i]!;
  if (!negative) big[0] = big[0]! | 0x80;
  if (Number.isNaN(value)) big[7] = big[7]! - 1; // just below -Infinity
  return String.fromCharCode(...big);
}

const PLAIN_ASCII = /^[\u0001-\u007f]*$/;

function encodeString(value: string): string {
  // ASCII without NUL (most ids) is its own UTF-8.
  const utf8 = PLAIN_ASCII.test(value) ? value : Buffer.from(value, "utf8").toString("latin1");
  return `${utf8.includes("\u0000") ? utf8.replaceAll("\u0000", "\u0000\u0001") : utf8}\u0000\u0000`;
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
  for (let i = 0; i < encoded.length; i++) out += String.fromCharCode(0xff - encoded.charCodeAt(i));
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
