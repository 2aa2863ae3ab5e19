/**
 * The mailbox use cases (seed: mailbox.rs): enqueue, claim, and every
 * transition of a claimed dispatch.
 *
 * Each transition is one conditional update of the dispatch (the condition is
 * the state machine's "from" status, plus the claim token and an unexpired
 * lease for fenced calls) that also pushes the transition's event into the
 * dispatch's outbox; the event is journaled before the call returns.
 */
import { EntityKind, ErrorReason, MailroomError, failedPrecondition, notFound } from "../../domain/errors.js";
import type { Clock } from "../../domain/clock.js";
import type { ClaimCommand, ClaimRef, EnqueueCommand, RunResult, Schedule } from "../../domain/dispatch/commands.js";
import { MAX_INTERRUPT_DETAILS } from "../../domain/dispatch/commands.js";
import { dispatchEvent, threadInterruptedEvent } from "../../domain/dispatch/events.js";
import { fencingFailure } from "../../domain/dispatch/fencing.js";
import { type DispatchStatus, attemptsSpent, isTerminal, statusName } from "../../domain/dispatch/state.js";
import { EventKind, isTerminalKind } from "../../domain/events/kinds.js";
import { newClaimToken, newId } from "../../domain/ids.js";
import { type Collection, DuplicateKeyError, type Store, type UpdateFilter } from "../../store/port.js";
import { type PendingEvent, pendingEvent } from "../journal/records.js";
import type { Logger } from "../logger.js";
import { type Outbox, initialOutbox, withEvents } from "../outbox.js";
import { CLAIM_ORDER, DISPATCH_INDEXES, DISPATCHES, type DispatchDoc, rankOf, THREADS, type ThreadDoc } from "./records.js";
import type { Threads } from "./threads.js";
import { DispatchSignalReason, type WorkSignals } from "./work-signals.js";

export interface MailboxDeps {
  store: Store;
  outbox: Outbox;
  threads: Threads;
  signals: WorkSignals;
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

/** How often a transition re-reads a dispatch whose conditional update lost a race. */
const CONTENDED_ATTEMPTS = 8;

export class Mailbox {
  readonly dispatches: Collection<DispatchDoc>;

  constructor(private readonly deps: MailboxDeps) {
    this.dispatches = deps.store.collection<DispatchDoc>(DISPATCHES);
  }

  async init(): Promise<void> {
    await this.dispatches.createIndexes(DISPATCH_INDEXES);
    await this.deps.threads.init();
    await this.deps.outbox.register(DISPATCHES);
    await this.deps.outbox.register(THREADS);
  }

  // ---- enqueue ---------------------------------------------------------

  async enqueue(commands: EnqueueCommand[]): Promise<EnqueueOutcome[]> {
    const outcomes: EnqueueOutcome[] = new Array(commands.length);
    const byThread = new Map<string, number[]>();
    commands.forEach((command, i) => {
      const list = byThread.get(command.threadId) ?? [];
      list.push(i);
      byThread.set(command.threadId, list);
    });
    await Promise.all(
      [...byThread].map(async ([threadId, positions]) => {
        const results = await this.enqueueInThread(threadId, positions.map((i) => commands[i]!));
        positions.forEach((position, j) => (outcomes[position] = results[j]!));
      }),
    );
    return outcomes;
  }

