/**
 * The mailbox against a model of its contract (test/support/mailbox-model.ts),
 * through two engine instances on one store:
 * - random sequences of calls answer, store and journal what the model says;
 * - concurrent calls, interleaved by fast-check's scheduler at every store
 *   operation, end as some serial order of them would, never hold two claims
 *   in a thread, and journal every transition once.
 *
 * MAILROOM_PROPERTY_RUNS sets the number of runs of each property (e.g. 2000
 * for a soak); the defaults keep the file well under a minute.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import type { DispatchStatus } from "../../src/domain/dispatch/state.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { Engine } from "../../src/engine/engine.js";
import { type EventDoc, eventOf, isTombstone, type JournalDoc } from "../../src/engine/journal/records.js";
import type { InterruptOutcome } from "../../src/engine/mailbox/mailbox.js";
import { DISPATCHES, type DispatchDoc, THREADS, type ThreadDoc } from "../../src/engine/mailbox/records.js";
import type { Store } from "../../src/store/port.js";
import * as model from "../support/mailbox-model.js";
import { type FencedCall, type ModelDispatch, type ModelEvent, type ModelState, type Outcome, UNSPECIFIED } from "../support/mailbox-model.js";
import { GatedStore, scheduledGate } from "../support/gated-store.js";
import { storeBackends } from "../support/stores.js";

const RUNS = Number(process.env.MAILROOM_PROPERTY_RUNS ?? 0);
/** Replays a reported failure: MAILROOM_PROPERTY_SEED and MAILROOM_PROPERTY_PATH from fast-check's report. */
const REPLAY = process.env.MAILROOM_PROPERTY_SEED ? { seed: Number(process.env.MAILROOM_PROPERTY_SEED), path: process.env.MAILROOM_PROPERTY_PATH, endOnFailure: true } : {};
const runs = (fallback: number) => ({ numRuns: RUNS > 0 ? RUNS : fallback, ...REPLAY });

const THREAD_IDS = ["t0", "t1", "t2"] as const;
const NO_SUCH_DISPATCH = "no-such-dispatch";
const status = (s: DispatchStatus) => `RUN_DISPATCH_STATUS_${s}`;

// ---- the system under test ---------------------------------------------------

interface System {
  /** The store itself, for reading behind the engines' backs. */
  store: Store;
  /** Each instance's view of it, held back by the scheduler while one is set. */
  views: GatedStore[];
  engines: Engine[];
  clock: ManualClock;
  /** Journal position of the run's start, and up to which events have been compared. */
  startSeq: number;
  seenSeq: number;
  /** Every claim token the engine has issued in this run. */
  tokens: Set<string>;
  nonce: number;
  nextId: number;
  trace: string[];
}

async function journalAfter(system: System, seq: number): Promise<{ events: EventDoc[]; head: number }> {
  const docs = await system.store.collection<JournalDoc>("events").find({ _id: { $gt: seq } }, { sort: { _id: 1 } });
  return { events: docs.filter((d): d is EventDoc => !isTombstone(d)), head: docs.length ? docs[docs.length - 1]!._id : seq };
}

async function storedDispatches(system: System): Promise<DispatchDoc[]> {
  return system.store.collection<DispatchDoc>(DISPATCHES).find({}, { sort: { _id: 1 } });
}

async function storedEpochs(system: System): Promise<Record<string, number>> {
  const threads = await system.store.collection<ThreadDoc>(THREADS).find({});
  return Object.fromEntries(THREAD_IDS.map((t) => [t, threads.find((doc) => doc._id === t)?.epoch ?? 0]));
}

// ---- comparing the engine with the model ---------------------------------------

/** Claim tokens the model made up, to the engine's real ones (from the claims' answers). */
type Tokens = Map<string, string>;

/** The fields of a dispatch the contract fixes: as stored, and as the model has them. */
function views(real: DispatchDoc, d: ModelDispatch, tokens: Tokens) {
  const stored = {
    id: real._id, thread: real.thread_id, run_id: real.run_id, priority: real.priority, dedupe_key: real.dedupe_key, epoch: real.epoch,
    status: real.status, available_at: real.available_at, attempt_count: real.attempt_count, max_attempts: real.max_attempts,
    last_error: real.last_error, claim_token: real.claim_token, claimed_by: real.claimed_by, lease_until: real.lease_until,
    dispatch_instance_id: real.dispatch_instance_id, run_status: real.run_status, completed_at: real.completed_at,
    created_at: real.created_at, updated_at: real.updated_at,
  };
  const modelled = {
    id: d.id, thread: d.thread, run_id: d.runId, priority: d.priority, dedupe_key: d.dedupeKey, epoch: d.epoch,
    status: d.status, available_at: d.availableAt, attempt_count: d.attempts, max_attempts: d.maxAttempts,
    last_error: d.lastError, claim_token: d.token && (tokens.get(d.token) ?? d.token), claimed_by: d.claimedBy,
    lease_until: d.status === "CLAIMED" ? d.leaseUntil : undefined, dispatch_instance_id: d.instanceId, run_status: d.runStatus,
    completed_at: d.completedAt, created_at: d.createdAt, updated_at: d.updatedAt,
  };
  // The contract fixes neither the token a cancelled or superseded dispatch keeps, nor the engine's own last_error texts.
  if (d.status === "CANCELLED" || d.status === "SUPERSEDED") stored.claim_token = modelled.claim_token = undefined;
  if (d.lastError === UNSPECIFIED && typeof real.last_error === "string") stored.last_error = UNSPECIFIED;
  return { stored, modelled };
}

function dispatchMismatch(real: DispatchDoc | null | undefined, d: ModelDispatch, tokens: Tokens, what: string): string[] {
  if (!real) return [`${what}: expected dispatch ${d.id}, got none`];
  const { stored, modelled } = views(real, d, tokens);
  const fields = Object.keys(modelled) as Array<keyof typeof modelled>;
  const differ = fields.filter((f) => JSON.stringify(stored[f]) !== JSON.stringify(modelled[f]));
  return differ.length ? [`${what} ${d.id}: ${differ.map((f) => `${f} is ${JSON.stringify(stored[f])}, model ${JSON.stringify(modelled[f])}`).join("; ")}`] : [];
}

