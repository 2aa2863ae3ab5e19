/**
 * Wake conditions (seed: suspend_until, poll_wake, cancel_wake,
 * trigger_matching_wakes): a member run suspends until an event of an
 * observable member run matches its filter, or its timeout passes.
 *
 * Every registration leaves REGISTERED exactly once, whichever server
 * instance gets there first: each status change is an update conditional on
 * the status still being REGISTERED.
 *
 * How a matching event is never missed. Registration stores the condition
 * with `scanned: false`, journals WAKE_CONDITION_REGISTERED, then scans the
 * journal after `after_seq` for a matching event already there. Live
 * matching (WakeMatcher, on every instance, from the journal tail) may only
 * trigger once `scanned` is true, so the earliest matching event wins. After
 * setting `scanned`, the registrant scans once more up to the journal's
 * written head: any event a matcher saw while `scanned` was still false had
 * committed before that, so the second scan finds it. A registrant that
 * died before setting `scanned` is finished by the repair sweep.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventKind } from "../../../gen/mailroom/v1/event_pb.js";
import { type StoredWake, type WakeCondition, WakeConditionSchema, type WakeRegistration } from "../../../gen/mailroom/v1/pool_pb.js";
import type { Clock } from "../../domain/clock.js";
import { EntityKind, ErrorReason, MailroomError, notFound } from "../../domain/errors.js";
import { type FilterSpec, fromPlainFilter, toPlainFilter } from "../../domain/events/filter.js";
import { type ListCommand, pageToken } from "../../domain/pool/pages.js";
import { observableRuns } from "../../domain/pool/pool.js";
import { canWake, MAX_REGISTERED_WAKES_PER_POOL, ResumeInputPolicy, scopeWakeFilter, WAKE_STATUS_EVENT, type WakeRequest, type WakeStatusName } from "../../domain/pool/wakes.js";
import { type Collection, DuplicateKeyError, type Filter, type Store } from "../../store/port.js";
import { checkJournalCursor } from "../events/events.js";
import type { NamespaceJournal } from "../journal/journal.js";
import { type EventDoc, type EventExtras, eventOf } from "../journal/records.js";
import { type NamespaceOutbox, initialOutbox, withEvents } from "../outbox.js";
import { recordEvent } from "./journaling.js";
import { notMemberError } from "./members.js";
import type { Pools } from "./pools.js";
import { configFromDoc, POOL_WAKES, registrationOf, storedWakeOf, WAKE_INDEXES, type WakeDoc } from "./records.js";

/** Events read from the journal at once while scanning for an earlier match. */
const SCAN_PAGE = 500;

/** One namespace's wake conditions (its store is the namespace's view; matching reads only its events). */
export class Wakes {
  readonly wakes: Collection<WakeDoc>;

  constructor(
    store: Store,
    private readonly pools: Pools,
    private readonly journal: NamespaceJournal,
    private readonly outbox: NamespaceOutbox,
    private readonly clock: Clock,
    /** The journal position every instance's matchers have certainly seen (the local tail's). */
    private readonly livePosition: () => number,
  ) {
    this.wakes = store.collection<WakeDoc>(POOL_WAKES);
  }

  async init(): Promise<void> {
    await this.wakes.createIndexes(WAKE_INDEXES);
    await this.outbox.register(POOL_WAKES);
  }

