/**
 * One subscriber's view of the journal: replay after its cursor, one
 * CAUGHT_UP frame, then live events, with no gap and no duplicate at the seam.
 *
 * The subscription keeps one number, `position`: every journal position up
 * to it has been examined for this subscriber (delivered, queued, or dropped
 * with a notice). Replay reads the store after `position` up to the tail's
 * live edge, a queue's worth at a time, at the subscriber's pace. When a read
 * finds nothing more and the queue is empty it attaches to the tail: it takes
 * the tail's recent events after `position` and registers its listener in
 * the same synchronous step, so nothing falls between the two.
 *
 * Live, events go through the bounded queue and its overflow policy. When
 * the queue answers "full" (always under BACKPRESSURE_CALLER; under the other
 * policies for an event the policy may not drop) the subscription detaches
 * instead; it lags, and later catches up from the store: under
 * BACKPRESSURE_CALLER reading only what fits (nothing is dropped), under the
 * other policies applying the policy as live delivery does (catchUp).
 * Replaying after a cursor never applies a policy: history is read at the
 * subscriber's pace.
 */
import { ErrorReason, MailroomError } from "../../domain/errors.js";
import { type FilterSpec, matches } from "../../domain/events/filter.js";
import { type Delivery, type OverflowNotice, type QueueConfig, SubscriberOverflowPolicy, SubscriberQueue } from "../../domain/events/subscriber-queue.js";
import type { NamespaceJournal } from "../journal/journal.js";
import type { EventDoc } from "../journal/records.js";
import type { TailReader } from "../journal/tail.js";
import { StreamWaiter } from "../stream-waiter.js";

export type SubscriptionFrame =
  | { kind: "event"; delivery: Delivery<EventDoc> }
  | { kind: "caught_up"; position: number; notice?: OverflowNotice }
  | { kind: "heartbeat"; position: number; notice?: OverflowNotice };

export interface SubscriptionSpec {
  filter: FilterSpec;
  /** Deliver events after this position. */
  after: number;
  queue: QueueConfig;
}

/** The heartbeat interval until `take` names one. */
const DEFAULT_HEARTBEAT_MS = 15_000;

/** Most events read from the store at once during replay. */
const PAGE = 500;

export class Subscription {
  private position: number;
  private readonly queue: SubscriberQueue<EventDoc>;
  private live = false;
  private caughtUpSent = false;
  private detachTail: (() => void) | undefined;
  /** Waits for events and heartbeats: no timer or listener per frame. */
  private readonly waiter = new StreamWaiter(DEFAULT_HEARTBEAT_MS);
  private closed = false;
  /** A dropping policy made the subscription fall behind: catching up applies it (see catchUp). */
  private lagging = false;

  constructor(
    private readonly journal: Pick<NamespaceJournal, "purgedThrough" | "matching">,
    private readonly tail: TailReader,
    private readonly spec: SubscriptionSpec,
  ) {
    this.position = spec.after;
    this.queue = new SubscriberQueue<EventDoc>(spec.queue);
  }

  /** Frames queued but not yet taken (never more than the queue's capacity). */
  get queued(): number {
    return this.queue.size;
  }

  /**
   * The next frame: an event, the one CAUGHT_UP frame, or a heartbeat after
   * `heartbeatMs` without frames. Undefined once closed or aborted.
   * @throws MailroomError RESOURCE_EXHAUSTED (SUBSCRIBER_OVERFLOW) after a FAIL_SUBSCRIBER overflow;
   *   OUT_OF_RANGE (CURSOR_EXPIRED) when retention deleted events not yet replayed.
   */
  async next(heartbeatMs: number, signal: AbortSignal): Promise<SubscriptionFrame | undefined> {
    return (await this.take(1, heartbeatMs, signal))?.[0];
  }

  /**
   * Up to `max` frames, in order, as soon as there is one: every queued event
   * (up to `max`), else the CAUGHT_UP frame, else a heartbeat once nothing was
   * taken for `heartbeatMs`. A subscriber that keeps up gets each event alone,
   * at once; one that is behind gets its backlog in fewer, larger batches.
   * Undefined once closed or aborted. Throws as `next` does.
   */
  async take(max: number, heartbeatMs: number, signal: AbortSignal): Promise<SubscriptionFrame[] | undefined> {
    this.waiter.bind(signal, heartbeatMs);
    for (;;) {
      if (this.closed || this.waiter.done) return undefined;
      if (this.queue.size > 0) {
        const frames: SubscriptionFrame[] = [];
        for (let delivery = this.queue.shift(); delivery; delivery = frames.length < max ? this.queue.shift() : undefined) {
          frames.push({ kind: "event", delivery });
        }
        return this.sent(frames);
      }
      if (this.queue.failed) throw overflowed();
      if (!this.live) {
        await this.replay();
        continue;
      }
      if (!this.caughtUpSent) {
        this.caughtUpSent = true;
        return this.sent([{ kind: "caught_up", position: this.livePosition(), notice: this.queue.takeNotice() }]);
      }
      if ((await this.waiter.wait()) === "idle") {
        return this.sent([{ kind: "heartbeat", position: this.livePosition(), notice: this.queue.takeNotice() }]);
      }
    }
  }