function errorText(error: unknown): string {
  return error instanceof MailroomError ? `${error.code} (reason ${error.details.reason}): ${error.message}` : error instanceof Error ? (error.stack ?? error.message) : String(error);
}

/** Events per subject in journal order (the order between subjects is not promised), readable. */
function bySubject(events: ModelEvent[]): Record<string, string[]> {
  const groups: Record<string, string[]> = {};
  for (const e of events) (groups[e.subject] ??= []).push(`${EventKind[e.kind]} ${e.before || "-"} -> ${e.after}`);
  return groups;
}

function modelEventOf(doc: EventDoc): ModelEvent {
  const envelope = eventOf(doc).envelope!;
  return { kind: envelope.kind, subject: envelope.dispatchId || envelope.threadId, before: envelope.stateBefore, after: envelope.stateAfter };
}

function journalMismatch(real: ModelEvent[], expected: ModelEvent[]): string[] {
  const [got, want] = [bySubject(real), bySubject(expected)];
  const subjects = [...new Set([...Object.keys(got), ...Object.keys(want)])].sort();
  return subjects
    .filter((s) => JSON.stringify(got[s] ?? []) !== JSON.stringify(want[s] ?? []))
    .map((s) => `journal for ${s}: ${JSON.stringify(got[s] ?? [])}, model ${JSON.stringify(want[s] ?? [])}`);
}

function stateMismatch(real: DispatchDoc[], epochs: Record<string, number>, state: ModelState, tokens: Tokens): string[] {
  const byId = new Map(real.map((d) => [d._id, d]));
  const out: string[] = [];
  const extra = real.filter((d) => !model.find(state, d._id)).map((d) => d._id);
  if (extra.length) out.push(`stored dispatches the model does not have: ${extra.join(", ")}`);
  for (const d of state.dispatches) out.push(...dispatchMismatch(byId.get(d.id), d, tokens, "stored"));
  for (const t of THREAD_IDS) if (epochs[t] !== model.epochOf(state, t)) out.push(`epoch of ${t} is ${epochs[t]}, model ${model.epochOf(state, t)}`);
  return out;
}

// ---- calls --------------------------------------------------------------------

type TokenChoice = "current" | "past" | "other";

/** A call as generated: dispatches by index into the model's list, tokens by which claim they come from. */
type Step =
  | { kind: "enqueue"; via: number; thread: string; priority: number; delayMs: number; dedupeKey?: string; maxAttempts: number; tag: string; reuse?: number }
  | { kind: "claim"; via: number; thread?: string; limit: number; leaseMs: number; consumer: string }
  | { kind: "claim_dispatch"; via: number; target: number; leaseMs: number; consumer: string }
  | { kind: "fenced"; via: number; target: number; token: TokenChoice; call: FencedCall }
  | { kind: "cancel"; via: number; target: number }
  | { kind: "interrupt"; via: number; thread: string; detailed: boolean }
  | { kind: "reclaim"; via: number }
  | { kind: "purge"; via: number }
  | { kind: "repair"; via: number }
  | { kind: "advance"; ms: number };

/** The same call made concrete against the state it starts from. */
type Call =
  | { kind: "enqueue"; via: number; input: model.EnqueueInput }
  | { kind: "claim"; via: number; input: model.ClaimInput }
  | { kind: "claim_dispatch"; via: number; id: string; leaseMs: number; consumer: string }
  | { kind: "fenced"; via: number; id: string; token: string; call: FencedCall }
  | { kind: "cancel"; via: number; id: string; reason: string }
  | { kind: "interrupt"; via: number; thread: string; detailed: boolean }
  | { kind: "reclaim"; via: number }
  | { kind: "purge"; via: number; before: number }
  | { kind: "repair"; via: number }
  | { kind: "advance"; ms: number };

/** A dispatch by index into the model's list; one past the end names a dispatch that does not exist. */
function targetOf(state: ModelState, target: number): string {
  const n = state.dispatches.length;
  const i = target % (n + 1);
  return i === n ? NO_SUCH_DISPATCH : state.dispatches[i]!.id;
}

/** The token a fenced call presents: the dispatch's current one, its last past one, or another dispatch's. */
function tokenOf(state: ModelState, id: string, choice: TokenChoice): string {
  const d = model.find(state, id);
  if (choice === "current" && d?.token) return d.token;
  if (choice === "past" && d && d.pastTokens.length > 0) return d.pastTokens[d.pastTokens.length - 1]!;
  return state.dispatches.find((o) => o.id !== id && o.token)?.token ?? "ct_forged";
}

function resolve(system: System, state: ModelState, step: Step): Call {
  switch (step.kind) {
    case "enqueue": {
      const reused = step.reuse !== undefined && state.dispatches.length > 0 ? state.dispatches[step.reuse % state.dispatches.length]!.id : undefined;
      const id = reused ?? `${step.tag}-${system.nonce}-${system.nextId++}`;
      const { thread, priority, delayMs, maxAttempts } = step;
      return { kind: "enqueue", via: step.via, input: { id, thread, priority, delayMs, maxAttempts, dedupeKey: reused ? undefined : step.dedupeKey } };
    }
    case "claim":
      return { kind: "claim", via: step.via, input: { thread: step.thread, limit: step.limit, leaseMs: step.leaseMs, consumer: step.consumer } };
    case "claim_dispatch":
      return { kind: "claim_dispatch", via: step.via, id: targetOf(state, step.target), leaseMs: step.leaseMs, consumer: step.consumer };
    case "fenced": {
      const id = targetOf(state, step.target);
      return { kind: "fenced", via: step.via, id, token: tokenOf(state, id, step.token), call: step.call };
    }
    case "cancel":
      return { kind: "cancel", via: step.via, id: targetOf(state, step.target), reason: `cancel ${system.nextId++}` };
    case "purge":
      return { kind: "purge", via: step.via, before: state.now };
    default:
      return step;
  }
}

function describeCall(call: Call): string {
  const { kind, ...rest } = call;
  return `${kind} ${JSON.stringify(rest)}`;
}

