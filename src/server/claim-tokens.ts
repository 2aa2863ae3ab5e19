/**
 * Claim tokens are secrets of the worker that claimed: only the responses of
 * the claiming RPCs carry them. Every other response, and every frame of
 * every stream, has each RunDispatch's claim_token emptied here, in one
 * place, so a new RPC that returns dispatches cannot leak them by default.
 *
 * Which responses can hold a RunDispatch is worked out once per message type
 * from the schema, so responses that cannot (event frames, pool records) cost
 * nothing.
 */
import type { DescMessage } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { type RunDispatch, RunDispatchSchema } from "../../gen/mailroom/v1/dispatch_pb.js";

/** The RPCs whose responses hand a fresh claim (and its token) to the caller. */
export const CLAIMING_RPCS: ReadonlySet<string> = new Set(["mailroom.v1.MailboxService/Claim", "mailroom.v1.MailboxService/ClaimDispatch"]);

const reachable = new Map<DescMessage, boolean>();

/** Whether a message of this type can contain a RunDispatch, at any depth. */
export function canHoldDispatch(desc: DescMessage): boolean {
  const known = reachable.get(desc);
  if (known !== undefined) return known;
  reachable.set(desc, false); // a recursive type reaches nothing new through itself
  const holds =
    desc.typeName === RunDispatchSchema.typeName ||
    desc.fields.some((field) => (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message") || (field.fieldKind === "map" && field.mapKind === "message")) && canHoldDispatch(field.message));
  reachable.set(desc, holds);
  return holds;
}

function isDispatch(value: object): value is RunDispatch {
  return (value as { $typeName?: string }).$typeName === RunDispatchSchema.typeName;
}

/** Empties the claim_token of every RunDispatch in a message (in place: each response is built for its call). */
export function withoutClaimTokens<T>(value: T): T {
  if (typeof value !== "object" || value === null || value instanceof Uint8Array) return value;
  if (Array.isArray(value)) {
    for (const item of value) withoutClaimTokens(item);
  } else if (isDispatch(value)) {
    value.claimToken = "";
  } else {
    for (const field of Object.values(value)) withoutClaimTokens(field);
  }
  return value;
}

async function* streamWithoutClaimTokens<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  for await (const message of messages) yield withoutClaimTokens(message);
}

export function claimTokenInterceptor(): Interceptor {
  return (next) => async (request) => {
    if (CLAIMING_RPCS.has(`${request.service.typeName}/${request.method.name}`) || !canHoldDispatch(request.method.output)) return next(request);
    const response = await next(request);
    if (!response.stream) return { ...response, message: withoutClaimTokens(response.message) };
    return { ...response, message: streamWithoutClaimTokens(response.message) };
  };
}
