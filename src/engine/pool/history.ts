/**
 * A pool's history (seed: the durable pool store's append-only records,
 * replayable for as long as the pool exists). Each pool change is a journal
 * event carrying its record; the journal is deleted by retention, so the
 * records are kept here as well, for the pool's life, each numbered in the
 * pool: 1 for the opening, then every record the next number, no gaps.
 *
 * The numbers are given in journal order by following the journal (every
 * instance does; see JournalFollower): a record is numbered only once every
 * earlier record of its pool is, so two instances can only ever agree on a
 * number, and within a pool numbers and journal positions rise together.
 * The first instance to get there stores the record; the others find it.
 *
 * A pool deleted meanwhile keeps nothing: DeletePool marks the pool before
 * deleting its records, and a record stored after that is taken back.
 *
 * One follower keeps every namespace's pools (it reads the whole journal);
 * each event's record is kept in its namespace, through that namespace's view
 * of the store, and announced to that namespace's listeners only. Readers use
 * their namespace's PoolHistoryView.
 */
import { EventFamily, EventKind } from "../../../gen/mailroom/v1/event_pb.js";
import { PayloadAccessMode } from "../../domain/events/filter.js";
import type { Collection, Filter, Store } from "../../store/port.js";
import { DEFAULT_NAMESPACE, namespaceOf } from "../../store/namespaced.js";
import { JournalFollower } from "../follower.js";
import { addKeyed } from "../listeners.js";
import type { Journal } from "../journal/journal.js";
import type { EventDoc } from "../journal/records.js";
import type { JournalTail } from "../journal/tail.js";
import type { Logger } from "../logger.js";
import { incarnationOf, POOL_RECORDS, POOLS, type PoolDoc, RECORD_INDEXES, type RecordDoc } from "./records.js";

export type HistoryChange = { kind: "record"; record: RecordDoc } | { kind: "deleted"; poolId: string };
export type HistoryListener = (change: HistoryChange) => void;

interface Place {
  incarnation: string;
  seq: number;
}

/** Pools whose latest number is remembered (beyond it the store is asked). */
const REMEMBERED_POOLS = 10_000;

/** One namespace's collections, as the keeper uses them. */
interface Kept {
  namespace: string;
  records: Collection<RecordDoc>;
  pools: Collection<PoolDoc>;
}

const key = (namespace: string, poolId: string) => `${namespace}\u0000${poolId}`;

export class PoolHistory {
  readonly follower: JournalFollower;
  /** The latest record of each pool (by namespace and pool) this instance has numbered or seen numbered (in journal order). */
  private readonly latest = new Map<string, Place>();
  private readonly listeners = new Map<string, Set<HistoryListener>>();

  constructor(
    store: Store,
    /** A namespace's view of the store. */
    private readonly namespaced: (namespace: string) => Store,
    journal: Journal,
    tail: JournalTail,
    private readonly log: Logger,
  ) {
    this.follower = new JournalFollower(store, journal, tail, log, {
      name: "pool_history",
      filter: { families: new Set([EventFamily.AGENT_POOL]), payloadAccess: PayloadAccessMode.FULL },
      select: (event) => event.family === EventFamily.AGENT_POOL && event.pool_id !== undefined && (event.record !== undefined || event.kind === EventKind.AGENT_POOL_DELETED),
      handle: (events) => this.keep(events),
      // Pools opened before histories were kept get what the journal still has of theirs.
      origin: "journal-start",
    });
  }

  /** Creates the namespace-first indexes of kept records (every namespace's). */
  async init(): Promise<void> {
    await this.namespaced(DEFAULT_NAMESPACE).collection<RecordDoc>(POOL_RECORDS).createIndexes(RECORD_INDEXES);
  }

  start(): Promise<void> {
    return this.follower.start();
  }

  stop(): Promise<void> {
    return this.follower.stop();
  }

  /** Every pool record journaled up to this position is kept (or was of a deleted pool), in every namespace. */
  get position(): number {
    return this.follower.position;
  }

  /** One namespace's kept records. */
  in(namespace: string): PoolHistoryView {
    return new PoolHistoryView(this, namespace, this.namespaced(namespace).collection<RecordDoc>(POOL_RECORDS));
  }