/** What the model says the call answers (its value copied, as the engine's answer is a snapshot). */
function modelCall(state: ModelState, call: Call): Outcome<unknown> {
  const outcome = ((): Outcome<unknown> => {
    switch (call.kind) {
      case "enqueue": return model.enqueue(state, call.input);
      case "claim": return model.claim(state, call.input);
      case "claim_dispatch": return model.claimDispatch(state, call.id, call.leaseMs, call.consumer);
      case "fenced": return model.fenced(state, call.id, call.token, call.call);
      case "cancel": return model.cancel(state, call.id, call.reason);
      case "interrupt": return model.interrupt(state, call.thread);
      case "reclaim": return model.reclaimExpired(state);
      case "purge": return model.purgeTerminal(state, call.before);
      case "repair": return { ok: true, value: undefined, events: [] };
      case "advance":
        model.advance(state, call.ms);
        return { ok: true, value: undefined, events: [] };
    }
  })();
  return outcome.ok ? { ...outcome, value: structuredClone(outcome.value) } : outcome;
}

/** Makes the call on the engine; refusals are thrown (an EnqueueBatch entry's error too). */
async function engineCall(system: System, call: Call): Promise<unknown> {
  if (call.kind === "advance") return system.clock.advance(call.ms);
  const engine = system.engines[call.via]!;
  const mailbox = engine.mailbox;
  switch (call.kind) {
    case "enqueue": {
      const { id, thread, priority, delayMs, dedupeKey, maxAttempts } = call.input;
      const [outcome] = await mailbox.enqueue([{ dispatchId: id, threadId: thread, runId: `run-${id}`, priority, dedupeKey, maxAttempts, schedule: delayMs > 0 ? { delayMs } : undefined }]);
      if (!outcome || "error" in outcome) throw outcome?.error ?? new Error("no outcome");
      return outcome;
    }
    case "claim": {
      const { thread, limit, leaseMs, consumer } = call.input;
      return mailbox.claim({ threadId: thread, consumerId: consumer, leaseMs, limit, waitMs: 0 });
    }
    case "claim_dispatch":
      return mailbox.claimDispatch(call.id, call.consumer, call.leaseMs);
    case "fenced": {
      const ref = { dispatchId: call.id, claimToken: call.token };
      const c = call.call;
      switch (c.call) {
        case "ack": return { dispatch: await mailbox.ack(ref) };
        case "nack": return { dispatch: await mailbox.nack(ref, { delayMs: c.delayMs }, c.error) };
        case "dead_letter": return { dispatch: await mailbox.deadLetter(ref, c.error) };
        case "supersede_claimed": return { dispatch: await mailbox.supersedeClaimed(ref, c.reason) };
        case "extend_lease": return mailbox.extendLease(ref, c.extensionMs);
        case "record_start": return { dispatch: await mailbox.recordStart(ref, c.instanceId) };
        case "record_result": return { dispatch: await mailbox.recordResult(ref, { runStatus: c.runStatus }) };
      }
      break;
    }
    case "cancel":
      return mailbox.cancel(call.id, call.reason);
    case "interrupt":
      return mailbox.interrupt(call.thread, call.detailed);
    case "reclaim":
      return mailbox.reclaimExpired(100);
    case "purge":
      return engine.queries.purgeTerminal(call.before, 1000);
    case "repair":
      return engine.background.repair();
  }
}

type Answer = { value: unknown } | { error: unknown };

function answer(promise: Promise<unknown>): Promise<Answer> {
  return promise.then((value) => ({ value }), (error: unknown) => ({ error }));
}

/** The tokens of the claims a call answered with, keyed by the model's placeholders for them. */
function claimTokens(call: Call, got: Answer, into: Tokens): void {
  if (!("value" in got)) return;
  const docs = call.kind === "claim" ? (got.value as DispatchDoc[]) : call.kind === "claim_dispatch" ? [got.value as DispatchDoc] : [];
  for (const doc of docs) into.set(model.placeholderToken({ id: doc._id, attempts: doc.attempt_count }), doc.claim_token ?? "");
}

