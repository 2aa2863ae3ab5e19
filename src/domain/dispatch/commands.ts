/**
 * MailboxService requests, checked and turned into the engine's commands.
 * Every refusal is INVALID_ARGUMENT naming the field; nothing is changed.
 */
import type { RunDispatchResult, TerminationReason } from "../../../gen/mailroom/v1/dispatch_pb.js";
import type { InlinePayload } from "../../../gen/mailroom/v1/common_pb.js";
import type {
  ClaimRequest,
  DispatchClaim,
  ListDispatchesRequest,
  NackRequest,
  NewDispatch,
} from "../../../gen/mailroom/v1/mailbox_service_pb.js";
import type { RunDispatchStatus } from "../../../gen/mailroom/v1/dispatch_pb.js";
import { invalidField } from "../errors.js";
import {
  boundedList,
  boundedText,
  durationInRange,
  inlinePayload,
  intInRange,
  optionalId,
  pageSize,
  requireId,
  requirePresent,
  instantUpTo,
} from "../validate.js";
import { type DispatchStatus, statusFromProto } from "./state.js";

export interface MailboxLimits {
  /** Longest lease a claim or extension may ask for. */
  maxLeaseMs: number;
  /** Longest long-poll wait of Claim. */
  maxWaitMs: number;
  /** Most dispatches one Claim returns. */
  maxClaimLimit: number;
  /** Most entries of EnqueueBatch and AckBatch. */
  maxBatch: number;
  /** Largest inline payload. */
  maxPayloadBytes: number;
  /** Longest enqueue or retry delay; also how far ahead of the server's clock available_at and retry_at may be. */
  maxDelayMs: number;
  /** Largest response message (the server's --max-message-bytes): a Claim takes only the dispatches that fit in one. */
  maxResponseBytes: number;
}

export const DEFAULT_MAILBOX_LIMITS: MailboxLimits = {
  maxLeaseMs: 3_600_000,
  maxWaitMs: 60_000,
  maxClaimLimit: 100,
  maxBatch: 500,
  maxPayloadBytes: 256 * 1024,
  maxDelayMs: 365 * 86_400_000,
  maxResponseBytes: 4 * 1024 * 1024,
};

export const DEFAULT_PRIORITY = 128;
export const DEFAULT_MAX_ATTEMPTS = 5;
export const MAX_MAX_ATTEMPTS = 1000;
export const MAX_ERROR_BYTES = 64 * 1024;
export const MAX_REASON_BYTES = 4096;
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;
export const MAX_PAGE_TOKEN_BYTES = 1024;
export const MAX_INTERRUPT_DETAILS = 1000;

/** When a dispatch becomes claimable: an instant, or a delay from the server's now. */
export type Schedule = { at: number } | { delayMs: number } | undefined;

export interface EnqueueCommand {
  dispatchId?: string;
  threadId: string;
  runId?: string;
  agentId?: string;
  priority: number;
  dedupeKey?: string;
  schedule: Schedule;
  maxAttempts: number;
  payload?: { data: Uint8Array; mediaType: string };
}

export interface ClaimCommand {
  threadId?: string;
  consumerId: string;
  leaseMs: number;
  limit: number;
  waitMs: number;
}

export interface ClaimRef {
  dispatchId: string;
  claimToken: string;
}

export interface RunResult {
  runStatus: number;
  termination?: { kind: number; detail: string };
  response?: string;
  error?: string;
}

function payloadOf(field: string, payload: InlinePayload | undefined, limits: MailboxLimits) {
  if (!payload) return undefined;
  inlinePayload(field, payload, limits.maxPayloadBytes);
  return { data: payload.data, mediaType: payload.mediaType };
}

/** `now` is the server's clock, which bounds `available_at`. */
export function parseNewDispatch(field: string, input: NewDispatch | undefined, limits: MailboxLimits, now: number): EnqueueCommand {
  const dispatch = requirePresent(field, input);
  const priority = dispatch.priority === undefined ? DEFAULT_PRIORITY : intInRange(`${field}.priority`, dispatch.priority, 0, 255);
  const maxAttempts = dispatch.maxAttempts === undefined ? DEFAULT_MAX_ATTEMPTS : intInRange(`${field}.max_attempts`, dispatch.maxAttempts, 1, MAX_MAX_ATTEMPTS);
  let schedule: Schedule;
  if (dispatch.schedule.case === "availableAt") schedule = { at: instantUpTo(`${field}.available_at`, dispatch.schedule.value, now, limits.maxDelayMs) };
  if (dispatch.schedule.case === "delay") schedule = { delayMs: durationInRange(`${field}.delay`, dispatch.schedule.value, 0, limits.maxDelayMs) };
  return {
    dispatchId: optionalId(`${field}.dispatch_id`, dispatch.dispatchId),
    threadId: requireId(`${field}.thread_id`, dispatch.threadId),
    runId: optionalId(`${field}.run_id`, dispatch.runId),
    agentId: optionalId(`${field}.agent_id`, dispatch.agentId),
    priority,
    dedupeKey: optionalId(`${field}.dedupe_key`, dispatch.dedupeKey),
    schedule,
    maxAttempts,
    payload: payloadOf(`${field}.payload`, dispatch.payload, limits),
  };
}

