/**
 * The journal's live edge in this process: one ordered, gap-free feed of
 * journal events for every in-process consumer (subscriptions, signals, long
 * polls, wake matching).
 *
 * Events arrive from two sides: this process's own appends (immediately, not
 * waiting for the change stream's commit latency) and the change stream
 * (other instances). They can arrive out of position order, because positions
 * are reserved before the writes commit. The tail delivers position N only
 * after every position below it is known; a position still missing after
 * `holeTimeoutMs` is looked up in the store and, when absent, closed with a
 * tombstone (its writer, if alive, then appends again further on). So no
 * consumer ever skips an event that commits late, and none waits forever for
 * one that never will.
 *
 * The hole timeout is longer than the store's time bound, so a write that
 * succeeds, however slowly, is never closed out from under its writer.
 * Positions at or below the purged mark are never closed: retention deleted
 * them, and a tombstone there would never be deleted again. Holes are closed
 * a page at a time (one read and one insert per page), so start-up and repair
 * cost a bounded number of store calls.
 *
 * The tail itself is namespace-blind (positions are one sequence). Consumers
 * that act for one namespace read it through a NamespaceTail: the events of
 * each delivered run are grouped by namespace once, and each group goes only
 * to that namespace's listeners.
 */
import { DEFAULT_STORE_TIMEOUT_MS } from "../../store/deadline.js";
import { namespaceOf } from "../../store/namespaced.js";
import type { ChangeFeed } from "../change-feed.js";
import { addKeyed } from "../listeners.js";
import type { Logger } from "../logger.js";
import type { Journal } from "./journal.js";
import { EVENTS, type EventDoc, isTombstone, type JournalDoc, type TombstoneDoc } from "./records.js";

export type TailListener = (events: EventDoc[]) => void;

/** What a reader of the live edge needs (a subscription): the tail, or one namespace's view of it. */
export interface TailReader {
  readonly position: number;
  recentAfter(seq: number): EventDoc[] | undefined;
  subscribe(listener: TailListener): () => void;
}

export interface JournalTailOptions {
  /**
   * How long a missing position may hold back later ones before it is looked
   * up and closed; keep it above the store's time bound (see holeTimeoutFor).
   */
  holeTimeoutMs?: number;
  /** Recent events kept in memory for subscribers that attach close behind the edge. */
  recentCapacity?: number;
  /** How many positions below the head are checked for holes at start-up. */
  startupWindow?: number;
}

const PAGE = 1000;

/**
 * The default hole timeout for a store time bound: just above it, so only a
 * writer whose call already failed (or died) can lose its position.
 */
export function holeTimeoutFor(storeTimeoutMs: number): number {
  return storeTimeoutMs + 1000;
}

export class JournalTail {
  private stable = 0;
  private readonly pending = new Map<number, JournalDoc>();
  private recent: EventDoc[] = [];
  /** The ring holds every event with a position above this (up to `stable`). */
  private recentFloor = 0;
  private readonly listeners = new Set<TailListener>();
  /** Listeners of one namespace's events only. */
  private readonly namespaceListeners = new Map<string, Set<TailListener>>();
  private readonly waiters = new Map<number, Array<() => void>>();
  private holeTimer: NodeJS.Timeout | undefined;
  /** The armed hole timer is for the positions up to this one (all missing when it was armed). */
  private holeUntil = 0;
  private filling: Promise<void> | undefined;
  private readonly holeTimeoutMs: number;
  private readonly recentCapacity: number;
  private stopped = false;
  private readonly detach: Array<() => void> = [];

  constructor(
    private readonly journal: Journal,
    private readonly feed: ChangeFeed,
    private readonly log: Logger,
    private readonly options: JournalTailOptions = {},
  ) {
    this.holeTimeoutMs = options.holeTimeoutMs ?? holeTimeoutFor(DEFAULT_STORE_TIMEOUT_MS);
    this.recentCapacity = options.recentCapacity ?? 10_000;
  }

  /** Registers with the journal and the change feed; call before the feed starts. */
  attach(): void {
    this.detach.push(this.journal.onWrite((docs) => this.offer(docs)));
    this.detach.push(
      this.feed.on(EVENTS, (change) => {
        if (change.fullDocument) this.offer([change.fullDocument as unknown as JournalDoc]);
      }),
    );
    this.detach.push(this.feed.onResync(() => this.catchUp()));
  }