  private async enqueueInThread(threadId: string, commands: EnqueueCommand[]): Promise<EnqueueOutcome[]> {
    const now = this.deps.clock.now();
    const docs = commands.map((command) => this.newDispatch(command, now));
    const thread = await this.deps.threads.enlist(threadId, docs.map((d) => ({ rank: rankOf(d), availableAt: d.available_at })));
    for (const doc of docs) {
      doc.epoch = thread.epoch;
      const availableNow = doc.available_at <= now;
      Object.assign(doc, initialOutbox([this.event(doc, {
        kind: EventKind.DISPATCH_ENQUEUED,
        summary: `enqueued with priority ${doc.priority}${availableNow ? "" : `, available at ${new Date(doc.available_at).toISOString()}`}`,
        claimable: { reason: availableNow ? DispatchSignalReason.ENQUEUED : DispatchSignalReason.AVAILABLE, at: doc.available_at },
      }, undefined, now)], now));
    }
    const { duplicates } = await this.dispatches.insertMany(docs);
    const refused = new Map(duplicates.map((d) => [d.position, d.index]));
    const outcomes: EnqueueOutcome[] = [];
    let inserted: DispatchDoc[] = [];
    for (const [i, doc] of docs.entries()) {
      const index = refused.get(i);
      if (index === undefined) {
        inserted.push(doc);
        outcomes.push({ dispatch: doc, deduplicated: false });
        continue;
      }
      const original = index === "dedupe_key_per_thread"
        ? await this.dispatches.findOne({ thread_id: threadId, dedupe_key: doc.dedupe_key })
        : await this.dispatches.findOne({ _id: doc._id });
      if (original && original.thread_id === threadId) {
        outcomes.push({ dispatch: original, deduplicated: true });
      } else if (original) {
        outcomes.push({ error: new MailroomError("already_exists", `dispatch_id ${JSON.stringify(doc._id)} is already used by another thread`, { reason: ErrorReason.INVALID_FIELD, field: "dispatch_id", entity: { kind: EntityKind.DISPATCH, id: doc._id } }) });
      } else {
        // The original was purged between our insert and our read: a retry will enqueue it.
        outcomes.push({ error: new MailroomError("unavailable", "the dispatch conflicted with one being purged; retry the enqueue", { reason: ErrorReason.STORE_UNAVAILABLE }) });
      }
    }
    // The hint was lowered before the insert, but a recomputation (a cancel, a
    // claim) that read the thread after that and looked for queued work before
    // the insert may have raised it again: lower it once more, now the work exists.
    const after = inserted.length > 0 ? await this.deps.threads.enlist(threadId, inserted.map((d) => ({ rank: rankOf(d), availableAt: d.available_at }))) : null;
    // An interrupt between reading the epoch and inserting: the new work belongs
    // to the old epoch, so it is superseded like the rest of that epoch.
    if (after && after.epoch !== thread.epoch) {
      const superseded = await Promise.all(inserted.map((doc) => this.supersedeQueued(doc, `thread interrupted while enqueuing (epoch ${thread.epoch} -> ${after.epoch})`)));
      inserted = inserted.map((doc, i) => superseded[i] ?? doc);
      for (const outcome of outcomes) {
        if ("dispatch" in outcome && !outcome.deduplicated) outcome.dispatch = inserted.find((d) => d._id === outcome.dispatch._id) ?? outcome.dispatch;
      }
    }
    await this.deps.outbox.flush(DISPATCHES, inserted);
    return outcomes;
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
        : await this.claimAcross(command);
      if (claimed.length > 0) {
        await this.deps.outbox.flush(DISPATCHES, claimed);
        return claimed;
      }
      const remaining = deadline - performance.now();
      if (remaining <= 0 || abort?.aborted) return [];
      if (this.deps.signals.version === since) await this.deps.signals.wait(command.threadId, remaining, abort);
    }
  }

  /** Claims one named dispatch, or explains why it is not claimable. */
  async claimDispatch(dispatchId: string, consumerId: string, leaseMs: number): Promise<DispatchDoc> {
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
    const claimed = await this.tryClaim(current, consumerId, leaseMs, thread);
    if (claimed === "thread_busy") {
      throw failedPrecondition(ErrorReason.THREAD_HAS_CLAIM, `thread ${JSON.stringify(current.thread_id)} already has a claimed dispatch; a thread has at most one claim at a time`, { entity: { kind: EntityKind.THREAD, id: current.thread_id } });
    }
    if (!claimed) return this.claimDispatch(dispatchId, consumerId, leaseMs); // it changed under us: explain anew
    await this.deps.outbox.flush(DISPATCHES, [claimed]);
    return claimed;
  }

