/**
 * The mailbox use cases (seed: mailbox.rs): enqueue, claim, and every
 * transition of a claimed dispatch.
 *
 * Each transition is one conditional update of the dispatch (the condition is
 * the state machine's "from" status, plus the claim token and an unexpired
 * lease for fenced calls) that also pushes the transition's event into the
 * dispatch's outbox; the event is journaled before the call returns.
 *
 * Cost: on MongoDB every store operation is a majority round trip, so the hot
 * paths are written in batches. Concurrent Enqueue, Claim (of any thread) and
 * Ack calls are coalesced (engine/coalescer.ts): whatever arrives while a
 * batch is in flight goes in the next one, whose transitions are one bulk
 * write and one read, whose threads are one bulk write, and whose events are
 * one journal group commit. A fenced call writes first and reads only to
 * explain a refusal.
 *
 * A Mailbox is one namespace's: its store is the namespace's view (every
 * query and index carries the namespace), so its batches hold that
 * namespace's calls only.
 */
import { EntityKind, ErrorReason, MailroomError, failedPrecondition, notFound } from "../../domain/errors.js";
import type { Clock } from "../../domain/clock.js";
import type { ClaimCommand, ClaimRef, EnqueueCommand, RunResult, Schedule } from "../../domain/dispatch/commands.js";
import { MAX_INTERRUPT_DETAILS, type MailboxLimits } from "../../domain/dispatch/commands.js";
import { threadInterruptedEvent } from "../../domain/dispatch/events.js";
import { fencingFailure } from "../../domain/dispatch/fencing.js";
import { type DispatchStatus, attemptsSpent, isTerminal, statusName } from "../../domain/dispatch/state.js";
import { EventKind, isTerminalKind } from "../../domain/events/kinds.js";
import { newClaimToken, newId } from "../../domain/ids.js";
import type { Collection, Filter, Store, UpdateFilter } from "../../store/port.js";
import { Coalescer, type Outcome } from "../coalescer.js";
import { pendingEvent } from "../journal/records.js";
import type { Logger } from "../logger.js";
import { type CompactEntry, type NamespaceOutbox, initialOutbox, withEvents } from "../outbox.js";
import { dispatchEntry, materializeDispatchEvent } from "./dispatch-events.js";
import {
  CLAIM_ORDER,
  DISPATCH_INDEXES,
  DISPATCHES,
  type DispatchDoc,
  dispatchIdOfRank,
  claimSizeBound,
  rankOf,
  RESPONSE_FRAMING,
  runDispatchSizeBound,
  THREADS,
  type ThreadDoc,
} from "./records.js";
import type { EndedClaim, Enlistment, Threads } from "./threads.js";
import { type Transition, applyTransitions } from "./transitions.js";
import type { QueueQuota } from "./queue-quota.js";
import { DispatchSignalReason, type NamespaceSignals } from "./work-signals.js";

export interface MailboxDeps {
  /** The namespace's view of the store. */
  store: Store;
  limits: MailboxLimits;
  outbox: NamespaceOutbox;
  threads: Threads;
  signals: NamespaceSignals;
  /** The namespace's limit of queued dispatches, when it has one. */
  quota?: QueueQuota;
  /** The namespace's claims whose lease expired by `now`, at most `limit` (they are found through a store-wide index: see MailboxBackground.expiredIn). */
  expiredClaims: (now: number, limit: number) => Promise<DispatchDoc[]>;
  clock: Clock;
  log: Logger;
}

export type EnqueueOutcome = { dispatch: DispatchDoc; deduplicated: boolean } | { error: MailroomError };

export interface InterruptOutcome {
  newEpoch: number;
  active: DispatchDoc | null;
  supersededCount: number;
  superseded: DispatchDoc[];
}

interface EventSpec {
  kind: EventKind;
  summary: string;
  /** The transition made the dispatch claimable (at `at`): the signal it implies. */
  claimable?: { reason: DispatchSignalReason; at: number };
}

/** What a fenced transition does to the dispatch, and the events recording it. */
type TransitionPlan = { update: UpdateFilter<DispatchDoc>; events: EventSpec[] };

/** Who a claimed dispatch goes to. */
interface Claimant {
  consumerId: string;
  leaseMs: number;
}

/** A thread's queued dispatch that a claim is about to take. */
interface Head {
  thread: ThreadDoc;
  head: DispatchDoc;
}

/** How often a transition re-reads a dispatch whose conditional update lost a race. */
const CONTENDED_ATTEMPTS = 8;
/** Most dispatches one coalesced enqueue, claim or ack batch carries. */
const ENQUEUE_BATCH = 1000;
const CLAIM_BATCH = 200;
const ACK_BATCH = 1000;
/** Most rounds one claim across threads takes (under heavy contention it returns what it has). */
const CLAIM_ROUNDS = 64;

export class Mailbox {
  readonly dispatches: Collection<DispatchDoc>;
  private readonly enqueues: Coalescer<EnqueueCommand[], EnqueueOutcome[]>;
  private readonly claims: Coalescer<ClaimCommand, DispatchDoc[]>;
  private readonly acks: Coalescer<ClaimRef[], Array<DispatchDoc | MailroomError>>;

  constructor(private readonly deps: MailboxDeps) {
    this.dispatches = deps.store.collection<DispatchDoc>(DISPATCHES);
    const flat = <I, O>(run: (inputs: I[]) => Promise<O[]>) => async (calls: I[][]): Promise<Array<Outcome<O[]>>> => {
      const outcomes = await run(calls.flat());
      let offset = 0;
      return calls.map((call) => ({ value: outcomes.slice(offset, (offset += call.length)) }));
    };
    this.enqueues = new Coalescer(flat((commands: EnqueueCommand[]) => this.enqueueNow(commands)), { maxInFlight: 2, maxWeight: ENQUEUE_BATCH, weight: (c) => c.length });
    // One claim batch at a time: each sees the threads the previous one took.
    this.claims = new Coalescer((commands) => this.claimNow(commands), { maxInFlight: 1, maxWeight: CLAIM_BATCH, weight: (c) => c.limit });
    this.acks = new Coalescer(flat((refs: ClaimRef[]) => this.ackNow(refs)), { maxInFlight: 2, maxWeight: ACK_BATCH, weight: (r) => r.length });
  }

