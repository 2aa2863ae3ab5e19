/**
 * Wake conditions (seed: WakeCondition, suspend_until, scope_filter): a run
 * suspends until an event matching a filter arrives, or a timeout passes.
 */
import { create } from "@bufbuild/protobuf";
import { EventKind, PayloadAccessMode } from "../../../gen/mailroom/v1/event_pb.js";
import { ResumeInputPolicy, type WakeCondition, WakeConditionSchema, WakeRegistrationStatus } from "../../../gen/mailroom/v1/pool_pb.js";
import { ErrorReason, invalidField, MailroomError } from "../errors.js";
import { type FilterSpec, parseEventFilter } from "../events/filter.js";
import { newId } from "../ids.js";
import { boundedList, durationInRange, optionalId, requireId, requirePresent } from "../validate.js";
import { MAX_POLICIES, type PoolConfig } from "./pool.js";

export { ResumeInputPolicy, WakeRegistrationStatus };

export const MAX_WAKE_TIMEOUT_MS = 30 * 86_400_000;
/**
 * Wake conditions a pool may have REGISTERED at once: each is matched against
 * every journal event of the runs it observes, on every instance, so their
 * number is bounded (a snapshot lists the oldest 1000 of them).
 */
export const MAX_REGISTERED_WAKES_PER_POOL = 2000;

export type WakeStatusName = "REGISTERED" | "TRIGGERED" | "TIMED_OUT" | "CANCELLED" | "FAILED";

export const WAKE_STATUS_PROTO: Record<WakeStatusName, WakeRegistrationStatus> = {
  REGISTERED: WakeRegistrationStatus.REGISTERED,
  TRIGGERED: WakeRegistrationStatus.TRIGGERED,
  TIMED_OUT: WakeRegistrationStatus.TIMED_OUT,
  CANCELLED: WakeRegistrationStatus.CANCELLED,
  FAILED: WakeRegistrationStatus.FAILED,
};

/** The seed's event kind and redacted summary of each registration status. */
export const WAKE_STATUS_EVENT: Record<WakeStatusName, { kind: EventKind; summary: string }> = {
  REGISTERED: { kind: EventKind.WAKE_CONDITION_REGISTERED, summary: "wake condition registered" },
  TRIGGERED: { kind: EventKind.WAKE_CONDITION_TRIGGERED, summary: "wake condition triggered" },
  TIMED_OUT: { kind: EventKind.WAKE_CONDITION_TIMED_OUT, summary: "wake condition timed out" },
  CANCELLED: { kind: EventKind.WAKE_CONDITION_CANCELLED, summary: "wake condition cancelled" },
  FAILED: { kind: EventKind.WAKE_CONDITION_FAILED, summary: "wake condition failed" },
};

const WAKE_KINDS = new Set<number>(Object.values(WAKE_STATUS_EVENT).map((e) => e.kind));

/** The seed never wakes a condition on a wake condition's own events. */
export function canWake(kind: number): boolean {
  return !WAKE_KINDS.has(kind);
}

export interface WakeRequest {
  condition: WakeCondition;
  filter: FilterSpec;
  timeoutMs?: number;
  after?: number;
  /** Match from the start of the retained journal (the seed's suspend_until). */
  matchHistory: boolean;
  policies: string[];
}

export function parseWakeCondition(runId: string, input: WakeCondition | undefined): WakeRequest {
  const condition = create(WakeConditionSchema, requirePresent("condition", input));
  requireId("run_id", runId);
  requireId("condition.run_id", condition.runId);
  if (condition.runId !== runId) {
    throw new MailroomError("invalid_argument", `condition.run_id (${JSON.stringify(condition.runId)}) must be the registering run (${JSON.stringify(runId)})`, {
      reason: ErrorReason.WAKE_RUN_MISMATCH,
      field: "condition.run_id",
    });
  }
  condition.conditionId = optionalId("condition.condition_id", condition.conditionId) ?? newId();
  condition.idempotencyKey = optionalId("condition.idempotency_key", condition.idempotencyKey) ?? condition.conditionId;
  if (condition.resumeWith === ResumeInputPolicy.UNSPECIFIED) condition.resumeWith = ResumeInputPolicy.MATCHING_EVENT_REFS;
  boundedList("condition.policy_refs", condition.policyRefs, MAX_POLICIES);
  const policies = condition.policyRefs.map((ref, i) => requireId(`condition.policy_refs[${i}].id`, ref.id));
  const timeoutMs = condition.timeout ? durationInRange("condition.timeout", condition.timeout, 0, MAX_WAKE_TIMEOUT_MS) : undefined;
  const after = condition.after ? Number(condition.after.eventSeq) : undefined;
  if (after !== undefined && !Number.isSafeInteger(after)) throw new MailroomError("invalid_argument", "condition.after.event_seq: out of range", { reason: ErrorReason.INVALID_FIELD, field: "condition.after.event_seq" });
  if (after !== undefined && condition.matchHistory) throw invalidField("condition.match_history", "give `after` or match_history, not both");
  return { condition, filter: parseEventFilter("condition.filter", condition.filter), timeoutMs, after, matchHistory: condition.matchHistory, policies };
}

/**
 * The seed's scope_filter: a wake sees only events of observable member runs
 * (the filter's runs narrowed to them; none left means nothing matches), and
 * envelopes only when the pool's wake policy says so.
 */
export function scopeWakeFilter(filter: FilterSpec, observable: readonly string[], config: PoolConfig): FilterSpec {
  const allowed = new Set(observable);
  const runIds = filter.runIds === undefined ? allowed : new Set([...filter.runIds].filter((run) => allowed.has(run)));
  return { ...filter, runIds, payloadAccess: config.envelopeOnly ? PayloadAccessMode.ENVELOPE_ONLY : filter.payloadAccess };
}
