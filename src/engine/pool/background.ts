/**
 * A pool's persisted deadlines (response contracts and wake timeouts) and
 * repairs, on every server instance. The next deadline is learned from the
 * journal (events carry `due_at`) and, at start, from the store, so a
 * timeout set before a restart still fires; a periodic sweep backs both up.
 * Whichever instance fires first wins; the others' conditional updates find
 * nothing to do, so each deadline fires exactly once. The sweep also
 * finishes pool deletions whose process stopped half-way. What is due is
 * found across every namespace (see sweeps.ts).
 */
import type { Clock } from "../../domain/clock.js";
import type { EventDoc } from "../journal/records.js";
import type { JournalTail } from "../journal/tail.js";
import type { Logger } from "../logger.js";
import type { ResponseDeadlines, UnfinishedDeletions, WakeSweeps } from "./sweeps.js";

export interface PoolTimings {
  /** How often deadlines and unscanned wake registrations are swept regardless of timers. */
  sweepMs: number;
}

export const DEFAULT_POOL_TIMINGS: PoolTimings = { sweepMs: 1_000 };

/** setTimeout cannot wait longer than 2^31-1 ms; far deadlines are re-checked. */
const MAX_TIMER_MS = 3_600_000;

export class PoolBackground {
  private timer: NodeJS.Timeout | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private next = Infinity;
  private firing: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;
  private stopped = false;

  constructor(
    readonly messages: Pick<ResponseDeadlines, "timeOutDue" | "nextDeadline">,
    readonly wakes: Pick<WakeSweeps, "timeOutDue" | "nextDeadline" | "repairUnscanned">,
    readonly deletion: Pick<UnfinishedDeletions, "resume">,
    private readonly tail: JournalTail,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly timings: PoolTimings,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = this.tail.subscribe((events) => this.onEvents(events));
    this.sweeper = setInterval(() => void this.fire(true), this.timings.sweepMs);
    this.sweeper.unref?.();
    await this.fire(false);
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.timer);
    clearInterval(this.sweeper);
  }

  /** Fires what is due, then schedules the next deadline (also callable by tests). */
  async runDue(repair = true): Promise<void> {
    await this.messages.timeOutDue();
    await this.wakes.timeOutDue();
    if (repair) {
      await this.wakes.repairUnscanned();
      await this.deletion.resume(this.clock.now());
    }
    const [message, wake] = await Promise.all([this.messages.nextDeadline(), this.wakes.nextDeadline()]);
    // `next` stays the armed timer's instant: a deadline learned from the journal meanwhile keeps its timer.
    this.schedule(Math.min(message ?? Infinity, wake ?? Infinity));
  }

  private fire(repair: boolean): Promise<void> {
    if (this.stopped) return Promise.resolve();
    // One run at a time; a deadline learned meanwhile is caught by the reschedule at its end.
    this.firing ??= this.runDue(repair)
      .catch((error) => this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "pool deadline sweep failed; will retry"))
      .finally(() => (this.firing = undefined));
    return this.firing;
  }

  private onEvents(events: EventDoc[]): void {
    for (const event of events) if (event.due_at !== undefined) this.schedule(event.due_at);
  }

  private schedule(at: number): void {
    if (this.stopped || !Number.isFinite(at) || at >= this.next) return;
    this.next = at;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.next = Infinity;
      void this.fire(false);
    }, Math.min(Math.max(0, at - this.clock.now()), MAX_TIMER_MS));
    this.timer.unref?.();
  }
}
