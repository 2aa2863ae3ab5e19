/**
 * The event journal's use cases: publish a run's own event, list a range,
 * open a subscription (one namespace's: Events), and keep the journal within
 * its retention window (every namespace's: JournalRetention).
 */
import { create } from "@bufbuild/protobuf";
import { type AgentEvent, type EventEnvelope, JournalCursorSchema } from "../../../gen/mailroom/v1/event_pb.js";
import type { Clock } from "../../domain/clock.js";
import { EntityKind, ErrorReason, MailroomError } from "../../domain/errors.js";
import type { ListCommand, SubscribeCommand } from "../../domain/events/requests.js";
import type { Journal, NamespaceJournal } from "../journal/journal.js";
import { type EventDoc, eventOf, pendingEvent } from "../journal/records.js";
import type { JournalTail, NamespaceTail } from "../journal/tail.js";
import type { Logger } from "../logger.js";
import { Subscription, type SubscriptionSpec, cursorExpired } from "./subscription.js";

export interface EventsOptions {
  /** Events are deleted this long after they were recorded. */
  retentionMs: number;
  /** How often retention runs; unset = every minute, or every quarter of the retention when that is shorter (at least every 100 ms). */
  purgeEveryMs?: number;
}

export const DEFAULT_EVENTS_OPTIONS: EventsOptions = { retentionMs: 7 * 86_400_000 };

/** How often retention runs when not told. */
export function purgeInterval(options: EventsOptions): number {
  return options.purgeEveryMs ?? Math.max(100, Math.min(60_000, Math.floor(options.retentionMs / 4)));
}

export type PurgeListener = (purgedThrough: number) => void;