  /** Finds the starting position; call once the change feed is established. */
  async start(): Promise<void> {
    const [written, purged] = await Promise.all([this.journal.writtenHead(), this.journal.purgedThrough()]);
    // When retention deleted every event, the purged mark is the head.
    const head = Math.max(written, purged);
    const window = this.options.startupWindow ?? 10_000;
    // Positions below the head that never got their event are closed now, so
    // nothing can land behind the edge later.
    const closed = await this.closeMissing(Math.max(purged, head - window), head, () => undefined);
    if (closed > 0) this.log.info({ positions: closed, event_seq: head }, "closed journal positions below the head whose events never arrived");
    if (this.stable < head) {
      this.stable = head;
      this.recentFloor = head;
      this.recent = [];
    }
    // Anything offered meanwhile above the head is delivered now.
    for (const seq of [...this.pending.keys()]) if (seq <= this.stable) this.pending.delete(seq);
    this.advance();
    this.log.debug({ event_seq: head }, "journal tail started");
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.holeTimer);
    for (const undo of this.detach.splice(0)) undo();
  }

  /** Every position up to this one has been delivered to listeners. */
  get position(): number {
    return this.stable;
  }

  /** Receives each newly delivered run of events (every namespace's), in position order. */
  subscribe(listener: TailListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Receives each newly delivered run of one namespace's events, in position order. */
  subscribeIn(namespace: string, listener: TailListener): () => void {
    return addKeyed(this.namespaceListeners, namespace, listener);
  }

  /** One namespace's view: its events only, at the tail's positions. */
  in(namespace: string): NamespaceTail {
    return new NamespaceTail(this, namespace);
  }

  /** The events after `seq` up to `position`, when still in memory; undefined when older. */
  recentAfter(seq: number): EventDoc[] | undefined {
    if (seq < this.recentFloor) return undefined;
    let lo = 0;
    let hi = this.recent.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.recent[mid]!._id <= seq) lo = mid + 1;
      else hi = mid;
    }
    return this.recent.slice(lo);
  }

  /** Resolves once `position` has reached `seq`. */
  waitFor(seq: number): Promise<void> {
    if (this.stable >= seq) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.waiters.get(seq) ?? [];
      list.push(resolve);
      this.waiters.set(seq, list);
    });
  }

  /** Accepts journal documents in any order; duplicates and old ones are ignored. */
  offer(docs: JournalDoc[]): void {
    for (const doc of docs) if (doc._id > this.stable) this.pending.set(doc._id, doc);
    this.advance();
  }

  private advance(): void {
    const delivered: EventDoc[] = [];
    for (let next = this.pending.get(this.stable + 1); next; next = this.pending.get(this.stable + 1)) {
      this.pending.delete(next._id);
      this.stable = next._id;
      if (!isTombstone(next)) delivered.push(next);
    }
    if (delivered.length > 0) {
      this.remember(delivered);
      for (const listener of this.listeners) this.call(listener, delivered);
      if (this.namespaceListeners.size > 0) {
        for (const [namespace, events] of byNamespace(delivered)) {
          for (const listener of this.namespaceListeners.get(namespace) ?? []) this.call(listener, events);
        }
      }
    }
    this.releaseWaiters();
    this.watchForHoles();
  }

  private call(listener: TailListener, events: EventDoc[]): void {
    try {
      listener(events);
    } catch (error) {
      this.log.error({ error: error instanceof Error ? error.message : String(error) }, "journal tail listener failed");
    }
  }

  private remember(events: EventDoc[]): void {
    this.recent.push(...events);
    const excess = this.recent.length - this.recentCapacity;
    if (excess > this.recentCapacity / 10) {
      this.recentFloor = this.recent[excess - 1]!._id;
      this.recent = this.recent.slice(excess);
    }
  }

  private releaseWaiters(): void {
    if (this.waiters.size === 0) return;
    for (const [seq, list] of this.waiters) {
      if (seq <= this.stable) {
        this.waiters.delete(seq);
        for (const resolve of list) resolve();
      }
    }
  }

  /**
   * Arms the hole timer for the positions missing below the first pending one.
   * Once those are filled, the timer is dropped: a hole that opened meanwhile
   * gets a full timeout of its own (under steady load there is nearly always
   * some hole, and one timer for all of them would close a write that is only
   * a moment late).
   */
  private watchForHoles(): void {
    if (this.holeTimer && (this.pending.size === 0 || this.stable >= this.holeUntil)) {
      clearTimeout(this.holeTimer);
      this.holeTimer = undefined;
    }
    if (this.pending.size === 0 || this.holeTimer || this.filling || this.stopped) return;
    const until = (this.holeUntil = Math.min(...this.pending.keys()) - 1);
    this.holeTimer = setTimeout(() => {
      this.holeTimer = undefined;
      this.filling = this.fillHoles(until)
        .catch((error) => this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "could not close a journal hole; will retry"))
        .finally(() => {
          this.filling = undefined;
          this.watchForHoles();
        });
    }, this.holeTimeoutMs);
    this.holeTimer.unref?.();
  }

  /** Looks up, then closes, every position up to `until` still missing (all were missing a whole hole timeout). */
  private async fillHoles(until: number): Promise<void> {
    const before = this.stable;
    const purged = await this.journal.purgedThrough();
    if (purged > this.stable) this.skipPurged(purged);
    const closed = await this.closeMissing(this.stable, until, (docs) => this.offer(docs));
    if (closed > 0) this.log.info({ positions: closed, through: until }, "closed journal positions whose events never arrived");
    if (this.stable > before) this.log.debug({ from: before, to: this.stable }, "journal holes resolved");
  }

  /**
   * Reads the positions in (after, until] a page at a time and closes each
   * one that has no document with a tombstone; hands every document found or
   * written to `found`. Returns how many positions it closed.
   */
  private async closeMissing(after: number, until: number, found: (docs: JournalDoc[]) => void): Promise<number> {
    let closed = 0;
    for (let cursor = after; cursor < until && !this.stopped; ) {
      const end = Math.min(until, cursor + PAGE);
      const docs = await this.journal.range(cursor, end, PAGE);
      found(docs);
      const present = new Set(docs.map((doc) => doc._id));
      const tombstones: TombstoneDoc[] = [];
      for (let seq = cursor + 1; seq <= end; seq++) if (!present.has(seq)) tombstones.push({ _id: seq, tombstone: true });
      if (tombstones.length > 0) {
        const { duplicates } = await this.journal.events.insertMany(tombstones);
        const taken = new Set(duplicates.map((d) => d.position));
        found(tombstones.filter((_, i) => !taken.has(i)));
        closed += tombstones.length - taken.size;
        // Written meanwhile (its event landed, or another instance closed it): read what is there.
        if (taken.size > 0) found(await this.journal.range(cursor, end, PAGE));
      }
      cursor = end;
    }
    return closed;
  }

  /** Retention deleted positions this instance has not delivered: nobody can deliver them now; move past them. */
  private skipPurged(purged: number): void {
    this.log.warn({ from: this.stable, to: purged }, "journal positions were deleted by retention before this instance delivered them; skipping them");
    for (const seq of [...this.pending.keys()]) if (seq <= purged) this.pending.delete(seq);
    this.stable = purged;
    this.recentFloor = purged;
    this.recent = [];
    this.advance();
  }

  /** After the change stream was re-established: read what it may have missed. */
  private async catchUp(): Promise<void> {
    // Page by what was read, not by `position`: a hole holds `position` back.
    for (let cursor = this.stable; ; ) {
      const docs = await this.journal.range(cursor, Number.MAX_SAFE_INTEGER, PAGE);
      this.offer(docs);
      if (docs.length < PAGE) return;
      cursor = docs[docs.length - 1]!._id;
    }
  }
}

/** Events grouped by namespace, each group in position order. */
function byNamespace(events: EventDoc[]): Map<string, EventDoc[]> {
  const groups = new Map<string, EventDoc[]>();
  for (const event of events) {
    const namespace = namespaceOf(event);
    const group = groups.get(namespace);
    if (group) group.push(event);
    else groups.set(namespace, [event]);
  }
  return groups;
}

/** One namespace's view of the tail: the same positions, only its events. */
export class NamespaceTail implements TailReader {
  constructor(
    private readonly tail: JournalTail,
    readonly namespace: string,
  ) {}

  get position(): number {
    return this.tail.position;
  }

  recentAfter(seq: number): EventDoc[] | undefined {
    return this.tail.recentAfter(seq)?.filter((event) => namespaceOf(event) === this.namespace);
  }

  subscribe(listener: TailListener): () => void {
    return this.tail.subscribeIn(this.namespace, listener);
  }

  waitFor(seq: number): Promise<void> {
    return this.tail.waitFor(seq);
  }
}
