/**
 * Whether an answer fits in the largest message the server may send
 * (`--max-message-bytes`). A write whose stored record could not be served
 * back in one answer is refused before anything is stored: otherwise the call
 * fails after committing, and every later read of the record fails too.
 *
 * A record must fit in both encodings a reader may ask for: the protobuf
 * binary format and JSON (Connect, or gRPC with a JSON codec), which is
 * larger (field names, base64 bytes, quoted 64-bit numbers).
 */
import { type DescField, type DescMessage, type MessageShape, ScalarType, toBinary, toJsonString } from "@bufbuild/protobuf";
import { isReflectMessage, reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { ErrorReason, MailroomError } from "./errors.js";
import { byteLength } from "./validate.js";

export type WireFormat = "binary" | "json";

/**
 * JSON is never more than this many times a message's binary size plus
 * JSON_SLACK: the worst field is an enum, 2 bytes in binary and up to ~85 in
 * JSON (a 32-character field name and a 49-character value name); bytes grow
 * by 4/3, a control character to "\u0000". Below the bound the JSON size need
 * not be computed.
 */
const JSON_FACTOR = 48;
const JSON_SLACK = 256;

export function encodedSize<D extends DescMessage>(schema: D, message: MessageShape<D>, format: WireFormat): number {
  return format === "binary" ? toBinary(schema, message).length : jsonSize(schema, message);
}

/** Bytes fields at least this large are sized arithmetically in JSON, not encoded. */
const LARGE_BYTES = 1024;

/**
 * The size of the message in protobuf JSON. Large bytes fields (payloads)
 * are not base64-encoded to be measured: their JSON is 4 bytes for every 3
 * (padded), plus their key; the rest of the message is encoded without them
 * (and restored before returning).
 */
function jsonSize<D extends DescMessage>(schema: D, message: MessageShape<D>): number {
  const set: Array<{ at: ReflectMessage; field: DescField; value: Uint8Array }> = [];
  setAsideLargeBytes(reflect(schema, message), set);
  try {
    let size = byteLength(toJsonString(schema, message));
    for (const { field, value } of set) size += field.jsonName.length + 6 + 4 * Math.ceil(value.length / 3);
    return size;
  } finally {
    for (const { at, field, value } of set) at.set(field, value);
  }
}

function setAsideLargeBytes(message: ReflectMessage, set: Array<{ at: ReflectMessage; field: DescField; value: Uint8Array }>): void {
  for (const field of message.fields) {
    if (!message.isSet(field)) continue;
    if (field.fieldKind === "scalar" && field.scalar === ScalarType.BYTES) {
      const value = message.get(field) as Uint8Array;
      if (value.length >= LARGE_BYTES) {
        set.push({ at: message, field, value });
        message.set(field, new Uint8Array(0));
      }
    } else if (field.fieldKind === "message") {
      setAsideLargeBytes(message.get(field), set);
    } else if (field.fieldKind === "list" && field.listKind === "message") {
      for (const item of message.get(field)) if (isReflectMessage(item)) setAsideLargeBytes(item, set);
    }
  }
}

export class AnswerLimit {
  constructor(readonly maxBytes: number) {}

  /** The message's size in one encoding, exactly (for answers whose encoding is known: the call's). */
  sizeIn<D extends DescMessage>(schema: D, message: MessageShape<D>, format: WireFormat): number {
    return encodedSize(schema, message, format);
  }

  /** The larger of the message's two sizes, exactly (for what any reader may be served). */
  largestSize<D extends DescMessage>(schema: D, message: MessageShape<D>): number {
    return Math.max(encodedSize(schema, message, "binary"), encodedSize(schema, message, "json"));
  }

  /**
   * Whether the message, plus `extra` bytes of answer around it, fits in
   * both encodings; its JSON is measured only when it might not. Returns the
   * size that decided (the larger one when measured).
   */
  measure<D extends DescMessage>(schema: D, message: MessageShape<D>, extra = 0): { fits: boolean; size: number } {
    const binary = encodedSize(schema, message, "binary") + extra;
    if (binary * JSON_FACTOR + JSON_SLACK <= this.maxBytes) return { fits: true, size: binary };
    const size = Math.max(binary, encodedSize(schema, message, "json") + extra);
    return { fits: size <= this.maxBytes, size };
  }

  /** Whether the message fits in both encodings. */
  fits<D extends DescMessage>(schema: D, message: MessageShape<D>): boolean {
    return this.measure(schema, message).fits;
  }

  /** RESOURCE_EXHAUSTED (LIMIT_EXCEEDED) unless the message (plus `extra` bytes around it) fits; `what` says what the answer would hold. */
  require<D extends DescMessage>(schema: D, message: MessageShape<D>, what: string, field?: string, extra = 0): void {
    const { fits, size } = this.measure(schema, message, extra);
    if (!fits) throw this.exceeded(what, size, field);
  }

  exceeded(what: string, size: number, field?: string): MailroomError {
    return new MailroomError(
      "resource_exhausted",
      `${what} would take ${size} bytes, more than the server's largest message (--max-message-bytes ${this.maxBytes}); nothing was changed`,
      {
        reason: ErrorReason.LIMIT_EXCEEDED,
        ...(field ? { field } : {}),
        metadata: { limit: "max_message_bytes", max_message_bytes: String(this.maxBytes), answer_bytes: String(size) },
      },
    );
  }
}

/**
 * How many of the first items fit in `room` bytes, each taking `sizeOf`;
 * with `atLeastOne`, never none (an entry too large for any page is still
 * answered, and fails loudly, rather than skipped).
 */
export function countThatFit<T>(items: readonly T[], room: number, sizeOf: (item: T) => number, atLeastOne = false): number {
  let left = room;
  for (let i = 0; i < items.length; i++) {
    left -= sizeOf(items[i]!);
    if (left < 0) return atLeastOne ? Math.max(1, i) : i;
  }
  return items.length;
}
