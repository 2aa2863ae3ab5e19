/**
 * What the mailbox does on its own, in every server instance:
 * - reclaims dispatches whose lease expired (conditional on the claim token,
 *   so two instances never both reclaim one);
 * - repairs thread claim hints and outboxes left by a process that died
 *   mid-transition;
 * - deletes terminal dispatches older than the retention;
 * - turns journal events into work signals, and keeps an availability clock
 *   so delayed work is signalled when it comes due (no worker polls).
 *
 * Each sweep finds its candidates across every namespace at once, through
 * store-wide indexes (a sweep per namespace would cost as many queries as
 * there are namespaces), then acts on each in its own namespace, through
 * that namespace's use cases: conditional updates as a call would make them.
 */
import type { Clock } from "../../domain/clock.js";
import { namespaceOf, ownerOf } from "../../store/namespaced.js";
import type { Collection, Doc, Filter, Store } from "../../store/port.js";
import type { EventDoc } from "../journal/records.js";
import type { JournalTail } from "../journal/tail.js";
import type { Logger } from "../logger.js";
import type { Outbox } from "../outbox.js";
import type { Mailbox } from "./mailbox.js";
import type { MailboxQueries } from "./queries.js";
import { DISPATCH_SWEEPER_INDEXES, DISPATCHES, type DispatchDoc, OBSOLETE_DISPATCH_INDEXES, THREAD_SWEEPER_INDEXES, THREADS, type ThreadDoc } from "./records.js";
import { DISPATCH_SIGNALS, OBSOLETE_RECEIPT_INDEXES, RECEIPT_SWEEPER_INDEXES } from "./signal-receipts.js";
import type { Threads } from "./threads.js";
import { DispatchSignalReason, type WorkSignals } from "./work-signals.js";

export interface MailboxTimings {
  /** How often expired leases are looked for. */
  leaseSweepMs: number;
  /** How often thread claim hints and outboxes are checked for leftovers. */
  repairMs: number;
  /** How long after a claim's lease its thread hint is checked. */
  claimHintGraceMs: number;
  /** How often old terminal dispatches are deleted. */
  purgeMs: number;
  /** Terminal dispatches are kept this long after completing (their dedupe keys too). */
  retentionMs: number;
}

export const DEFAULT_MAILBOX_TIMINGS: MailboxTimings = {
  leaseSweepMs: 250,
  repairMs: 5_000,
  claimHintGraceMs: 5_000,
  purgeMs: 60_000,
  retentionMs: 7 * 86_400_000,
};

const BATCH = 500;
/** Pages of expired leases one namespace's reclaim reads at most. */
const MAX_PAGES = 20;
/** Namespaces one retention run visits at most. */
const PURGE_NAMESPACES = 1000;
/** setTimeout cannot wait longer than 2^31-1 ms; far deadlines are re-checked. */
const MAX_TIMER_MS = 3_600_000;

interface MailboxBackgroundDeps {
  /** The store itself: the sweeps read every namespace's documents. */
  store: Store;
  /** A namespace's use cases, to act on what a sweep found. */
  scope: (namespace: string) => { mailbox: Mailbox; threads: Threads; queries: MailboxQueries };
  outbox: Outbox;
  signals: WorkSignals;
  tail: JournalTail;
  clock: Clock;
  log: Logger;
  timings: MailboxTimings;
}

/** Pulled-signal receipts not changed for the retention are deleted, a batch at a time. */
interface ReceiptDoc extends Doc {
  _id: string;
  updated_at: number;
}

export class MailboxBackground {
  private readonly dispatches: Collection<DispatchDoc>;
  private readonly threads: Collection<ThreadDoc>;
  private readonly receipts: Collection<ReceiptDoc>;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Set<string>();
  private unsubscribe: (() => void) | undefined;
  private availabilityTimer: NodeJS.Timeout | undefined;
  private nextAvailability = Infinity;
  private checkedUpTo = 0;
  /** The namespace the last retention run stopped after (undefined: the next run starts from the first). */
  private purgeAfter: string | undefined;
  private stopped = false;
  private timersOn = false;

  constructor(private readonly deps: MailboxBackgroundDeps) {
    this.dispatches = deps.store.collection<DispatchDoc>(DISPATCHES);
    this.threads = deps.store.collection<ThreadDoc>(THREADS);
    this.receipts = deps.store.collection<ReceiptDoc>(DISPATCH_SIGNALS);
  }