  /** Registers a wake condition (seed: suspend_until); a repeated idempotency key returns the registration as it is now. */
  async suspend(poolId: string, request: WakeRequest): Promise<{ registration: WakeRegistration; deduplicated: boolean }> {
    const repeat = await this.wakes.findOne({ pool_id: poolId, idempotency_key: request.condition.idempotencyKey });
    if (repeat) return { registration: await this.registration(repeat), deduplicated: true };
    const pool = await this.pools.get(poolId);
    const members = await this.pools.members.list(poolId);
    const member = members.find((m) => m.runId === request.condition.runId) ?? notMemberError(poolId, request.condition.runId);
    // A bound, not a reservation: registrations racing past the count may exceed it by as many as race.
    if ((await this.wakes.countDocuments({ pool_id: poolId, status: "REGISTERED" })) >= MAX_REGISTERED_WAKES_PER_POOL) {
      throw new MailroomError("resource_exhausted", `agent pool ${JSON.stringify(poolId)} has ${MAX_REGISTERED_WAKES_PER_POOL} registered wake conditions, its limit; cancel some or wait for them to settle`, {
        reason: ErrorReason.LIMIT_EXCEEDED,
        metadata: { limit: "registered wake conditions per pool" },
      });
    }
    const config = configFromDoc(pool.config);
    const filter = scopeWakeFilter(request.filter, observableRuns(members, config), config);
    const now = this.clock.now();
    // A given cursor is checked as EventService checks one: a purged range or a future position would skip matching events silently.
    const afterSeq = request.matchHistory
      ? await this.journal.purgedThrough()
      : request.after !== undefined ? await checkJournalCursor(this.journal, request.after) : this.livePosition();
    const condition = create(WakeConditionSchema, request.condition);
    const doc: WakeDoc = {
      _id: `${poolId}\u0000${condition.conditionId}`,
      pool_id: poolId,
      condition_id: condition.conditionId,
      idempotency_key: condition.idempotencyKey,
      run_id: member.runId,
      agent_id: member.agentId,
      condition: toBinary(WakeConditionSchema, condition),
      filter: toPlainFilter(filter),
      after_seq: afterSeq,
      status: "REGISTERED",
      scanned: false,
      status_event_id: "",
      created_at: now,
      updated_at: now,
    };
    if (request.timeoutMs !== undefined) doc.deadline_at = now + request.timeoutMs;
    const events = [this.statusEvent(doc, "REGISTERED", now, { wake: { filter: doc.filter, after_seq: afterSeq }, ...(doc.deadline_at !== undefined ? { due_at: doc.deadline_at } : {}) })];
    if (request.timeoutMs === 0) {
      // The seed: a zero timeout is recorded as registered, then timed out at once.
      doc.status = "TIMED_OUT";
      doc.scanned = true;
      events.push(this.statusEvent(doc, "TIMED_OUT", now));
    }
    doc.status_event_id = events[events.length - 1]!.event_id;
    Object.assign(doc, initialOutbox(events, now));
    try {
      await this.wakes.insertOne(doc);
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
      const raced = await this.wakes.findOne({ pool_id: poolId, idempotency_key: condition.idempotencyKey });
      if (raced) return { registration: await this.registration(raced), deduplicated: true };
      throw new MailroomError("already_exists", `condition_id ${JSON.stringify(condition.conditionId)} is already used in agent pool ${JSON.stringify(poolId)} (with another idempotency key)`, {
        reason: ErrorReason.INVALID_FIELD,
        field: "condition.condition_id",
        entity: { kind: EntityKind.WAKE_CONDITION, id: condition.conditionId },
      });
    }
    await this.outbox.flush(POOL_WAKES, [doc]);
    const settled = doc.status === "REGISTERED" ? await this.scan(doc) : doc;
    return { registration: await this.registration(settled), deduplicated: false };
  }

  async get(poolId: string, conditionId: string): Promise<WakeDoc> {
    const doc = await this.wakes.findOne({ pool_id: poolId, condition_id: conditionId });
    if (!doc) {
      await this.pools.get(poolId); // an unknown pool is named as such
      throw notFound(EntityKind.WAKE_CONDITION, conditionId, `no such wake condition in agent pool ${JSON.stringify(poolId)}`);
    }
    return doc;
  }

  async poll(poolId: string, conditionId: string): Promise<WakeRegistration> {
    return this.registration(await this.get(poolId, conditionId));
  }

  /** REGISTERED -> CANCELLED; a registration that already left REGISTERED is returned unchanged. */
  async cancel(poolId: string, conditionId: string): Promise<WakeRegistration> {
    const doc = await this.get(poolId, conditionId);
    const updated = doc.status === "REGISTERED" ? await this.transition(doc, "CANCELLED", {}) : undefined;
    return this.registration(updated ?? (await this.get(poolId, conditionId)));
  }