  /** Creates the namespace-first indexes (every namespace's: once, through any namespace's mailbox). */
  async init(): Promise<void> {
    await this.dispatches.createIndexes(DISPATCH_INDEXES);
    await this.deps.threads.init();
    await this.deps.outbox.register(DISPATCHES, materializeDispatchEvent);
    await this.deps.outbox.register(THREADS);
  }

  // ---- enqueue ---------------------------------------------------------

  /**
   * Enqueues; one outcome per command, in order. Concurrent calls share their round trips.
   * @throws MailroomError RESOURCE_EXHAUSTED (QUEUE_LIMIT) when the namespace's queued dispatches would pass its limit (nothing enqueued).
   */
  async enqueue(commands: EnqueueCommand[]): Promise<EnqueueOutcome[]> {
    const admitting = this.deps.quota?.admit(commands.length);
    if (admitting) await admitting;
    return this.enqueues.submit(commands);
  }

  private async enqueueNow(commands: EnqueueCommand[]): Promise<EnqueueOutcome[]> {
    const now = this.deps.clock.now();
    const docs = commands.map((command) => this.newDispatch(command, now));
    // Counted and covered by the hints before they exist (a crash in between leaves hints that promise too much, which hides nothing).
    const before = await this.deps.threads.enlist(enlistments(docs), "before");
    for (const doc of docs) {
      doc.epoch = before.get(doc.thread_id)!.epoch;
      const availableNow = doc.available_at <= now;
      Object.assign(doc, initialOutbox([this.entry(doc, {
        kind: EventKind.DISPATCH_ENQUEUED,
        summary: `enqueued with priority ${doc.priority}${availableNow ? "" : `, available at ${new Date(doc.available_at).toISOString()}`}`,
        claimable: { reason: availableNow ? DispatchSignalReason.ENQUEUED : DispatchSignalReason.AVAILABLE, at: doc.available_at },
      }, undefined, now)], now));
    }
    const { duplicates } = await this.dispatches.insertMany(docs);
    const refused = new Map(duplicates.map((d) => [d.position, d.index]));
    const originals = await this.originalsOf(docs.filter((_, i) => refused.has(i)));
    const outcomes: EnqueueOutcome[] = [];
    let inserted: DispatchDoc[] = [];
    for (const [i, doc] of docs.entries()) {
      const index = refused.get(i);
      if (index === undefined) {
        inserted.push(doc);
        outcomes.push({ dispatch: doc, deduplicated: false });
        continue;
      }
      const original = index === "dedupe_key_per_thread" ? originals.byDedupeKey.get(dedupeKeyOf(doc)) : originals.byId.get(doc._id);
      if (original && original.thread_id === doc.thread_id) {
        outcomes.push({ dispatch: original, deduplicated: true });
      } else if (original) {
        outcomes.push({ error: new MailroomError("already_exists", `dispatch_id ${JSON.stringify(doc._id)} is already used by another thread`, { reason: ErrorReason.INVALID_FIELD, field: "dispatch_id", entity: { kind: EntityKind.DISPATCH, id: doc._id } }) });
      } else {
        // The original was purged between our insert and our read: a retry will enqueue it.
        outcomes.push({ error: new MailroomError("unavailable", "the dispatch conflicted with one being purged; retry the enqueue", { reason: ErrorReason.STORE_UNAVAILABLE }) });
      }
    }
    if (inserted.length > 0) {
      // The hint was lowered before the insert, but a recomputation that read
      // the thread after that and looked for queued work before the insert may
      // have raised it again: lower it once more, now the work exists.
      const after = await this.deps.threads.enlist(enlistments(inserted, 0), "after");
      // An interrupt between reading the epoch and inserting: the new work belongs
      // to the old epoch, so it is superseded like the rest of that epoch.
      const stale = inserted.filter((doc) => after.get(doc.thread_id)!.epoch !== doc.epoch);
      if (stale.length > 0) {
        const superseded = await this.supersedeQueued(stale.map((doc) => ({ doc, reason: `thread interrupted while enqueuing (epoch ${doc.epoch} -> ${after.get(doc.thread_id)!.epoch})` })));
        const replaced = new Map(superseded.map((doc) => [doc._id, doc]));
        inserted = inserted.map((doc) => replaced.get(doc._id) ?? doc);
        for (const outcome of outcomes) {
          if ("dispatch" in outcome && !outcome.deduplicated) outcome.dispatch = replaced.get(outcome.dispatch._id) ?? outcome.dispatch;
        }
      }
    }
    await this.deps.outbox.flush(DISPATCHES, inserted);
    return outcomes;
  }

  /** The dispatches that refused `docs` (by dedupe key or by id): one read for each kind. */
  private async originalsOf(docs: DispatchDoc[]): Promise<{ byDedupeKey: Map<string, DispatchDoc>; byId: Map<string, DispatchDoc> }> {
    const keyed = docs.filter((d) => d.dedupe_key !== undefined);
    const [byKey, byId] = await Promise.all([
      keyed.length === 0 ? [] : this.dispatches.find({ thread_id: { $in: [...new Set(keyed.map((d) => d.thread_id))] }, dedupe_key: { $in: [...new Set(keyed.map((d) => d.dedupe_key!))] } }),
      docs.length === 0 ? [] : this.dispatches.find({ _id: { $in: [...new Set(docs.map((d) => d._id))] } }),
    ]);
    return { byDedupeKey: new Map(byKey.map((d) => [dedupeKeyOf(d), d])), byId: new Map(byId.map((d) => [d._id, d])) };
  }

