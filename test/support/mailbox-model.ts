/**
 * A model of the mailbox written from the contract (mailbox_service.proto,
 * dispatch.proto, errors.proto and DESIGN.md), not from the engine: a plain
 * list of dispatches and a map of thread epochs, changed one call at a time.
 * Property tests run the same calls against the engine and this model and
 * compare what they answer, what they store and what they journal.
 *
 * Every function changes the state it is given (callers clone to explore) and
 * returns what the call should answer: the value and the journal events it
 * records, or the refusal (code and the ErrorDetail reasons the contract
 * allows; where several rules refuse a call at once, any of theirs is right).
 *
 * Claim tokens are random, so the model cannot know them: a claim gives the
 * dispatch a placeholder token, and the caller adopts the engine's real token
 * once it has checked the rest.
 */
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import type { DispatchStatus } from "../../src/domain/dispatch/state.js";
import { type ErrorCode, ErrorReason } from "../../src/domain/errors.js";

/** A value the contract does not fix (e.g. the wording of an engine-written last_error). */
export const UNSPECIFIED = "<not fixed by the contract>";
export type Unspecified = typeof UNSPECIFIED;

export interface ModelDispatch {
  id: string;
  thread: string;
  runId: string;
  priority: number;
  dedupeKey?: string;
  epoch: number;
  status: DispatchStatus;
  availableAt: number;
  attempts: number;
  maxAttempts: number;
  lastError?: string | Unspecified;
  /** The current claim's token; for ACKED and DEAD_LETTER the final claim's. */
  token?: string;
  claimedBy?: string;
  leaseUntil?: number;
  instanceId?: string;
  runStatus?: number;
  completedAt?: number;
  createdAt: number;
  updatedAt: number;
  /** The call that ended it under `token`: repeating a successful Ack or DeadLetter is answered, unchanged. */
  endedBy?: "ack" | "dead_letter";
  /** Tokens of earlier claims (all refused now). */
  pastTokens: string[];
}

export interface ModelState {
  now: number;
  /** In enqueue order. */
  dispatches: ModelDispatch[];
  epochs: Record<string, number>;
}

export interface ModelEvent {
  kind: EventKind;
  /** The dispatch id, or the thread id for THREAD_INTERRUPTED. */
  subject: string;
  before: string;
  after: string;
}

export interface Refusal {
  code: ErrorCode;
  /** The reasons the contract allows for this refusal. */
  reasons: ErrorReason[];
}

export type Outcome<T> = { ok: true; value: T; events: ModelEvent[] } | { ok: false; refusal: Refusal };

export function emptyModel(now: number): ModelState {
  return { now, dispatches: [], epochs: {} };
}

export function cloneModel(state: ModelState): ModelState {
  return structuredClone(state);
}

export const TERMINAL: readonly DispatchStatus[] = ["ACKED", "CANCELLED", "SUPERSEDED", "DEAD_LETTER"];

const status = (s: DispatchStatus) => `RUN_DISPATCH_STATUS_${s}`;

function event(kind: EventKind, d: ModelDispatch, before: DispatchStatus | undefined, after: DispatchStatus): ModelEvent {
  return { kind, subject: d.id, before: before ? status(before) : "", after: status(after) };
}

function ok<T>(value: T, events: ModelEvent[] = []): Outcome<T> {
  return { ok: true, value, events };
}

function refused<T>(code: ErrorCode, ...reasons: ErrorReason[]): Outcome<T> {
  return { ok: false, refusal: { code, reasons } };
}

export function find(state: ModelState, id: string): ModelDispatch | undefined {
  return state.dispatches.find((d) => d.id === id);
}

export function epochOf(state: ModelState, thread: string): number {
  return state.epochs[thread] ?? 0;
}

/** Claim order: highest priority first, then oldest, then by id. */
export function claimOrder(a: ModelDispatch, b: ModelDispatch): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  if (a.createdAt !== b.createdAt) return a.createdAt - b.createdAt;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function claimedIn(state: ModelState, thread: string): ModelDispatch | undefined {
  return state.dispatches.find((d) => d.thread === thread && d.status === "CLAIMED");
}

/** QUEUED, available, of the thread's current epoch. */
function claimable(state: ModelState, d: ModelDispatch): boolean {
  return d.status === "QUEUED" && d.availableAt <= state.now && d.epoch === epochOf(state, d.thread);
}

