/**
 * Many conditional transitions of different documents in as few round trips
 * as they allow: one alone is a `findOneAndUpdate` (which returns the
 * document); several are one unordered bulk write, then one read of them all.
 * Whether a transition won is read off the document: its update pushed an
 * outbox entry with a fresh event id, which is in the document exactly when
 * the update applied (an outbox is cleared only after its entries are
 * journaled, which happens after this read).
 */
import { type BulkUpdate, type Collection, DuplicateKeyError, type Filter, type UpdateFilter } from "../../store/port.js";
import type { OutboxFields } from "../outbox.js";

export interface Transition<T> {
  filter: Filter<T>;
  update: UpdateFilter<T>;
  /** The event id of the outbox entry the update pushes. */
  eventId: string;
}

export interface TransitionOutcome<T> {
  /** The document after the transition if it won; else as it is now (null when it does not exist). */
  doc: T | null;
  won: boolean;
  /** The unique index that refused the transition, if one did. */
  refusedBy?: string;
}

type Transitionable = { _id: string } & OutboxFields;

export async function applyTransitions<T extends Transitionable>(collection: Collection<T>, transitions: Transition<T>[]): Promise<TransitionOutcome<T>[]> {
  if (transitions.length === 0) return [];
  if (transitions.length === 1) {
    const [only] = transitions;
    let refusedBy: string | undefined;
    try {
      const doc = await collection.findOneAndUpdate(only!.filter, only!.update);
      if (doc) return [{ doc, won: true }];
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
      refusedBy = error.index;
    }
    // Lost: the document as it is now explains why.
    const current = await collection.findOne({ _id: idOf(only!.filter) } as Filter<T>);
    return [{ doc: current, won: false, ...(refusedBy ? { refusedBy } : {}) }];
  }
  const result = await collection.bulkWrite(transitions.map(({ filter, update }) => ({ updateOne: { filter, update } })) as BulkUpdate<T>[]);
  const refused = new Map(result.duplicates.map((d) => [d.position, d.index]));
  const ids = [...new Set(transitions.map((t) => idOf(t.filter)))];
  const docs = new Map((await collection.find({ _id: { $in: ids } } as Filter<T>, { readOwnWrites: true })).map((doc) => [doc._id, doc]));
  return transitions.map((transition, i) => {
    const doc = docs.get(idOf(transition.filter)) ?? null;
    const won = doc?.outbox?.some((entry) => entry.event_id === transition.eventId) ?? false;
    return { doc, won, ...(refused.has(i) ? { refusedBy: refused.get(i) } : {}) };
  });
}

function idOf<T>(filter: Filter<T>): string {
  const id = (filter as { _id?: unknown })._id;
  if (typeof id !== "string") throw new Error("a transition's filter names its document by _id");
  return id;
}