  private newDispatch(command: EnqueueCommand, now: number): DispatchDoc {
    const doc: DispatchDoc = {
      _id: command.dispatchId ?? newId(),
      thread_id: command.threadId,
      run_id: command.runId ?? newId(),
      priority: command.priority,
      epoch: 0,
      status: "QUEUED",
      terminal: false,
      available_at: resolveSchedule(command.schedule, now),
      attempt_count: 0,
      max_attempts: command.maxAttempts,
      created_at: now,
      updated_at: now,
    };
    if (doc.available_at > now) doc.delayed_until = doc.available_at;
    if (command.agentId) doc.agent_id = command.agentId;
    if (command.dedupeKey) doc.dedupe_key = command.dedupeKey;
    if (command.payload) doc.payload = { data: command.payload.data, media_type: command.payload.mediaType };
    return doc;
  }

  // ---- claim -----------------------------------------------------------

  /** Claims up to `limit` dispatches; with `waitMs`, waits for work instead of returning empty. */
  async claim(command: ClaimCommand, abort?: AbortSignal): Promise<DispatchDoc[]> {
    const deadline = performance.now() + command.waitMs;
    for (;;) {
      const since = this.deps.signals.version;
      const claimed = command.threadId
        ? await this.claimInThread(command.threadId, command).then((d) => (d ? [d] : []))
        : await this.claims.submit(command);
      if (claimed.length > 0) return claimed;
      const remaining = deadline - performance.now();
      if (remaining <= 0 || abort?.aborted) return [];
      if (this.deps.signals.version !== since) continue; // a signal came while claiming: claim again
      const woken = await this.deps.signals.wait(command.threadId, remaining, abort);
      // Woken for a dispatch but leaving without claiming: the next waiter gets the wake.
      if (woken && abort?.aborted) {
        this.deps.signals.passOn(command.threadId);
        return [];
      }
    }
  }

  /** Claims one named dispatch, or explains why it is not claimable. */
  async claimDispatch(dispatchId: string, consumerId: string, leaseMs: number): Promise<DispatchDoc> {
    for (let attempt = 0; ; attempt++) {
      const current = await this.dispatches.findOne({ _id: dispatchId });
      if (!current) throw notFound(EntityKind.DISPATCH, dispatchId);
      const entity = { kind: EntityKind.DISPATCH, id: dispatchId };
      const quoted = JSON.stringify(dispatchId);
      if (current.status !== "QUEUED") {
        throw failedPrecondition(ErrorReason.DISPATCH_NOT_QUEUED, `dispatch ${quoted} is not queued (it is ${statusName(current.status)})`, { entity, metadata: { status: statusName(current.status) } });
      }
      const now = this.deps.clock.now();
      if (current.available_at > now) {
        const at = new Date(current.available_at).toISOString();
        throw failedPrecondition(ErrorReason.DISPATCH_NOT_AVAILABLE, `dispatch ${quoted} is not available before ${at}`, { entity, metadata: { available_at: at } });
      }
      const thread = await this.deps.threads.get(current.thread_id);
      if (thread && thread.epoch !== current.epoch) {
        throw failedPrecondition(ErrorReason.DISPATCH_EPOCH_STALE, `dispatch ${quoted} belongs to epoch ${current.epoch} of its thread, which was interrupted (now epoch ${thread.epoch})`, { entity, metadata: { dispatch_epoch: String(current.epoch), thread_epoch: String(thread.epoch) } });
      }
      const [outcome] = await this.claimHeads([{ thread: thread ?? syntheticThread(current), head: current }], [{ consumerId, leaseMs }], !thread);
      if (outcome!.won) {
        await this.deps.outbox.flush(DISPATCHES, [outcome!.doc]);
        return outcome!.doc!;
      }
      if (outcome!.busy) {
        throw failedPrecondition(ErrorReason.THREAD_HAS_CLAIM, `thread ${JSON.stringify(current.thread_id)} already has a claimed dispatch; a thread has at most one claim at a time`, { entity: { kind: EntityKind.THREAD, id: current.thread_id } });
      }
      // It changed under us: explain anew (bounded: a dispatch changes status a bounded number of times).
      if (attempt >= CONTENDED_ATTEMPTS) throw contended(dispatchId);
    }
  }

  /** A batch of coalesced claims of any thread: each gets its share of the best heads, in the order they came. */
  private async claimNow(commands: ClaimCommand[]): Promise<Array<Outcome<DispatchDoc[]>>> {
    const shares = commands.map((command) => this.share(command));
    await this.claimAcross(shares);
    const claimed = shares.flatMap((share) => share.claimed);
    await this.deps.outbox.flush(DISPATCHES, claimed);
    return shares.map((share) => ({ value: share.claimed.sort((a, b) => (rankOf(a) < rankOf(b) ? -1 : 1)) }));
  }

