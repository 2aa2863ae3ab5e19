/**
 * The durable journal: appends events at fresh positions and reads them back.
 *
 * Positions come from a counter ($inc), so two writers may commit out of
 * position order; readers therefore never go past a missing position (a
 * "hole") until it is either filled by its event or closed by a tombstone
 * (see JournalTail). A writer whose position was closed meanwhile gets a
 * duplicate key on `_id` and simply appends again at a new position. Event ids
 * are unique per namespace (index), so appending the same event twice records
 * it once.
 *
 * Namespaces share the journal's one sequence of positions (a numeric `_id`
 * cannot be namespaced, and one sequence keeps group commit and the tail
 * namespace-blind); every event carries its namespace in `ns`, and every read
 * of events for a namespace names it (NamespaceJournal): only the journal's
 * own machinery (the tail, retention, journal followers) reads across them.
 */
import type { FilterSpec } from "../../domain/events/filter.js";
import type { Collection, Doc, Filter, IndexSpec, Store } from "../../store/port.js";
import { DuplicateKeyError, StoreUnavailableError } from "../../store/port.js";
import type { Logger } from "../logger.js";
import { COUNTERS, EVENTS, type EventDoc, isTombstone, type JournalDoc, type PendingEvent, type TombstoneDoc } from "./records.js";

interface CounterDoc extends Doc {
  _id: string;
  value: number;
}

export interface AppendOutcome {
  /** Where the event is in the journal (for a duplicate: where it was first recorded). */
  seq: number;
  /** True when an event with this event_id was already journaled. */
  deduplicated: boolean;
}

/** Called with every document this process wrote to the journal, as soon as it is acknowledged. */
export type JournalWriteListener = (docs: JournalDoc[]) => void;

const EVENT_ID_INDEX = "event_id_per_namespace";
/** The counter document of journal positions (created by the first append, never deleted). */
export const JOURNAL_COUNTER = "event_seq";
const PURGED_THROUGH = "journal_purged_through";
/** Indexes of earlier versions: every event was in each (retention reads by position, not time). */
const OBSOLETE_INDEXES = ["recorded_ms_1", "run_id_1__id_1", "agent_id_1__id_1", "pool_id_1__id_1", "thread_id_1__id_1"];
/** The indexes before namespaces (replaced by the namespace-first ones; dropped once every event has its `ns`). */
export const JOURNAL_INDEXES_BEFORE_NAMESPACES = ["event_id_unique", "run_events", "agent_events", "pool_events", "thread_events"];

/** The store query for a filter's events (field names as records.ts stores them). */
export function journalQuery(filter: FilterSpec): Record<string, unknown> {
  const query: Record<string, unknown> = { event_id: { $exists: true } };
  const fields: Array<[string, ReadonlySet<string | number> | undefined]> = [
    ["run_id", filter.runIds], ["agent_id", filter.agentIds], ["family", filter.families], ["kind", filter.kinds],
    ["custom_kind", filter.customKinds], ["tags", filter.tags], ["thread_id", filter.threadIds], ["pool_id", filter.poolIds],
    ["recipients", filter.recipients],
  ];
  for (const [field, values] of fields) if (values !== undefined) query[field] = { $in: [...values] };
  return query;
}
const MAX_APPEND_ATTEMPTS = 10;
/** Journal positions one read of a namespace's events examines at most when no index narrows it (see matchingIn). */
const NAMESPACE_WINDOW = 10_000;
/** Most events one group commit inserts at once (a larger group waits for the next). */
const MAX_GROUP_EVENTS = 5000;

interface AppendRequest {
  events: PendingEvent[];
  namespace: string;
  /** How many times these events found their positions closed already. */
  attempt: number;
  resolve(outcomes: AppendOutcome[]): void;
  reject(error: unknown): void;
}

export class Journal {
  readonly events: Collection<JournalDoc>;
  private readonly counters: Collection<CounterDoc>;
  private readonly listeners = new Set<JournalWriteListener>();
  /** Appends waiting for the next group commit. */
  private readonly waiting: AppendRequest[] = [];
  private allocating = false;
  private scheduled = false;

  constructor(
    store: Store,
    private readonly log: Logger,
    /** Marks the events this instance journals (see EventFields.writer). */
    private readonly writer?: string,
  ) {
    this.events = store.collection<JournalDoc>(EVENTS);
    this.counters = store.collection<CounterDoc>(COUNTERS);
  }

