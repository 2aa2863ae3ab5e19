/**
 * The run dispatch state machine (seed: mailbox.rs). Every transition the
 * mailbox performs is one of these actions; the engine turns the allowed
 * "from" statuses into the condition of a single conditional update, so a
 * transition either applies atomically or not at all.
 */
import { RunDispatchStatus } from "../../../gen/mailroom/v1/dispatch_pb.js";

export { RunDispatchStatus };

/** Status names as stored (readable in the database). */
export type DispatchStatus = "QUEUED" | "CLAIMED" | "ACKED" | "CANCELLED" | "SUPERSEDED" | "DEAD_LETTER";

export const ALL_STATUSES: readonly DispatchStatus[] = ["QUEUED", "CLAIMED", "ACKED", "CANCELLED", "SUPERSEDED", "DEAD_LETTER"];

export const TERMINAL_STATUSES: readonly DispatchStatus[] = ["ACKED", "CANCELLED", "SUPERSEDED", "DEAD_LETTER"];

export function isTerminal(status: DispatchStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}

export type DispatchAction =
  | "claim"
  | "ack"
  | "record_start"
  | "record_result"
  | "extend_lease"
  | "nack_retry"
  | "nack_exhausted"
  | "dead_letter"
  | "cancel"
  | "supersede_queued"
  | "supersede_claimed"
  | "reclaim_retry"
  | "reclaim_exhausted";

interface Rule {
  from: readonly DispatchStatus[];
  to: DispatchStatus | "unchanged";
  /** Needs the current claim token and an unexpired lease. */
  fenced: boolean;
}

const rules: Record<DispatchAction, Rule> = {
  claim: { from: ["QUEUED"], to: "CLAIMED", fenced: false },
  ack: { from: ["CLAIMED"], to: "ACKED", fenced: true },
  record_start: { from: ["CLAIMED"], to: "unchanged", fenced: true },
  record_result: { from: ["CLAIMED"], to: "unchanged", fenced: true },
  extend_lease: { from: ["CLAIMED"], to: "unchanged", fenced: true },
  nack_retry: { from: ["CLAIMED"], to: "QUEUED", fenced: true },
  nack_exhausted: { from: ["CLAIMED"], to: "DEAD_LETTER", fenced: true },
  dead_letter: { from: ["CLAIMED"], to: "DEAD_LETTER", fenced: true },
  cancel: { from: ["QUEUED", "CLAIMED"], to: "CANCELLED", fenced: false },
  supersede_queued: { from: ["QUEUED"], to: "SUPERSEDED", fenced: false },
  supersede_claimed: { from: ["CLAIMED"], to: "SUPERSEDED", fenced: true },
  // The lease sweeper acts on expired claims without their token.
  reclaim_retry: { from: ["CLAIMED"], to: "QUEUED", fenced: false },
  reclaim_exhausted: { from: ["CLAIMED"], to: "DEAD_LETTER", fenced: false },
};

export const ALL_ACTIONS = Object.keys(rules) as DispatchAction[];

/** The status after `action`, or undefined when `action` is not allowed from `status`. */
export function transition(status: DispatchStatus, action: DispatchAction): DispatchStatus | undefined {
  const rule = rules[action];
  if (!rule.from.includes(status)) return undefined;
  return rule.to === "unchanged" ? status : rule.to;
}

/** The statuses `action` may start from (the condition of its update). */
export function allowedFrom(action: DispatchAction): readonly DispatchStatus[] {
  return rules[action].from;
}

export function isFenced(action: DispatchAction): boolean {
  return rules[action].fenced;
}

/** Whether a failed claim uses up the dispatch: its attempts are spent. */
export function attemptsSpent(attemptCount: number, maxAttempts: number): boolean {
  return attemptCount >= maxAttempts;
}

const toProto: Record<DispatchStatus, RunDispatchStatus> = {
  QUEUED: RunDispatchStatus.QUEUED,
  CLAIMED: RunDispatchStatus.CLAIMED,
  ACKED: RunDispatchStatus.ACKED,
  CANCELLED: RunDispatchStatus.CANCELLED,
  SUPERSEDED: RunDispatchStatus.SUPERSEDED,
  DEAD_LETTER: RunDispatchStatus.DEAD_LETTER,
};

export function statusToProto(status: DispatchStatus): RunDispatchStatus {
  return toProto[status];
}

export function statusFromProto(status: RunDispatchStatus): DispatchStatus | undefined {
  return ALL_STATUSES.find((s) => toProto[s] === status);
}

/** The enum name as the contract spells it, e.g. "RUN_DISPATCH_STATUS_ACKED" (events' state fields, error metadata). */
export function statusName(status: DispatchStatus): string {
  return `RUN_DISPATCH_STATUS_${status}`;
}