  /**
   * Takes the best heads across threads, best first, at most one per thread.
   * A thread's hint ranks it by its best queued dispatch, which may be better
   * than what it can give now (that one left, or is delayed): a hint is only
   * a bound. The dispatch a hint names is read for all candidates at once;
   * when it is queued and claimable now it is the thread's real head (the
   * common case). Otherwise the thread's real head is looked up. A head is
   * taken only when no thread not yet looked at could beat it: threads come in
   * hint order, so the last hint fetched bounds every real head still unseen.
   * The heads taken in a round are claimed with one bulk write.
   */
  private async claimAcross(shares: Share[]): Promise<void> {
    const wanted = () => shares.reduce((sum, share) => sum + share.left, 0);
    /**
     * Whom each head goes to, best head first: the first share (in the order
     * the claims came) with room for it. A share whose response has no room
     * left for a head takes nothing more (no worse head may overtake it).
     */
    const assign = (heads: Array<Head & { rank: string }>): Array<{ entry: Head & { rank: string }; share: Share }> => {
      const planned = new Map<Share, { count: number; bytes: number }>();
      const out: Array<{ entry: Head & { rank: string }; share: Share }> = [];
      for (const entry of heads) {
        const base = runDispatchSizeBound(entry.head);
        for (const share of shares) {
          const taken = planned.get(share) ?? { count: 0, bytes: 0 };
          if (share.left - taken.count <= 0) continue;
          const size = base + claimSizeBound(share.claimant.consumerId);
          if (share.bytesLeft - taken.bytes < size) {
            share.left = taken.count; // full: what is planned for it is all it gets
            continue;
          }
          planned.set(share, { count: taken.count + 1, bytes: taken.bytes + size });
          out.push({ entry, share });
          break;
        }
      }
      return out;
    };
    const record = (outcomes: ClaimOutcome[], owners: Share[]) => {
      outcomes.forEach((outcome, i) => {
        if (!outcome.won) return;
        const share = owners[i]!;
        share.claimed.push(outcome.doc!);
        share.left--;
        share.bytesLeft -= runDispatchSizeBound(outcome.doc!);
      });
    };
    const examined = new Set<string>();
    let pool: Array<Head & { rank: string }> = [];
    let exhausted = false;
    // Bounded: each round looks at new threads or at heads that changed under a claim.
    for (let round = 0; wanted() > 0 && round < CLAIM_ROUNDS; round++) {
      let bound: string | undefined;
      if (!exhausted) {
        const now = this.deps.clock.now();
        const candidates = await this.deps.threads.candidates(now, wanted(), examined);
        exhausted = candidates.length < wanted();
        if (!exhausted) bound = candidates[candidates.length - 1]!.head_rank;
        for (const thread of candidates) examined.add(thread._id);
        const named = candidates.length === 0 ? [] : await this.dispatches.find({ _id: { $in: candidates.map((t) => dispatchIdOfRank(t.head_rank!)) } });
        const byId = new Map(named.map((d) => [d._id, d]));
        const unsure: ThreadDoc[] = [];
        for (const thread of candidates) {
          const head = byId.get(dispatchIdOfRank(thread.head_rank!));
          if (head && isHeadOf(head, thread, now)) pool.push({ thread, head, rank: thread.head_rank! });
          else unsure.push(thread);
        }
        pool.push(...(await this.realHeads(unsure, true)));
      }
      pool.sort((a, b) => (a.rank < b.rank ? -1 : 1));
      const planned = assign(pool.filter((h) => bound === undefined || h.rank <= bound));
      if (planned.length === 0) {
        if (exhausted || wanted() === 0) break;
        continue;
      }
      const take = planned.map((p) => p.entry);
      pool = pool.filter((h) => !take.includes(h));
      const outcomes = await this.claimHeads(take, planned.map((p) => p.share.claimant));
      record(outcomes, planned.map((p) => p.share));
      // A head that changed under us: look at its thread once more.
      pool.push(...(await this.realHeads(outcomes.flatMap((o, i) => (!o.won && !o.busy ? [take[i]!.thread] : [])), false)));
      if (exhausted && pool.length === 0) break;
    }
  }

  /** The threads' real heads (one indexed read each); with `correct`, a thread whose hint promised work it does not have is recomputed. */
  private async realHeads(threads: ThreadDoc[], correct: boolean): Promise<Array<Head & { rank: string }>> {
    const found = await Promise.all(threads.map(async (thread) => {
      const head = await this.headOf(thread);
      if (!head && correct) await this.deps.threads.recompute(thread._id);
      return head && { thread, head, rank: rankOf(head) };
    }));
    return found.filter((entry): entry is Head & { rank: string } => entry !== null);
  }

  /** A claim's share of a batch of claims: how many it may take, and the bytes its response may hold. */
  private share(command: ClaimCommand): Share {
    return {
      claimant: { consumerId: command.consumerId, leaseMs: command.leaseMs },
      left: command.limit,
      bytesLeft: this.deps.limits.maxResponseBytes - RESPONSE_FRAMING,
      claimed: [],
    };
  }

  /** The dispatch Claim would take from the thread now (ignoring whether the thread holds a claim). */
  private headOf(thread: ThreadDoc): Promise<DispatchDoc | null> {
    return this.dispatches.findOne(
      { thread_id: thread._id, status: "QUEUED", epoch: thread.epoch, available_at: { $lte: this.deps.clock.now() } },
      { sort: CLAIM_ORDER },
    );
  }

