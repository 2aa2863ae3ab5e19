/**
 * How the mailbox is stored.
 *
 * `dispatches`: one document per run dispatch. A partial unique index on
 * thread_id over CLAIMED documents is what guarantees at most one CLAIMED
 * dispatch per thread: a second claim in the thread fails inside the database.
 *
 * `threads`: one document per thread: its epoch (authoritative) and a
 * readiness hint used to claim across threads without scanning every queued
 * dispatch: whether the thread holds a claim, the rank of its best queued
 * dispatch and the earliest time it has claimable work. The hint may be
 * optimistic (then a claim attempt finds nothing and recomputes it) but is
 * kept from ever hiding claimable work.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type RunDispatch, RunDispatchSchema } from "../../../gen/mailroom/v1/dispatch_pb.js";
import { type DispatchStatus, statusToProto } from "../../domain/dispatch/state.js";
import type { Doc, IndexSpec } from "../../store/port.js";
import type { OutboxFields } from "../outbox.js";

export const DISPATCHES = "dispatches";
export const THREADS = "threads";

export interface DispatchDoc extends Doc, OutboxFields {
  _id: string;
  thread_id: string;
  run_id: string;
  agent_id?: string;
  priority: number;
  dedupe_key?: string;
  epoch: number;
  status: DispatchStatus;
  /** Denormalised `status` is terminal, for the terminal-listing index. */
  terminal: boolean;
  available_at: number;
  /**
   * Set while queued with a delay (its available_at, then in the future): the
   * availability clock's store-wide index holds only these, so work that is
   * claimable at once costs that index nothing.
   */
  delayed_until?: number;
  attempt_count: number;
  max_attempts: number;
  last_error?: string;
  /** Set by DeadLetter (not by Nack or the lease sweeper): only then is a repeated DeadLetter with the token answered. */
  dead_lettered_by_worker?: boolean;
  claim_token?: string;
  claimed_by?: string;
  lease_until?: number;
  dispatch_instance_id?: string;
  run_status?: number;
  termination?: { kind: number; detail: string };
  run_response?: string;
  run_error?: string;
  completed_at?: number;
  created_at: number;
  updated_at: number;
  payload?: { data: Uint8Array; media_type: string };
}

export interface ThreadDoc extends Doc, OutboxFields {
  _id: string;
  epoch: number;
  /** Hint: the dispatch holding the thread's claim (absent when none; queried as null). */
  claimed?: string | null;
  /** Hint: that claim's lease when it was taken (the repair sweep checks it). */
  claim_lease_until?: number;
  /**
   * Hint: claim tokens of claims that were ended by someone other than their
   * claimer (a cancel, the lease sweeper), possibly before the claimer
   * recorded the claim here; such a late record is not made (it would mark
   * the thread busy with a claim that is over). The last few are kept.
   */
  ended?: string[];
  /** Hint: rank of the thread's best QUEUED dispatch of the current epoch (lower is better; it names the dispatch). */
  head_rank?: string;
  /** Hint: earliest available_at among those dispatches. */
  ready_at?: number;
  /**
   * Hint: how many QUEUED dispatches of the current epoch the thread has; it
   * may count too many (an enqueue counts before it inserts), never too few,
   * so a claim that takes the last one can mark the thread idle without a read.
   * Absent on threads written by an earlier version (then unknown).
   */
  queued?: number;
  /** Bumped by every change the hint must not miss; recomputations are conditional on it. */
  version: number;
  created_at: number;
  updated_at: number;
}

export const CLAIM_ORDER = { priority: -1, created_at: 1, _id: 1 } as const;

/** Queued dispatches of a thread, its current epoch first, each epoch in claim order (the queued_claim_order index). */
export const EPOCH_CLAIM_ORDER = { epoch: -1, ...CLAIM_ORDER } as const;

/**
 * Indexes that only queued or claimed work needs are partial on that status,
 * so the terminal dispatches kept for retention (most of them) are not in
 * them. Every query of queued work names `status: "QUEUED"` (claimed work
 * `"CLAIMED"`, terminal `terminal: true`) so the partial index serves it.
 *
 * These are a namespace's (created through its view, so each starts with
 * `ns`): every use case queries within one namespace.
 */
export const DISPATCH_INDEXES: IndexSpec[] = [
  { key: { thread_id: 1 }, name: "one_claimed_per_thread", unique: true, partialFilterExpression: { status: "CLAIMED" } },
  { key: { thread_id: 1, dedupe_key: 1 }, name: "dedupe_key_per_thread", unique: true, partialFilterExpression: { dedupe_key: { $exists: true } } },
  // Epoch descending: a thread's current epoch first, so one seek per thread finds its next head (Threads.claimed).
  { key: { thread_id: 1, epoch: -1, priority: -1, created_at: 1, _id: 1 }, name: "queued_claim_order", partialFilterExpression: { status: "QUEUED" } },
  { key: { available_at: 1 }, name: "queued_availability", partialFilterExpression: { status: "QUEUED" } },
  { key: { status: 1, thread_id: 1 }, name: "status_counts" },
  { key: { thread_id: 1, created_at: 1, _id: 1 }, name: "thread_listing" },
  { key: { created_at: 1, _id: 1 }, name: "listing" },
  { key: { completed_at: -1, _id: -1 }, name: "terminal_by_completion", partialFilterExpression: { terminal: true } },
  { key: { thread_id: 1, completed_at: -1, _id: -1 }, name: "thread_terminal_by_completion", partialFilterExpression: { terminal: true } },
];