/** What Claim in `thread` would take: nothing while the thread holds a claim. */
export function headOf(state: ModelState, thread: string, unseen: readonly string[] = []): ModelDispatch | undefined {
  if (claimedIn(state, thread)) return undefined;
  return state.dispatches.filter((d) => d.thread === thread && claimable(state, d) && !unseen.includes(d.id)).sort(claimOrder)[0];
}

/** ListQueuedThreads: threads with a dispatch Claim could return now, ascending. */
export function queuedThreads(state: ModelState): string[] {
  const threads = [...new Set(state.dispatches.map((d) => d.thread))];
  return threads.filter((t) => headOf(state, t) !== undefined).sort();
}

export function counts(state: ModelState): Record<DispatchStatus, number> {
  const result: Record<DispatchStatus, number> = { QUEUED: 0, CLAIMED: 0, ACKED: 0, CANCELLED: 0, SUPERSEDED: 0, DEAD_LETTER: 0 };
  for (const d of state.dispatches) result[d.status]++;
  return result;
}

// ---- enqueue ---------------------------------------------------------------

export interface EnqueueInput {
  id: string;
  thread: string;
  priority: number;
  delayMs: number;
  dedupeKey?: string;
  maxAttempts: number;
}

export function enqueue(state: ModelState, input: EnqueueInput): Outcome<{ dispatch: ModelDispatch; deduplicated: boolean }> {
  const sameId = find(state, input.id);
  if (sameId && sameId.thread !== input.thread) return refused("already_exists", ErrorReason.INVALID_FIELD);
  if (sameId) return ok({ dispatch: sameId, deduplicated: true });
  const sameKey = input.dedupeKey === undefined ? undefined : state.dispatches.find((d) => d.thread === input.thread && d.dedupeKey === input.dedupeKey);
  if (sameKey) return ok({ dispatch: sameKey, deduplicated: true });
  const d: ModelDispatch = {
    id: input.id,
    thread: input.thread,
    runId: `run-${input.id}`,
    priority: input.priority,
    dedupeKey: input.dedupeKey,
    epoch: epochOf(state, input.thread),
    status: "QUEUED",
    availableAt: state.now + input.delayMs,
    attempts: 0,
    maxAttempts: input.maxAttempts,
    createdAt: state.now,
    updatedAt: state.now,
    pastTokens: [],
  };
  state.dispatches.push(d);
  return ok({ dispatch: d, deduplicated: false }, [event(EventKind.DISPATCH_ENQUEUED, d, undefined, "QUEUED")]);
}

// ---- claims ----------------------------------------------------------------

export interface ClaimInput {
  thread?: string;
  limit: number;
  leaseMs: number;
  consumer: string;
  /**
   * Not part of the contract: dispatches this claim did not see queued. A
   * claim chooses its thread's best queued dispatch, then claims it; when a
   * racing call requeues a better one in between, it is not seen (see the
   * concurrent property test).
   */
  unseen?: readonly string[];
}

/** Placeholder token of a claim the model made; the engine's real one replaces it. */
export function placeholderToken(d: Pick<ModelDispatch, "id" | "attempts">): string {
  return `model-claim:${d.id}:${d.attempts}`;
}

function take(state: ModelState, d: ModelDispatch, leaseMs: number, consumer: string): ModelEvent {
  if (d.token) d.pastTokens.push(d.token);
  d.status = "CLAIMED";
  d.attempts++;
  d.token = placeholderToken(d);
  d.claimedBy = consumer;
  d.leaseUntil = state.now + leaseMs;
  d.updatedAt = state.now;
  delete d.endedBy;
  return event(EventKind.DISPATCH_CLAIMED, d, "QUEUED", "CLAIMED");
}

/** Claim: at most one per thread, best first, up to `limit`. */
export function claim(state: ModelState, input: ClaimInput): Outcome<ModelDispatch[]> {
  const threads = input.thread !== undefined ? [input.thread] : [...new Set(state.dispatches.map((d) => d.thread))];
  const heads = threads.map((t) => headOf(state, t, input.unseen)).filter((d): d is ModelDispatch => d !== undefined).sort(claimOrder).slice(0, input.limit);
  const events = heads.map((d) => take(state, d, input.leaseMs, input.consumer));
  return ok(heads, events);
}