  /**
   * Takes the best heads across threads, best first. A thread's hint ranks it
   * by its best queued dispatch, which may be better than what it can give
   * now (that one is delayed, or never was inserted): a hint is only a bound.
   * So each candidate's real head is looked up, and a head is taken only
   * when no thread not yet looked at could beat it: threads come in hint
   * order, so the last hint fetched bounds every real head still unseen.
   */
  private async claimAcross(command: ClaimCommand): Promise<DispatchDoc[]> {
    const claimed: DispatchDoc[] = [];
    const examined = new Set<string>();
    let heads: Array<{ thread: ThreadDoc; head: DispatchDoc; rank: string }> = [];
    let exhausted = false;
    while (claimed.length < command.limit) {
      const wanted = command.limit - claimed.length;
      let bound: string | undefined;
      if (!exhausted) {
        const candidates = await this.deps.threads.candidates(this.deps.clock.now(), wanted, examined);
        exhausted = candidates.length < wanted;
        if (!exhausted) bound = candidates[candidates.length - 1]!.head_rank;
        const found = await Promise.all(candidates.map(async (thread) => {
          examined.add(thread._id);
          const head = await this.headOf(thread);
          // The hint promised work the thread does not have (now): correct it.
          if (!head) await this.deps.threads.recompute(thread._id);
          return head && { thread, head, rank: rankOf(head) };
        }));
        for (const entry of found) if (entry) heads.push(entry);
      }
      heads.sort((a, b) => (a.rank < b.rank ? -1 : 1));
      const take = heads.filter((h) => bound === undefined || h.rank <= bound).slice(0, wanted);
      if (take.length === 0) {
        if (exhausted) break;
        continue;
      }
      heads = heads.filter((h) => !take.includes(h));
      const results = await Promise.all(take.map(async ({ thread, head }) => {
        const won = await this.tryClaim(head, command.consumerId, command.leaseMs, thread);
        if (won === "thread_busy") return null;
        return won ?? this.claimInThread(thread._id, command, thread); // it changed under us: look again
      }));
      for (const doc of results) if (doc) claimed.push(doc);
    }
    return claimed.sort((a, b) => (rankOf(a) < rankOf(b) ? -1 : 1));
  }

  /** The dispatch Claim would take from the thread now (ignoring whether the thread holds a claim). */
  private headOf(thread: ThreadDoc): Promise<DispatchDoc | null> {
    return this.dispatches.findOne(
      { thread_id: thread._id, status: "QUEUED", epoch: thread.epoch, available_at: { $lte: this.deps.clock.now() } },
      { sort: CLAIM_ORDER },
    );
  }

