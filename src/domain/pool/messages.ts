/**
 * Run messages (seed: RunMessage, MessageStatus, MessageReceipt): checking
 * what a run sends, and the statuses a message goes through.
 */
import { create } from "@bufbuild/protobuf";
import { EventKind } from "../../../gen/mailroom/v1/event_pb.js";
import { MessageStatus, type RunMessage, RunMessageSchema } from "../../../gen/mailroom/v1/pool_pb.js";
import { invalidField } from "../errors.js";
import { entityRefs } from "../events/publish.js";
import { newId } from "../ids.js";
import { boundedList, boundedMap, boundedText, contentRef, durationInRange, inlinePayload, instantUpTo, intInRange, optionalId, requireId, requirePresent } from "../validate.js";
import { type AddressTarget, MAX_POLICIES, parseAddress } from "./pool.js";

export { MessageStatus };

export const MAX_BODY_BYTES = 64 * 1024;
export const MAX_RESPONSE_TIMEOUT_MS = 30 * 86_400_000;
/** How far ahead of the server's clock a message's expires_at may be. */
export const MAX_EXPIRY_AHEAD_MS = 365 * 86_400_000;

export type MessageStatusName = "ACCEPTED" | "DELIVERED" | "RESPONDED" | "FAILED" | "TIMED_OUT" | "EXPIRED" | "CANCELLED";

export const STATUS_PROTO: Record<MessageStatusName, MessageStatus> = {
  ACCEPTED: MessageStatus.ACCEPTED,
  DELIVERED: MessageStatus.DELIVERED,
  RESPONDED: MessageStatus.RESPONDED,
  FAILED: MessageStatus.FAILED,
  TIMED_OUT: MessageStatus.TIMED_OUT,
  EXPIRED: MessageStatus.EXPIRED,
  CANCELLED: MessageStatus.CANCELLED,
};

/** The seed's event kind and redacted summary of each status. */
export const STATUS_EVENT: Record<MessageStatusName, { kind: EventKind; summary: string }> = {
  ACCEPTED: { kind: EventKind.RUN_MESSAGE_ACCEPTED, summary: "run message accepted" },
  DELIVERED: { kind: EventKind.RUN_MESSAGE_DELIVERED, summary: "run message delivered" },
  RESPONDED: { kind: EventKind.RUN_MESSAGE_RESPONDED, summary: "run message responded" },
  FAILED: { kind: EventKind.RUN_MESSAGE_FAILED, summary: "run message failed" },
  TIMED_OUT: { kind: EventKind.RUN_MESSAGE_TIMED_OUT, summary: "run message timed out" },
  EXPIRED: { kind: EventKind.RUN_MESSAGE_EXPIRED, summary: "run message expired" },
  CANCELLED: { kind: EventKind.RUN_MESSAGE_CANCELLED, summary: "run message cancelled" },
};

/** A message checked and completed (ids filled in), ready to send. */
export interface OutgoingMessage {
  message: RunMessage;
  target: AddressTarget;
  policies: string[];
  expiresAt?: number;
  expectedResponses?: number;
  responseTimeoutMs?: number;
}

/**
 * Checks a message. `reply` is true for Respond (reply_to required, `to`
 * optional); Send refuses reply_to. `now` is the server's clock, which
 * bounds expires_at.
 */
export function parseMessage(field: string, input: RunMessage | undefined, poolId: string, reply: boolean, now: number): OutgoingMessage {
  const message = create(RunMessageSchema, requirePresent(field, input));
  message.messageId = optionalId(`${field}.message_id`, message.messageId) ?? newId();
  message.idempotencyKey = optionalId(`${field}.idempotency_key`, message.idempotencyKey) ?? message.messageId;
  requireId(`${field}.from_run_id`, message.fromRunId);
  if (reply) requireId(`${field}.reply_to`, message.replyTo);
  else if (message.replyTo !== "") throw invalidField(`${field}.reply_to`, "must be empty in Send; reply with Respond");
  const target = reply && !message.to ? undefined : parseAddress(`${field}.to`, message.to, poolId);
  if (message.to) {
    // Every ref becomes part of each of the message's events: bounded as the contract says.
    entityRefs(`${field}.to.related_refs`, message.to.relatedRefs);
    if (message.to.destinationRef) optionalId(`${field}.to.destination_ref.id`, message.to.destinationRef.id);
  }
  if (message.body) inlinePayload(`${field}.body`, message.body, MAX_BODY_BYTES);
  if (message.contentRef) contentRef(`${field}.content_ref`, message.contentRef);
  if (message.correlation) {
    boundedText(`${field}.correlation.correlation_id`, message.correlation.correlationId, 256);
    boundedMap(`${field}.correlation.keys`, message.correlation.keys, 32, 256);
  }
  boundedList(`${field}.policy_refs`, message.policyRefs, MAX_POLICIES);
  const policies = [...new Set(message.policyRefs.map((ref, i) => requireId(`${field}.policy_refs[${i}].id`, ref.id)))].sort();
  const expiresAt = message.expiresAt ? instantUpTo(`${field}.expires_at`, message.expiresAt, now, MAX_EXPIRY_AHEAD_MS) : undefined;
  let expectedResponses: number | undefined;
  let responseTimeoutMs: number | undefined;
  if (message.responseContract) {
    expectedResponses = intInRange(`${field}.response_contract.expected_responses`, message.responseContract.expectedResponses, 1, 1000);
    if (message.responseContract.timeout) {
      responseTimeoutMs = durationInRange(`${field}.response_contract.timeout`, message.responseContract.timeout, 1, MAX_RESPONSE_TIMEOUT_MS);
    }
  }
  return { message, target: target ?? { kind: "run", id: "" }, policies, expiresAt, expectedResponses, responseTimeoutMs };
}
