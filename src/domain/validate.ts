/**
 * Checks for request fields. Each throws INVALID_ARGUMENT naming the field
 * (as a path from the request, in the contract's snake_case) and the rule.
 */
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { invalidField } from "./errors.js";
import { hasLoneSurrogate } from "./order.js";

const encoder = new TextEncoder();
export const MAX_ID_BYTES = 256;
// Control characters (C0, DEL, C1) are never part of an identifier.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

export function byteLength(value: string): number {
  return encoder.encode(value).length;
}

/** An identifier: 1 to 256 bytes of UTF-8 without control characters. */
export function requireId(field: string, value: string): string {
  if (value === "") throw invalidField(field, "is required");
  return checkId(field, value);
}

/** An identifier that may be empty (then undefined). */
export function optionalId(field: string, value: string): string | undefined {
  return value === "" ? undefined : checkId(field, value);
}

function checkId(field: string, value: string): string {
  if (byteLength(value) > MAX_ID_BYTES) throw invalidField(field, `must be at most ${MAX_ID_BYTES} bytes`);
  if (CONTROL.test(value)) throw invalidField(field, "must not contain control characters");
  return wellFormed(field, value);
}

/**
 * A lone surrogate (possible in JSON's "\ud800") has no UTF-8 form: MongoDB
 * would store U+FFFD instead, so two different ids would become one, and
 * a binary reply could not carry it back.
 */
function wellFormed(field: string, value: string): string {
  if (hasLoneSurrogate(value)) throw invalidField(field, "must be well-formed Unicode (it holds a lone surrogate)");
  return value;
}

/** Free text up to a size. */
export function boundedText(field: string, value: string, maxBytes: number): string {
  if (byteLength(value) > maxBytes) throw invalidField(field, `must be at most ${maxBytes} bytes (got ${byteLength(value)})`);
  return wellFormed(field, value);
}

export function requirePresent<T>(field: string, value: T | undefined): T {
  if (value === undefined) throw invalidField(field, "is required");
  return value;
}

export function intInRange(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw invalidField(field, `must be ${min} to ${max} (got ${value})`);
  return value;
}

/** A page size: 0 means the default. */
export function pageSize(field: string, value: number, defaultSize: number, max: number): number {
  if (value === 0) return defaultSize;
  return intInRange(field, value, 1, max);
}

export function durationToMs(field: string, duration: Duration): number {
  const seconds = Number(duration.seconds);
  if (!Number.isSafeInteger(seconds) || duration.nanos < -999_999_999 || duration.nanos > 999_999_999) {
    throw invalidField(field, "is not a valid duration");
  }
  if (seconds < 0 || duration.nanos < 0) throw invalidField(field, "must not be negative");
  return seconds * 1000 + Math.floor(duration.nanos / 1_000_000);
}

/** A duration within [minMs, maxMs] (minMs 1 reads "above 0"). */
export function durationInRange(field: string, duration: Duration, minMs: number, maxMs: number): number {
  const ms = durationToMs(field, duration);
  if (ms < minMs || ms > maxMs) {
    const range = minMs === 0 ? `0 to ${describeMs(maxMs)}` : `${minMs === 1 ? "above 0" : `at least ${describeMs(minMs)}`} and at most ${describeMs(maxMs)}`;
    throw invalidField(field, `must be ${range} (got ${describeMs(ms)})`);
  }
  return ms;
}

export function timestampToMs(field: string, timestamp: Timestamp): number {
  const seconds = Number(timestamp.seconds);
  // RFC 3339 range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31.
  if (!Number.isSafeInteger(seconds) || seconds < -62_135_596_800 || seconds > 253_402_300_799 || timestamp.nanos < 0 || timestamp.nanos > 999_999_999) {
    throw invalidField(field, "is not a valid timestamp");
  }
  return seconds * 1000 + Math.floor(timestamp.nanos / 1_000_000);
}

/** The earliest instant any request field may name: the Unix epoch. */
export const EARLIEST_INSTANT = "1970-01-01T00:00:00Z";

/**
 * An instant from the Unix epoch to `maxAheadMs` after the server's clock
 * (`now`): what a schedule or an expiry may name. Anything later (year 9999)
 * is a mistake, and before 1970 no clock runs.
 */
export function instantUpTo(field: string, timestamp: Timestamp, now: number, maxAheadMs: number): number {
  const ms = timestampToMs(field, timestamp);
  if (ms < 0 || ms > now + maxAheadMs) {
    throw invalidField(field, `must be from ${EARLIEST_INSTANT} to ${describeMs(maxAheadMs)} after the server's clock (got ${new Date(ms).toISOString()})`);
  }
  return ms;
}

export function describeMs(ms: number): string {
  if (ms % 86_400_000 === 0 && ms >= 86_400_000) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0 && ms >= 3_600_000) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms >= 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** A list of at most `max` entries. */
export function boundedList<T>(field: string, values: readonly T[], max: number, min = 0): readonly T[] {
  if (values.length < min || values.length > max) {
    throw invalidField(field, min > 0 ? `must have ${min} to ${max} entries (got ${values.length})` : `must have at most ${max} entries (got ${values.length})`);
  }
  return values;
}

/** A string map of at most `max` entries whose keys and values are at most `maxBytes` each (each named `field["key"]`). */
export function boundedMap(field: string, map: Readonly<Record<string, string>>, max: number, maxBytes: number): void {
  const entries = Object.entries(map);
  boundedList(field, entries, max);
  for (const [key, value] of entries) {
    boundedText(`${field}[${JSON.stringify(key)}]`, key, maxBytes);
    boundedText(`${field}[${JSON.stringify(key)}]`, value, maxBytes);
  }
}

/** A ContentRef as the contract bounds it: uri at most 2048 bytes, media type and digest at most 256. */
export function contentRef(field: string, ref: { uri: string; mediaType: string; digest: string }): void {
  boundedText(`${field}.uri`, ref.uri, 2048);
  boundedText(`${field}.media_type`, ref.mediaType, 256);
  boundedText(`${field}.digest`, ref.digest, 256);
}

/** Inline bytes with their media type: data at most `maxBytes`, media type at most 256 bytes. */
export function inlinePayload(field: string, payload: { data: Uint8Array; mediaType: string }, maxBytes: number): void {
  if (payload.data.length > maxBytes) throw invalidField(`${field}.data`, `must be at most ${maxBytes} bytes (got ${payload.data.length})`);
  boundedText(`${field}.media_type`, payload.mediaType, 256);
}

export const DEFAULT_HEARTBEAT_MS = 15_000;

/** A server stream's idle heartbeat interval: 1 to 300 seconds; unset = 15 seconds. */
export function heartbeatInterval(field: string, duration: Duration | undefined): number {
  return duration === undefined ? DEFAULT_HEARTBEAT_MS : durationInRange(field, duration, 1_000, 300_000);
}
