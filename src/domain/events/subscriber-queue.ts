/**
 * A live subscriber's bounded queue and its overflow policies (seed:
 * event_bus.rs `apply_queue_bounds`), applied one frame at a time as events
 * arrive rather than to a finished batch.
 *
 * The seed's rules, kept:
 * - `capacity` frames at most; of those, `terminal_reserve` slots only
 *   terminal events may use (non-terminal ones are accepted while the queue
 *   holds fewer than capacity frames and fewer than capacity - reserve
 *   non-terminal ones);
 * - a terminal event gets in before what the policy may drop: when the
 *   queue is full, the oldest frame the policy may drop makes room (a
 *   non-terminal one under DROP_NON_TERMINAL, a progress one under
 *   DROP_PROGRESS and SUMMARIZE_AND_CONTINUE); FAIL_SUBSCRIBER fails instead;
 * - DROP_NON_TERMINAL drops a non-terminal event that does not fit;
 * - DROP_PROGRESS drops a progress event that does not fit, and makes room
 *   for another non-progress event by dropping the oldest queued progress one;
 * - SUMMARIZE_AND_CONTINUE folds progress events into one redacted summary
 *   frame, flushed before the next non-progress event;
 * - FAIL_SUBSCRIBER puts the notice on the last queued frame and fails;
 * - every gap is reported on the next frame queued: how many were dropped,
 *   the first and last dropped position, where to repair from, whether any
 *   terminal event was lost, and why.
 *
 * Where Mailroom differs from the seed: a policy drops only what it names.
 * An event the policy may not drop and that finds no room (a terminal event
 * in a queue of terminal events; a non-progress event under DROP_PROGRESS
 * with no progress frame to evict) is not dropped: the push answers "full"
 * and the subscription lags, catching up from the journal at the
 * subscriber's pace, as under BACKPRESSURE_CALLER. The seed drops the oldest
 * frame instead, so a slow subscriber to a run with many terminal events
 * would lose some; the journal makes that unnecessary.
 *
 * Where live delivery differs from the seed's batch: SUMMARIZE_AND_CONTINUE
 * summarises only while the queue has no room (a subscriber that keeps up
 * gets every progress event), and the summary is also flushed as soon as
 * room frees up; a gap whose notice found no later frame to ride on is
 * handed out with the next heartbeat. BACKPRESSURE_CALLER drops nothing:
 * the queue just reports that it is full and the subscription lags.
 */
import { EventOverflowReason, SubscriberOverflowPolicy } from "../../../gen/mailroom/v1/event_pb.js";

export { EventOverflowReason, SubscriberOverflowPolicy };

export interface QueueConfig {
  capacity: number;
  terminalReserve: number;
  policy: SubscriberOverflowPolicy;
}

export interface QueuedFrame<T> {
  /** Journal position. */
  seq: number;
  terminal: boolean;
  progress: boolean;
  item: T;
}

export interface OverflowNotice {
  policy: SubscriberOverflowPolicy;
  droppedCount: number;
  /** Position of the first and last event dropped (or summarised). */
  gapStart: number;
  gapEnd: number;
  /** Subscribing after this position delivers the dropped events again. */
  repairFrom: number;
  terminalPreserved: boolean;
  reason: EventOverflowReason;
}

export interface Delivery<T> {
  frame: QueuedFrame<T>;
  notice?: OverflowNotice;
  /** Set on a summary frame: how many progress events it stands for; `frame` is the last of them. */
  summarized?: number;
}

export type PushOutcome = "queued" | "dropped" | "summarized" | "full" | "failed";

class Gap {
  count = 0;
  start = 0;
  end = 0;
  terminalLost = false;
  reason: EventOverflowReason | undefined;

  record(seq: number, terminal: boolean, reason: EventOverflowReason): void {
    this.add(1, seq, seq, terminal, reason);
  }

  /** Takes over a notice whose frame is being dropped, so its gap is still reported. */
  absorb(notice: OverflowNotice): void {
    this.add(notice.droppedCount, notice.gapStart, notice.gapEnd, !notice.terminalPreserved, notice.reason);
  }

  private add(count: number, start: number, end: number, terminalLost: boolean, reason: EventOverflowReason): void {
    if (this.count === 0 || start < this.start) this.start = start;
    if (this.count === 0 || end > this.end) this.end = end;
    this.count += count;
    this.terminalLost ||= terminalLost;
    this.reason ??= reason;
  }