  /** Hears each record of a namespace's pool as it is kept (in order), and the pool's deletion. */
  listen(namespace: string, poolId: string, listener: HistoryListener): () => void {
    return addKeyed(this.listeners, key(namespace, poolId), listener);
  }

  /** Each namespace's events of a batch, in order, kept in that namespace. */
  private async keep(events: EventDoc[]): Promise<void> {
    const byNamespace = new Map<string, EventDoc[]>();
    for (const event of events) {
      const namespace = namespaceOf(event);
      byNamespace.set(namespace, [...(byNamespace.get(namespace) ?? []), event]);
    }
    for (const [namespace, own] of byNamespace) {
      const store = this.namespaced(namespace);
      await this.keepIn({ namespace, records: store.collection<RecordDoc>(POOL_RECORDS), pools: store.collection<PoolDoc>(POOLS) }, own);
    }
  }

  /**
   * Keeps a batch of pool events' records, in order: those already kept (by
   * another instance) are read, the others numbered after their pool's
   * latest and stored at once; then each pool is checked once for a
   * deletion that began meanwhile, and the records are announced, in order.
   * All of one namespace.
   */
  private async keepIn(kept: Kept, events: EventDoc[]): Promise<void> {
    // Forgotten between batches only: within one, the records numbered so far are not stored yet.
    if (this.latest.size > REMEMBERED_POOLS) this.latest.clear();
    try {
      const ids = events.filter((event) => event.record !== undefined).map((event) => event.event_id);
      const found = new Map((ids.length === 0 ? [] : await kept.records.find({ _id: { $in: ids } })).map((doc) => [doc._id, doc]));
      const announced: HistoryChange[] = [];
      const stored: RecordDoc[] = [];
      for (const event of events) {
        const poolId = event.pool_id!;
        if (event.kind === EventKind.AGENT_POOL_DELETED) {
          this.latest.delete(key(kept.namespace, poolId));
          announced.push({ kind: "deleted", poolId });
          continue;
        }
        const doc = found.get(event.event_id) ?? (await this.numbered(kept, event));
        if (!doc) continue; // of a pool deleted since
        if (!found.has(doc._id)) stored.push(doc);
        this.remember(kept.namespace, doc);
        announced.push({ kind: "record", record: doc });
      }
      const dropped = await this.store(kept, stored);
      for (const change of announced) {
        if (change.kind === "record" && dropped.has(change.record._id)) continue;
        this.emit(kept.namespace, change.kind === "record" ? change.record.pool_id : change.poolId, change);
      }
    } catch (error) {
      // What this instance remembers may be what went wrong: ask the store again on the retry.
      this.latest.clear();
      throw error;
    }
  }

  /** The record of an event not kept yet, with its number; undefined for a pool deleted since. */
  private async numbered(kept: Kept, event: EventDoc): Promise<RecordDoc | undefined> {
    const place = await this.placeOf(kept, event);
    if (!place) return undefined;
    const doc: RecordDoc = { _id: event.event_id, pool_id: event.pool_id!, incarnation: place.incarnation, seq: place.seq, journal_seq: event._id, kind: event.kind, record: event.record! };
    if (event.recipients) doc.recipients = event.recipients;
    return doc;
  }

  /**
   * Stores newly numbered records. One another instance stored first must
   * carry the same number (both number in journal order). Returns the ids
   * of those taken back because their pool's deletion began meanwhile
   * (DeletePool marks the pool before it removes the records).
   */
  private async store(kept: Kept, docs: RecordDoc[]): Promise<Set<string>> {
    const dropped = new Set<string>();
    if (docs.length === 0) return dropped;
    const result = await kept.records.insertMany(docs);
    const duplicates = new Set(result.duplicates.map((d) => d.position));
    for (const position of duplicates) {
      const mine = docs[position]!;
      const theirs = await kept.records.findOne({ _id: mine._id });
      if (!theirs || theirs.incarnation !== mine.incarnation || theirs.seq !== mine.seq) {
        throw new Error(`pool ${JSON.stringify(mine.pool_id)}: record number ${mine.seq} (event_seq ${mine.journal_seq}) is taken by another record`);
      }
    }
    // Only what this call inserted: a record another instance stored was checked by that instance.
    const inserted = docs.filter((_, i) => !duplicates.has(i));
    if (inserted.length === 0) return dropped;
    const poolIds = [...new Set(inserted.map((doc) => doc.pool_id))];
    const pools = new Map((await kept.pools.find({ _id: { $in: poolIds } })).map((pool) => [pool._id, pool]));
    const gone = inserted.filter((doc) => {
      const pool = pools.get(doc.pool_id);
      return !pool || pool.deleting !== undefined || incarnationOf(pool) !== doc.incarnation;
    });
    if (gone.length > 0) {
      await kept.records.deleteMany({ _id: { $in: gone.map((doc) => doc._id) } });
      for (const doc of gone) {
        dropped.add(doc._id);
        this.latest.delete(key(kept.namespace, doc.pool_id));
      }
    }
    return dropped;
  }