  /**
   * Live with nothing queued, every event up to the tail's position has been
   * examined (the tail hands events over as it advances): also when the tail
   * is one namespace's view and the last events were another namespace's,
   * which a subscriber's cursor must not wait behind.
   */
  private livePosition(): number {
    this.position = Math.max(this.position, this.tail.position);
    return this.position;
  }

  close(): void {
    this.closed = true;
    this.detach();
    this.waiter.end();
  }

  private sent(frames: SubscriptionFrame[]): SubscriptionFrame[] {
    this.waiter.sent();
    return frames;
  }

  /** Reads the next page after `position`, or attaches to the tail when there is none. */
  private async replay(): Promise<void> {
    const purged = await this.journal.purgedThrough();
    if (this.position < purged) throw cursorExpired(this.position, purged);
    const until = this.tail.position;
    if (this.lagging) return this.catchUp(until);
    const limit = Math.min(PAGE, this.queue.replayRoom);
    if (limit === 0) return; // not reached: replay runs once the queue is empty
    const docs = await this.journal.matching(this.spec.filter, this.position, until, limit);
    for (const doc of docs) this.queue.push(frameOf(doc));
    this.position = docs.length === limit ? docs[docs.length - 1]!._id : Math.max(this.position, until);
    if (docs.length === 0 && this.queue.size === 0) this.attach();
  }

  /**
   * Catching up after the overflow policy made the subscription lag: the
   * journal is read a page at a time and each event goes through the policy
   * as if it were live (what the policy names is dropped, with notices, so a
   * DROP_PROGRESS subscriber still skips progress), stopping at the first
   * event the policy keeps and the queue has no room for.
   */
  private async catchUp(until: number): Promise<void> {
    const docs = await this.journal.matching(this.spec.filter, this.position, until, PAGE);
    for (const doc of docs) {
      if (this.queue.push(frameOf(doc)) === "full") return;
      this.position = doc._id;
    }
    if (docs.length === PAGE) return;
    this.position = Math.max(this.position, until);
    if (this.queue.size > 0) return;
    this.lagging = false;
    this.attach();
  }

  private attach(): void {
    // Synchronous from here to subscribe(): the tail cannot advance in between.
    const recent = this.tail.recentAfter(this.position);
    if (recent === undefined) return; // too far behind the tail's memory: replay again
    this.live = true;
    this.detachTail = this.tail.subscribe((events) => this.onLive(events));
    this.onLive(recent);
  }

  private detach(): void {
    this.detachTail?.();
    this.detachTail = undefined;
  }

  private onLive(events: EventDoc[]): void {
    for (const doc of events) {
      if (doc._id <= this.position) continue;
      if (matches(this.spec.filter, doc)) {
        const outcome = this.queue.push(frameOf(doc));
        if (outcome === "full") {
          // Lag instead of dropping; catch up from the store later.
          this.detach();
          this.live = false;
          this.lagging = this.spec.queue.policy !== SubscriberOverflowPolicy.BACKPRESSURE_CALLER;
          break;
        }
      }
      this.position = doc._id;
    }
    this.waiter.wake();
  }
}

function frameOf(doc: EventDoc) {
  return { seq: doc._id, terminal: doc.terminal, progress: doc.progress, item: doc };
}

function overflowed(): MailroomError {
  return new MailroomError(
    "resource_exhausted",
    "the subscriber fell behind and its overflow policy is FAIL_SUBSCRIBER; the last frame's notice says where to resubscribe (repair_from)",
    { reason: ErrorReason.SUBSCRIBER_OVERFLOW },
  );
}

export function cursorExpired(position: number, purgedThrough: number): MailroomError {
  return new MailroomError(
    "out_of_range",
    `the cursor (event_seq ${position}) is older than the retained journal, which starts after event_seq ${purgedThrough}; events in between were deleted by retention. Resubscribe without a cursor (or from a retained one) and repair the gap from your own records`,
    { reason: ErrorReason.CURSOR_EXPIRED, metadata: { oldest_event_seq: String(purgedThrough + 1) } },
  );
}