/** How the engine's answer differs from the model's (nothing: they agree). */
function answerMismatch(call: Call, expected: Outcome<unknown>, got: Answer, tokens: Tokens, loose: { active?: boolean } = {}): string[] {
  const what = describeCall(call);
  if (!expected.ok) {
    const { code, reasons } = expected.refusal;
    if ("value" in got) return [`${what}: expected ${code} (reason ${reasons.join(" or ")}), answered ${brief(got.value)}`];
    const e = got.error;
    return e instanceof MailroomError && e.code === code && reasons.includes(e.details.reason) ? [] : [`${what}: expected ${code} (reason ${reasons.join(" or ")}), got ${errorText(e)}`];
  }
  if ("error" in got) return [`${what}: expected success, got ${errorText(got.error)}`];
  const value = got.value;
  switch (call.kind) {
    case "enqueue": {
      const [real, want] = [value as { dispatch: DispatchDoc; deduplicated: boolean }, expected.value as { dispatch: ModelDispatch; deduplicated: boolean }];
      return [...(real.deduplicated === want.deduplicated ? [] : [`${what}: deduplicated ${real.deduplicated}`]), ...dispatchMismatch(real.dispatch, want.dispatch, tokens, what)];
    }
    case "claim":
    case "reclaim": {
      const [real, want] = [value as DispatchDoc[], expected.value as ModelDispatch[]];
      // Claim answers best first; the sweeper's answer has no order.
      const order = (ids: string[]) => (call.kind === "claim" ? ids : [...ids].sort());
      const [realIds, wantIds] = [order(real.map((d) => d._id)), order(want.map((d) => d.id))];
      if (JSON.stringify(realIds) !== JSON.stringify(wantIds)) return [`${what}: answered ${JSON.stringify(realIds)}, model ${JSON.stringify(wantIds)}`];
      return want.flatMap((d) => dispatchMismatch(real.find((r) => r._id === d.id), d, tokens, what));
    }
    case "claim_dispatch":
      return dispatchMismatch(value as DispatchDoc, expected.value as ModelDispatch, tokens, what);
    case "fenced": {
      const [real, want] = [value as { dispatch: DispatchDoc; interrupted?: boolean; threadEpoch?: number }, expected.value as model.FencedValue];
      const heartbeat = real.interrupted === want.interrupted && real.threadEpoch === want.threadEpoch ? [] : [`${what}: interrupted ${real.interrupted} at epoch ${real.threadEpoch}, model ${want.interrupted} at ${want.threadEpoch}`];
      return [...heartbeat, ...dispatchMismatch(real.dispatch, want.dispatch, tokens, what)];
    }
    case "cancel": {
      const [real, want] = [value as { dispatch: DispatchDoc; changed: boolean }, expected.value as { dispatch: ModelDispatch; changed: boolean }];
      return [...(real.changed === want.changed ? [] : [`${what}: changed ${real.changed}`]), ...dispatchMismatch(real.dispatch, want.dispatch, tokens, what)];
    }
    case "interrupt": {
      const [real, want] = [value as InterruptOutcome, expected.value as model.InterruptValue];
      const got = { newEpoch: real.newEpoch, active: loose.active ? undefined : real.active?._id, supersededCount: real.supersededCount, superseded: real.superseded.map((d) => d._id).sort() };
      const wanted = { newEpoch: want.newEpoch, active: loose.active ? undefined : want.active?.id, supersededCount: want.superseded.length, superseded: call.detailed ? want.superseded.map((d) => d.id).sort() : [] };
      const out = JSON.stringify(got) === JSON.stringify(wanted) ? [] : [`${what}: answered ${JSON.stringify(got)}, model ${JSON.stringify(wanted)}`];
      if (loose.active) {
        const active = real.active;
        if (active && !(active.thread_id === call.thread && active.status === "CLAIMED" && active.epoch < real.newEpoch)) out.push(`${what}: active ${brief(active)} is not a claim of an older epoch`);
      } else if (want.active) out.push(...dispatchMismatch(real.active, want.active, tokens, `${what} active`));
      const createdAt = real.superseded.map((d) => d.created_at);
      if (JSON.stringify(createdAt) !== JSON.stringify([...createdAt].sort((a, b) => a - b))) out.push(`${what}: superseded dispatches not oldest first`);
      return out;
    }
    case "purge":
      return value === expected.value ? [] : [`${what}: purged ${String(value)}, model ${String(expected.value)}`];
    default:
      return [];
  }
}

/** A value for a message, without the outboxes' encoded events. */
function brief(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => (key === "outbox" ? undefined : v));
}

// ---- checks that need no model ---------------------------------------------------

/** The transitions each event kind records (before -> after). */
const KIND_OF_TRANSITION: Record<string, EventKind[]> = {
  "-> QUEUED": [EventKind.DISPATCH_ENQUEUED],
  "QUEUED -> CLAIMED": [EventKind.DISPATCH_CLAIMED],
  "CLAIMED -> CLAIMED": [EventKind.DISPATCH_STARTED, EventKind.DISPATCH_RESULT_RECORDED, EventKind.DISPATCH_LEASE_EXTENDED],
  "CLAIMED -> ACKED": [EventKind.DISPATCH_ACKED],
  "CLAIMED -> QUEUED": [EventKind.DISPATCH_NACKED, EventKind.DISPATCH_LEASE_EXPIRED],
  "CLAIMED -> DEAD_LETTER": [EventKind.DISPATCH_DEAD_LETTERED],
  "QUEUED -> CANCELLED": [EventKind.DISPATCH_CANCELLED],
  "CLAIMED -> CANCELLED": [EventKind.DISPATCH_CANCELLED],
  "QUEUED -> SUPERSEDED": [EventKind.DISPATCH_SUPERSEDED],
  "CLAIMED -> SUPERSEDED": [EventKind.DISPATCH_SUPERSEDED],
};
/** A dead-lettering caused by a nack or a lease expiry records that cause first, with the same transition. */
const CAUSES_OF_DEAD_LETTER = [EventKind.DISPATCH_NACKED, EventKind.DISPATCH_LEASE_EXPIRED];

/**
 * The journal since the run started retells each dispatch's history: one
 * event of the right kind per transition, each starting where the previous
 * one ended, ending at the stored status, with one DISPATCH_CLAIMED per
 * attempt counted; no event id twice.
 */
async function journalHistoryMismatch(system: System): Promise<string[]> {
  const { events } = await journalAfter(system, system.startSeq);
  const out: string[] = [];
  if (new Set(events.map((e) => e.event_id)).size !== events.length) out.push("an event id is journaled twice");
  const bySubjectId = new Map<string, ModelEvent[]>();
  for (const e of events.map(modelEventOf)) bySubjectId.set(e.subject, [...(bySubjectId.get(e.subject) ?? []), e]);
  for (const doc of await storedDispatches(system)) {
    const history = bySubjectId.get(doc._id) ?? [];
    let at = "";
    let claims = 0;
    history.forEach((e, i) => {
      const cause = history[i + 1];
      if (cause && CAUSES_OF_DEAD_LETTER.includes(e.kind) && cause.kind === EventKind.DISPATCH_DEAD_LETTERED && e.after === status("DEAD_LETTER") && cause.before === e.before) return;
      const transition = `${e.before.replace("RUN_DISPATCH_STATUS_", "")} -> ${e.after.replace("RUN_DISPATCH_STATUS_", "")}`.trimStart();
      if (e.before !== at) out.push(`${doc._id}: ${EventKind[e.kind]} starts at ${e.before || "nothing"}, after ${at || "nothing"}`);
      if (!(KIND_OF_TRANSITION[transition] ?? []).includes(e.kind)) out.push(`${doc._id}: ${EventKind[e.kind]} records ${transition}`);
      if (e.kind === EventKind.DISPATCH_CLAIMED) claims++;
      at = e.after;
    });
    if (at !== status(doc.status)) out.push(`${doc._id}: the journal ends at ${at || "nothing"}, the dispatch is ${doc.status}`);
    if (claims !== doc.attempt_count) out.push(`${doc._id}: ${claims} claims journaled, attempt_count ${doc.attempt_count}`);
  }
  return out;
}