  /** A page of the pool's wake conditions (any status), in the order they were registered. */
  async list(command: ListCommand): Promise<{ wakes: StoredWake[]; nextPageToken: string }> {
    const { poolId, pageSize, after } = command;
    await this.pools.get(poolId); // an unknown pool is NOT_FOUND, not empty
    const filter = after === undefined
      ? { pool_id: poolId }
      : { pool_id: poolId, $or: [{ created_at: { $gt: after.at } }, { created_at: after.at, condition_id: { $gt: after.key } }] };
    const docs = await this.wakes.find(filter as Filter<WakeDoc>, { sort: { created_at: 1, condition_id: 1 }, limit: pageSize + 1 });
    const page = docs.slice(0, pageSize);
    const positions = await this.journal.positionsOf(page.map((doc) => doc.status_event_id));
    const last = page[page.length - 1];
    return {
      wakes: page.map((doc) => storedWakeOf(doc, positions.get(doc.status_event_id))),
      nextPageToken: docs.length > pageSize && last ? pageToken(poolId, { at: last.created_at, key: last.condition_id }) : "",
    };
  }

  /** Cancels every REGISTERED condition of a pool being deleted; returns how many this call cancelled. */
  async cancelAll(poolId: string): Promise<number> {
    let cancelled = 0;
    for (;;) {
      const page = await this.wakes.find({ pool_id: poolId, status: "REGISTERED" }, { limit: 500 });
      if (page.length === 0) return cancelled;
      const done = await Promise.all(page.map((doc) => this.transition(doc, "CANCELLED", {})));
      cancelled += done.filter(Boolean).length;
    }
  }

  /** Live matching: triggers a scanned registration with this event (false when it had already left REGISTERED). */
  async triggerLive(docId: string, event: EventDoc): Promise<boolean> {
    const doc = await this.wakes.findOne({ _id: docId, status: "REGISTERED", scanned: true });
    return doc ? (await this.trigger(doc, event, { scanned: true })) !== undefined : false;
  }

  /** Times out a registration whose deadline passed (the deadline sweep found it); false when it had already left REGISTERED. */
  async timeOut(doc: WakeDoc): Promise<boolean> {
    return (await this.transition(doc, "TIMED_OUT", {})) !== undefined;
  }

  /** Finishes a registration whose registrant stopped before scanning the journal for an earlier match (the repair sweep found it). */
  async finishScan(doc: WakeDoc): Promise<void> {
    await this.scan(doc);
  }

  /**
   * For a matcher starting up: triggers a scanned registration with the
   * first matching event already journaled, which no matcher may have seen
   * (every instance was down, or the one that saw it stopped before its
   * trigger committed). False when nothing matched or it had left REGISTERED.
   */
  async recheck(doc: WakeDoc): Promise<boolean> {
    if (!doc.scanned) return false; // the repair sweep finishes unscanned ones
    const { event } = await this.firstMatch(fromPlainFilter(doc.filter), doc.after_seq, await this.journal.writtenHead());
    return event ? (await this.trigger(doc, event, {})) !== undefined : false;
  }

  /** The two scans of the module comment; returns the registration as it ends up. */
  private async scan(doc: WakeDoc): Promise<WakeDoc> {
    const filter = fromPlainFilter(doc.filter);
    const first = await this.firstMatch(filter, doc.after_seq, await this.journal.writtenHead());
    if (first.event) return (await this.trigger(doc, first.event, {})) ?? (await this.reload(doc));
    const marked = await this.wakes.findOneAndUpdate({ _id: doc._id, status: "REGISTERED" }, { $set: { scanned: true } });
    if (!marked) return this.reload(doc);
    const second = await this.firstMatch(filter, first.through, await this.journal.writtenHead());
    if (second.event) return (await this.trigger(marked, second.event, {})) ?? (await this.reload(doc));
    return marked;
  }