  /** The number the record gets: the next after the pool's latest, or 1 for an opening. */
  private async placeOf(kept: Kept, event: EventDoc): Promise<Place | undefined> {
    const poolId = event.pool_id!;
    if (event.kind === EventKind.AGENT_POOL_OPENED) return { incarnation: event.event_id, seq: 1 };
    const known = this.latest.get(key(kept.namespace, poolId)) ?? (await kept.records.findOne({ pool_id: poolId, journal_seq: { $lt: event._id } }, { sort: { journal_seq: -1 } }));
    if (known) return { incarnation: known.incarnation, seq: known.seq + 1 };
    // Nothing kept before it: a pool opened before histories were kept (named by its id), or one deleted since.
    const pool = await kept.pools.findOne({ _id: poolId });
    if (pool && pool.incarnation === undefined && pool.deleting === undefined) return { incarnation: poolId, seq: 1 };
    this.log.debug({ pool_id: poolId, event_seq: event._id }, "not keeping a record of a deleted pool");
    return undefined;
  }

  private remember(namespace: string, doc: RecordDoc): void {
    this.latest.set(key(namespace, doc.pool_id), { incarnation: doc.incarnation, seq: doc.seq });
  }

  private emit(namespace: string, poolId: string, change: HistoryChange): void {
    for (const listener of this.listeners.get(key(namespace, poolId)) ?? []) {
      try {
        listener(change);
      } catch (error) {
        this.log.error({ pool_id: poolId, error: error instanceof Error ? error.message : String(error) }, "pool history listener failed");
      }
    }
  }
}

/** One namespace's kept pool records: what its pools, WatchPool and inboxes read. */
export class PoolHistoryView {
  constructor(
    private readonly history: PoolHistory,
    readonly namespace: string,
    /** The namespace's records (through its view). */
    readonly records: Collection<RecordDoc>,
  ) {}

  get follower(): JournalFollower {
    return this.history.follower;
  }

  /** Every pool record journaled up to this position is kept (see PoolHistory.position). */
  get position(): number {
    return this.history.position;
  }

  /** Hears each record of the pool as it is kept (in order), and the pool's deletion. */
  listen(poolId: string, listener: HistoryListener): () => void {
    return this.history.listen(this.namespace, poolId, listener);
  }

  /** The pool's latest kept record, if any. */
  async last(incarnation: string): Promise<RecordDoc | undefined> {
    return (await this.records.findOne({ incarnation }, { sort: { seq: -1 } })) ?? undefined;
  }

  /** The pool's last record at or before a journal position, if any. */
  async lastAt(poolId: string, incarnation: string, journalSeq: number): Promise<RecordDoc | undefined> {
    return (await this.records.findOne({ pool_id: poolId, incarnation, journal_seq: { $lte: journalSeq } }, { sort: { journal_seq: -1 } })) ?? undefined;
  }

  /** Records after a sequence number, in order. */
  after(incarnation: string, seq: number, limit: number): Promise<RecordDoc[]> {
    return this.records.find({ incarnation, seq: { $gt: seq } }, { sort: { seq: 1 }, limit });
  }

  /** Records delivering a message to `runId` after a journal position, in order. */
  inboxAfter(incarnation: string, runId: string, journalSeq: number, limit: number): Promise<RecordDoc[]> {
    return this.records.find({ incarnation, recipients: runId, journal_seq: { $gt: journalSeq } } as Filter<RecordDoc>, { sort: { journal_seq: 1 }, limit });
  }
}