/** Threads holding more than one CLAIMED dispatch right now. */
async function doubleClaims(store: Store): Promise<string[]> {
  const claimed = await store.collection<DispatchDoc>(DISPATCHES).find({ status: "CLAIMED" });
  const threads = claimed.map((d) => d.thread_id);
  return [...new Set(threads.filter((t, i) => threads.indexOf(t) !== i))].map((t) => `thread ${t} holds ${claimed.filter((d) => d.thread_id === t).map((d) => d._id).join(" and ")}`);
}

// ---- one call at a time ------------------------------------------------------------

/** Runs one step on the engine and the model; compares the answer, the journal, the store and the queries. */
async function runStep(system: System, state: ModelState, step: Step): Promise<void> {
  const call = resolve(system, state, step);
  system.trace.push(describeCall(call));
  const what = `step ${system.trace.length - 1}: ${describeCall(call)}`;
  const expected = modelCall(state, call);
  const got = await answer(engineCall(system, call));
  const tokens: Tokens = new Map();
  claimTokens(call, got, tokens);
  for (const token of tokens.values()) {
    expect(token !== "" && !system.tokens.has(token), `${what}: a claim gets a fresh token`).toBe(true);
    system.tokens.add(token);
  }
  expect(answerMismatch(call, expected, got, tokens), `${what}: answer`).toEqual([]);
  for (const d of state.dispatches) if (d.token && tokens.has(d.token)) d.token = tokens.get(d.token);

  const { events, head } = await journalAfter(system, system.seenSeq);
  system.seenSeq = head;
  expect(journalMismatch(events.map(modelEventOf), expected.ok ? expected.events : []), `${what}: journal`).toEqual([]);
  expect(stateMismatch(await storedDispatches(system), await storedEpochs(system), state, tokens), `${what}: store`).toEqual([]);
  // The queries, through the other instance.
  const queries = system.engines[(call.kind === "advance" ? 0 : call.via + 1) % system.engines.length]!.queries;
  const counts = Object.fromEntries((await queries.count(undefined, undefined)).map((c) => [c.status, c.count]));
  expect(counts, `${what}: counts`).toEqual(model.counts(state));
  expect((await queries.queuedThreads(100, undefined)).items, `${what}: queued threads`).toEqual(model.queuedThreads(state));
  expect((await queries.list({ pageSize: 1000 })).items.map((d) => d._id), `${what}: listed oldest first`)
    .toEqual([...state.dispatches].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1)).map((d) => d.id));
}

// ---- calls made at once -------------------------------------------------------------

function* permutations<T>(items: T[]): Generator<T[]> {
  if (items.length <= 1) {
    yield items;
    return;
  }
  for (let i = 0; i < items.length; i++) {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)];
    for (const tail of permutations(rest)) yield [items[i]!, ...tail];
  }
}

/**
 * The one race whose answers no serial order gives (the stored outcome is
 * serial): an enqueue that read its thread's epoch before a racing interrupt
 * bumped it, and inserted after the interrupt had looked for old work.
 * The engine then supersedes the new dispatch itself ("enqueue, then
 * interrupt"), but the enqueue answers it SUPERSEDED, and the interrupt's
 * superseded count and list leave it out. These are the dispatches.
 */
function racedEnqueues(calls: Call[], got: Answer[]): Set<string> {
  const interrupted = new Set(calls.flatMap((c) => (c.kind === "interrupt" ? [c.thread] : [])));
  return new Set(calls.flatMap((call, i) => {
    const answered = got[i]!;
    if (call.kind !== "enqueue" || !("value" in answered) || !interrupted.has(call.input.thread)) return [];
    const { dispatch, deduplicated } = answered.value as { dispatch: DispatchDoc; deduplicated: boolean };
    return !deduplicated && dispatch.status === "SUPERSEDED" ? [dispatch._id] : [];
  }));
}

/**
 * The model's answer as the races the engine does not make atomic give it:
 * - the enqueue above answers its dispatch as it ends; the interrupt does not count it;
 * - an Interrupt bumps the epoch, then supersedes the old work: a ClaimDispatch
 *   in between is refused with DISPATCH_EPOCH_STALE (where a serial order says
 *   DISPATCH_NOT_QUEUED, the dispatch being superseded).
 */
function allowRace(call: Call, expected: Outcome<unknown>, raced: Set<string>, after: ModelState, calls: Call[]): Outcome<unknown> {
  if (!expected.ok) {
    const thread = call.kind === "claim_dispatch" ? model.find(after, call.id)?.thread : undefined;
    const interrupted = calls.some((c) => c.kind === "interrupt" && c.thread === thread);
    return interrupted ? { ok: false, refusal: { ...expected.refusal, reasons: [...expected.refusal.reasons, ErrorReason.DISPATCH_EPOCH_STALE] } } : expected;
  }
  if (call.kind === "enqueue" && raced.has(call.input.id) && model.find(after, call.input.id)?.status === "SUPERSEDED") {
    return { ...expected, value: { dispatch: model.find(after, call.input.id), deduplicated: false } };
  }
  if (call.kind === "interrupt") {
    const value = expected.value as model.InterruptValue;
    return { ...expected, value: { ...value, superseded: value.superseded.filter((d) => !raced.has(d.id)) } };
  }
  return expected;
}

/**
 * An Interrupt reads its thread's active claim after superseding the old
 * work, not when the epoch moves: a claim that starts or ends meanwhile, in
 * a call racing it, may or may not be the one it returns. It still returns
 * only a claim of an older epoch (or none).
 */
function claimsMayMove(call: Call, calls: Call[], before: ModelState): boolean {
  if (call.kind !== "interrupt") return false;
  const inThread = (id: string) => model.find(before, id)?.thread === call.thread;
  return calls.some((c) =>
    c.kind === "reclaim" || (c.kind === "claim" && (c.input.thread === undefined || c.input.thread === call.thread)) ||
    ((c.kind === "claim_dispatch" || c.kind === "fenced" || c.kind === "cancel") && inThread(c.id)));
}

