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
 *
 * One outbox serves every namespace: use cases flush through their
 * namespace's NamespaceOutbox (documents as their namespace's view returns
 * them; events journaled in that namespace; clears written through the view),
 * and the repair sweep reads every namespace's leftovers from the store
 * itself, then flushes each in its own namespace.
 */
import { ownerOf } from "../store/namespaced.js";
import type { Collection, Doc, Store, UpdateFilter } from "../store/port.js";
import type { Journal } from "./journal/journal.js";
import type { PendingEvent } from "./journal/records.js";
import type { Logger } from "./logger.js";
import type { Clock } from "../domain/clock.js";

/**
 * An outbox entry without the encoded event: what the transition knew when it
 * wrote it. Its collection's materializer builds the event from it and the
 * document when the entry is flushed (the document's identifying fields never
 * change, so every flush builds the same event). Transitions that update a
 * document without reading it first know little else about it.
 */
export interface CompactEntry {
  event_id: string;
  kind: number;
  /** When the transition happened (the event's recorded time). */
  at: number;
  before?: string;
  after: string;
  summary: string;
  claimable?: { reason: number; at: number };
}

/** An outbox entry: a complete event, or a compact one. */
export type OutboxEntry = PendingEvent | CompactEntry;

/** Builds a compact entry's event from the document that carries it. */
export type Materializer = (doc: Doc, entry: CompactEntry) => PendingEvent;

function isCompact(entry: OutboxEntry): entry is CompactEntry {
  return !("event" in entry);
}

export interface OutboxFields {
  outbox?: OutboxEntry[];
  /** When the oldest entry still in the outbox was pushed. */
  outbox_at?: number;
  /** Entries pushed since the outbox was last cleared: a clear is conditional on it, so it never drops newer entries. */
  outbox_n?: number;
}

type OutboxDoc = Doc & OutboxFields;

/** Adds `events` to a transition's update, so they commit with it. */
export function withEvents<T extends OutboxDoc>(update: UpdateFilter<T>, events: OutboxEntry[], now: number): UpdateFilter<T> {
  const merged = { ...update } as Record<string, Record<string, unknown>>;
  merged.$push = { ...(merged.$push ?? {}), outbox: { $each: events } };
  merged.$min = { ...(merged.$min ?? {}), outbox_at: now };
  merged.$inc = { ...(merged.$inc ?? {}), outbox_n: events.length };
  return merged as UpdateFilter<T>;
}

/** The outbox fields of a new document. */
export function initialOutbox(events: OutboxEntry[], now: number): Required<OutboxFields> {
  return { outbox: events, outbox_at: now, outbox_n: events.length };
}

export interface OutboxOptions {
  /** Entries older than this are re-appended by the repair sweep. */
  repairAfterMs?: number;
  /** Pause before clearing flushed entries (to batch the clears). */
  clearDelayMs?: number;
}

/** How many journaled event ids the outbox remembers, so a re-flush before the clear lands skips them. */
const REMEMBERED_EVENTS = 16_384;

