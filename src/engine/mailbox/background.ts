/**
 * What the mailbox does on its own, in every server instance:
 * - reclaims dispatches whose lease expired (conditional on the claim token,
 *   so two instances never both reclaim one);
 * - repairs thread claim hints and outboxes left by a process that died
 *   mid-transition;
 * - deletes terminal dispatches older than the retention;
 * - turns journal events into work signals, and keeps an availability clock
 *   so delayed work is signalled when it comes due (no worker polls).
 */
import type { Clock } from "../../domain/clock.js";
import type { Collection } from "../../store/port.js";
import type { EventDoc } from "../journal/records.js";
import type { JournalTail } from "../journal/tail.js";
import type { Logger } from "../logger.js";
import type { Outbox } from "../outbox.js";
import type { Mailbox } from "./mailbox.js";
import type { MailboxQueries } from "./queries.js";
import type { DispatchDoc } from "./records.js";
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
/** setTimeout cannot wait longer than 2^31-1 ms; far deadlines are re-checked. */
const MAX_TIMER_MS = 3_600_000;

interface MailboxBackgroundDeps {
  mailbox: Mailbox;
  queries: MailboxQueries;
  threads: Threads;
  outbox: Outbox;
  signals: WorkSignals;
  tail: JournalTail;
  dispatches: Collection<DispatchDoc>;
  clock: Clock;
  log: Logger;
  timings: MailboxTimings;
}

export class MailboxBackground {
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Set<string>();
  private unsubscribe: (() => void) | undefined;
  private availabilityTimer: NodeJS.Timeout | undefined;
  private nextAvailability = Infinity;
  private checkedUpTo = 0;
  private stopped = false;
  private timersOn = false;

  constructor(private readonly deps: MailboxBackgroundDeps) {}

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

  async sweepLeases(): Promise<number> {
    let total = 0;
    for (;;) {
      const reclaimed = await this.deps.mailbox.reclaimExpired(BATCH);
      total += reclaimed.length;
      if (reclaimed.length < BATCH) return total;
    }
  }

  async repair(): Promise<void> {
    await this.deps.outbox.repair(BATCH);
    await this.deps.threads.repairClaims(this.deps.timings.claimHintGraceMs, BATCH);
  }

  async purge(): Promise<number> {
    const before = this.deps.clock.now() - this.deps.timings.retentionMs;
    let total = 0;
    for (;;) {
      const purged = await this.deps.queries.purgeTerminal(before, BATCH);
      total += purged;
      if (purged < BATCH) break;
    }
    if (total > 0) this.deps.log.info({ dispatches: total, retention_ms: this.deps.timings.retentionMs }, "purged terminal dispatches past retention");
    return total;
  }

  /** Signals dispatches whose available_at has come since the last check. */
  async checkAvailability(): Promise<void> {
    const now = this.deps.clock.now();
    // Only work that was delayed when it was queued: the rest was signalled
    // when it was queued (a QUEUED dispatch is updated only when queued).
    const due = await this.deps.dispatches.find(
      { status: "QUEUED", available_at: { $gt: this.checkedUpTo, $lte: now }, $expr: { $gt: ["$available_at", "$updated_at"] } },
      { sort: { available_at: 1 }, limit: BATCH },
    );
    for (const doc of due) this.deps.signals.emit({ threadId: doc.thread_id, dispatchId: doc._id, reason: DispatchSignalReason.AVAILABLE });
    this.checkedUpTo = due.length === BATCH ? due[due.length - 1]!.available_at : now;
    this.nextAvailability = Infinity;
    if (this.timersOn) await this.scheduleNextAvailability();
  }

  private onEvents(events: EventDoc[]): void {
    const now = this.deps.clock.now();
    for (const event of events) {
      const claimable = event.claimable;
      if (!claimable || !event.thread_id || !event.dispatch_id) continue;
      if (claimable.at <= now) {
        this.deps.signals.emit({ threadId: event.thread_id, dispatchId: event.dispatch_id, reason: claimable.reason });
      } else {
        this.scheduleAvailability(claimable.at);
      }
    }
  }

  private async scheduleNextAvailability(): Promise<void> {
    // After what was checked, not after now: work that came due since the last
    // check read the clock (or beyond a full batch) has not been signalled yet;
    // it is scheduled at once. Only delayed work, as in checkAvailability.
    const next = await this.deps.dispatches.findOne(
      { status: "QUEUED", available_at: { $gt: this.checkedUpTo }, $expr: { $gt: ["$available_at", "$updated_at"] } },
      { sort: { available_at: 1 } },
    );
    if (next) this.scheduleAvailability(next.available_at);
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
