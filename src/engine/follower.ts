/**
 * A use case that keeps durable state derived from the journal (a pool's
 * history) follows it here: every journal event it selects, of every
 * namespace, is handed to it once it is durable, in journal order, one batch
 * at a time, on every server instance (the handler acts on each event in its
 * namespace). Handlers are idempotent (every instance
 * handles every event; the first to store a result wins, the others find it
 * stored), so no event is lost when an instance dies mid-way.
 *
 * How far a follower got is kept in the store (a watermark, saved about once
 * a second): an instance starting up first catches up from there, reading
 * the journal. Retention must not delete what a follower has not handled:
 * `position` is what Events holds its purge to (see Events.holdPurgeAt).
 */
import type { FilterSpec } from "../domain/events/filter.js";
import type { Collection, Doc, Store } from "../store/port.js";
import type { Journal } from "./journal/journal.js";
import type { EventDoc } from "./journal/records.js";
import type { JournalTail } from "./journal/tail.js";
import type { Logger } from "./logger.js";

export const FOLLOWERS = "journal_followers";

interface WatermarkDoc extends Doc {
  _id: string;
  /** Every journal position up to this one has been handled. */
  through: number;
}

export interface FollowerSpec {
  /** Names the watermark; one per use case. */
  name: string;
  /** The events it needs, as a journal query (for catching up from the store). */
  filter: FilterSpec;
  /** The same, for events from the tail (and a last check of those read from the store). */
  select(event: EventDoc): boolean;
  /** Handles selected events, in journal order; must be idempotent. A throw is retried (from the store). */
  handle(events: EventDoc[]): Promise<void>;
  /** Where a follower without a watermark starts: the oldest retained event, or the live edge. */
  origin: "journal-start" | "live-edge";
}

/** Events handed to a follower at once. */
const PAGE = 500;
/** Journal positions examined per store read while catching up (bounds each query's scan). */
const WINDOW = 10_000;
/** More events than this waiting in memory: drop them and catch up from the store. */
const MAX_BACKLOG = 10_000;
const SAVE_EVERY_MS = 1_000;
const MAX_RETRY_MS = 5_000;

export class JournalFollower {
  private readonly watermarks: Collection<WatermarkDoc>;
  private processed = 0;
  private saved = 0;
  private savedAt = 0;
  private saving: Promise<void> = Promise.resolve();
  private backlog: EventDoc[] = [];
  /** Events may be missing from the backlog (start-up, overflow, a failed handler): read the store. */
  private behind = true;
  private draining: Promise<void> | undefined;
  private again = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 100;
  private started = false;
  private stopped = false;
  private unsubscribe: (() => void) | undefined;
  private readonly waiters = new Set<{ seq: number; resolve: () => void }>();

  constructor(
    store: Store,
    private readonly journal: Journal,
    private readonly tail: JournalTail,
    private readonly log: Logger,
    private readonly spec: FollowerSpec,
  ) {
    this.watermarks = store.collection<WatermarkDoc>(FOLLOWERS);
  }

  /** Every journal position up to this one has been handled (durably, by this instance or another). */
  get position(): number {
    return this.processed;
  }

