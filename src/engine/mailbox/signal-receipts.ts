/**
 * Dispatch signals a worker pulls and acknowledges (seed:
 * pull_dispatch_signals, DispatchSignalReceipt), beside the push stream.
 *
 * A signal is a queued dispatch that is available: nothing is written when
 * a dispatch becomes claimable (the hot path of the mailbox pays nothing for
 * this), and nothing is kept for dispatches nobody pulls. A pull reads the
 * available queued dispatches (oldest available first) and their receipts,
 * and leases those with no receipt or whose receipt's lease ended: a receipt
 * document per pulled signal holds the lease, the deliveries and whether it
 * was acknowledged. A receipt belongs to one stay of its dispatch in the
 * queue (its `attempt_count` then): once the dispatch is claimed and queued
 * again (a nack, a lease reclaim) it is a new signal, counted afresh, and the
 * old receipt no longer holds. An ack settles the signal for that stay; a
 * nack makes it due again (after a delay); a lease that ends makes it due
 * again, with one more delivery counted.
 *
 * Receipts are deleted after the dispatch retention (by the mailbox's
 * retention sweep, in every namespace). A pull looks at a bounded number of
 * queued dispatches of its namespace (pulled-but-unclaimed ones are skipped
 * as it goes), so it never scans the whole queue.
 */
import { DispatchSignalReason } from "../../../gen/mailroom/v1/dispatch_pb.js";
import type { Clock } from "../../domain/clock.js";
import { newReceipt, type PullCommand, type Receipt } from "../../domain/dispatch/signal-receipts.js";
import { type BulkUpdate, type Collection, type Doc, type Filter, type IndexSpec, type Store } from "../../store/port.js";
import { waitForWake } from "../wake.js";
import { DISPATCHES, type DispatchDoc } from "./records.js";
import type { NamespaceSignals } from "./work-signals.js";

export const DISPATCH_SIGNALS = "dispatch_signals";

interface ReceiptDoc extends Doc {
  /** The dispatch. */
  _id: string;
  /** The dispatch's attempt_count while queued: which stay in the queue this receipt is for. */
  stay: number;
  state: "pending" | "acked";
  /** When it may be pulled again (a lease's end, a nack's delay). */
  due_at: number;
  /** How many times it was pulled in this stay. */
  deliveries: number;
  /** The receipt of its current lease ("" when not leased). */
  receipt: string;
  updated_at: number;
}

/** The retention sweep's store-wide index (a namespace's receipts are read by id only). */
export const RECEIPT_SWEEPER_INDEXES: IndexSpec[] = [{ key: { updated_at: 1 }, name: "receipts_by_age" }];
/** Indexes of an earlier version that kept one signal document per claimable dispatch. */
export const OBSOLETE_RECEIPT_INDEXES = ["due_signals", "signals_by_age"];

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

/** Queued dispatches one pull looks at, at most, in pages of this size. */
const PAGE = 200;
const MAX_PAGES = 10;
/** setTimeout cannot wait longer than 2^31-1 ms. */
const MAX_TIMER_MS = 3_600_000;

/** One namespace's pulled signals (its store is the namespace's view). */
export class SignalReceipts {
  readonly receipts: Collection<ReceiptDoc>;
  private readonly dispatches: Collection<DispatchDoc>;
  private readonly waiters = new Set<() => void>();

  constructor(
    store: Store,
    private readonly signals: NamespaceSignals,
    private readonly clock: Clock,
  ) {
    this.receipts = store.collection<ReceiptDoc>(DISPATCH_SIGNALS);
    this.dispatches = store.collection<DispatchDoc>(DISPATCHES);
  }

  /**
   * Leases up to `max` due signals for `expiresMs`, oldest available first;
   * with `waitMs`, waits that long for one when none is due.
   */
  async pull(command: PullCommand, signal?: AbortSignal): Promise<PulledSignal[]> {
    const deadline = performance.now() + command.waitMs;
    for (;;) {
      const leased = await this.lease(command.max, command.expiresMs);
      const left = deadline - performance.now();
      if (leased.length > 0 || left <= 0 || signal?.aborted) return leased;
      // Woken by new work or a nack; a lease or a nack's delay ends by then at the latest.
      const next = await this.receipts.findOne({ state: "pending", due_at: { $gt: this.clock.now() } } as Filter<ReceiptDoc>, { sort: { due_at: 1 } });
      const dueIn = next ? Math.max(1, next.due_at - this.clock.now()) : Infinity;
      let armed: (() => void) | undefined;
      // Work signals of the namespace (from every instance, through the journal) say a dispatch may be claimable now.
      const stopListening = this.signals.listen(() => armed?.());
      try {
        await waitForWake(Math.min(left, dueIn, MAX_TIMER_MS), signal, (wake) => {
          if (armed) this.waiters.delete(armed);
          armed = wake;
          if (wake) this.waiters.add(wake);
        });
      } finally {
        stopListening();
      }
    }
  }