/**
 * A Claim chooses its thread's best queued dispatch, then claims it with an
 * update conditional on that one dispatch. When a racing Nack or lease
 * reclaim requeues a better dispatch of the thread in between, the claim takes
 * the one it chose: the requeued one was not queued when it looked (its claim
 * then still held the thread), and the thread was free when it claimed. No
 * serial order gives that (a priority inversion for one claim). Returns the
 * calls as given, and, for each combination of claims that raced such a
 * requeue, the calls with those claims not seeing the requeued dispatches.
 */
function requeueRaces(before: ModelState, calls: Call[], got: Answer[]): Call[][] {
  const requeued = calls.flatMap((call, i) => {
    const answered = got[i]!;
    if (!("value" in answered)) return [];
    const docs = call.kind === "reclaim" ? (answered.value as DispatchDoc[]) : call.kind === "fenced" && call.call.call === "nack" ? [(answered.value as { dispatch: DispatchDoc }).dispatch] : [];
    return docs.filter((d) => d.status === "QUEUED");
  });
  const racing = calls.map((call) => {
    if (call.kind !== "claim") return [];
    return requeued.filter((d) => call.input.thread === undefined || d.thread_id === call.input.thread).map((d) => d._id).filter((id) => model.find(before, id));
  });
  let variants: Call[][] = [calls];
  racing.forEach((unseen, i) => {
    if (unseen.length === 0) return;
    variants = variants.flatMap((v) => [v, v.map((call, j) => (j === i && call.kind === "claim" ? { ...call, input: { ...call.input, unseen } } : call))]);
  });
  return variants;
}

/**
 * Calls that each take several dispatches, one conditional update at a time,
 * share the work in any split when they race: two ReclaimExpiredLeases, two
 * Interrupts of one thread, two Claims across threads. Each does part of
 * what the first of them in a serial order would do alone; only the total is
 * serial (what they reclaimed, superseded or claimed together). Each one's
 * expected answer becomes its part of the model's total; a claimed dispatch
 * is stored with the lease and consumer of the call that really took it.
 */
