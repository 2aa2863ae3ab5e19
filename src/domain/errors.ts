/**
 * Typed errors of the domain and engine. Each carries a status code (the
 * gRPC/Connect code it maps to) and a machine-readable ErrorDetail; the server
 * translates them 1:1 and never adds to or leaks from them.
 */
import { EntityKind } from "../../gen/mailroom/v1/common_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";

export { EntityKind, ErrorReason };

/** The status codes the domain uses (Connect's names for gRPC codes). */
export type ErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "out_of_range"
  | "resource_exhausted"
  | "unavailable"
  | "unauthenticated";

export interface ErrorDetails {
  reason: ErrorReason;
  /** Path of the offending request field, e.g. "dispatch.priority". */
  field?: string;
  entity?: { kind: EntityKind; id: string };
  metadata?: Record<string, string>;
}

export class MailroomError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: ErrorDetails,
  ) {
    super(message);
    this.name = "MailroomError";
  }
}

/**
 * The same error with its field named from the request's root: use cases
 * name a field of the entry they were given ("dispatch_id"), the handler
 * knows where that entry was ("dispatches[3]").
 */
export function underField(error: MailroomError, parent: string): MailroomError {
  if (!error.details.field) return error;
  return new MailroomError(error.code, error.message, { ...error.details, field: `${parent}.${error.details.field}` });
}

/** INVALID_ARGUMENT naming the field: `<field>: <problem>`. */
export function invalidField(field: string, problem: string): MailroomError {
  return new MailroomError("invalid_argument", `${field}: ${problem}`, {
    reason: ErrorReason.INVALID_FIELD,
    field,
  });
}

const entityNames: Record<EntityKind, string> = {
  [EntityKind.UNSPECIFIED]: "entity",
  [EntityKind.RUN]: "run",
  [EntityKind.AGENT]: "agent",
  [EntityKind.TOPIC]: "topic",
  [EntityKind.AGENT_POOL]: "agent pool",
  [EntityKind.MESSAGE]: "message",
  [EntityKind.WAKE_CONDITION]: "wake condition",
  [EntityKind.DISPATCH]: "dispatch",
  [EntityKind.THREAD]: "thread",
  [EntityKind.EVENT]: "event",
};

/** NOT_FOUND for one entity: `dispatch "d-1" not found` (and what to do, when there is something). */
export function notFound(kind: EntityKind, id: string, hint?: string): MailroomError {
  return new MailroomError("not_found", `${entityNames[kind]} ${JSON.stringify(id)} not found${hint ? `; ${hint}` : ""}`, {
    reason: ErrorReason.ENTITY_NOT_FOUND,
    entity: { kind, id },
  });
}

/** FAILED_PRECONDITION with the rule that refused the request. */
export function failedPrecondition(
  reason: ErrorReason,
  message: string,
  extra: Omit<ErrorDetails, "reason"> = {},
): MailroomError {
  return new MailroomError("failed_precondition", message, { reason, ...extra });
}