  /** Settles a pulled signal; false when its receipt no longer holds. */
  async ack(receipt: Receipt): Promise<boolean> {
    const now = this.clock.now();
    const result = await this.receipts.updateOne({ _id: receipt.dispatchId, state: "pending", receipt: receipt.token }, { $set: { state: "acked", receipt: "", updated_at: now } });
    return result.matchedCount === 1;
  }

  /** Gives a pulled signal back, due again after `delayMs`; false when its receipt no longer holds. */
  async nack(receipt: Receipt, delayMs: number): Promise<boolean> {
    const now = this.clock.now();
    const result = await this.receipts.updateOne({ _id: receipt.dispatchId, state: "pending", receipt: receipt.token }, { $set: { due_at: now + delayMs, receipt: "", updated_at: now } });
    if (result.matchedCount === 1) this.wakeWaiters();
    return result.matchedCount === 1;
  }

  /**
   * One pull's leases: available queued dispatches, a page at a time, whose
   * receipt (if any) is for an earlier stay or pending and due; each leased
   * with a conditional write (one bulk write a page), and read back to see
   * which this pull won (another pull may have leased some first).
   */
  private async lease(max: number, expiresMs: number): Promise<PulledSignal[]> {
    const now = this.clock.now();
    const leased: PulledSignal[] = [];
    let after: { at: number; id: string } | undefined;
    for (let page = 0; page < MAX_PAGES && leased.length < max; page++) {
      const queued = await this.dispatches.find(
        { status: "QUEUED", available_at: { $lte: now }, ...(after ? { $or: [{ available_at: { $gt: after.at } }, { available_at: after.at, _id: { $gt: after.id } }] } : {}) } as Filter<DispatchDoc>,
        { sort: { available_at: 1, _id: 1 }, limit: PAGE },
      );
      if (queued.length === 0) break;
      const last = queued[queued.length - 1]!;
      after = { at: last.available_at, id: last._id };
      const known = new Map((await this.receipts.find({ _id: { $in: queued.map((d) => d._id) } })).map((r) => [r._id, r]));
      const offers: Array<{ dispatch: DispatchDoc; receipt: Receipt; deliveries: number; operation: BulkUpdate<ReceiptDoc> }> = [];
      for (const dispatch of queued) {
        if (leased.length + offers.length >= max) break;
        const current = known.get(dispatch._id);
        const fresh = current === undefined || current.stay !== dispatch.attempt_count;
        if (!fresh && !(current.state === "pending" && current.due_at <= now)) continue;
        const receipt = newReceipt(dispatch._id);
        const deliveries = fresh ? 1 : current.deliveries + 1;
        const lease = { stay: dispatch.attempt_count, state: "pending" as const, due_at: now + expiresMs, deliveries, receipt: receipt.token, updated_at: now };
        // Conditional on what was read: two pullers never both lease it.
        // A first receipt may only be inserted (one another pull inserted meanwhile is not overwritten: the upsert's insert is refused).
        const filter = current === undefined ? { _id: dispatch._id, stay: { $exists: false } } : { _id: dispatch._id, stay: current.stay, state: current.state, receipt: current.receipt, due_at: current.due_at };
        offers.push({ dispatch, receipt, deliveries, operation: { updateOne: { filter: filter as Filter<ReceiptDoc>, update: { $set: lease }, upsert: current === undefined } } });
      }
      if (offers.length === 0) continue;
      // Unordered: a lost upsert (another pull inserted the receipt first) is a duplicate, the rest go on.
      await this.receipts.bulkWrite(offers.map((offer) => offer.operation));
      const won = new Map((await this.receipts.find({ _id: { $in: offers.map((o) => o.dispatch._id) } }, { readOwnWrites: true })).map((r) => [r._id, r]));
      for (const offer of offers) {
        if (won.get(offer.dispatch._id)?.receipt !== offer.receipt.token) continue;
        leased.push({
          threadId: offer.dispatch.thread_id,
          dispatchId: offer.dispatch._id,
          reason: reasonOf(offer.dispatch),
          receipt: offer.receipt.token,
          redeliveryAttempts: offer.deliveries - 1,
          expiresAt: now + expiresMs,
        });
      }
      if (queued.length < PAGE) break;
    }
    return leased;
  }

  private wakeWaiters(): void {
    for (const wake of [...this.waiters]) wake();
  }
}

/** Why the dispatch is claimable: first queued (now or at its time), or queued again. */
function reasonOf(dispatch: DispatchDoc): DispatchSignalReason {
  if (dispatch.attempt_count > 0) return dispatch.last_error?.startsWith("lease expired") ? DispatchSignalReason.LEASE_RECLAIMED : DispatchSignalReason.AVAILABLE;
  return dispatch.available_at > dispatch.created_at ? DispatchSignalReason.AVAILABLE : DispatchSignalReason.ENQUEUED;
}
