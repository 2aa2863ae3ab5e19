/**
 * What a client is told when its request body does not decode.
 *
 * connect-es (2.2) reports a protobuf binary body that does not decode as
 * INTERNAL ("parse binary: ..."), because its serialization is shared with the
 * client side and hard-codes that code. A malformed request is the caller's
 * error, INVALID_ARGUMENT, as connect-go and grpc-go report it.
 *
 * A JSON body is refused with INVALID_ARGUMENT already, but protobuf-es names
 * only the message type or enum it was decoding (`cannot decode enum
 * mailroom.v1.RunDispatchStatus from JSON: "ACKED"`). The request's schema
 * says where that type occurs, so the error names the field as every other
 * INVALID_ARGUMENT does (`statuses`), with an ErrorDetail.
 */
import type { DescEnum, DescField, DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { errorWithDetail } from "./errors.js";

const BINARY_FAILURE = "parse binary:";
/** Message nesting followed when looking for where a type occurs (the contract nests far less). */
const MAX_DEPTH = 8;

/** What protobuf-es could not decode, from its error. */
type Culprit = { field: DescField } | { message: string; key?: string } | { enumName: string };

function culpritOf(error: ConnectError): Culprit | undefined {
  const cause = error.cause instanceof Error ? error.cause : undefined;
  const fieldError = cause?.cause as { field?: () => unknown } | undefined;
  const field = typeof fieldError?.field === "function" ? fieldError.field() : undefined;
  if (field && typeof field === "object" && (field as { kind?: unknown }).kind === "field") return { field: field as DescField };
  const text = error.rawMessage;
  const unknownKey = /^cannot decode message ([\w.]+) from JSON: key "(.*)" is unknown$/.exec(text);
  if (unknownKey) return { message: unknownKey[1]!, key: unknownKey[2]! };
  const badEnum = /^cannot decode enum ([\w.]+) from JSON/.exec(text);
  if (badEnum) return { enumName: badEnum[1]! };
  const badMessage = /^cannot decode message ([\w.]+) from JSON/.exec(text);
  if (badMessage) return { message: badMessage[1]! };
  return undefined;
}

function matches(field: DescField, culprit: Culprit): boolean {
  if ("field" in culprit) return field === culprit.field;
  if ("enumName" in culprit) return (field as { enum?: DescEnum }).enum?.typeName === culprit.enumName;
  return messageOf(field)?.typeName === culprit.message;
}

/** The message type of a message field, or of a list's items or a map's values. */
function messageOf(field: DescField): DescMessage | undefined {
  return (field as { message?: DescMessage }).message;
}

/** The request fields (snake_case paths, shortest first) where the culprit can occur. */
function pathsTo(root: DescMessage, culprit: Culprit): string[] {
  if ("message" in culprit && culprit.message === root.typeName) return culprit.key === undefined ? [""] : [culprit.key];
  const found: string[] = [];
  let level: Array<{ desc: DescMessage; path: string; seen: ReadonlySet<string> }> = [{ desc: root, path: "", seen: new Set([root.typeName]) }];
  for (let depth = 0; depth < MAX_DEPTH && level.length > 0 && found.length === 0; depth++) {
    const next: typeof level = [];
    for (const { desc, path, seen } of level) {
      for (const field of desc.fields) {
        const here = `${path}${field.name}`;
        if (matches(field, culprit)) found.push("key" in culprit && culprit.key !== undefined ? `${here}.${culprit.key}` : here);
        const nested = messageOf(field);
        if (nested && !seen.has(nested.typeName)) next.push({ desc: nested, path: `${here}.`, seen: new Set([...seen, nested.typeName]) });
      }
    }
    level = next;
  }
  return found;
}

/**
 * The error a client should get for a body that did not decode (`error` as
 * connect-es raised it), or undefined when it is some other error.
 */
export function decodeFailure(error: unknown, input: DescMessage): ConnectError | undefined {
  if (!(error instanceof ConnectError)) return undefined;
  if (error.code === Code.Internal && error.rawMessage.startsWith(BINARY_FAILURE)) {
    return new ConnectError(`the request body is not a valid ${input.typeName} message (${error.rawMessage})`, Code.InvalidArgument);
  }
  if (error.code !== Code.InvalidArgument || !error.rawMessage.startsWith("cannot decode ")) return undefined;
  const culprit = culpritOf(error);
  const [field, ...others] = culprit ? pathsTo(input, culprit) : [];
  if (field === undefined || field === "") {
    return new ConnectError(`the request body is not a valid ${input.typeName} message in JSON (${error.rawMessage})`, Code.InvalidArgument);
  }
  const where = others.length > 0 ? ` (or ${others.join(", ")})` : "";
  return errorWithDetail(Code.InvalidArgument, `${field}${where}: ${problemOf(culprit!, error.rawMessage)}`, { reason: ErrorReason.INVALID_FIELD, field });
}

function problemOf(culprit: Culprit, raw: string): string {
  if ("key" in culprit && culprit.key !== undefined) return `is not a field of ${culprit.message}`;
  if ("enumName" in culprit) {
    const value = /from JSON: (.*)$/.exec(raw)?.[1] ?? "the value";
    return `${value} is not a value of ${culprit.enumName} (values are named in full, as in the contract)`;
  }
  return `does not decode (${raw})`;
}