/** One namespace's events: it publishes, lists and subscribes to its own events only. */
export class Events {
  constructor(
    private readonly journal: NamespaceJournal,
    private readonly tail: NamespaceTail,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Journals a checked, completed event; a repeated event id answers with the first recording. */
  async publish(event: AgentEvent): Promise<{ envelope: EventEnvelope; deduplicated: boolean }> {
    const now = this.clock.now();
    const [outcome] = await this.journal.append([pendingEvent(event, now)]);
    if (outcome!.deduplicated) {
      const [original] = await this.journal.recorded([event.envelope!.eventId]);
      return { envelope: eventOf(original!).envelope!, deduplicated: true };
    }
    const envelope = event.envelope!;
    envelope.eventSeq = BigInt(outcome!.seq);
    envelope.journalCursor = create(JournalCursorSchema, { eventSeq: BigInt(outcome!.seq) });
    return { envelope, deduplicated: false };
  }

  /**
   * Journals a checked batch (seed: publish_all) at consecutive positions, in
   * order. A batch all of whose event ids were journaled before answers with
   * the recorded events; one mixing recorded and new ids is refused
   * (ALREADY_EXISTS) and nothing is journaled.
   */
  async publishBatch(events: AgentEvent[]): Promise<{ envelopes: EventEnvelope[]; deduplicated: boolean }> {
    const ids = events.map((event) => event.envelope!.eventId);
    const recorded = await this.journal.positionsOf(ids);
    if (recorded.size === ids.length) {
      const docs = await this.journal.recorded(ids);
      const byId = new Map(docs.map((doc) => [doc.event_id, doc]));
      return { envelopes: ids.map((id) => eventOf(byId.get(id)!).envelope!), deduplicated: true };
    }
    if (recorded.size > 0) {
      const i = ids.findIndex((id) => recorded.has(id));
      throw new MailroomError("already_exists", `events[${i}].envelope.event_id ${JSON.stringify(ids[i])} was published before (at event_seq ${recorded.get(ids[i]!)}); a batch is recorded whole or not at all, so nothing was recorded. Retry the whole batch as it was, or leave out the events already recorded`, {
        reason: ErrorReason.INVALID_FIELD,
        field: `events[${i}].envelope.event_id`,
        entity: { kind: EntityKind.EVENT, id: ids[i]! },
      });
    }
    const now = this.clock.now();
    const outcomes = await this.journal.append(events.map((event) => pendingEvent(event, now)));
    const seqs = outcomes.map((outcome) => outcome.seq);
    if (outcomes.some((outcome) => outcome.deduplicated) || seqs.some((seq, i) => i > 0 && seq !== seqs[i - 1]! + 1)) {
      // Only when a concurrent Publish recorded one of the ids meanwhile, or a reader closed a position the write had not filled in time.
      this.log.warn({ events: events.length, first_event_seq: seqs[0] }, "a published batch did not land at consecutive positions");
    }
    return {
      envelopes: events.map((event, i) => {
        const envelope = event.envelope!;
        envelope.eventSeq = BigInt(seqs[i]!);
        envelope.journalCursor = create(JournalCursorSchema, { eventSeq: BigInt(seqs[i]!) });
        return envelope;
      }),
      deduplicated: false,
    };
  }

  /** Opens a subscription; refuses a cursor older than the retained journal or ahead of it. */
  async subscribe(command: SubscribeCommand): Promise<Subscription> {
    const after = command.after !== undefined
      ? await this.checkCursor(command.after)
      : command.start === "latest" ? this.tail.position : await this.journal.purgedThrough();
    return new Subscription(this.journal, this.tail, { filter: command.filter, after, queue: command.queue });
  }

  /** Opens a subscription of the server's own (pool inboxes, WatchPool) on checked terms. */
  async open(spec: SubscriptionSpec): Promise<Subscription> {
    return new Subscription(this.journal, this.tail, { ...spec, after: await this.checkCursor(spec.after) });
  }

  /** A page of a range: events after the cursor, up to `until` (or the live edge). */
  async list(command: ListCommand): Promise<{ events: EventDoc[]; next: number; end: boolean }> {
    const after = command.after !== undefined ? await this.checkCursor(command.after) : await this.journal.purgedThrough();
    // Never past the live edge: beyond it a position may still be filled by a late write.
    const until = Math.min(command.until ?? Number.MAX_SAFE_INTEGER, this.tail.position);
    const events = await this.journal.matching(command.filter, after, until, command.pageSize);
    const full = events.length === command.pageSize;
    return { events, next: full ? events[events.length - 1]!._id : Math.max(after, until), end: !full };
  }

  private checkCursor(after: number): Promise<number> {
    return checkJournalCursor(this.journal, after);
  }
}

/** The journal's bounds, as a cursor is checked against them. */
type JournalBounds = Pick<Journal, "purgedThrough" | "reservedHead">;

/** A client's journal cursor: OUT_OF_RANGE when older than the retained journal (CURSOR_EXPIRED) or ahead of it (CURSOR_AHEAD). */
export async function checkJournalCursor(journal: JournalBounds, after: number): Promise<number> {
  const purged = await journal.purgedThrough();
  if (after < purged) throw cursorExpired(after, purged);
  return checkCursorNotAhead(journal, after);
}

/** A journal position a client gave, for reading what is kept beyond retention: OUT_OF_RANGE (CURSOR_AHEAD) only when ahead of the journal. */
export async function checkCursorNotAhead(journal: JournalBounds, after: number): Promise<number> {
  const head = await journal.reservedHead();
  if (after > head) {
    throw new MailroomError("out_of_range", `the cursor (event_seq ${after}) is ahead of the journal (head ${head}); it was not issued by this journal`, {
      reason: ErrorReason.CURSOR_AHEAD,
      metadata: { head_event_seq: String(head) },
    });
  }
  return after;
}

/**
 * Keeps the journal within its retention window: deletes the oldest events
 * (of every namespace: positions are one sequence) recorded before it, never
 * past what journal followers still need.
 */
export class JournalRetention {
  private timer: NodeJS.Timeout | undefined;
  private purging = false;
  /** Positions retention must not pass yet (what journal followers have not handled). */
  private readonly purgeHolds = new Set<() => number>();
  private readonly purgeListeners = new Set<PurgeListener>();

  constructor(
    private readonly journal: Journal,
    private readonly tail: JournalTail,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: EventsOptions,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.purging) return;
      this.purging = true;
      this.purge()
        .catch((error) => this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "journal retention failed; will retry"))
        .finally(() => (this.purging = false));
    }, purgeInterval(this.options));
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Deletes events past retention; returns the new purged-through position. */
  async purge(): Promise<number> {
    const before = await this.journal.purgedThrough();
    const limit = Math.min(this.tail.position, ...[...this.purgeHolds].map((hold) => hold()));
    const through = await this.journal.purgeBefore(this.clock.now() - this.options.retentionMs, limit);
    if (through > before) {
      this.log.info({ purged_through: through, retention_ms: this.options.retentionMs }, "deleted journal events past retention");
      for (const listener of this.purgeListeners) listener(through);
    }
    return through;
  }

  /** Retention stops below `position()` (a journal follower's progress: it must see every event it follows). */
  holdPurgeAt(position: () => number): () => void {
    this.purgeHolds.add(position);
    return () => this.purgeHolds.delete(position);
  }

  /** Hears each purge that deleted events (the new purged-through position), for tests and metrics. */
  onPurge(listener: PurgeListener): () => void {
    this.purgeListeners.add(listener);
    return () => this.purgeListeners.delete(listener);
  }
}