export function claimDispatch(state: ModelState, id: string, leaseMs: number, consumer: string): Outcome<ModelDispatch> {
  const d = find(state, id);
  if (!d) return refused("not_found", ErrorReason.ENTITY_NOT_FOUND);
  const reasons: ErrorReason[] = [];
  if (d.status !== "QUEUED") reasons.push(ErrorReason.DISPATCH_NOT_QUEUED);
  else {
    if (d.availableAt > state.now) reasons.push(ErrorReason.DISPATCH_NOT_AVAILABLE);
    if (d.epoch !== epochOf(state, d.thread)) reasons.push(ErrorReason.DISPATCH_EPOCH_STALE);
    if (claimedIn(state, d.thread)) reasons.push(ErrorReason.THREAD_HAS_CLAIM);
  }
  if (reasons.length > 0) return refused("failed_precondition", ...reasons);
  return ok(d, [take(state, d, leaseMs, consumer)]);
}

// ---- calls fenced by a claim token ------------------------------------------

export type FencedCall =
  | { call: "ack" }
  | { call: "nack"; delayMs: number; error: string }
  | { call: "dead_letter"; error: string }
  | { call: "extend_lease"; extensionMs: number }
  | { call: "supersede_claimed"; reason: string }
  | { call: "record_start"; instanceId: string }
  | { call: "record_result"; runStatus: number };

export interface FencedValue {
  dispatch: ModelDispatch;
  /** ExtendLease: the thread was interrupted after the dispatch was enqueued. */
  interrupted?: boolean;
  threadEpoch?: number;
}

/**
 * The fencing rule: the call succeeds only while the dispatch is CLAIMED under
 * this token and its lease has not expired (a lease held until T is expired
 * from T on); otherwise it changes nothing.
 */
export function fenced(state: ModelState, id: string, token: string, call: FencedCall): Outcome<FencedValue> {
  const d = find(state, id);
  if (!d) return refused("not_found", ErrorReason.ENTITY_NOT_FOUND);
  if ((call.call === "ack" || call.call === "dead_letter") && d.endedBy === call.call && d.token === token) {
    return ok({ dispatch: d }); // a repeated Ack or DeadLetter: answered, nothing changes
  }
  switch (d.status) {
    case "CLAIMED":
      if (d.token !== token) return refused("failed_precondition", ErrorReason.CLAIM_TOKEN_MISMATCH);
      if (d.leaseUntil! <= state.now) return refused("failed_precondition", ErrorReason.LEASE_EXPIRED);
      break;
    case "CANCELLED":
      return refused("failed_precondition", ErrorReason.DISPATCH_CANCELLED);
    case "SUPERSEDED":
      return refused("failed_precondition", ErrorReason.DISPATCH_SUPERSEDED);
    default:
      return refused("failed_precondition", ErrorReason.DISPATCH_NOT_CLAIMED);
  }
  const now = state.now;
  const end = (to: DispatchStatus, lastError?: string) => {
    d.status = to;
    d.completedAt = now;
    d.updatedAt = now;
    delete d.leaseUntil;
    if (lastError !== undefined) d.lastError = lastError;
  };
  switch (call.call) {
    case "ack":
      end("ACKED");
      d.endedBy = "ack";
      return ok({ dispatch: d }, [event(EventKind.DISPATCH_ACKED, d, "CLAIMED", "ACKED")]);
    case "dead_letter":
      end("DEAD_LETTER", call.error);
      d.endedBy = "dead_letter";
      return ok({ dispatch: d }, [event(EventKind.DISPATCH_DEAD_LETTERED, d, "CLAIMED", "DEAD_LETTER")]);
    case "supersede_claimed":
      end("SUPERSEDED", call.reason);
      return ok({ dispatch: d }, [event(EventKind.DISPATCH_SUPERSEDED, d, "CLAIMED", "SUPERSEDED")]);
    case "nack":
      if (d.attempts >= d.maxAttempts) {
        end("DEAD_LETTER", call.error);
        // The nack and the dead-lettering it caused are both recorded.
        return ok({ dispatch: d }, [event(EventKind.DISPATCH_NACKED, d, "CLAIMED", "DEAD_LETTER"), event(EventKind.DISPATCH_DEAD_LETTERED, d, "CLAIMED", "DEAD_LETTER")]);
      }
      requeue(d, now + call.delayMs, now, call.error);
      return ok({ dispatch: d }, [event(EventKind.DISPATCH_NACKED, d, "CLAIMED", "QUEUED")]);
    case "extend_lease": {
      d.leaseUntil = now + call.extensionMs;
      d.updatedAt = now;
      const threadEpoch = epochOf(state, d.thread);
      return ok({ dispatch: d, interrupted: d.epoch < threadEpoch, threadEpoch }, [event(EventKind.DISPATCH_LEASE_EXTENDED, d, "CLAIMED", "CLAIMED")]);
    }
    case "record_start":
      d.instanceId = call.instanceId;
      d.updatedAt = now;
      return ok({ dispatch: d }, [event(EventKind.DISPATCH_STARTED, d, "CLAIMED", "CLAIMED")]);
    case "record_result":
      d.runStatus = call.runStatus;
      d.updatedAt = now;
      return ok({ dispatch: d }, [event(EventKind.DISPATCH_RESULT_RECORDED, d, "CLAIMED", "CLAIMED")]);
  }
}

