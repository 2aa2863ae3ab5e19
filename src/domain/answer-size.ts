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
import { type DescMessage, type MessageShape, toBinary, toJsonString } from "@bufbuild/protobuf";
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
  return format === "binary" ? toBinary(schema, message).length : byteLength(toJsonString(schema, message));
}

export class AnswerLimit {
  constructor(readonly maxBytes: number) {}

  /** The larger of the message's sizes in the two encodings, or just the binary one when JSON surely fits too. */
  servedSize<D extends DescMessage>(schema: D, message: MessageShape<D>): number {
    const binary = encodedSize(schema, message, "binary");
    if (binary * JSON_FACTOR + JSON_SLACK <= this.maxBytes) return binary;
    return Math.max(binary, encodedSize(schema, message, "json"));
  }

  /** Whether the message, served in either encoding, fits. */
  fits<D extends DescMessage>(schema: D, message: MessageShape<D>): boolean {
    return this.servedSize(schema, message) <= this.maxBytes;
  }

  /** RESOURCE_EXHAUSTED (LIMIT_EXCEEDED) unless the message fits; `what` says what the answer would hold. */
  require<D extends DescMessage>(schema: D, message: MessageShape<D>, what: string, field?: string): void {
    const size = this.servedSize(schema, message);
    if (size > this.maxBytes) throw this.exceeded(what, size, field);
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