export function parseEnqueueBatch(dispatches: readonly NewDispatch[], limits: MailboxLimits, now: number): EnqueueCommand[] {
  boundedList("dispatches", dispatches, limits.maxBatch, 1);
  return dispatches.map((d, i) => parseNewDispatch(`dispatches[${i}]`, d, limits, now));
}

export function parseLease(field: string, lease: ClaimRequest["lease"], limits: MailboxLimits): number {
  return durationInRange(field, requirePresent(field, lease), 1, limits.maxLeaseMs);
}

export function parseClaim(request: ClaimRequest, limits: MailboxLimits): ClaimCommand {
  if (request.limit === 0) throw invalidField("limit", `is required: 1 to ${limits.maxClaimLimit}`);
  return {
    threadId: optionalId("thread_id", request.threadId),
    consumerId: requireId("consumer_id", request.consumerId),
    leaseMs: parseLease("lease", request.lease, limits),
    limit: intInRange("limit", request.limit, 1, limits.maxClaimLimit),
    waitMs: request.wait ? durationInRange("wait", request.wait, 0, limits.maxWaitMs) : 0,
  };
}

export function parseClaimRef(request: { dispatchId: string; claimToken: string }, prefix = ""): ClaimRef {
  return {
    dispatchId: requireId(`${prefix}dispatch_id`, request.dispatchId),
    claimToken: requireId(`${prefix}claim_token`, request.claimToken),
  };
}

export function parseAckBatch(claims: readonly DispatchClaim[], limits: MailboxLimits): ClaimRef[] {
  boundedList("claims", claims, limits.maxBatch, 1);
  return claims.map((c, i) => parseClaimRef(c, `claims[${i}].`));
}

export function parseRetry(retry: NackRequest["retry"], limits: MailboxLimits, now: number): Schedule {
  if (retry.case === "retryAt") return { at: instantUpTo("retry_at", retry.value, now, limits.maxDelayMs) };
  if (retry.case === "delay") return { delayMs: durationInRange("delay", retry.value, 0, limits.maxDelayMs) };
  return undefined;
}

export function parseErrorText(field: string, value: string): string | undefined {
  return value === "" ? undefined : boundedText(field, value, MAX_ERROR_BYTES);
}

export function parseReason(field: string, value: string): string | undefined {
  return value === "" ? undefined : boundedText(field, value, MAX_REASON_BYTES);
}

function termination(field: string, value: TerminationReason | undefined) {
  if (!value) return undefined;
  return { kind: value.kind, detail: boundedText(`${field}.detail`, value.detail, MAX_REASON_BYTES) };
}

export function parseRunResult(result: RunDispatchResult | undefined): RunResult {
  const present = requirePresent("result", result);
  if (present.runStatus === 0) throw invalidField("result.run_status", "is required");
  return {
    runStatus: present.runStatus,
    termination: termination("result.termination", present.termination),
    response: present.response === "" ? undefined : boundedText("result.response", present.response, MAX_ERROR_BYTES),
    error: parseErrorText("result.error", present.error),
  };
}

export function parseStatuses(field: string, statuses: readonly RunDispatchStatus[]): DispatchStatus[] | undefined {
  if (statuses.length === 0) return undefined;
  return statuses.map((status, i) => {
    const parsed = statusFromProto(status);
    if (!parsed) throw invalidField(`${field}[${i}]`, "must be a dispatch status other than UNSPECIFIED");
    return parsed;
  });
}

export interface ListQuery {
  threadId?: string;
  statuses?: DispatchStatus[];
  pageSize: number;
  pageToken?: string;
}

export function parseList(request: Pick<ListDispatchesRequest, "threadId" | "pageSize" | "pageToken"> & { statuses?: readonly RunDispatchStatus[] }): ListQuery {
  return {
    threadId: optionalId("thread_id", request.threadId),
    statuses: parseStatuses("statuses", request.statuses ?? []),
    pageSize: pageSize("page_size", request.pageSize, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    pageToken: request.pageToken === "" ? undefined : boundedText("page_token", request.pageToken, MAX_PAGE_TOKEN_BYTES),
  };
}