function requeue(d: ModelDispatch, at: number, now: number, lastError: string | Unspecified): void {
  d.status = "QUEUED";
  d.availableAt = Math.max(at, now);
  d.updatedAt = now;
  d.lastError = lastError;
  d.pastTokens.push(d.token!);
  delete d.token;
  delete d.leaseUntil;
}

// ---- cancel, interrupt, sweeps ----------------------------------------------

export function cancel(state: ModelState, id: string, reason: string): Outcome<{ dispatch: ModelDispatch; changed: boolean }> {
  const d = find(state, id);
  if (!d) return refused("not_found", ErrorReason.ENTITY_NOT_FOUND);
  if (TERMINAL.includes(d.status)) return ok({ dispatch: d, changed: false });
  const before = d.status;
  d.status = "CANCELLED";
  d.completedAt = state.now;
  d.updatedAt = state.now;
  d.lastError = reason;
  delete d.leaseUntil;
  return ok({ dispatch: d, changed: true }, [event(EventKind.DISPATCH_CANCELLED, d, before, "CANCELLED")]);
}

export interface InterruptValue {
  newEpoch: number;
  active: ModelDispatch | undefined;
  superseded: ModelDispatch[];
}

/** Bumps the thread's epoch and supersedes its QUEUED dispatches of older epochs; the claimed one keeps running. */
export function interrupt(state: ModelState, thread: string): Outcome<InterruptValue> {
  const before = epochOf(state, thread);
  const newEpoch = before + 1;
  state.epochs[thread] = newEpoch;
  const events: ModelEvent[] = [{ kind: EventKind.THREAD_INTERRUPTED, subject: thread, before: `epoch ${before}`, after: `epoch ${newEpoch}` }];
  const superseded = state.dispatches.filter((d) => d.thread === thread && d.status === "QUEUED" && d.epoch < newEpoch);
  for (const d of superseded) {
    d.status = "SUPERSEDED";
    d.completedAt = state.now;
    d.updatedAt = state.now;
    d.lastError = UNSPECIFIED;
    events.push(event(EventKind.DISPATCH_SUPERSEDED, d, "QUEUED", "SUPERSEDED"));
  }
  return ok({ newEpoch, active: claimedIn(state, thread), superseded }, events);
}

/** ReclaimExpiredLeases (with a limit above the number of dispatches): QUEUED again, or DEAD_LETTER when spent. */
export function reclaimExpired(state: ModelState): Outcome<ModelDispatch[]> {
  const expired = state.dispatches.filter((d) => d.status === "CLAIMED" && d.leaseUntil! <= state.now);
  const events: ModelEvent[] = [];
  for (const d of expired) {
    if (d.attempts >= d.maxAttempts) {
      d.status = "DEAD_LETTER";
      d.completedAt = state.now;
      d.updatedAt = state.now;
      d.lastError = UNSPECIFIED;
      delete d.leaseUntil;
      // The expiry and the dead-lettering it caused are both recorded.
      events.push(event(EventKind.DISPATCH_LEASE_EXPIRED, d, "CLAIMED", "DEAD_LETTER"), event(EventKind.DISPATCH_DEAD_LETTERED, d, "CLAIMED", "DEAD_LETTER"));
    } else {
      requeue(d, state.now, state.now, UNSPECIFIED);
      events.push(event(EventKind.DISPATCH_LEASE_EXPIRED, d, "CLAIMED", "QUEUED"));
    }
  }
  return ok(expired, events);
}

/** PurgeTerminal: deletes terminal dispatches completed strictly before `before` (their dedupe keys are free again). */
export function purgeTerminal(state: ModelState, before: number): Outcome<number> {
  const kept = state.dispatches.filter((d) => !(TERMINAL.includes(d.status) && d.completedAt! < before));
  const purged = state.dispatches.length - kept.length;
  state.dispatches = kept;
  return ok(purged);
}

export function advance(state: ModelState, ms: number): void {
  state.now += ms;
}

/** Replaces a claim's placeholder token with the engine's. */
export function adoptToken(state: ModelState, id: string, token: string): void {
  const d = find(state, id);
  if (d && d.token === placeholderToken(d)) d.token = token;
}