  take(policy: SubscriberOverflowPolicy): OverflowNotice | undefined {
    if (this.count === 0) return undefined;
    const notice: OverflowNotice = {
      policy,
      droppedCount: this.count,
      gapStart: this.start,
      gapEnd: this.end,
      repairFrom: this.start - 1,
      terminalPreserved: !this.terminalLost,
      // A lost terminal event is always reported as a full queue.
      reason: this.terminalLost ? EventOverflowReason.SUBSCRIBER_QUEUE_FULL : (this.reason ?? EventOverflowReason.SUBSCRIBER_QUEUE_FULL),
    };
    this.count = 0;
    this.terminalLost = false;
    this.reason = undefined;
    return notice;
  }
}

/** Two notices about gaps reported together become one covering both. */
function merge(a: OverflowNotice | undefined, b: OverflowNotice | undefined): OverflowNotice | undefined {
  if (!a || !b) return a ?? b;
  return {
    policy: a.policy,
    droppedCount: a.droppedCount + b.droppedCount,
    gapStart: Math.min(a.gapStart, b.gapStart),
    gapEnd: Math.max(a.gapEnd, b.gapEnd),
    repairFrom: Math.min(a.repairFrom, b.repairFrom),
    terminalPreserved: a.terminalPreserved && b.terminalPreserved,
    reason: a.reason === b.reason ? a.reason : EventOverflowReason.SUBSCRIBER_QUEUE_FULL,
  };
}

export class SubscriberQueue<T> {
  private entries: Delivery<T>[] = [];
  private nonTerminal = 0;
  private readonly gap = new Gap();
  private readonly summary = new Gap();
  private summaryFrame: QueuedFrame<T> | undefined;
  private hasFailed = false;
  readonly capacity: number;
  private readonly normalCapacity: number;

  constructor(readonly config: QueueConfig) {
    this.capacity = config.capacity;
    this.normalCapacity = config.capacity - Math.min(config.terminalReserve, config.capacity);
  }

  get size(): number {
    return this.entries.length;
  }

  get full(): boolean {
    return this.entries.length >= this.capacity;
  }

  /** FAIL_SUBSCRIBER overflowed: deliver what is queued, then end the stream. */
  get failed(): boolean {
    return this.hasFailed;
  }

  push(frame: QueuedFrame<T>): PushOutcome {
    if (this.hasFailed) return "failed";
    const { policy } = this.config;
    if (policy === SubscriberOverflowPolicy.BACKPRESSURE_CALLER) {
      if (this.full) return "full";
      this.enqueue(frame);
      return "queued";
    }
    if (frame.terminal) {
      if (policy === SubscriberOverflowPolicy.FAIL_SUBSCRIBER && this.full) return this.fail(frame);
      this.flushSummary();
      if (this.full && !this.evictForTerminal(policy)) return "full";
      return this.enqueue(frame);
    }
    switch (policy) {
      case SubscriberOverflowPolicy.DROP_NON_TERMINAL:
        if (this.canAcceptNonTerminal()) return this.enqueue(frame);
        return this.drop(frame, EventOverflowReason.POLICY_DROPPED_NON_TERMINAL);
      case SubscriberOverflowPolicy.DROP_PROGRESS:
        if (this.canAcceptNonTerminal()) return this.enqueue(frame);
        if (frame.progress) return this.drop(frame, EventOverflowReason.POLICY_DROPPED_PROGRESS);
        if (this.dropOldest((d) => d.frame.progress, EventOverflowReason.POLICY_DROPPED_PROGRESS)) return this.enqueue(frame);
        return "full";
      case SubscriberOverflowPolicy.SUMMARIZE_AND_CONTINUE:
        if (frame.progress) {
          if (this.summaryFrame === undefined && this.canAcceptNonTerminal()) return this.enqueue(frame);
          this.summary.record(frame.seq, false, EventOverflowReason.POLICY_DROPPED_PROGRESS);
          this.summaryFrame = frame;
          return "summarized";
        }
        this.flushSummary();
        if (this.canAcceptNonTerminal()) return this.enqueue(frame);
        return "full";
      case SubscriberOverflowPolicy.FAIL_SUBSCRIBER:
      default:
        if (this.canAcceptNonTerminal()) return this.enqueue(frame);
        return this.fail(frame);
    }
  }