  private async claimInThread(threadId: string, command: Pick<ClaimCommand, "consumerId" | "leaseMs">, known?: ThreadDoc): Promise<DispatchDoc | null> {
    const thread = known ?? (await this.deps.threads.get(threadId));
    if (!thread) return null;
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const candidate = await this.headOf(thread);
      if (!candidate) {
        // The hint promised work the thread does not have (now): correct it.
        if (known) await this.deps.threads.recompute(threadId);
        return null;
      }
      const claimed = await this.tryClaim(candidate, command.consumerId, command.leaseMs, thread);
      if (claimed === "thread_busy") return null;
      if (claimed) return claimed;
    }
    return null;
  }

  /** One conditional claim of a queued dispatch; null when it changed meanwhile. */
  private async tryClaim(candidate: DispatchDoc, consumerId: string, leaseMs: number, thread: ThreadDoc | null): Promise<DispatchDoc | null | "thread_busy"> {
    const now = this.deps.clock.now();
    const attempt = candidate.attempt_count + 1;
    const update = withEvents<DispatchDoc>(
      {
        $set: { status: "CLAIMED", claim_token: newClaimToken(), claimed_by: consumerId, lease_until: now + leaseMs, updated_at: now },
        $inc: { attempt_count: 1 },
      },
      [this.event(candidate, { kind: EventKind.DISPATCH_CLAIMED, summary: `claimed by ${consumerId} (attempt ${attempt} of ${candidate.max_attempts})` }, "QUEUED", now)],
      now,
    );
    try {
      const claimed = await this.dispatches.findOneAndUpdate(
        { _id: candidate._id, status: "QUEUED", epoch: candidate.epoch, attempt_count: candidate.attempt_count, available_at: { $lte: now } },
        update,
      );
      if (claimed && thread) await this.deps.threads.claimed(thread, claimed);
      return claimed;
    } catch (error) {
      // The database refused a second CLAIMED dispatch in the thread.
      if (error instanceof DuplicateKeyError) return "thread_busy";
      throw error;
    }
  }

  // ---- transitions of a claimed dispatch ---------------------------------

  async ack(ref: ClaimRef): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (d, now) => ({
      update: { $set: { status: "ACKED", terminal: true, completed_at: now, updated_at: now }, $unset: { lease_until: "" } },
      events: [{ kind: EventKind.DISPATCH_ACKED, summary: `acked by ${d.claimed_by ?? "its worker"} after attempt ${d.attempt_count}` }],
    }), "ACKED");
    await this.finish(doc, ref.dispatchId);
    return doc;
  }

  /** Acks each claim on its own; one failure does not affect the others. */
  async ackMany(refs: ClaimRef[]): Promise<Array<DispatchDoc | MailroomError>> {
    const results = await Promise.all(refs.map((ref) =>
      this.fenced(ref, (d, now) => ({
        update: { $set: { status: "ACKED", terminal: true, completed_at: now, updated_at: now }, $unset: { lease_until: "" } },
        events: [{ kind: EventKind.DISPATCH_ACKED, summary: `acked by ${d.claimed_by ?? "its worker"} after attempt ${d.attempt_count}` }],
      }), "ACKED").catch((error: unknown) => {
        if (error instanceof MailroomError) return error;
        throw error;
      }),
    ));
    const acked = results.filter((r): r is DispatchDoc => !(r instanceof MailroomError));
    await Promise.all(acked.map((doc) => this.deps.threads.released(doc.thread_id, doc._id)));
    await this.deps.outbox.flush(DISPATCHES, acked);
    return results;
  }

  async recordStart(ref: ClaimRef, dispatchInstanceId: string): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (_d, now) => ({
      update: { $set: { dispatch_instance_id: dispatchInstanceId, updated_at: now } },
      events: [{ kind: EventKind.DISPATCH_STARTED, summary: `run instance ${dispatchInstanceId} started` }],
    }));
    await this.deps.outbox.flush(DISPATCHES, [doc]);
    return doc;
  }

  async recordResult(ref: ClaimRef, result: RunResult): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (_d, now) => {
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

  async nack(ref: ClaimRef, retry: Schedule, error: string | undefined): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (d, now): TransitionPlan => {
      const lastError = error ?? "nacked";
      if (attemptsSpent(d.attempt_count, d.max_attempts)) {
        const summary = `nacked after the last of ${d.max_attempts} attempts; dead-lettered`;
        return {
          update: { $set: { status: "DEAD_LETTER", terminal: true, completed_at: now, updated_at: now, last_error: lastError }, $unset: { lease_until: "" } },
          events: [{ kind: EventKind.DISPATCH_NACKED, summary }, { kind: EventKind.DISPATCH_DEAD_LETTERED, summary }],
        };
      }
      const at = Math.max(resolveSchedule(retry, now), now);
      return {
        update: { $set: { status: "QUEUED", available_at: at, updated_at: now, last_error: lastError }, $unset: { claim_token: "", lease_until: "" } },
        events: [{
          kind: EventKind.DISPATCH_NACKED,
          summary: `nacked after attempt ${d.attempt_count} of ${d.max_attempts}; retry ${at <= now ? "now" : `at ${new Date(at).toISOString()}`}`,
          claimable: { reason: DispatchSignalReason.AVAILABLE, at },
        }],
      };
    });
    await this.finish(doc, ref.dispatchId);
    return doc;
  }

  async deadLetter(ref: ClaimRef, error: string | undefined): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (_d, now) => ({
      update: { $set: { status: "DEAD_LETTER", terminal: true, completed_at: now, updated_at: now, last_error: error ?? "dead-lettered by its worker", dead_lettered_by_worker: true }, $unset: { lease_until: "" } },
      events: [{ kind: EventKind.DISPATCH_DEAD_LETTERED, summary: "dead-lettered by its worker" }],
    }), "DEAD_LETTER");
    await this.finish(doc, ref.dispatchId);
    return doc;
  }

  async supersedeClaimed(ref: ClaimRef, reason: string | undefined): Promise<DispatchDoc> {
    const doc = await this.fenced(ref, (_d, now) => ({
      update: { $set: { status: "SUPERSEDED", terminal: true, completed_at: now, updated_at: now, last_error: reason ?? "superseded" }, $unset: { lease_until: "" } },
      events: [{ kind: EventKind.DISPATCH_SUPERSEDED, summary: `superseded while claimed${reason ? `: ${reason}` : ""}` }],
    }));
    await this.finish(doc, ref.dispatchId);
    return doc;
  }

  async extendLease(ref: ClaimRef, extensionMs: number): Promise<{ dispatch: DispatchDoc; interrupted: boolean; threadEpoch: number }> {
    const doc = await this.fenced(ref, (_d, now) => ({
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
        [this.event(current, { kind: EventKind.DISPATCH_CANCELLED, summary: `cancelled while ${current.status === "CLAIMED" ? "claimed" : "queued"}${reason ? `: ${reason}` : ""}` }, current.status, now)],
        now,
      ));
      if (!cancelled) continue;
      if (current.status === "CLAIMED") await this.deps.threads.released(cancelled.thread_id, cancelled._id);
      else await this.deps.threads.recompute(cancelled.thread_id);
      await this.deps.outbox.flush(DISPATCHES, [cancelled]);
      return { dispatch: cancelled, changed: true };
    }
    throw new MailroomError("unavailable", `dispatch ${JSON.stringify(dispatchId)} kept changing while being cancelled; retry`, { reason: ErrorReason.STORE_UNAVAILABLE });
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
      const done = (await Promise.all(stale.map((doc) => this.supersedeQueued(doc, `superseded by an interrupt of thread ${threadId} (epoch ${thread.epoch})`, false))))
        .filter((doc): doc is DispatchDoc => doc !== null);
      await this.deps.outbox.flush(DISPATCHES, done);
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

  /** Returns dispatches whose lease expired to the queue (or the dead letters, when spent). */
  async reclaimExpired(limit: number): Promise<DispatchDoc[]> {
    const now = this.deps.clock.now();
    const expired = await this.dispatches.find({ status: "CLAIMED", lease_until: { $lte: now } }, { sort: { lease_until: 1 }, limit });
    const reclaimed = (await Promise.all(expired.map((doc) => this.reclaim(doc, now)))).filter((d): d is DispatchDoc => d !== null);
    await Promise.all(reclaimed.map((doc) => this.deps.threads.released(doc.thread_id, doc._id, doc.status === "QUEUED" ? doc : undefined)));
    await this.deps.outbox.flush(DISPATCHES, reclaimed);
    if (reclaimed.length > 0) this.deps.log.info({ dispatches: reclaimed.length }, "reclaimed dispatches whose lease expired");
    return reclaimed;
  }

  private reclaim(doc: DispatchDoc, now: number): Promise<DispatchDoc | null> {
    const lastError = `lease expired at ${new Date(doc.lease_until ?? now).toISOString()} (held by ${doc.claimed_by ?? "unknown"})`;
    const spent = attemptsSpent(doc.attempt_count, doc.max_attempts);
    const update: UpdateFilter<DispatchDoc> = spent
      ? { $set: { status: "DEAD_LETTER", terminal: true, completed_at: now, updated_at: now, last_error: lastError }, $unset: { lease_until: "" } }
      : { $set: { status: "QUEUED", available_at: now, updated_at: now, last_error: lastError }, $unset: { claim_token: "", lease_until: "" } };
    const after: DispatchStatus = spent ? "DEAD_LETTER" : "QUEUED";
    const events = [this.event(doc, {
      kind: EventKind.DISPATCH_LEASE_EXPIRED,
      summary: spent ? `lease expired after the last of ${doc.max_attempts} attempts; dead-lettered` : `lease expired; queued again (attempt ${doc.attempt_count} of ${doc.max_attempts} used)`,
      claimable: spent ? undefined : { reason: DispatchSignalReason.LEASE_RECLAIMED, at: now },
    }, "CLAIMED", now, after)];
    if (spent) events.push(this.event(doc, { kind: EventKind.DISPATCH_DEAD_LETTERED, summary: "dead-lettered: lease expired with no attempts left" }, "CLAIMED", now, after));
    // Conditional on the token: two sweepers (or a late ack) cannot both win.
    return this.dispatches.findOneAndUpdate({ _id: doc._id, status: "CLAIMED", claim_token: doc.claim_token, lease_until: { $lte: now } }, withEvents(update, events, now));
  }

  // ---- helpers -----------------------------------------------------------

  private async supersedeQueued(doc: DispatchDoc, reason: string, recompute = true): Promise<DispatchDoc | null> {
    const now = this.deps.clock.now();
    const superseded = await this.dispatches.findOneAndUpdate(
      { _id: doc._id, status: "QUEUED" },
      withEvents<DispatchDoc>(
        { $set: { status: "SUPERSEDED", terminal: true, completed_at: now, updated_at: now, last_error: reason } },
        [this.event(doc, { kind: EventKind.DISPATCH_SUPERSEDED, summary: reason }, "QUEUED", now)],
        now,
      ),
    );
    if (superseded && recompute) await this.deps.threads.recompute(doc.thread_id);
    return superseded;
  }

  /**
   * Runs a fenced transition: only while the dispatch is CLAIMED under the
   * caller's token and its lease has not expired. `retrySafe` names the status
   * a successful earlier call with the same token leaves behind, so that a
   * retried call returns it instead of failing. Only DeadLetter itself leaves
   * DEAD_LETTER behind that way: a claim dead-lettered by Nack or by the lease
   * sweeper ended without the worker asking, so its token is refused.
   */
  private async fenced(
    ref: ClaimRef,
    plan: (current: DispatchDoc, now: number) => TransitionPlan,
    retrySafe?: DispatchStatus,
  ): Promise<DispatchDoc> {
    const now = this.deps.clock.now();
    const repeated = (doc: DispatchDoc | null) =>
      doc !== null && retrySafe !== undefined && doc.status === retrySafe && doc.claim_token === ref.claimToken && (retrySafe !== "DEAD_LETTER" || doc.dead_lettered_by_worker === true);
    const current = await this.dispatches.findOne({ _id: ref.dispatchId });
    if (repeated(current)) return current!;
    if (!current || current.status !== "CLAIMED" || current.claim_token !== ref.claimToken || (current.lease_until ?? 0) <= now) {
      throw fencingFailure(ref.dispatchId, current && view(current), ref.claimToken, now);
    }
    const { update, events } = plan(current, now);
    const after = (update.$set as Partial<DispatchDoc> | undefined)?.status ?? "CLAIMED";
    const updated = await this.dispatches.findOneAndUpdate(
      { _id: ref.dispatchId, status: "CLAIMED", claim_token: ref.claimToken, lease_until: { $gt: now } },
      withEvents(update, events.map((spec) => this.event(current, spec, "CLAIMED", now, after)), now),
    );
    if (updated) return updated;
    const latest = await this.dispatches.findOne({ _id: ref.dispatchId });
    if (repeated(latest)) return latest!;
    throw fencingFailure(ref.dispatchId, latest && view(latest), ref.claimToken, now);
  }

  /** After a claimed dispatch finished or was requeued: release its thread and journal its events. */
  private async finish(doc: DispatchDoc, dispatchId: string): Promise<void> {
    if (doc.status !== "CLAIMED") await this.deps.threads.released(doc.thread_id, dispatchId, doc.status === "QUEUED" ? doc : undefined);
    await this.deps.outbox.flush(DISPATCHES, [doc]);
  }

  private event(doc: DispatchDoc, spec: EventSpec, before: DispatchStatus | undefined, now: number, after?: DispatchStatus): PendingEvent {
    const target = after ?? statusAfter(spec.kind, before);
    const event = pendingEvent(
      dispatchEvent(
        { dispatchId: doc._id, threadId: doc.thread_id, runId: doc.run_id, agentId: doc.agent_id },
        { kind: spec.kind, before, after: target, summary: spec.summary, now },
      ),
      now,
    );
    if (spec.claimable) event.claimable = { reason: spec.claimable.reason, at: spec.claimable.at };
    // A claim that ends frees its thread: the thread's next dispatch may be claimed.
    else if (before === "CLAIMED" && isTerminalKind(spec.kind)) event.claimable = { reason: DispatchSignalReason.THREAD_RELEASED, at: now };
    return event;
  }
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
