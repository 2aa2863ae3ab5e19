/**
 * Dispatch signals a worker pulls and acknowledges (seed:
 * pull_dispatch_signals, DispatchSignalReceipt), beside the push stream.
 *
 * A signal is stored (one document per dispatch) when the journal records
 * that the dispatch became claimable: the mailbox marks such events
 * `claimable` (enqueued, retry or available_at reached, lease reclaimed,
 * thread released), with the instant from which it is. The signals are
 * followed from the journal on every instance (JournalFollower), so none is
 * lost when the instance that journaled the event dies; a signal already
 * stored from the same or a later event is left alone.
 *
 * A pull leases signals whose time has come: each gets a fresh receipt and
 * comes due again when its lease ends. An ack settles it; a nack makes it due
 * again (after a delay). Every delivery counts, so a redelivered signal says
 * how many times it was delivered before. A newer event for the dispatch
 * replaces the signal (its count starts again; an outstanding receipt no
 * longer holds). Settled signals are kept an hour (so a late follower cannot
 * store them again), unsettled ones until the dispatch retention.
 */
import type { Clock } from "../../domain/clock.js";
import { PayloadAccessMode } from "../../domain/events/filter.js";
import { EventFamily } from "../../domain/events/kinds.js";
import { newReceipt, type PullCommand, type Receipt } from "../../domain/dispatch/signal-receipts.js";
import { type Collection, type Doc, DuplicateKeyError, type IndexSpec, type Store } from "../../store/port.js";
import { JournalFollower } from "../follower.js";
import type { Journal } from "../journal/journal.js";
import type { EventDoc } from "../journal/records.js";
import type { JournalTail } from "../journal/tail.js";
import type { Logger } from "../logger.js";
import { waitForWake } from "../wake.js";

export const DISPATCH_SIGNALS = "dispatch_signals";

interface SignalDoc extends Doc {
  /** The dispatch. */
  _id: string;
  thread_id: string;
  reason: number;
  /** Journal position of the event it is stored from: an earlier event never replaces it. */
  seq: number;
  state: "pending" | "acked";
  /** When it may be pulled: when the dispatch became claimable, the end of a lease, or after a nack's delay. */
  available_at: number;
  /** How many times it was pulled. */
  deliveries: number;
  /** The receipt of its current lease ("" when not leased). */
  receipt: string;
  updated_at: number;
}

const INDEXES: IndexSpec[] = [
  { key: { state: 1, available_at: 1 }, name: "due_signals" },
  { key: { state: 1, updated_at: 1 }, name: "signals_by_age" },
];

/** A leased signal, as PullDispatchSignals answers it. */
export interface PulledSignal {
  threadId: string;
  dispatchId: string;
  /** A DispatchSignalReason. */
  reason: number;
  receipt: string;
  /** Deliveries before this one. */
  redeliveryAttempts: number;
  /** When the lease ends. */
  expiresAt: number;
}

export interface SignalReceiptOptions {
  /** Unsettled signals are deleted this long after they were stored (the dispatch retention). */
  retentionMs: number;
}

/** Settled signals are kept this long, so a follower that lags cannot store them again. */
const SETTLED_KEPT_MS = 3_600_000;
const PURGE_BATCH = 500;
const PURGE_EVERY_MS = 60_000;
/** Contended pull rounds before answering with what was leased. */
const PULL_ROUNDS = 3;
/** setTimeout cannot wait longer than 2^31-1 ms. */
const MAX_TIMER_MS = 3_600_000;

export class SignalReceipts {
  readonly signals: Collection<SignalDoc>;
  readonly follower: JournalFollower;
  private readonly waiters = new Set<() => void>();
  /** Rises whenever a signal may have become due here (stored, nacked). */
  private version = 0;
  private purgeTimer: NodeJS.Timeout | undefined;

  constructor(
    store: Store,
    journal: Journal,
    tail: JournalTail,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: SignalReceiptOptions,
  ) {
    this.signals = store.collection<SignalDoc>(DISPATCH_SIGNALS);
    this.follower = new JournalFollower(store, journal, tail, log, {
      name: "dispatch_signals",
      filter: { families: new Set([EventFamily.MAILBOX]), payloadAccess: PayloadAccessMode.FULL },
      select: (event) => event.claimable !== undefined && event.thread_id !== undefined && event.dispatch_id !== undefined,
      handle: (events) => this.store(events),
      // Work that became claimable before the first start is found by Claim, not by old signals.
      origin: "live-edge",
    });
  }

  async init(): Promise<void> {
    await this.signals.createIndexes(INDEXES);
  }