function shareSweeps(calls: Call[], expected: Outcome<unknown>[], got: Answer[], state: ModelState): { expected: Outcome<unknown>[]; mismatches: string[] } {
  const shared = [...expected];
  const mismatches: string[] = [];
  const groups = new Map<string, number[]>();
  calls.forEach((call, i) => {
    const key = call.kind === "reclaim" ? "reclaims"
      : call.kind === "interrupt" ? `interrupts of ${call.thread}`
      : call.kind === "claim" && call.input.thread === undefined ? "claims across threads"
      : undefined;
    if (key) groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  for (const [key, members] of groups) {
    if (members.length < 2 || members.some((i) => !expected[i]!.ok || !("value" in got[i]!))) continue;
    const value = (i: number) => (expected[i] as { value: unknown }).value;
    const answered = (i: number) => (got[i] as { value: unknown }).value;
    if (key === "claims across threads") {
      const modelled = members.flatMap((i) => value(i) as ModelDispatch[]);
      const [real, want] = [members.flatMap((i) => (answered(i) as DispatchDoc[]).map((d) => d._id)).sort(), modelled.map((d) => d.id).sort()];
      if (JSON.stringify(real) !== JSON.stringify(want)) mismatches.push(`${key} together claimed ${JSON.stringify(real)}, model ${JSON.stringify(want)}`);
      for (const i of members) {
        const { consumer, leaseMs } = (calls[i] as Extract<Call, { kind: "claim" }>).input;
        const mine = modelled
          .filter((d) => (answered(i) as DispatchDoc[]).some((r) => r._id === d.id))
          .map((d) => ({ ...d, claimedBy: consumer, leaseUntil: state.now + leaseMs }))
          .sort(model.claimOrder);
        shared[i] = { ...expected[i]!, value: mine } as Outcome<unknown>;
        for (const taken of mine) {
          const stored = model.find(state, taken.id);
          if (!stored || stored.token !== taken.token) continue;
          stored.claimedBy = consumer;
          if (stored.status === "CLAIMED") stored.leaseUntil = taken.leaseUntil;
        }
      }
      continue;
    }
    if (key === "reclaims") {
      const modelled = members.flatMap((i) => value(i) as ModelDispatch[]);
      const [real, want] = [members.flatMap((i) => (answered(i) as DispatchDoc[]).map((d) => d._id)).sort(), modelled.map((d) => d.id).sort()];
      if (JSON.stringify(real) !== JSON.stringify(want)) mismatches.push(`${key} together reclaimed ${JSON.stringify(real)}, model ${JSON.stringify(want)}`);
      for (const i of members) shared[i] = { ...expected[i]!, value: modelled.filter((d) => (answered(i) as DispatchDoc[]).some((r) => r._id === d.id)) } as Outcome<unknown>;
      continue;
    }
    let pool = members.flatMap((i) => (value(i) as model.InterruptValue).superseded);
    const realCount = members.reduce((sum, i) => sum + (answered(i) as InterruptOutcome).supersededCount, 0);
    if (realCount !== pool.length) mismatches.push(`${key} together superseded ${realCount}, model ${pool.length}`);
    for (const i of members) {
      const real = answered(i) as InterruptOutcome;
      const listed = (call: Call) => call.kind === "interrupt" && call.detailed;
      const mine = listed(calls[i]!) ? pool.filter((d) => real.superseded.some((r) => r._id === d.id)) : pool.slice(0, real.supersededCount);
      pool = pool.filter((d) => !mine.includes(d));
      shared[i] = { ...expected[i]!, value: { ...(value(i) as model.InterruptValue), superseded: mine } } as Outcome<unknown>;
    }
  }
  return { expected: shared, mismatches };
}

/**
 * The calls ran at once; finds a serial order of them that, applied to the
 * model, answers each as the engine did, stores what the engine stored and
 * journals what it journaled. Returns that order's state, or throws with the
 * closest order's differences.
 */
function linearise(before: ModelState, calls: Call[], got: Answer[], stored: DispatchDoc[], epochs: Record<string, number>, journaled: ModelEvent[], tokens: Tokens): ModelState {
  const raced = racedEnqueues(calls, got);
  let closest: { calls: Call[]; order: number[]; mismatches: string[] } | undefined;
  for (const variant of requeueRaces(before, calls, got)) {
    for (const order of permutations(variant.map((_, i) => i))) {
      const state = model.cloneModel(before);
      const events: ModelEvent[] = [];
      const expected: Outcome<unknown>[] = [];
      for (const i of order) {
        expected[i] = modelCall(state, variant[i]!);
        if (expected[i]!.ok) events.push(...expected[i]!.events);
      }
      const shared = shareSweeps(variant, variant.map((call, i) => allowRace(call, expected[i]!, raced, state, variant)), got, state);
      const mismatches = [
        ...shared.mismatches,
        ...variant.flatMap((call, i) => answerMismatch(call, shared.expected[i]!, got[i]!, tokens, { active: claimsMayMove(call, variant, before) })),
        ...stateMismatch(stored, epochs, state, tokens),
        ...journalMismatch(journaled, events),
      ];
      if (mismatches.length === 0) return state;
      if (!closest || mismatches.length < closest.mismatches.length) closest = { calls: variant, order, mismatches };
    }
  }
  throw new Error(
    `no serial order of the concurrent calls explains the outcome; the closest, ${closest!.order.map((i) => `#${i}`).join(" then ")}, differs:\n  ${closest!.mismatches.join("\n  ")}\n` +
      `calls:\n${closest!.calls.map((c, i) => `  #${i} ${describeCall(c)} -> ${"value" in got[i]! ? brief(got[i]!.value) : errorText(got[i]!.error)}`).join("\n")}`,
  );
}

interface Round {
  advanceMs: number;
  steps: Step[];
}

/** Runs the round's calls at once, interleaved by the scheduler, then checks the outcome against every serial order. */
async function runRound(system: System, state: ModelState, s: fc.Scheduler, round: Round, violations: string[]): Promise<ModelState> {
  if (round.advanceMs > 0) await runStep(system, state, { kind: "advance", ms: round.advanceMs });
  const calls = round.steps.map((step) => resolve(system, state, step));
  system.trace.push(`at once: ${calls.map(describeCall).join(" | ")}`);
  for (const view of system.views) view.gate = scheduledGate(s);
  let got: Answer[];
  try {
    got = await s.waitFor(Promise.all(calls.map((call) => answer(engineCall(system, call)))));
  } finally {
    for (const view of system.views) view.gate = undefined;
  }
  await s.waitIdle(); // operations started off the calls' paths (outbox clears)
  expect(violations, "at most one CLAIMED dispatch per thread after every store operation").toEqual([]);

  const tokens: Tokens = new Map();
  calls.forEach((call, i) => claimTokens(call, got[i]!, tokens));
  const issued = [...tokens.values()];
  expect(issued.every((t) => t !== "" && !system.tokens.has(t)) && new Set(issued).size === issued.length, "every claim gets a fresh token").toBe(true);
  issued.forEach((t) => system.tokens.add(t));

  const { events, head } = await journalAfter(system, system.seenSeq);
  system.seenSeq = head;
  const after = linearise(state, calls, got, await storedDispatches(system), await storedEpochs(system), events.map(modelEventOf), tokens);
  for (const d of after.dispatches) if (d.token && tokens.has(d.token)) d.token = tokens.get(d.token);
  expect(await journalHistoryMismatch(system), "the journal retells every dispatch's history").toEqual([]);
  return after;
}

// ---- generators -------------------------------------------------------------------

const via = fc.constantFrom(0, 1);
const thread = fc.constantFrom(...THREAD_IDS);
const lease = fc.constantFrom(1_000, 2_000);
const consumer = fc.constantFrom("w1", "w2");
const target = fc.nat({ max: 40 });

const fencedCall: fc.Arbitrary<FencedCall> = fc.oneof(
  fc.constant({ call: "ack" as const }),
  fc.record({ call: fc.constant("nack" as const), delayMs: fc.constantFrom(0, 1_000), error: fc.constantFrom("boom", "timeout") }),
  fc.record({ call: fc.constant("dead_letter" as const), error: fc.constant("poison") }),
  fc.record({ call: fc.constant("extend_lease" as const), extensionMs: fc.constantFrom(500, 2_000) }),
  fc.record({ call: fc.constant("supersede_claimed" as const), reason: fc.constant("newer input") }),
  fc.record({ call: fc.constant("record_start" as const), instanceId: fc.constantFrom("i1", "i2") }),
  fc.record({ call: fc.constant("record_result" as const), runStatus: fc.constantFrom(1, 3) }),
);

const enqueueStep = fc.record({
  kind: fc.constant("enqueue" as const), via, thread,
  priority: fc.constantFrom(0, 1, 128, 200, 255),
  delayMs: fc.constantFrom(0, 0, 0, 500, 1_000),
  dedupeKey: fc.option(fc.constantFrom("k1", "k2"), { nil: undefined }),
  maxAttempts: fc.constantFrom(1, 2, 3),
  // Random id prefixes: ids do not follow enqueue order, so ties in claim order are broken by id for real.
  tag: fc.stringMatching(/^[a-z]{2}$/),
  reuse: fc.option(fc.nat({ max: 20 }), { nil: undefined, freq: 8 }),
}, { requiredKeys: ["kind", "via", "thread", "priority", "delayMs", "maxAttempts", "tag"] });
const claimStep = fc.record({ kind: fc.constant("claim" as const), via, thread: fc.option(thread, { nil: undefined }), limit: fc.integer({ min: 1, max: 3 }), leaseMs: lease, consumer }, { requiredKeys: ["kind", "via", "limit", "leaseMs", "consumer"] });
const claimDispatchStep = fc.record({ kind: fc.constant("claim_dispatch" as const), via, target, leaseMs: lease, consumer });
const fencedStep = fc.record({ kind: fc.constant("fenced" as const), via, target, token: fc.constantFrom<TokenChoice>("current", "current", "current", "past", "other"), call: fencedCall });
const cancelStep = fc.record({ kind: fc.constant("cancel" as const), via, target });
const interruptStep = fc.record({ kind: fc.constant("interrupt" as const), via, thread, detailed: fc.boolean() });
const reclaimStep = fc.record({ kind: fc.constant("reclaim" as const), via });
const purgeStep = fc.record({ kind: fc.constant("purge" as const), via });
const repairStep = fc.record({ kind: fc.constant("repair" as const), via });
const advanceStep = fc.record({ kind: fc.constant("advance" as const), ms: fc.constantFrom(1, 250, 999, 1_000, 1_001, 3_000) });

class StepCommand implements fc.AsyncCommand<ModelState, System, false> {
  constructor(readonly step: Step) {}
  check(): boolean {
    return true;
  }
  run(state: ModelState, system: System): Promise<void> {
    return runStep(system, state, this.step);
  }
  toString(): string {
    const { kind, ...rest } = this.step;
    return `${kind}(${JSON.stringify(rest)})`;
  }
}

/** Enqueues, claims and fenced calls are the common traffic. */
const commandArbs = ([
  [enqueueStep, 3], [claimStep, 2], [claimDispatchStep, 1], [fencedStep, 3], [cancelStep, 1], [interruptStep, 1],
  [reclaimStep, 1], [purgeStep, 1], [repairStep, 1], [advanceStep, 2],
] as Array<[fc.Arbitrary<Step>, number]>).flatMap(([arb, weight]) => Array.from({ length: weight }, () => arb.map((step) => new StepCommand(step))));

/** Calls worth racing: everything that changes dispatches, on either instance. */
const concurrentStep: fc.Arbitrary<Step> = fc.oneof(
  { arbitrary: enqueueStep, weight: 2 },
  { arbitrary: claimStep, weight: 3 },
  { arbitrary: claimDispatchStep, weight: 1 },
  { arbitrary: fencedStep, weight: 3 },
  { arbitrary: cancelStep, weight: 1 },
  { arbitrary: interruptStep, weight: 1 },
  { arbitrary: reclaimStep, weight: 1 },
  { arbitrary: repairStep, weight: 1 },
);
const setupArb = fc.array(fc.oneof({ arbitrary: enqueueStep, weight: 3 }, { arbitrary: claimStep, weight: 1 }), { minLength: 1, maxLength: 8 });
const roundsArb = fc.array(fc.record({ advanceMs: fc.constantFrom(0, 0, 1_000, 2_000), steps: fc.array(concurrentStep, { minLength: 2, maxLength: 5 }) }), { minLength: 1, maxLength: 3 });

// ---- the properties -------------------------------------------------------------

describe.each(storeBackends())("mailbox against its model: $name backend", (backend) => {
  let store: Store;
  let views: GatedStore[];
  let engines: Engine[];
  const clock = new ManualClock();
  let nonce = 0;

  beforeAll(async () => {
    if (!backend.available) return;
    store = await backend.open();
    // Two instances, each through its own view of the store (and its own connection on MongoDB).
    views = [new GatedStore(store, "A"), new GatedStore(await backend.reconnect(store), "B")];
    // Outbox repair may re-journal anything not yet cleared, to race the transitions it repairs. No
    // timers fire within a run (they would add store operations the scheduler's seed cannot replay).
    const options = { clock, background: false, journal: { holeTimeoutMs: 600_000 }, outbox: { repairAfterMs: 0, clearDelayMs: 600_000 } };
    engines = [await Engine.start(views[0]!, options), await Engine.start(views[1]!, options)];
  });
  afterAll(async () => {
    if (!backend.available) return;
    await Promise.all(engines.map((e) => e.stop()));
    if (views[1]!.inner !== store) await views[1]!.inner.close();
    await backend.dispose(store);
  });

  /** Empties the mailbox between runs: one store serves every run, and ids carry the run's nonce. */
  async function freshSystem(): Promise<System> {
    await Promise.all(engines.map((e) => e.outbox.drain()));
    await store.collection<DispatchDoc>(DISPATCHES).deleteMany({});
    await store.collection(THREADS).deleteMany({});
    const head = await engines[0]!.journal.writtenHead();
    return { store, views, engines, clock, startSeq: head, seenSeq: head, tokens: new Set(), nonce: ++nonce, nextId: 0, trace: [] };
  }

  function withTrace(system: System, error: unknown): unknown {
    if (error instanceof Error) error.message += `\n\ntrace:\n${system.trace.map((line, i) => `  ${i}: ${line}`).join("\n")}`;
    return error;
  }

  describe.skipIf(!backend.available)("one call at a time, through either instance", () => {
    it("every answer, refusal reason, journal event, stored dispatch, epoch and query result is the contract model's", async () => {
      await fc.assert(
        fc.asyncProperty(fc.commands(commandArbs, { size: "+1" }), async (commands) => {
          const system = await freshSystem();
          const state = model.emptyModel(clock.now());
          await fc.asyncModelRun(() => ({ model: state, real: system }), commands).catch((error: unknown) => {
            throw withTrace(system, error);
          });
        }),
        runs(100),
      );
    }, 600_000);
  });

  describe.skipIf(!backend.available)("calls at once on two instances, interleaved at every store operation", () => {
    it("end as some serial order of them would, never hold two claims in a thread, and journal each transition once", async () => {
      const violations: string[] = [];
      let watching = false;
      // After every store operation the scheduler lets through: no thread holds two claims.
      const act = async (f: () => Promise<unknown>) => {
        await f();
        if (watching) violations.push(...(await doubleClaims(store)));
      };
      await fc.assert(
        fc.asyncProperty(fc.scheduler({ act }), setupArb, roundsArb, async (s, setup, rounds) => {
          const system = await freshSystem();
          let state = model.emptyModel(clock.now());
          violations.length = 0;
          try {
            for (const step of setup) await runStep(system, state, step);
            watching = true;
            for (const round of rounds) state = await runRound(system, state, s, round, violations);
          } catch (error) {
            throw withTrace(system, error);
          } finally {
            watching = false;
          }
        }),
        runs(100),
      );
    }, 600_000);
  });
});