  private async claimInThread(threadId: string, claimant: Claimant): Promise<DispatchDoc | null> {
    const thread = await this.deps.threads.get(threadId);
    if (!thread) return null;
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const head = await this.headOf(thread);
      if (!head) return null;
      const [outcome] = await this.claimHeads([{ thread, head }], [claimant]);
      if (outcome!.won) {
        await this.deps.outbox.flush(DISPATCHES, [outcome!.doc]);
        return outcome!.doc;
      }
      if (outcome!.busy) return null;
    }
    return null;
  }

  /**
   * Claims each head for its claimant: one conditional update each (queued,
   * same epoch and attempt count, available), all in one bulk write; then
   * records the won claims on their threads. A claim the database refuses
   * because its thread already holds one is `busy`.
   */
  private async claimHeads(heads: Head[], claimants: Claimant[], unknownThread = false): Promise<ClaimOutcome[]> {
    if (heads.length === 0) return [];
    const now = this.deps.clock.now();
    const transitions: Array<Transition<DispatchDoc>> = heads.map(({ head }, i) => {
      const { consumerId, leaseMs } = claimants[i]!;
      const entry = this.entry(head, { kind: EventKind.DISPATCH_CLAIMED, summary: `claimed by ${consumerId} (attempt ${head.attempt_count + 1} of ${head.max_attempts})` }, "QUEUED", now);
      return {
        filter: { _id: head._id, status: "QUEUED", epoch: head.epoch, attempt_count: head.attempt_count, available_at: { $lte: now } },
        update: withEvents<DispatchDoc>(
          {
            $set: { status: "CLAIMED", claim_token: newClaimToken(), claimed_by: consumerId, lease_until: now + leaseMs, updated_at: now },
            $inc: { attempt_count: 1 },
          },
          [entry],
          now,
        ),
        eventId: entry.event_id,
        from: head,
      };
    });
    const outcomes = await applyTransitions(this.dispatches, transitions);
    const won = outcomes.flatMap((o, i) => (o.won ? [{ thread: heads[i]!.thread, dispatch: o.doc! }] : []));
    // A thread not seen before (a claim by id of a dispatch whose thread has no document yet) gets its record when it is enlisted.
    if (!unknownThread) await this.deps.threads.claimed(won);
    return outcomes.map((o, i) => ({ claimant: claimants[i]!, won: o.won, doc: o.won ? o.doc : null, busy: o.refusedBy === "one_claimed_per_thread" }));
  }

  // ---- transitions of a claimed dispatch ---------------------------------

  async ack(ref: ClaimRef): Promise<DispatchDoc> {
    const [result] = await this.acks.submit([ref]);
    if (result instanceof MailroomError) throw result;
    return result!;
  }

  /** Acks each claim on its own; one failure does not affect the others. */
  ackMany(refs: ClaimRef[]): Promise<Array<DispatchDoc | MailroomError>> {
    return this.acks.submit(refs);
  }

  private async ackNow(refs: ClaimRef[]): Promise<Array<DispatchDoc | MailroomError>> {
    const now = this.deps.clock.now();
    const transitions = refs.map((ref) => {
      const entry = this.entry(null, { kind: EventKind.DISPATCH_ACKED, summary: "acked" }, "CLAIMED", now, "ACKED");
      return {
        filter: fencedFilter(ref, now),
        update: withEvents<DispatchDoc>({ $set: { status: "ACKED", terminal: true, completed_at: now, updated_at: now }, $unset: { lease_until: "" } }, [entry], now),
        eventId: entry.event_id,
      };
    });
    const outcomes = await applyTransitions(this.dispatches, transitions);
    // Acked now, or acked before with the same token (a retry): both succeed.
    const results = outcomes.map(({ doc }, i) => (doc && repeatedBy(doc, refs[i]!, "ACKED") ? doc : fencingFailure(refs[i]!.dispatchId, doc && view(doc), refs[i]!.claimToken, now)));
    const acked = results.filter((r): r is DispatchDoc => !(r instanceof MailroomError));
    await this.deps.threads.released(acked.map((doc) => ({ threadId: doc.thread_id, dispatchId: doc._id })));
    await this.deps.outbox.flush(DISPATCHES, acked);
    return results;
  }

  async recordStart(ref: ClaimRef, dispatchInstanceId: string): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (now) => ({
      update: { $set: { dispatch_instance_id: dispatchInstanceId, updated_at: now } },
      events: [{ kind: EventKind.DISPATCH_STARTED, summary: `run instance ${dispatchInstanceId} started` }],
    }));
    await this.deps.outbox.flush(DISPATCHES, [doc]);
    return doc;
  }

  async recordResult(ref: ClaimRef, result: RunResult): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (now) => {
      const set: Record<string, unknown> = { run_status: result.runStatus, updated_at: now };
      const unset: Record<string, ""> = {};
      for (const [field, value] of [["termination", result.termination], ["run_response", result.response], ["run_error", result.error]] as const) {
        if (value === undefined) unset[field] = "";
        else set[field] = value;
      }
      return {
        update: { $set: set, ...(Object.keys(unset).length ? { $unset: unset } : {}) },
        events: [{ kind: EventKind.DISPATCH_RESULT_RECORDED, summary: `run result recorded${result.error ? " (with an error)" : ""}` }],
      };
    });
    await this.deps.outbox.flush(DISPATCHES, [doc]);
    return doc;
  }

  /** Back to the queue at the retry time; dead-lettered when the claim was the last attempt. */
  async nack(ref: ClaimRef, retry: Schedule, error: string | undefined): Promise<DispatchDoc> {
    const now = this.deps.clock.now();
    // Which transition depends on the attempts spent: read first, then update conditionally.
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const current = await this.dispatches.findOne({ _id: ref.dispatchId });
      if (!current || current.status !== "CLAIMED" || current.claim_token !== ref.claimToken || (current.lease_until ?? 0) <= now) {
        throw fencingFailure(ref.dispatchId, current && view(current), ref.claimToken, now);
      }
      const lastError = error ?? "nacked";
      let plan: TransitionPlan;
      let after: DispatchStatus;
      if (attemptsSpent(current.attempt_count, current.max_attempts)) {
        const summary = `nacked after the last of ${current.max_attempts} attempts; dead-lettered`;
        after = "DEAD_LETTER";
        plan = {
          update: { $set: { status: "DEAD_LETTER", terminal: true, completed_at: now, updated_at: now, last_error: lastError }, $unset: { lease_until: "" } },
          events: [{ kind: EventKind.DISPATCH_NACKED, summary }, { kind: EventKind.DISPATCH_DEAD_LETTERED, summary }],
        };
      } else {
        const at = Math.max(resolveSchedule(retry, now), now);
        after = "QUEUED";
        plan = {
          update: at > now
            ? { $set: { status: "QUEUED", available_at: at, delayed_until: at, updated_at: now, last_error: lastError }, $unset: { claim_token: "", lease_until: "" } }
            : { $set: { status: "QUEUED", available_at: at, updated_at: now, last_error: lastError }, $unset: { claim_token: "", lease_until: "", delayed_until: "" } },
          events: [{
            kind: EventKind.DISPATCH_NACKED,
            summary: `nacked after attempt ${current.attempt_count} of ${current.max_attempts}; retry ${at <= now ? "now" : `at ${new Date(at).toISOString()}`}`,
            claimable: { reason: DispatchSignalReason.AVAILABLE, at },
          }],
        };
      }
      const doc = await this.dispatches.findOneAndUpdate(
        { ...fencedFilter(ref, now), attempt_count: current.attempt_count },
        withEvents(plan.update, plan.events.map((spec) => this.entry(current, spec, "CLAIMED", now, after)), now),
      );
      if (doc) {
        await this.finish(doc);
        return doc;
      }
    }
    throw contended(ref.dispatchId);
  }

  async deadLetter(ref: ClaimRef, error: string | undefined): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (now) => ({
      update: { $set: { status: "DEAD_LETTER", terminal: true, completed_at: now, updated_at: now, last_error: error ?? "dead-lettered by its worker", dead_lettered_by_worker: true }, $unset: { lease_until: "" } },
      events: [{ kind: EventKind.DISPATCH_DEAD_LETTERED, summary: "dead-lettered by its worker" }],
    }), "DEAD_LETTER");
    await this.finish(doc);
    return doc;
  }

  async supersedeClaimed(ref: ClaimRef, reason: string | undefined): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (now) => ({
      update: { $set: { status: "SUPERSEDED", terminal: true, completed_at: now, updated_at: now, last_error: reason ?? "superseded" }, $unset: { lease_until: "" } },
      events: [{ kind: EventKind.DISPATCH_SUPERSEDED, summary: `superseded while claimed${reason ? `: ${reason}` : ""}` }],
    }));
    await this.finish(doc);
    return doc;
  }

  async extendLease(ref: ClaimRef, extensionMs: number): Promise<{ dispatch: DispatchDoc; interrupted: boolean; threadEpoch: number }> {
    const doc = await this.fenced(ref, (now) => ({
      update: { $set: { lease_until: now + extensionMs, updated_at: now } },
      events: [{ kind: EventKind.DISPATCH_LEASE_EXTENDED, summary: `lease extended to ${new Date(now + extensionMs).toISOString()}` }],
    }));
    const [threadEpoch] = await Promise.all([this.deps.threads.epoch(doc.thread_id), this.deps.outbox.flush(DISPATCHES, [doc])]);
    return { dispatch: doc, interrupted: doc.epoch < threadEpoch, threadEpoch };
  }

  /** QUEUED or CLAIMED -> CANCELLED; a terminal dispatch is returned unchanged. */
  async cancel(dispatchId: string, reason: string | undefined): Promise<{ dispatch: DispatchDoc; changed: boolean }> {
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const current = await this.dispatches.findOne({ _id: dispatchId });
      if (!current) throw notFound(EntityKind.DISPATCH, dispatchId);
      if (isTerminal(current.status)) return { dispatch: current, changed: false };
      const now = this.deps.clock.now();
      const condition = current.status === "CLAIMED"
        ? { _id: dispatchId, status: "CLAIMED" as const, claim_token: current.claim_token }
        : { _id: dispatchId, status: "QUEUED" as const, attempt_count: current.attempt_count };
      const cancelled = await this.dispatches.findOneAndUpdate(condition, withEvents<DispatchDoc>(
        { $set: { status: "CANCELLED", terminal: true, completed_at: now, updated_at: now, last_error: reason ?? "cancelled" }, $unset: { lease_until: "" } },
        [this.entry(current, { kind: EventKind.DISPATCH_CANCELLED, summary: `cancelled while ${current.status === "CLAIMED" ? "claimed" : "queued"}${reason ? `: ${reason}` : ""}` }, current.status, now)],
        now,
      ));
      if (!cancelled) continue;
      // A cancel may overtake the claimer recording its claim on the thread.
      if (current.status === "CLAIMED") await this.deps.threads.released([{ threadId: cancelled.thread_id, dispatchId: cancelled._id, endedToken: current.claim_token }]);
      else await this.deps.threads.recompute(cancelled.thread_id);
      await this.deps.outbox.flush(DISPATCHES, [cancelled]);
      return { dispatch: cancelled, changed: true };
    }
    throw contended(dispatchId);
  }

  async interrupt(threadId: string, detailed: boolean): Promise<InterruptOutcome> {
    const now = this.deps.clock.now();
    const thread = await this.deps.threads.interrupt(threadId, (before) => [pendingEvent(threadInterruptedEvent(threadId, before, before + 1, now), now)]);
    await this.deps.outbox.flush(THREADS, [thread]);
    const superseded: DispatchDoc[] = [];
    let supersededCount = 0;
    const page = 200;
    for (;;) {
      const stale = await this.dispatches.find({ thread_id: threadId, status: "QUEUED", epoch: { $lt: thread.epoch } }, { sort: { created_at: 1, _id: 1 }, limit: page });
      const done = await this.supersedeQueued(stale.map((doc) => ({ doc, reason: `superseded by an interrupt of thread ${threadId} (epoch ${thread.epoch})` })), false);
      supersededCount += done.length;
      if (detailed) superseded.push(...done.slice(0, MAX_INTERRUPT_DETAILS - superseded.length));
      if (stale.length < page) break;
    }
    // The claim that was running when the epoch moved: never work of the new
    // epoch, claimed meanwhile (a caller may cancel what this returns).
    const active = await this.dispatches.findOne({ thread_id: threadId, status: "CLAIMED", epoch: { $lt: thread.epoch } });
    return { newEpoch: thread.epoch, active, supersededCount, superseded };
  }

  // ---- lease expiry (the sweeper) ----------------------------------------

  /** Returns the namespace's dispatches whose lease expired to the queue (or the dead letters, when spent). */
  async reclaimExpired(limit: number): Promise<DispatchDoc[]> {
    return this.reclaim(await this.deps.expiredClaims(this.deps.clock.now(), limit));
  }

  /** Reclaims these dispatches of the namespace (read with an expired lease) unless they changed meanwhile; returns those reclaimed. */
  async reclaim(expired: DispatchDoc[]): Promise<DispatchDoc[]> {
    const now = this.deps.clock.now();
    const transitions = expired.map((doc) => this.reclaimOne(doc, now));
    const outcomes = await applyTransitions(this.dispatches, transitions);
    const reclaimed = outcomes.flatMap((o) => (o.won ? [o.doc!] : []));
    // The sweeper may overtake a claimer recording its claim (a lease shorter than that).
    await this.deps.threads.released(outcomes.flatMap((o, i) => (o.won
      ? [{ threadId: o.doc!.thread_id, dispatchId: o.doc!._id, requeued: o.doc!.status === "QUEUED" ? o.doc! : undefined, endedToken: expired[i]!.claim_token }]
      : [])));
    await this.deps.outbox.flush(DISPATCHES, reclaimed);
    if (reclaimed.length > 0) this.deps.log.info({ dispatches: reclaimed.length }, "reclaimed dispatches whose lease expired");
    return reclaimed;
  }

  private reclaimOne(doc: DispatchDoc, now: number): Transition<DispatchDoc> {
    const lastError = `lease expired at ${new Date(doc.lease_until ?? now).toISOString()} (held by ${doc.claimed_by ?? "unknown"})`;
    const spent = attemptsSpent(doc.attempt_count, doc.max_attempts);
    const update: UpdateFilter<DispatchDoc> = spent
      ? { $set: { status: "DEAD_LETTER", terminal: true, completed_at: now, updated_at: now, last_error: lastError }, $unset: { lease_until: "" } }
      : { $set: { status: "QUEUED", available_at: now, updated_at: now, last_error: lastError }, $unset: { claim_token: "", lease_until: "", delayed_until: "" } };
    const after: DispatchStatus = spent ? "DEAD_LETTER" : "QUEUED";
    const entries = [this.entry(doc, {
      kind: EventKind.DISPATCH_LEASE_EXPIRED,
      summary: spent ? `lease expired after the last of ${doc.max_attempts} attempts; dead-lettered` : `lease expired; queued again (attempt ${doc.attempt_count} of ${doc.max_attempts} used)`,
      claimable: spent ? undefined : { reason: DispatchSignalReason.LEASE_RECLAIMED, at: now },
    }, "CLAIMED", now, after)];
    if (spent) entries.push(this.entry(doc, { kind: EventKind.DISPATCH_DEAD_LETTERED, summary: "dead-lettered: lease expired with no attempts left" }, "CLAIMED", now, after));
    // Conditional on the token: two sweepers (or a late ack) cannot both win.
    return { filter: { _id: doc._id, status: "CLAIMED", claim_token: doc.claim_token, lease_until: { $lte: now } }, update: withEvents(update, entries, now), eventId: entries[0]!.event_id, pushed: entries.length, from: doc };
  }

  // ---- helpers -----------------------------------------------------------

  /** QUEUED -> SUPERSEDED for each (one bulk write); with `recompute`, their threads' hints are made exact after. */
  private async supersedeQueued(items: Array<{ doc: DispatchDoc; reason: string }>, recompute = true): Promise<DispatchDoc[]> {
    const now = this.deps.clock.now();
    const transitions = items.map(({ doc, reason }) => {
      const entry = this.entry(doc, { kind: EventKind.DISPATCH_SUPERSEDED, summary: reason }, "QUEUED", now);
      return {
        filter: { _id: doc._id, status: "QUEUED" } as Filter<DispatchDoc>,
        update: withEvents<DispatchDoc>({ $set: { status: "SUPERSEDED", terminal: true, completed_at: now, updated_at: now, last_error: reason } }, [entry], now),
        eventId: entry.event_id,
        from: doc,
      };
    });
    const superseded = (await applyTransitions(this.dispatches, transitions)).flatMap((o) => (o.won ? [o.doc!] : []));
    if (recompute) for (const threadId of new Set(superseded.map((d) => d.thread_id))) await this.deps.threads.recompute(threadId);
    await this.deps.outbox.flush(DISPATCHES, superseded);
    return superseded;
  }

  /**
   * Runs a fenced transition: only while the dispatch is CLAIMED under the
   * caller's token and its lease has not expired. It writes first and reads
   * only when refused, to explain why. `retrySafe` names the status a
   * successful earlier call with the same token leaves behind, so that a
   * retried call returns it instead of failing. Only DeadLetter itself leaves
   * DEAD_LETTER behind that way: a claim dead-lettered by Nack or by the lease
   * sweeper ended without the worker asking, so its token is refused.
   */
  private async fenced(ref: ClaimRef, plan: (now: number) => TransitionPlan, retrySafe?: DispatchStatus): Promise<DispatchDoc> {
    const now = this.deps.clock.now();
    const { update, events } = plan(now);
    const after = (update.$set as Partial<DispatchDoc> | undefined)?.status ?? "CLAIMED";
    const updated = await this.dispatches.findOneAndUpdate(
      fencedFilter(ref, now),
      withEvents(update, events.map((spec) => this.entry(null, spec, "CLAIMED", now, after)), now),
    );
    if (updated) return updated;
    const latest = await this.dispatches.findOne({ _id: ref.dispatchId });
    if (latest && retrySafe !== undefined && repeatedBy(latest, ref, retrySafe)) return latest;
    throw fencingFailure(ref.dispatchId, latest && view(latest), ref.claimToken, now);
  }

  /** After a claimed dispatch finished or was requeued: release its thread and journal its events. */
  private async finish(doc: DispatchDoc): Promise<void> {
    if (doc.status !== "CLAIMED") {
      const ended: EndedClaim = { threadId: doc.thread_id, dispatchId: doc._id, requeued: doc.status === "QUEUED" ? doc : undefined };
      await this.deps.threads.released([ended]);
    }
    await this.deps.outbox.flush(DISPATCHES, [doc]);
  }

  /** The outbox entry of a transition (the dispatch, when known, only for what the entry tells: nothing identifying is needed). */
  private entry(_doc: DispatchDoc | null, spec: EventSpec, before: DispatchStatus | undefined, now: number, after?: DispatchStatus): CompactEntry {
    const target = after ?? statusAfter(spec.kind, before);
    let claimable = spec.claimable && { reason: spec.claimable.reason, at: spec.claimable.at };
    // A claim that ends frees its thread: the thread's next dispatch may be claimed.
    if (!claimable && before === "CLAIMED" && isTerminalKind(spec.kind)) claimable = { reason: DispatchSignalReason.THREAD_RELEASED, at: now };
    return dispatchEntry({ kind: spec.kind, before, after: target, summary: spec.summary, now, claimable });
  }
}