/**
 * The store-wide indexes of the sweepers (created on the store itself, no
 * `ns`): expired leases and delayed work coming due are found across every
 * namespace, then acted on in each dispatch's namespace. None duplicates a
 * namespace's index (each would cost every job an index write): a
 * namespace's expired leases are read from `claimed_leases` (there are few),
 * and retention visits namespaces in turn through their
 * `terminal_by_completion`.
 */
export const DISPATCH_SWEEPER_INDEXES: IndexSpec[] = [
  { key: { lease_until: 1 }, name: "claimed_leases", partialFilterExpression: { status: "CLAIMED" } },
  { key: { delayed_until: 1 }, name: "delayed_dispatches", partialFilterExpression: { status: "QUEUED", delayed_until: { $exists: true } } },
];

/** Indexes of earlier versions that these replace. */
export const OBSOLETE_DISPATCH_INDEXES = ["claim_order", "thread_readiness", "expired_leases", "availability", "terminal_listing", "thread_terminal_listing"];

/** A namespace's thread indexes (through its view). */
export const THREAD_INDEXES: IndexSpec[] = [
  { key: { claimed: 1, head_rank: 1, _id: 1 }, name: "ready_threads" },
  { key: { claimed: 1, _id: 1 }, name: "ready_thread_listing" },
];

/** The store-wide index of the claim-hint repair sweep. */
export const THREAD_SWEEPER_INDEXES: IndexSpec[] = [{ key: { claim_lease_until: 1 }, name: "claim_hints" }];

/** Sortable rank of a dispatch within claim order: lower claims first. It ends with the dispatch's id. */
export function rankOf(dispatch: Pick<DispatchDoc, "priority" | "created_at" | "_id">): string {
  return `${String(255 - dispatch.priority).padStart(3, "0")}.${String(dispatch.created_at).padStart(15, "0")}.${dispatch._id}`;
}

/** The id of the dispatch a rank names. */
export function dispatchIdOfRank(rank: string): string {
  return rank.slice(RANK_PREFIX);
}

const RANK_PREFIX = 3 + 1 + 15 + 1;

const ts = (ms: number | undefined) => (ms === undefined ? undefined : timestampFromMs(ms));

/** Field framing (tag and length) for one field; a string's UTF-8 is at most 3 bytes per UTF-16 unit. */
const FIELD = 6;
const TIMESTAMP = FIELD + 12;
const textBound = (text: string | undefined) => (text === undefined ? 0 : FIELD + 3 * text.length);

/**
 * At least the encoded size of the RunDispatch `toRunDispatch(doc)` makes,
 * inside a response's repeated field: what a dispatch takes of a response's
 * bytes (a Claim takes only what fits in one), without encoding it.
 */
export function runDispatchSizeBound(doc: DispatchDoc): number {
  let size = FIELD + 10 * FIELD + 6 * TIMESTAMP;
  for (const text of [doc._id, doc.thread_id, doc.run_id, doc.agent_id, doc.dedupe_key, doc.last_error, doc.claim_token, doc.claimed_by, doc.dispatch_instance_id, doc.run_response, doc.run_error, doc.termination?.detail]) {
    size += textBound(text);
  }
  if (doc.payload) size += 2 * FIELD + doc.payload.data.length + textBound(doc.payload.media_type);
  return size;
}

/** What claiming adds to a queued dispatch's size bound: a claim token, the claimant, a lease. */
export function claimSizeBound(consumerId: string): number {
  return textBound("ct_".padEnd(35, "0")) + textBound(consumerId) + TIMESTAMP;
}

/** A response's own framing (the gRPC or Connect envelope, the response message), kept free of dispatches. */
export const RESPONSE_FRAMING = 64;

export function toRunDispatch(doc: DispatchDoc): RunDispatch {
  return create(RunDispatchSchema, {
    dispatchId: doc._id,
    threadId: doc.thread_id,
    runId: doc.run_id,
    agentId: doc.agent_id ?? "",
    priority: doc.priority,
    dedupeKey: doc.dedupe_key ?? "",
    dispatchEpoch: BigInt(doc.epoch),
    status: statusToProto(doc.status),
    availableAt: ts(doc.available_at),
    attemptCount: doc.attempt_count,
    maxAttempts: doc.max_attempts,
    lastError: doc.last_error ?? "",
    claimToken: doc.claim_token ?? "",
    claimedBy: doc.claimed_by ?? "",
    leaseUntil: doc.status === "CLAIMED" ? ts(doc.lease_until) : undefined,
    dispatchInstanceId: doc.dispatch_instance_id ?? "",
    runStatus: doc.run_status ?? 0,
    termination: doc.termination,
    runResponse: doc.run_response ?? "",
    runError: doc.run_error ?? "",
    completedAt: ts(doc.completed_at),
    createdAt: ts(doc.created_at),
    updatedAt: ts(doc.updated_at),
    payload: doc.payload ? { data: new Uint8Array(doc.payload.data), mediaType: doc.payload.media_type } : undefined,
  });
}