  /** Starts following; call once the tail has started. Resolves when caught up with the tail's position at the call. */
  async start(): Promise<void> {
    // Listen first (synchronously with reading the edge): every event after it is offered.
    this.unsubscribe = this.tail.subscribe((events) => this.offer(events));
    const edge = this.tail.position;
    const mark = await this.watermarks.findOne({ _id: this.spec.name });
    this.processed = mark?.through ?? (this.spec.origin === "live-edge" ? edge : await this.journal.purgedThrough());
    // The first instance ever names the origin for all: one starting later starts there, not at its own edge.
    if (!mark) await this.watermarks.updateOne({ _id: this.spec.name }, { $max: { through: this.processed } }, { upsert: true });
    this.saved = this.processed;
    this.started = true;
    await this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.retryTimer);
    await this.draining;
    await this.save(true);
    for (const waiter of this.waiters) waiter.resolve();
    this.waiters.clear();
  }

  /** Resolves once every position up to `seq` has been handled (or the follower stopped). */
  waitFor(seq: number): Promise<void> {
    if (this.processed >= seq || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.waiters.add({ seq, resolve }));
  }

  private offer(events: EventDoc[]): void {
    const wanted = events.filter((event) => this.spec.select(event));
    if (this.backlog.length + wanted.length > MAX_BACKLOG) {
      this.backlog = [];
      this.behind = true;
    } else {
      this.backlog.push(...wanted);
    }
    if (wanted.length === 0 && !this.behind && this.backlog.length === 0 && !this.draining) this.advance(this.tail.position);
    void this.kick();
  }

  private kick(): Promise<void> {
    if (!this.started || this.stopped || this.retryTimer) return this.draining ?? Promise.resolve();
    // Events offered while a drain is finishing must not wait for the next offer: it goes round again.
    this.again = true;
    this.draining ??= (async () => {
      try {
        while (this.again && !this.stopped && !this.retryTimer) {
          this.again = false;
          await this.drain();
        }
      } finally {
        this.draining = undefined;
      }
    })();
    return this.draining;
  }

  private async drain(): Promise<void> {
    try {
      while (!this.stopped) {
        if (this.behind) {
          await this.catchUp();
          continue;
        }
        const batch = this.nextBatch();
        if (batch.length === 0) {
          // Everything the tail has delivered was offered and handled.
          this.advance(this.tail.position);
          return;
        }
        await this.spec.handle(batch);
        this.advance(batch[batch.length - 1]!._id);
      }
    } catch (error) {
      this.backlog = [];
      this.behind = true;
      this.log.warn({ follower: this.spec.name, event_seq: this.processed, error: error instanceof Error ? error.message : String(error), retry_in_ms: this.retryMs }, "journal follower failed; catching up from the store");
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        void this.kick();
      }, this.retryMs);
      this.retryTimer.unref?.();
      this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
      return;
    }
    this.retryMs = 100;
  }

  private nextBatch(): EventDoc[] {
    while (this.backlog.length > 0 && this.backlog[0]!._id <= this.processed) this.backlog.shift();
    return this.backlog.splice(0, PAGE);
  }

  /** Reads what was missed from the store, up to the tail's position (which the backlog covers beyond). */
  private async catchUp(): Promise<void> {
    const until = this.tail.position;
    // From here on every event beyond `until` is in the backlog (unless it overflows again).
    this.behind = false;
    while (!this.stopped && this.processed < until) {
      const windowEnd = Math.min(this.processed + WINDOW, until);
      const page = (await this.journal.matchingAll(this.spec.filter, this.processed, windowEnd, PAGE)).filter((event) => this.spec.select(event));
      const full = page.length === PAGE;
      if (page.length > 0) await this.spec.handle(page);
      this.advance(full ? page[page.length - 1]!._id : windowEnd);
    }
  }

  private advance(seq: number): void {
    if (seq <= this.processed) return;
    this.processed = seq;
    for (const waiter of this.waiters) {
      if (waiter.seq <= seq) {
        this.waiters.delete(waiter);
        waiter.resolve();
      }
    }
    if (Date.now() - this.savedAt >= SAVE_EVERY_MS) void this.save(false);
  }

  private save(final: boolean): Promise<void> {
    this.saving = this.saving.then(async () => {
      const through = this.processed;
      if (through <= this.saved) return;
      this.savedAt = Date.now();
      try {
        await this.watermarks.updateOne({ _id: this.spec.name }, { $max: { through } }, { upsert: true });
        this.saved = through;
      } catch (error) {
        // Harmless: the next instance to start re-handles a little more (handlers are idempotent).
        if (final) this.log.warn({ follower: this.spec.name, error: error instanceof Error ? error.message : String(error) }, "could not save a journal follower's watermark");
      }
    });
    return this.saving;
  }
}