interface Share {
  claimant: Claimant;
  /** How many more dispatches it may take. */
  left: number;
  /** How many more bytes its response may hold. */
  bytesLeft: number;
  claimed: DispatchDoc[];
}

interface ClaimOutcome {
  claimant: Claimant;
  won: boolean;
  doc: DispatchDoc | null;
  /** The thread already holds a claim (the database refused a second one). */
  busy: boolean;
}

/** The condition of every fenced transition: claimed under this token, lease not expired. */
function fencedFilter(ref: ClaimRef, now: number): Filter<DispatchDoc> {
  return { _id: ref.dispatchId, status: "CLAIMED", claim_token: ref.claimToken, lease_until: { $gt: now } };
}

/** Whether `doc` is where a successful call with this token leaves it (so a retry of that call succeeds). */
function repeatedBy(doc: DispatchDoc, ref: ClaimRef, status: DispatchStatus): boolean {
  return doc.status === status && doc.claim_token === ref.claimToken && (status !== "DEAD_LETTER" || doc.dead_lettered_by_worker === true);
}

/** Whether a hint's named dispatch is its thread's claimable head now. */
function isHeadOf(head: DispatchDoc, thread: ThreadDoc, now: number): boolean {
  return head.thread_id === thread._id && head.status === "QUEUED" && head.epoch === thread.epoch && head.available_at <= now && rankOf(head) === thread.head_rank;
}