  /** Makes room for a terminal event by dropping the oldest frame the policy may drop; false when there is none. */
  private evictForTerminal(policy: SubscriberOverflowPolicy): boolean {
    if (policy === SubscriberOverflowPolicy.DROP_NON_TERMINAL) return this.dropOldest((d) => !d.frame.terminal, EventOverflowReason.POLICY_DROPPED_NON_TERMINAL);
    return this.dropOldest((d) => d.frame.progress, EventOverflowReason.POLICY_DROPPED_PROGRESS);
  }

  /**
   * How many frames replay may push with no policy applying, whatever they
   * are: the room for non-terminal frames (replay reads the journal at the
   * subscriber's pace; nothing read from it needs dropping).
   */
  get replayRoom(): number {
    return Math.max(0, Math.min(this.capacity - this.entries.length, this.normalCapacity - this.nonTerminal));
  }

  /** FAIL_SUBSCRIBER: the frame that does not fit is reported on the last queued frame, and the queue fails. */
  private fail(frame: QueuedFrame<T>): "failed" {
    this.gap.record(frame.seq, frame.terminal, EventOverflowReason.SUBSCRIBER_QUEUE_FULL);
    const last = this.entries[this.entries.length - 1];
    if (last) last.notice = merge(last.notice, this.gap.take(this.config.policy));
    this.hasFailed = true;
    return "failed";
  }

  /** The next frame for the subscriber, with the notice of any gap before it. */
  shift(): Delivery<T> | undefined {
    const next = this.entries.shift();
    if (next) {
      if (!next.frame.terminal) this.nonTerminal--;
      // Room again: a pending summary goes in behind what is queued.
      if (this.summaryFrame && this.canAcceptNonTerminal()) this.flushSummary();
      return next;
    }
    if (this.summaryFrame) {
      this.flushSummary();
      return this.shift();
    }
    return undefined;
  }

  /** A gap whose notice found no later frame to ride on (hand it out with a heartbeat). */
  takeNotice(): OverflowNotice | undefined {
    return this.entries.length === 0 ? this.gap.take(this.config.policy) : undefined;
  }

  private canAcceptNonTerminal(): boolean {
    return this.entries.length < this.capacity && this.nonTerminal < this.normalCapacity;
  }

  private enqueue(frame: QueuedFrame<T>, summarized?: number, notice?: OverflowNotice): "queued" {
    if (!frame.terminal) this.nonTerminal++;
    const delivery: Delivery<T> = { frame, notice: merge(notice, this.gap.take(this.config.policy)) };
    if (summarized !== undefined) delivery.summarized = summarized;
    this.entries.push(delivery);
    return "queued";
  }

  private drop(frame: QueuedFrame<T>, reason: EventOverflowReason): "dropped" {
    this.gap.record(frame.seq, frame.terminal, reason);
    return "dropped";
  }

  private dropAt(index: number, reason: EventOverflowReason): void {
    const [dropped] = this.entries.splice(index, 1);
    if (!dropped) return;
    if (!dropped.frame.terminal) this.nonTerminal--;
    // A summary frame's notice already counts the events it stands for
    // (itself included); any other frame is one more dropped event.
    if (dropped.summarized === undefined) this.gap.record(dropped.frame.seq, dropped.frame.terminal, reason);
    // A dropped frame's notice must not be lost with it.
    if (dropped.notice) this.gap.absorb(dropped.notice);
  }

  private dropOldest(predicate: (d: Delivery<T>) => boolean, reason: EventOverflowReason): boolean {
    const index = this.entries.findIndex(predicate);
    if (index < 0) return false;
    this.dropAt(index, reason);
    return true;
  }

  /** Queues the pending summary if there is room; drops it (counted) if not. */
  private flushSummary(): void {
    const frame = this.summaryFrame;
    if (!frame) return;
    this.summaryFrame = undefined;
    const count = this.summary.count;
    const notice = this.summary.take(SubscriberOverflowPolicy.SUMMARIZE_AND_CONTINUE);
    if (this.canAcceptNonTerminal()) {
      this.enqueue(frame, count, notice);
    } else if (notice) {
      // The seed drops a summary that finds no room; its events stay reported.
      this.gap.absorb(notice);
    }
  }
}