export class Outbox {
  /** Each registered collection as stored (every namespace's documents), for the repair sweep. */
  private readonly collections = new Map<string, Collection<OutboxDoc>>();
  private readonly materializers = new Map<string, Materializer>();
  /** Per namespace and collection, the documents to clear and the outbox_n each had when flushed. */
  private readonly toClear = new Map<string, Map<string, Map<string | number, number | undefined>>>();
  /** Event ids this process journaled recently, with their positions (insertion ordered: the oldest are forgotten first). */
  private readonly journaled = new Map<string, number>();
  private clearTimer: NodeJS.Timeout | undefined;
  private clearing: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: Store,
    /** A namespace's view of the store (its documents are cleared through it). */
    private readonly namespaced: (namespace: string) => Store,
    private readonly journal: Journal,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: OutboxOptions = {},
  ) {}

  /**
   * Declares a collection whose documents carry outboxes (for the repair
   * sweep), and how its compact entries become events.
   */
  async register(collection: string, materializer?: Materializer): Promise<void> {
    const handle = this.store.collection<OutboxDoc>(collection);
    this.collections.set(collection, handle);
    if (materializer) this.materializers.set(collection, materializer);
    await handle.createIndexes([{ key: { outbox_at: 1 } }]);
  }

  /** One namespace's outbox. */
  in(namespace: string): NamespaceOutbox {
    return new NamespaceOutbox(this, namespace);
  }

  /**
   * Journals the outbox entries of a namespace's documents (as its view
   * returned them) just returned by transitions.
   * Resolves once they are journaled, with the journal position of each event
   * (by event id). Entries this process journaled already (an earlier
   * transition's, not cleared yet) are not appended again.
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
  async flush(namespace: string, collection: string, docs: ReadonlyArray<OutboxDoc | null | undefined>): Promise<Map<string, number>> {
    const positions = new Map<string, number>();
    const rounds: PendingEvent[][] = [];
    const flushed: OutboxDoc[] = [];
    const materialize = this.materializers.get(collection);
    for (const doc of docs) {
      if (!doc?.outbox) continue;
      flushed.push(doc);
      let round = 0;
      for (const entry of doc.outbox) {
        const known = this.journaled.get(entry.event_id);
        if (known !== undefined) {
          positions.set(entry.event_id, known);
          continue;
        }
        if (isCompact(entry) && !materialize) throw new Error(`outbox of ${collection} holds a compact entry but the collection has no materializer`);
        (rounds[round++] ??= []).push(isCompact(entry) ? materialize!(doc, entry) : entry);
      }
    }
    if (flushed.length === 0) return positions;
    for (const pending of rounds) {
      const outcomes = await this.journal.append(pending, namespace);
      pending.forEach((event, i) => {
        positions.set(event.event_id, outcomes[i]!.seq);
        this.remember(event.event_id, outcomes[i]!.seq);
      });
    }
    this.scheduleClear(namespace, collection, flushed);
    return positions;
  }

  /** Re-appends outboxes left behind by a process that died mid-transition, in every namespace. */
  async repair(limit = 500): Promise<number> {
    const cutoff = this.clock.now() - (this.options.repairAfterMs ?? 5_000);
    let repaired = 0;
    for (const [name, collection] of this.collections) {
      const stale = await collection.find({ outbox_at: { $lte: cutoff } }, { sort: { outbox_at: 1 }, limit });
      if (stale.length === 0) continue;
      const byNamespace = new Map<string, OutboxDoc[]>();
      for (const stored of stale) {
        const { namespace, doc } = ownerOf<OutboxDoc>(stored);
        byNamespace.set(namespace, [...(byNamespace.get(namespace) ?? []), doc]);
      }
      for (const [namespace, docs] of byNamespace) {
        const withEntries = docs.filter((doc) => (doc.outbox?.length ?? 0) > 0);
        if (withEntries.length > 0) this.log.info({ collection: name, namespace, documents: withEntries.length }, "re-journaling outbox entries left by an interrupted transition");
        await this.flush(namespace, name, withEntries);
        // Documents whose outbox was emptied but whose marker remained.
        this.scheduleClear(namespace, name, docs.filter((doc) => (doc.outbox?.length ?? 0) === 0));
        repaired += withEntries.length;
      }
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

  private remember(eventId: string, seq: number): void {
    this.journaled.set(eventId, seq);
    if (this.journaled.size > REMEMBERED_EVENTS) {
      for (const oldest of this.journaled.keys()) {
        this.journaled.delete(oldest);
        if (this.journaled.size <= REMEMBERED_EVENTS * 0.9) break;
      }
    }
  }

  private scheduleClear(namespace: string, collection: string, docs: OutboxDoc[]): void {
    if (docs.length === 0) return;
    let byCollection = this.toClear.get(namespace);
    if (!byCollection) this.toClear.set(namespace, (byCollection = new Map()));
    let byDoc = byCollection.get(collection);
    if (!byDoc) byCollection.set(collection, (byDoc = new Map()));
    for (const doc of docs) {
      const known = byDoc.get(doc._id);
      byDoc.set(doc._id, known === undefined || (doc.outbox_n ?? 0) > known ? doc.outbox_n : known);
    }
    if (!this.clearTimer) {
      this.clearTimer = setTimeout(() => {
        this.clearTimer = undefined;
        this.clearing = this.clearing.then(() => this.clearNow());
      }, this.options.clearDelayMs ?? 5);
      this.clearTimer.unref?.();
    }
  }

  /**
   * One bulk write per namespace and collection: each document's outbox is
   * removed only if nothing was pushed since its flush (outbox_n unchanged);
   * otherwise the newer transition's flush clears it later. Documents of an
   * earlier version have no outbox_n and are cleared as they are.
   */
  private async clearNow(): Promise<void> {
    const batches = [...this.toClear].flatMap(([namespace, byCollection]) => [...byCollection].map(([name, byDoc]) => ({ namespace, name, byDoc })));
    this.toClear.clear();
    for (const { namespace, name, byDoc } of batches) {
      const collection = this.namespaced(namespace).collection<OutboxDoc>(name);
      const operations = [...byDoc].map(([_id, n]) => ({
        updateOne: {
          filter: { _id, outbox_n: n === undefined ? { $exists: false } : n },
          update: { $unset: { outbox: "", outbox_at: "", outbox_n: "" } },
        },
      }));
      try {
        await collection.bulkWrite(operations as Parameters<typeof collection.bulkWrite>[0]);
      } catch (error) {
        // Harmless: the repair sweep re-appends (a no-op) and clears later.
        this.log.warn({ collection: name, namespace, error: error instanceof Error ? error.message : String(error) }, "could not clear flushed outbox entries; the repair sweep will");
      }
    }
  }
}

/** One namespace's outbox: what its use cases flush through. */
export class NamespaceOutbox {
  constructor(
    private readonly outbox: Outbox,
    readonly namespace: string,
  ) {}

  /** Registration is store-wide (see Outbox.register): the collection's documents of every namespace. */
  register(collection: string, materializer?: Materializer): Promise<void> {
    return this.outbox.register(collection, materializer);
  }

  /** See Outbox.flush: `docs` as the namespace's view returned them. */
  flush(collection: string, docs: ReadonlyArray<OutboxDoc | null | undefined>): Promise<Map<string, number>> {
    return this.outbox.flush(this.namespace, collection, docs);
  }
}