/** What a claim by id needs of a thread that has no document (it has never been enlisted: cannot happen for an enqueued dispatch). */
function syntheticThread(dispatch: DispatchDoc): ThreadDoc {
  return { _id: dispatch.thread_id, epoch: dispatch.epoch, version: 0, created_at: dispatch.created_at, updated_at: dispatch.created_at };
}

function enlistments(docs: DispatchDoc[], count = 1): Enlistment[] {
  const byThread = new Map<string, Enlistment>();
  for (const doc of docs) {
    const rank = rankOf(doc);
    const entry = byThread.get(doc.thread_id);
    if (!entry) {
      byThread.set(doc.thread_id, { threadId: doc.thread_id, count, best: { rank, availableAt: doc.available_at } });
      continue;
    }
    entry.count += count;
    if (rank < entry.best.rank) entry.best.rank = rank;
    entry.best.availableAt = Math.min(entry.best.availableAt, doc.available_at);
  }
  return [...byThread.values()];
}

function dedupeKeyOf(doc: DispatchDoc): string {
  return `${doc.thread_id}\u0000${doc.dedupe_key ?? ""}`;
}

function contended(dispatchId: string): MailroomError {
  return new MailroomError("unavailable", `dispatch ${JSON.stringify(dispatchId)} kept changing while being updated; retry`, { reason: ErrorReason.STORE_UNAVAILABLE });
}

function view(doc: DispatchDoc) {
  return { id: doc._id, status: doc.status, claimToken: doc.claim_token, leaseUntil: doc.lease_until };
}

/** The status a transition event reports when the caller did not say. */
function statusAfter(kind: EventKind, before: DispatchStatus | undefined): DispatchStatus {
  switch (kind) {
    case EventKind.DISPATCH_ENQUEUED:
    case EventKind.DISPATCH_NACKED:
      return "QUEUED";
    case EventKind.DISPATCH_CLAIMED:
      return "CLAIMED";
    case EventKind.DISPATCH_ACKED:
      return "ACKED";
    case EventKind.DISPATCH_DEAD_LETTERED:
      return "DEAD_LETTER";
    case EventKind.DISPATCH_CANCELLED:
      return "CANCELLED";
    case EventKind.DISPATCH_SUPERSEDED:
      return "SUPERSEDED";
    default:
      return before ?? "QUEUED";
  }
}

function resolveSchedule(schedule: Schedule, now: number): number {
  if (!schedule) return now;
  if ("at" in schedule) return Math.max(schedule.at, now);
  return now + schedule.delayMs;
}
