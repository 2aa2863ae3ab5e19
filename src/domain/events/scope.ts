/**
 * Subscription scopes and cursors (seed: EventStreamScope, EventCursor,
 * cursor_compatible). A cursor is a journal position tagged with the scope
 * it was issued for; it is only accepted back by the same scope, so a client
 * cannot resume a run's stream with a cursor from another stream by mistake.
 */
import { create } from "@bufbuild/protobuf";
import { type EventCursor, EventCursorSchema, type EventStreamScope, EventStreamScopeSchema } from "../../../gen/mailroom/v1/event_pb.js";
import { ErrorReason, MailroomError } from "../errors.js";
import { type FilterSpec, fingerprint } from "./filter.js";

export type Scope =
  | { kind: "all" }
  | { kind: "run"; runId: string }
  | { kind: "agent"; agentId: string }
  | { kind: "filter"; fingerprint: string };

/** The scope of a subscription that uses a filter. */
export function filterScope(filter: FilterSpec): Scope {
  return { kind: "filter", fingerprint: fingerprint(filter) };
}

export function scopeToProto(scope: Scope): EventStreamScope {
  switch (scope.kind) {
    case "all":
      return create(EventStreamScopeSchema, { scope: { case: "all", value: {} } });
    case "run":
      return create(EventStreamScopeSchema, { scope: { case: "runId", value: scope.runId } });
    case "agent":
      return create(EventStreamScopeSchema, { scope: { case: "agentId", value: scope.agentId } });
    case "filter":
      return create(EventStreamScopeSchema, { scope: { case: "filterFingerprint", value: scope.fingerprint } });
  }
}

function sameScope(scope: Scope, proto: EventStreamScope | undefined): boolean {
  const given = proto?.scope;
  switch (scope.kind) {
    case "all":
      return given?.case === "all";
    case "run":
      return given?.case === "runId" && given.value === scope.runId;
    case "agent":
      return given?.case === "agentId" && given.value === scope.agentId;
    case "filter":
      return given?.case === "filterFingerprint" && given.value === scope.fingerprint;
  }
}

function describe(proto: EventStreamScope | undefined): string {
  const given = proto?.scope;
  if (!given?.case) return "no scope";
  return given.case === "all" ? "scope all" : `${given.case} ${JSON.stringify(given.value)}`;
}

export function cursor(scope: Scope, seq: number): EventCursor {
  return create(EventCursorSchema, { scope: scopeToProto(scope), eventSeq: BigInt(seq) });
}

/** The position a resume cursor stands for; INVALID_ARGUMENT (CURSOR_SCOPE_MISMATCH) for another scope's cursor. */
export function cursorPosition(field: string, given: EventCursor | undefined, scope: Scope): number | undefined {
  if (!given) return undefined;
  if (!sameScope(scope, given.scope)) {
    throw new MailroomError("invalid_argument", `${field}: the cursor belongs to ${describe(given.scope)}, not to this subscription's scope; resume each stream with its own cursors`, {
      reason: ErrorReason.CURSOR_SCOPE_MISMATCH,
      field: `${field}.scope`,
    });
  }
  const seq = Number(given.eventSeq);
  if (!Number.isSafeInteger(seq)) throw new MailroomError("invalid_argument", `${field}.event_seq: out of range`, { reason: ErrorReason.INVALID_FIELD, field: `${field}.event_seq` });
  return seq;
}