  async init(): Promise<void> {
    // Partial: an event is indexed only under the fields it has (tombstones under none).
    const by = (field: string): IndexSpec => ({ key: { ns: 1, [field]: 1, _id: 1 }, name: `namespace_${field.replace(/_id$/, "")}_events`, partialFilterExpression: { [field]: { $exists: true } } });
    await this.events.createIndexes([
      { key: { ns: 1, event_id: 1 }, name: EVENT_ID_INDEX, unique: true, partialFilterExpression: { event_id: { $exists: true } } },
      by("run_id"),
      by("agent_id"),
      by("pool_id"),
      by("thread_id"),
    ]);
    await this.events.dropIndexes(OBSOLETE_INDEXES);
  }

  onWrite(listener: JournalWriteListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reserves `count` consecutive positions; returns the first. */
  async allocate(count: number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        const counter = await this.counters.findOneAndUpdate({ _id: JOURNAL_COUNTER }, { $inc: { value: count } }, { upsert: true, returnDocument: "after" });
        return counter!.value - count + 1;
      } catch (error) {
        // Two first-ever upserts can race on MongoDB; the loser retries as an update.
        if (!(error instanceof DuplicateKeyError) || attempt > 2) throw error;
      }
    }
  }

  /** The highest position reserved so far (0 before the first append). */
  async reservedHead(): Promise<number> {
    return (await this.counters.findOne({ _id: JOURNAL_COUNTER }))?.value ?? 0;
  }

  /**
   * Appends a namespace's events, in order, at fresh consecutive positions.
   * Returns one outcome per input. Safe to call again with the same events
   * (retries, outbox re-flushes): an event id is journaled once per namespace.
   *
   * Group commit: the appends made in one event loop turn, or while a
   * position allocation is in flight, share the next allocation and one
   * insert (each call's events stay consecutive and in order), so the journal
   * costs two store operations per group, not per event.
   */
  append(pending: PendingEvent[], namespace: string): Promise<AppendOutcome[]> {
    if (pending.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.waiting.push({ events: pending, namespace, attempt: 0, resolve, reject });
      // At the end of this event loop turn: every append made in it joins the group.
      if (!this.scheduled && !this.allocating) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  /** Starts the next group unless an allocation is in flight (its end starts it). */
  private pump(): void {
    if (this.allocating || this.waiting.length === 0) return;
    const group: AppendRequest[] = [];
    let size = 0;
    while (this.waiting.length > 0 && (group.length === 0 || size + this.waiting[0]!.events.length <= MAX_GROUP_EVENTS)) {
      const request = this.waiting.shift()!;
      size += request.events.length;
      group.push(request);
    }
    this.allocating = true;
    void this.commit(group, size);
  }

  private async commit(group: AppendRequest[], size: number): Promise<void> {
    let first: number;
    try {
      first = await this.allocate(size);
    } catch (error) {
      for (const request of group) request.reject(error);
      return;
    } finally {
      this.allocating = false;
      this.pump();
    }
    // The next group allocates while this one is inserted.
    let offset = first;
    const placed = group.map((request) => {
      const at = offset;
      offset += request.events.length;
      return { request, first: at };
    });
    let written: Map<number, AppendOutcome | "retry">;
    try {
      const writer = this.writer === undefined ? {} : { writer: this.writer };
      written = await this.insertAt(placed.flatMap(({ request, first: at }) => request.events.map((event, i) => ({ _id: at + i, ...event, ns: request.namespace, ...writer }))));
    } catch (error) {
      for (const request of group) request.reject(error);
      return;
    }
    for (const { request, first: at } of placed) this.settle(request, request.events.map((_, i) => written.get(at + i)!));
  }

  /** Resolves a request, after appending again (further on) whatever found its position closed. */
  private settle(request: AppendRequest, outcomes: Array<AppendOutcome | "retry">): void {
    const retry = request.events.filter((_, i) => outcomes[i] === "retry");
    if (retry.length === 0) return request.resolve(outcomes as AppendOutcome[]);
    if (request.attempt + 1 >= MAX_APPEND_ATTEMPTS) {
      // Positions are closed only after the hole timeout (above the store bound): a store too slow for that is unavailable.
      return request.reject(new StoreUnavailableError(`journal append: positions kept being closed before the write landed, ${MAX_APPEND_ATTEMPTS} times`));
    }
    this.log.debug({ count: retry.length }, "journal positions were closed before the write landed; appending again");
    this.waiting.push({
      events: retry,
      namespace: request.namespace,
      attempt: request.attempt + 1,
      resolve: (again) => {
        let next = 0;
        request.resolve(outcomes.map((outcome) => (outcome === "retry" ? again[next++]! : outcome)));
      },
      reject: request.reject,
    });
    this.pump();
  }

  /**
   * Inserts events at their reserved positions. Per position: where the
   * event was journaled, or "retry" when a reader had closed the position
   * first (the event must go further on).
   */
  private async insertAt(docs: EventDoc[]): Promise<Map<number, AppendOutcome | "retry">> {
    const outcomes = new Map<number, AppendOutcome | "retry">();
    const result = await this.events.insertMany(docs);
    const refused = new Map(result.duplicates.map((d) => [d.position, d.index]));
    const written: JournalDoc[] = [];
    const tombstones: TombstoneDoc[] = [];
    const duplicates: EventDoc[] = [];
    docs.forEach((doc, i) => {
      const index = refused.get(i);
      if (index === undefined) {
        written.push(doc);
        outcomes.set(doc._id, { seq: doc._id, deduplicated: false });
      } else if (index === EVENT_ID_INDEX) {
        // Already journaled: close this position and report the original one.
        tombstones.push({ _id: doc._id, tombstone: true });
        duplicates.push(doc);
      } else {
        outcomes.set(doc._id, "retry");
      }
    });
    if (tombstones.length > 0) {
      const closed = await this.events.insertMany(tombstones);
      const alreadyClosed = new Set(closed.duplicates.map((d) => d.position));
      written.push(...tombstones.filter((_, i) => !alreadyClosed.has(i)));
    }
    if (duplicates.length > 0) {
      const namespaces = [...new Set(duplicates.map((d) => d.ns!))];
      const found = await Promise.all(namespaces.map((ns) => this.positionsIn(ns, duplicates.filter((d) => d.ns === ns).map((d) => d.event_id))));
      const seqByKey = new Map(namespaces.flatMap((ns, i) => [...found[i]!].map(([id, seq]) => [`${ns}\u0000${id}`, seq] as const)));
      for (const doc of duplicates) {
        const seq = seqByKey.get(`${doc.ns}\u0000${doc.event_id}`);
        if (seq === undefined) throw new Error(`journal append: event ${doc.event_id} reported as duplicate but not found`);
        outcomes.set(doc._id, { seq, deduplicated: true });
      }
    }
    this.notify(written);
    return outcomes;
  }

  /**
   * Closes a position that has no event: inserts a tombstone, or, when the
   * event landed meanwhile, returns it.
   */
  async close(seq: number): Promise<JournalDoc> {
    const tombstone: TombstoneDoc = { _id: seq, tombstone: true };
    try {
      await this.events.insertOne(tombstone);
      this.notify([tombstone]);
      return tombstone;
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
      const existing = await this.events.findOne({ _id: seq });
      if (!existing) throw new Error(`journal position ${seq} is taken but cannot be read`);
      return existing;
    }
  }

  /** Documents (events and tombstones) at positions in (after, until], in order. */
  async range(after: number, until: number, limit: number): Promise<JournalDoc[]> {
    if (until <= after) return [];
    return this.events.find({ _id: { $gt: after, $lte: until } }, { sort: { _id: 1 }, limit });
  }

  /**
   * A namespace's events (no tombstones) matching `filter` at positions in
   * (after, until], in order, at most `limit`.
   */
  async matchingIn(namespace: string, filter: FilterSpec, after: number, until: number, limit: number): Promise<EventDoc[]> {
    if (until <= after || limit <= 0) return [];
    // Tombstones have no namespace: naming one leaves them out.
    const { event_id: _events, ...conditions } = journalQuery(filter);
    const read = (from: number, to: number, most: number) => this.events.find({ ns: namespace, ...conditions, _id: { $gt: from, $lte: to } } as Filter<JournalDoc>, { sort: { _id: 1 }, limit: most }) as Promise<EventDoc[]>;
    // A filter naming runs, agents, pools or threads is answered from their namespace-first index.
    if (filter.runIds || filter.agentIds || filter.poolIds || filter.threadIds) return read(after, until, limit);
    // Otherwise from the positions, keeping the namespace's, a window of positions a read (no index per
    // namespace and position is kept: every event would pay for it, as kind and family filters never did).
    const found: EventDoc[] = [];
    for (let from = after; from < until && found.length < limit; from += NAMESPACE_WINDOW) found.push(...(await read(from, Math.min(until, from + NAMESPACE_WINDOW), limit - found.length)));
    return found;
  }

  /**
   * Every namespace's events matching `filter` in (after, until]: only for
   * the journal's own followers, which act on each event in its namespace.
   */
  async matchingAll(filter: FilterSpec, after: number, until: number, limit: number): Promise<EventDoc[]> {
    if (until <= after || limit <= 0) return [];
    const query = { ...journalQuery(filter), _id: { $gt: after, $lte: until } } as Filter<JournalDoc>;
    return (await this.events.find(query, { sort: { _id: 1 }, limit })) as EventDoc[];
  }

  /** Every position up to this one was deleted by retention (0 when none was). */
  async purgedThrough(): Promise<number> {
    return (await this.counters.findOne({ _id: PURGED_THROUGH }))?.value ?? 0;
  }

  /**
   * Deletes the oldest events recorded before `cutoffMs`, always a prefix of
   * the journal (so "older than the retained journal" is one number), never
   * beyond `limitSeq` (the live edge). Returns the new purged-through position.
   */
  async purgeBefore(cutoffMs: number, limitSeq: number, batch = 1000): Promise<number> {
    let through = await this.purgedThrough();
    for (;;) {
      const oldest = await this.events.find({ _id: { $gt: through, $lte: limitSeq } }, { sort: { _id: 1 }, limit: batch });
      let end = through;
      for (const doc of oldest) {
        if (!isTombstone(doc) && (doc as EventDoc).recorded_ms >= cutoffMs) break;
        end = doc._id;
      }
      if (end === through) return through;
      // Recorded before deleting: a reader never trusts a position whose events are gone.
      await this.counters.updateOne({ _id: PURGED_THROUGH }, { $max: { value: end } }, { upsert: true });
      await this.events.deleteMany({ _id: { $lte: end } });
      through = end;
      if (oldest.length < batch) return through;
    }
  }

  /** Journal positions of a namespace's events by id (ids not journaled are absent). */
  async positionsIn(namespace: string, eventIds: readonly string[]): Promise<Map<string, number>> {
    const docs = await this.recordedIn(namespace, eventIds);
    return new Map(docs.map((doc) => [doc.event_id, doc._id]));
  }

  /** A namespace's events by id (ids not journaled are absent). */
  async recordedIn(namespace: string, eventIds: readonly string[]): Promise<EventDoc[]> {
    if (eventIds.length === 0) return [];
    return (await this.events.find({ ns: namespace, event_id: { $in: [...eventIds] } } as Filter<JournalDoc>)) as EventDoc[];
  }

  /** The highest journaled position (0 when empty). */
  async writtenHead(): Promise<number> {
    return (await this.events.findOne({}, { sort: { _id: -1 } }))?._id ?? 0;
  }

  /** The lowest retained position (0 when empty). */
  async oldest(): Promise<number> {
    return (await this.events.findOne({}, { sort: { _id: 1 } }))?._id ?? 0;
  }

  private notify(docs: JournalDoc[]): void {
    if (docs.length === 0) return;
    for (const listener of this.listeners) listener(docs);
  }
}

/**
 * One namespace's view of the journal: its appends are stamped with the
 * namespace, and every read of events names it. Positions and retention are
 * the journal's (one sequence for every namespace).
 */
export class NamespaceJournal {
  constructor(
    private readonly journal: Journal,
    readonly namespace: string,
  ) {}

  append(pending: PendingEvent[]): Promise<AppendOutcome[]> {
    return this.journal.append(pending, this.namespace);
  }

  matching(filter: FilterSpec, after: number, until: number, limit: number): Promise<EventDoc[]> {
    return this.journal.matchingIn(this.namespace, filter, after, until, limit);
  }

  positionsOf(eventIds: readonly string[]): Promise<Map<string, number>> {
    return this.journal.positionsIn(this.namespace, eventIds);
  }

  recorded(eventIds: readonly string[]): Promise<EventDoc[]> {
    return this.journal.recordedIn(this.namespace, eventIds);
  }

  /** The namespace's latest event about a pool of a family, if any. */
  async latestOfPool(poolId: string, family: number): Promise<EventDoc | undefined> {
    return ((await this.journal.events.findOne({ ns: this.namespace, pool_id: poolId, family } as Filter<JournalDoc>, { sort: { _id: -1 } })) as EventDoc | null) ?? undefined;
  }

  purgedThrough(): Promise<number> {
    return this.journal.purgedThrough();
  }

  reservedHead(): Promise<number> {
    return this.journal.reservedHead();
  }

  writtenHead(): Promise<number> {
    return this.journal.writtenHead();
  }
}