  async start(options: { timers: boolean }): Promise<void> {
    await this.follower.start();
    if (!options.timers) return;
    this.purgeTimer = setInterval(() => {
      this.purge().catch((error) => this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "could not delete old dispatch signals; will retry"));
    }, PURGE_EVERY_MS);
    this.purgeTimer.unref?.();
  }

  async stop(): Promise<void> {
    clearInterval(this.purgeTimer);
    await this.follower.stop();
    this.wakeWaiters();
  }

  /** Every claimable event up to this journal position has its signal stored. */
  get position(): number {
    return this.follower.position;
  }

  /**
   * Leases up to `max` due signals for `expiresMs`, oldest due first; with
   * `waitMs`, waits that long for one when none is due.
   */
  async pull(command: PullCommand, signal?: AbortSignal): Promise<PulledSignal[]> {
    const deadline = performance.now() + command.waitMs;
    for (;;) {
      const seen = this.version;
      const leased = await this.lease(command.max, command.expiresMs);
      const left = deadline - performance.now();
      if (leased.length > 0 || left <= 0 || signal?.aborted) return leased;
      if (this.version !== seen) continue; // stored while this pull was looking
      const next = await this.signals.findOne({ state: "pending" }, { sort: { available_at: 1 } });
      const dueIn = next ? Math.max(1, next.available_at - this.clock.now()) : Infinity;
      await this.waitForSignals(Math.min(left, dueIn, MAX_TIMER_MS), signal);
    }
  }

  /** Settles a pulled signal; false when its receipt no longer holds. */
  async ack(receipt: Receipt): Promise<boolean> {
    const now = this.clock.now();
    const result = await this.signals.updateOne({ _id: receipt.dispatchId, state: "pending", receipt: receipt.token }, { $set: { state: "acked", receipt: "", updated_at: now } });
    return result.matchedCount === 1;
  }

  /** Gives a pulled signal back, due again after `delayMs`; false when its receipt no longer holds. */
  async nack(receipt: Receipt, delayMs: number): Promise<boolean> {
    const now = this.clock.now();
    const result = await this.signals.updateOne({ _id: receipt.dispatchId, state: "pending", receipt: receipt.token }, { $set: { available_at: now + delayMs, receipt: "", updated_at: now } });
    if (result.matchedCount === 1) this.wakeWaiters();
    return result.matchedCount === 1;
  }

  /** Deletes settled signals after an hour and unsettled ones after the retention; returns how many. */
  async purge(): Promise<number> {
    const now = this.clock.now();
    let purged = 0;
    for (const [state, keptMs] of [["acked", SETTLED_KEPT_MS], ["pending", this.options.retentionMs]] as const) {
      for (;;) {
        const old = await this.signals.find({ state, updated_at: { $lt: now - keptMs } }, { sort: { updated_at: 1 }, limit: PURGE_BATCH });
        if (old.length > 0) purged += await this.signals.deleteMany({ _id: { $in: old.map((doc) => doc._id) }, state, updated_at: { $lt: now - keptMs } });
        if (old.length < PURGE_BATCH) break;
      }
    }
    return purged;
  }

  private async lease(max: number, expiresMs: number): Promise<PulledSignal[]> {
    const leased: PulledSignal[] = [];
    for (let round = 0; round < PULL_ROUNDS && leased.length < max; round++) {
      const now = this.clock.now();
      const due = await this.signals.find({ state: "pending", available_at: { $lte: now } }, { sort: { available_at: 1 }, limit: max - leased.length });
      if (due.length === 0) break;
      for (const doc of due) {
        const receipt = newReceipt(doc._id);
        // Conditional on the lease it had: two pullers never both get it.
        const taken = await this.signals.findOneAndUpdate(
          { _id: doc._id, state: "pending", seq: doc.seq, receipt: doc.receipt, available_at: doc.available_at },
          { $set: { receipt: receipt.token, available_at: now + expiresMs, updated_at: now }, $inc: { deliveries: 1 } },
        );
        if (!taken) continue;
        leased.push({ threadId: taken.thread_id, dispatchId: taken._id, reason: taken.reason, receipt: receipt.token, redeliveryAttempts: taken.deliveries - 1, expiresAt: now + expiresMs });
      }
    }
    return leased;
  }

  /** The follower's handler: stores each dispatch's latest signal of the batch. */
  private async store(events: EventDoc[]): Promise<void> {
    const latest = new Map<string, EventDoc>();
    for (const event of events) latest.set(event.dispatch_id!, event);
    const stored = new Map((await this.signals.find({ _id: { $in: [...latest.keys()] } })).map((doc) => [doc._id, doc]));
    for (const event of latest.values()) await this.storeOne(event, stored.get(event.dispatch_id!));
    // Stored here or by another instance first: either way it is in the store now, and pulls waiting here may take it.
    if ([...latest.values()].some((event) => event.claimable!.at <= this.clock.now())) this.wakeWaiters();
  }

  /** True when this call stored it (false: it or a later one was stored already). */
  private async storeOne(event: EventDoc, known: SignalDoc | undefined): Promise<boolean> {
    const now = this.clock.now();
    const fields = { thread_id: event.thread_id!, reason: event.claimable!.reason, seq: event._id, state: "pending" as const, available_at: event.claimable!.at, deliveries: 0, receipt: "", updated_at: now };
    let current: SignalDoc | null | undefined = known;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (current && current.seq >= event._id) return false;
      if (current) {
        const replaced = await this.signals.updateOne({ _id: current._id, seq: current.seq }, { $set: fields });
        if (replaced.matchedCount === 1) return true;
      } else {
        try {
          await this.signals.insertOne({ _id: event.dispatch_id!, ...fields });
          return true;
        } catch (error) {
          if (!(error instanceof DuplicateKeyError)) throw error;
        }
      }
      // Another instance stored one meanwhile: from this event, or from another (earlier or later).
      current = await this.signals.findOne({ _id: event.dispatch_id! });
    }
    throw new Error(`dispatch ${JSON.stringify(event.dispatch_id)}: its signal kept changing while event_seq ${event._id} was stored`);
  }

  private async waitForSignals(ms: number, signal?: AbortSignal): Promise<void> {
    let armed: (() => void) | undefined;
    await waitForWake(ms, signal, (wake) => {
      if (armed) this.waiters.delete(armed);
      armed = wake;
      if (wake) this.waiters.add(wake);
    });
  }

  private wakeWaiters(): void {
    this.version++;
    for (const wake of [...this.waiters]) wake();
  }
}