  private async firstMatch(filter: FilterSpec, after: number, until: number): Promise<{ event?: EventDoc; through: number }> {
    for (let from = after; ;) {
      const page = await this.journal.matching(filter, from, until, SCAN_PAGE);
      const event = page.find((e) => canWake(e.kind));
      if (event) return { event, through: event._id };
      if (page.length < SCAN_PAGE) return { through: until };
      from = page[page.length - 1]!._id;
    }
  }

  private async trigger(doc: WakeDoc, event: EventDoc, condition: Filter<WakeDoc>): Promise<WakeDoc | undefined> {
    const matched = eventOf(event);
    const envelope = matched.envelope!;
    const policy = fromBinary(WakeConditionSchema, doc.condition).resumeWith;
    const resume: WakeDoc["resume_input"] = { event_refs: [], redacted_summary: "" };
    if (policy === ResumeInputPolicy.MATCHING_EVENT_REFS) {
      resume.event_refs = [{ kind: EntityKind.EVENT, id: envelope.eventId }];
      if (envelope.subjectRef) resume.event_refs.push({ kind: envelope.subjectRef.kind, id: envelope.subjectRef.id });
    } else if (policy === ResumeInputPolicy.REDACTED_SUMMARY) {
      resume.redacted_summary = redactedSummary(matched);
    }
    return this.transition(doc, "TRIGGERED", condition, { matched_event_id: envelope.eventId, resume_input: resume });
  }

  private async transition(doc: WakeDoc, status: Exclude<WakeStatusName, "REGISTERED">, condition: Filter<WakeDoc>, set: Partial<WakeDoc> = {}): Promise<WakeDoc | undefined> {
    const now = this.clock.now();
    // A registration that will never time out any more shows no deadline.
    const keepsDeadline = status === "TIMED_OUT";
    const after: WakeDoc = { ...doc, ...set, status };
    if (!keepsDeadline) delete after.deadline_at;
    const event = this.statusEvent(after, status, now);
    const updated = await this.wakes.findOneAndUpdate(
      { ...condition, _id: doc._id, status: "REGISTERED" },
      withEvents<WakeDoc>({ $set: { ...set, status, status_event_id: event.event_id, updated_at: now }, ...(keepsDeadline ? {} : { $unset: { deadline_at: "" } }) }, [event], now),
    );
    if (!updated) return undefined;
    await this.outbox.flush(POOL_WAKES, [updated]);
    return updated;
  }

  private async reload(doc: WakeDoc): Promise<WakeDoc> {
    return (await this.wakes.findOne({ _id: doc._id }))!;
  }

  private async registration(doc: WakeDoc): Promise<WakeRegistration> {
    const positions = await this.journal.positionsOf([doc.status_event_id]);
    return registrationOf(doc, positions.get(doc.status_event_id));
  }

  /** The seed's event for one status of a registration, with the stored wake as the pool record. */
  private statusEvent(doc: WakeDoc, status: WakeStatusName, now: number, extras: EventExtras = {}) {
    const condition: WakeCondition = fromBinary(WakeConditionSchema, doc.condition);
    const stored = storedWakeOf({ ...doc, status }, undefined);
    if (doc.deadline_at !== undefined) stored.registration!.deadline = timestampFromMs(doc.deadline_at);
    return recordEvent(
      {
        kind: WAKE_STATUS_EVENT[status].kind,
        poolId: doc.pool_id,
        runId: doc.run_id,
        agentId: doc.agent_id,
        subject: { kind: EntityKind.WAKE_CONDITION, id: doc.condition_id },
        related: [{ kind: EntityKind.RUN, id: doc.run_id }],
        policyRefs: condition.policyRefs.map((ref) => ref.id),
        wakeConditionId: doc.condition_id,
        summary: WAKE_STATUS_EVENT[status].summary,
        now,
      },
      { case: "wake", value: stored },
      extras,
    );
  }
}

function redactedSummary(event: ReturnType<typeof eventOf>): string {
  const payload = event.payload;
  if (payload.case === "redactedSummary") return payload.value;
  // Events that carry no summary (a run's own progress, say) are named by kind only: payloads never leak into a wake.
  return `${EventKind[event.envelope?.kind ?? 0] ?? "UNKNOWN"} event`;
}
