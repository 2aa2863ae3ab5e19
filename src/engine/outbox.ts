/**
 * The transactional outbox: how every state transition gets its journal event
 * exactly once without multi-document transactions.
 *
 * A transition's events are pushed into the entity's own document by the same
 * conditional update that performs it (so they commit together). The engine
 * then appends them to the journal before answering the client, and clears
 * them from the document afterwards (batched, off the request path). If the
 * process dies in between, the repair sweep finds documents whose outbox is
 * older than a few seconds and appends them again; the journal's unique event
 * ids make a second append a no-op. Later transitions of the same document
 * flush the earlier entries first, so an entity's events keep their order.
 */
import type { Collection, Doc, Store, UpdateFilter } from "../store/port.js";
import type { Journal } from "./journal/journal.js";
import type { PendingEvent } from "./journal/records.js";
import type { Logger } from "./logger.js";
import type { Clock } from "../domain/clock.js";

export interface OutboxFields {
  outbox?: PendingEvent[];
  /** When the oldest entry still in the outbox was pushed. */
  outbox_at?: number;
}

type OutboxDoc = Doc & OutboxFields;

/** Adds `events` to a transition's update, so they commit with it. */
export function withEvents<T extends OutboxDoc>(update: UpdateFilter<T>, events: PendingEvent[], now: number): UpdateFilter<T> {
  const merged = { ...update } as Record<string, Record<string, unknown>>;
  merged.$push = { ...(merged.$push ?? {}), outbox: { $each: events } };
  merged.$min = { ...(merged.$min ?? {}), outbox_at: now };
  return merged as UpdateFilter<T>;
}

/** The outbox fields of a new document. */
export function initialOutbox(events: PendingEvent[], now: number): Required<OutboxFields> {
  return { outbox: events, outbox_at: now };
}

export interface OutboxOptions {
  /** Entries older than this are re-appended by the repair sweep. */
  repairAfterMs?: number;
  /** Pause before clearing flushed entries (to batch the clears). */
  clearDelayMs?: number;
}

export class Outbox {
  private readonly collections = new Map<string, Collection<OutboxDoc>>();
  private readonly toClear = new Map<string, Map<string | number, Set<string>>>();
  private clearTimer: NodeJS.Timeout | undefined;
  private clearing: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly journal: Journal,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: OutboxOptions = {},
  ) {}

  /** Declares a collection whose documents carry outboxes (for the repair sweep). */
  async register(collection: string): Promise<void> {
    const handle = this.store.collection<OutboxDoc>(collection);
    this.collections.set(collection, handle);
    await handle.createIndexes([{ key: { outbox_at: 1 } }]);
  }

  /**
   * Journals the outbox entries of documents just returned by transitions.
   * Resolves once they are journaled, with the journal position of each event
   * (by event id).
   *
   * A document's entries are appended one per round (its first entry in the
   * first round, with the other documents' first entries, and so on), each
   * round once the previous one is journaled. An earlier entry may be being
   * journaled meanwhile by the transition that pushed it, at a position that
   * transition reserved after this one reserved its own; had both entries been
   * appended at once, the later one would land before the earlier one. After
   * its round, an entry is journaled (here, or where the other writer put it),
   * and the next round reserves positions after it.
   */
  async flush(collection: string, docs: ReadonlyArray<OutboxDoc | null | undefined>): Promise<Map<string, number>> {
    const rounds: PendingEvent[][] = [];
    const owners: Array<[string | number, string]> = [];
    for (const doc of docs) {
      (doc?.outbox ?? []).forEach((event, i) => {
        (rounds[i] ??= []).push(event);
        owners.push([doc!._id, event.event_id]);
      });
    }
    const positions = new Map<string, number>();
    if (owners.length === 0) return positions;
    for (const pending of rounds) {
      const outcomes = await this.journal.append(pending);
      pending.forEach((event, i) => positions.set(event.event_id, outcomes[i]!.seq));
    }
    this.scheduleClear(collection, owners);
    return positions;
  }

  /** Re-appends outboxes left behind by a process that died mid-transition. */
  async repair(limit = 500): Promise<number> {
    const cutoff = this.clock.now() - (this.options.repairAfterMs ?? 5_000);
    let repaired = 0;
    for (const [name, collection] of this.collections) {
      const stale = await collection.find({ outbox_at: { $lte: cutoff } }, { sort: { outbox_at: 1 }, limit });
      if (stale.length === 0) continue;
      const withEntries = stale.filter((doc) => (doc.outbox?.length ?? 0) > 0);
      if (withEntries.length > 0) this.log.info({ collection: name, documents: withEntries.length }, "re-journaling outbox entries left by an interrupted transition");
      await this.flush(name, withEntries);
      // Documents whose outbox was emptied but whose marker remained.
      const empty = stale.filter((doc) => (doc.outbox?.length ?? 0) === 0).map((doc) => doc._id);
      if (empty.length > 0) await collection.updateMany({ _id: { $in: empty }, outbox: { $size: 0 } }, { $unset: { outbox: "", outbox_at: "" } });
      repaired += withEntries.length;
    }
    await this.drain();
    return repaired;
  }

  /** Clears what has been flushed so far (call before shutdown). */
  async drain(): Promise<void> {
    clearTimeout(this.clearTimer);
    this.clearTimer = undefined;
    await (this.clearing = this.clearing.then(() => this.clearNow()));
  }

  private scheduleClear(collection: string, owners: Array<[string | number, string]>): void {
    let byDoc = this.toClear.get(collection);
    if (!byDoc) this.toClear.set(collection, (byDoc = new Map()));
    for (const [id, eventId] of owners) {
      let ids = byDoc.get(id);
      if (!ids) byDoc.set(id, (ids = new Set()));
      ids.add(eventId);
    }
    if (!this.clearTimer) {
      this.clearTimer = setTimeout(() => {
        this.clearTimer = undefined;
        this.clearing = this.clearing.then(() => this.clearNow());
      }, this.options.clearDelayMs ?? 5);
      this.clearTimer.unref?.();
    }
  }

  private async clearNow(): Promise<void> {
    const batches = [...this.toClear];
    this.toClear.clear();
    for (const [name, byDoc] of batches) {
      const collection = this.collections.get(name) ?? this.store.collection<OutboxDoc>(name);
      const ids = [...byDoc.keys()];
      const eventIds = [...new Set([...byDoc.values()].flatMap((set) => [...set]))];
      try {
        await collection.updateMany({ _id: { $in: ids } }, { $pull: { outbox: { event_id: { $in: eventIds } } } } as UpdateFilter<OutboxDoc>);
        // Only where no newer transition pushed entries meanwhile.
        await collection.updateMany({ _id: { $in: ids }, outbox: { $size: 0 } }, { $unset: { outbox: "", outbox_at: "" } });
      } catch (error) {
        // Harmless: the repair sweep re-appends (a no-op) and clears later.
        this.log.warn({ collection: name, error: error instanceof Error ? error.message : String(error) }, "could not clear flushed outbox entries; the repair sweep will");
      }
    }
  }
}
