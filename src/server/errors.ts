/**
 * What a client sees when a call fails. Typed errors keep their code, message
 * and machine-readable ErrorDetail; everything else becomes a generic message,
 * so stack traces, driver messages and collection or index names stay in the
 * server's log.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { EntityRefSchema } from "../../gen/mailroom/v1/common_pb.js";
import { type ErrorDetail, ErrorDetailSchema, ErrorReason, type ItemError, ItemErrorSchema } from "../../gen/mailroom/v1/errors_pb.js";
import { type ErrorCode, type ErrorDetails, MailroomError } from "../domain/errors.js";
import type { Logger } from "../log.js";
import { StoreFullError, StoreUnavailableError } from "../store/port.js";

const codes: Record<ErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  out_of_range: Code.OutOfRange,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  unauthenticated: Code.Unauthenticated,
};

function errorDetail(details: ErrorDetails): ErrorDetail {
  return create(ErrorDetailSchema, {
    reason: details.reason,
    field: details.field ?? "",
    entity: details.entity ? create(EntityRefSchema, details.entity) : undefined,
    metadata: details.metadata ?? {},
  });
}

/** A ConnectError carrying Mailroom's ErrorDetail. */
export function errorWithDetail(code: Code, message: string, details: ErrorDetails): ConnectError {
  return new ConnectError(message, code, undefined, [{ desc: ErrorDetailSchema, value: errorDetail(details) }]);
}

/** The failure of one entry of a batch, as the contract's ItemError (code is the gRPC number). */
export function itemError(error: MailroomError): ItemError {
  return create(ItemErrorSchema, { code: codes[error.code], message: error.message, detail: errorDetail(error.details) });
}

/** How open streams end when the server stops (the shutdown signal's reason). */
export function shuttingDownError(): ConnectError {
  return errorWithDetail(Code.Unavailable, "server is shutting down; reconnect (resuming from your last cursor where the stream has one)", {
    reason: ErrorReason.SHUTTING_DOWN,
  });
}

/** The INTERNAL errors toConnectError made of unexpected throws (bugs), as opposed to protocol errors a client caused. */
const serverFaults = new WeakSet<ConnectError>();

/** Whether the error is an unexpected failure of the server (it was logged, with the reference its message names). */
export function isServerFault(error: ConnectError): boolean {
  return serverFaults.has(error);
}

/** Maps any thrown value to the ConnectError the client receives. */
export function toConnectError(error: unknown, logger: Logger): ConnectError {
  if (error instanceof MailroomError) return errorWithDetail(codes[error.code], error.message, error.details);
  if (error instanceof ConnectError) return error;
  if (error instanceof StoreFullError) {
    logger.warn({ max_bytes: error.maxBytes }, "the in-memory store is full; a write was refused");
    return errorWithDetail(
      Code.ResourceExhausted,
      `the in-memory store is full (--memory-store-max-bytes ${error.maxBytes}); nothing was written. Retention deletes terminal dispatches and old journal events; or raise the limit`,
      { reason: ErrorReason.LIMIT_EXCEEDED, metadata: { limit: "memory_store_max_bytes", max_bytes: String(error.maxBytes) } },
    );
  }
  if (error instanceof StoreUnavailableError) {
    logger.warn({ error }, "store unavailable");
    return errorWithDetail(Code.Unavailable, "the store is temporarily unavailable; retry the request", {
      reason: ErrorReason.STORE_UNAVAILABLE,
    });
  }
  // A client that went away or whose deadline passed aborts the call's signal;
  // that is the client's doing, not an internal error.
  if (error instanceof Error && error.name === "AbortError") return new ConnectError("the call was cancelled", Code.Canceled);
  const reference = randomBytes(6).toString("hex");
  logger.error({ error, error_reference: reference }, "internal error");
  const fault = new ConnectError(`internal error (reference ${reference})`, Code.Internal);
  serverFaults.add(fault);
  return fault;
}