  /** Creates the sweeps' store-wide indexes. */
  async init(): Promise<void> {
    await this.dispatches.createIndexes(DISPATCH_SWEEPER_INDEXES);
    await this.dispatches.dropIndexes(OBSOLETE_DISPATCH_INDEXES);
    await this.threads.createIndexes(THREAD_SWEEPER_INDEXES);
    await this.receipts.createIndexes(RECEIPT_SWEEPER_INDEXES);
    await this.receipts.dropIndexes(OBSOLETE_RECEIPT_INDEXES);
  }

  /**
   * Starts deriving work signals from the journal and, with `timers`, the
   * periodic sweeps and the availability clock (tests drive those by hand).
   */
  async start(options: { timers: boolean } = { timers: true }): Promise<void> {
    this.checkedUpTo = this.deps.clock.now();
    this.unsubscribe = this.deps.tail.subscribe((events) => this.onEvents(events));
    if (!options.timers) return;
    this.timersOn = true;
    const { timings } = this.deps;
    this.every("lease sweep", timings.leaseSweepMs, () => this.sweepLeases());
    this.every("repair", timings.repairMs, () => this.repair());
    this.every("purge", timings.purgeMs, () => this.purge());
    await this.scheduleNextAvailability();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.availabilityTimer);
  }

  /** Reclaims expired leases in every namespace; returns how many. */
  async sweepLeases(): Promise<number> {
    let total = 0;
    for (;;) {
      const now = this.deps.clock.now();
      const expired = await this.dispatches.find({ status: "CLAIMED", lease_until: { $lte: now } }, { sort: { lease_until: 1 }, limit: BATCH });
      let reclaimed = 0;
      for (const [namespace, docs] of byNamespace<DispatchDoc>(expired)) reclaimed += (await this.deps.scope(namespace).mailbox.reclaim(docs)).length;
      total += reclaimed;
      if (reclaimed < BATCH) return total;
    }
  }

  async repair(): Promise<void> {
    await this.deps.outbox.repair(BATCH);
    await this.repairClaims();
  }

  /** Thread claim hints left by a process that died mid-transition, in every namespace (see Threads.repairClaim). */
  private async repairClaims(): Promise<number> {
    const stale = await this.threads.find({ claim_lease_until: { $lt: this.deps.clock.now() - this.deps.timings.claimHintGraceMs } }, { sort: { claim_lease_until: 1 }, limit: BATCH });
    let repaired = 0;
    for (const stored of stale) {
      const { namespace, doc } = ownerOf<ThreadDoc>(stored);
      if (await this.deps.scope(namespace).threads.repairClaim(doc)) repaired++;
    }
    if (repaired > 0) this.deps.log.info({ threads: repaired }, "released thread claims whose dispatch was no longer claimed");
    return repaired;
  }

  /**
   * A namespace's claims whose lease has expired, at most `limit`, oldest
   * lease first: read from the store-wide index of leases, a page at a time,
   * keeping the namespace's. Expired leases are few (the lease sweep
   * reclaims them every few hundred milliseconds), so a page rarely holds
   * another namespace's.
   */
  async expiredIn(namespace: string, now: number, limit: number): Promise<DispatchDoc[]> {
    const found: DispatchDoc[] = [];
    let after: { at: number; id: string } | undefined;
    for (let page = 0; page < MAX_PAGES && found.length < limit; page++) {
      const expired = await this.dispatches.find(
        { status: "CLAIMED", lease_until: { $lte: now }, ...(after ? { $or: [{ lease_until: { $gt: after.at } }, { lease_until: after.at, _id: { $gt: after.id } }] } : {}) } as Filter<DispatchDoc>,
        { sort: { lease_until: 1, _id: 1 }, limit: BATCH },
      );
      for (const stored of expired) {
        const { namespace: owner, doc } = ownerOf<DispatchDoc>(stored);
        if (owner === namespace && found.length < limit) found.push(doc);
      }
      if (expired.length < BATCH) break;
      const last = expired[expired.length - 1]!;
      after = { at: last.lease_until!, id: last._id };
    }
    return found;
  }

  /**
   * Deletes terminal dispatches and pulled-signal receipts past the
   * retention, in every namespace. Dispatches are visited namespace by
   * namespace, through each namespace's index of terminal dispatches (the
   * next namespace that has any is one indexed read), a bounded number of
   * namespaces a run; the next run goes on from there.
   */
  async purge(): Promise<number> {
    const before = this.deps.clock.now() - this.deps.timings.retentionMs;
    let total = 0;
    for (let visited = 0; visited < PURGE_NAMESPACES; visited++) {
      // `$gte: ""`: namespaces are strings (and a string range keeps the index's order).
      const next = await this.dispatches.findOne({ terminal: true, ns: this.purgeAfter === undefined ? { $gte: "" } : { $gt: this.purgeAfter } }, { sort: { ns: 1, completed_at: -1, _id: -1 } });
      if (!next) {
        this.purgeAfter = undefined;
        break;
      }
      this.purgeAfter = namespaceOf(next);
      total += await purgeBatches(() => this.deps.scope(this.purgeAfter!).queries.purgeTerminal(before, BATCH));
    }
    if (total > 0) this.deps.log.info({ dispatches: total, retention_ms: this.deps.timings.retentionMs }, "purged terminal dispatches past retention");
    await purgeBatches(async () => {
      const old = await this.receipts.find({ updated_at: { $lt: before } }, { sort: { updated_at: 1 }, limit: BATCH });
      return old.length === 0 ? 0 : this.receipts.deleteMany({ _id: { $in: old.map((doc) => doc._id) }, updated_at: { $lt: before } });
    });
    return total;
  }


  /** Signals dispatches whose available_at has come since the last check. */
  async checkAvailability(): Promise<void> {
    const now = this.deps.clock.now();
    // Only work that was delayed when it was queued: the rest was signalled
    // when it was queued.
    const due = await this.dispatches.find({ status: "QUEUED", delayed_until: { $gt: this.checkedUpTo, $lte: now } }, { sort: { delayed_until: 1 }, limit: BATCH });
    for (const stored of due) {
      const { namespace, doc } = ownerOf<DispatchDoc>(stored);
      this.deps.signals.emit(namespace, { threadId: doc.thread_id, dispatchId: doc._id, reason: DispatchSignalReason.AVAILABLE });
    }
    this.checkedUpTo = due.length === BATCH ? due[due.length - 1]!.delayed_until! : now;
    this.nextAvailability = Infinity;
    if (this.timersOn) await this.scheduleNextAvailability();
  }

  private onEvents(events: EventDoc[]): void {
    const now = this.deps.clock.now();
    for (const event of events) {
      const claimable = event.claimable;
      if (!claimable || !event.thread_id || !event.dispatch_id) continue;
      if (claimable.at <= now) {
        this.deps.signals.emit(namespaceOf(event), { threadId: event.thread_id, dispatchId: event.dispatch_id, reason: claimable.reason });
      } else {
        this.scheduleAvailability(claimable.at);
      }
    }
  }

  private async scheduleNextAvailability(): Promise<void> {
    // After what was checked, not after now: work that came due since the last
    // check read the clock (or beyond a full batch) has not been signalled yet;
    // it is scheduled at once. Only delayed work, as in checkAvailability.
    const next = await this.dispatches.findOne({ status: "QUEUED", delayed_until: { $gt: this.checkedUpTo } }, { sort: { delayed_until: 1 } });
    if (next) this.scheduleAvailability(next.delayed_until!);
  }

  private scheduleAvailability(at: number): void {
    if (this.stopped || !this.timersOn || at >= this.nextAvailability) return;
    this.nextAvailability = at;
    clearTimeout(this.availabilityTimer);
    const delay = Math.min(Math.max(0, at - this.deps.clock.now()), MAX_TIMER_MS);
    this.availabilityTimer = setTimeout(() => this.runExclusive("availability", () => this.checkAvailability()), delay);
    this.availabilityTimer.unref?.();
  }

  private every(name: string, intervalMs: number, task: () => Promise<unknown>): void {
    const timer = setInterval(() => this.runExclusive(name, task), intervalMs);
    timer.unref?.();
    this.timers.push(timer);
  }

  /** Runs a task unless the previous run of it is still going; failures are logged and retried next time. */
  private runExclusive(name: string, task: () => Promise<unknown>): void {
    if (this.stopped || this.running.has(name)) return;
    this.running.add(name);
    task()
      .catch((error) => this.deps.log.warn({ task: name, error: error instanceof Error ? error.message : String(error) }, "mailbox background task failed; will retry"))
      .finally(() => this.running.delete(name));
  }
}

/** Documents read from the store, as their namespaces' views return them, by namespace. */
function byNamespace<T extends Doc>(stored: Doc[]): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const raw of stored) {
    const { namespace, doc } = ownerOf<T>(raw);
    const group = groups.get(namespace);
    if (group) group.push(doc);
    else groups.set(namespace, [doc]);
  }
  return groups;
}

/** Deletes a batch at a time until a batch is short; returns how many were deleted. */
async function purgeBatches(purgeBatch: () => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const purged = await purgeBatch();
    total += purged;
    if (purged < BATCH) return total;
  }
}
