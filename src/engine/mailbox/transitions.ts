/**
 * Many conditional transitions of different documents in as few round trips
 * as they allow: one alone is a `findOneAndUpdate` (which returns the
 * document); several are one unordered bulk write, then one read of them all.
 * Whether a transition won is read off the document: its update pushed an
 * outbox entry with a fresh event id, which is in the document exactly when
 * the update applied (an outbox is cleared only after its entries are
 * journaled, which happens after this read).
 *
 * The read may also see later transitions of a document (another instance
 * claimed a dispatch this sweep had just requeued): the answer must be the
 * document as this transition left it, as `findOneAndUpdate` would give it.
 * A transition that knows the document it applies to (`from`: its
 * conditions pin every field its update does not write) gets that document
 * with its update applied in that case.
 */
import { type BulkUpdate, type Collection, DuplicateKeyError, type Filter, type UpdateFilter } from "../../store/port.js";
import type { OutboxFields } from "../outbox.js";

export interface Transition<T> {
  filter: Filter<T>;
  update: UpdateFilter<T>;
  /** The event id of the (first) outbox entry the update pushes. */
  eventId: string;
  /** How many outbox entries the update pushes (1 when omitted). */
  pushed?: number;
  /** The document the update applies to, as read (see above). */
  from?: T;
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
    const entries = doc?.outbox ?? [];
    const at = entries.findIndex((entry) => entry.event_id === transition.eventId);
    const won = at >= 0;
    const pushed = transition.pushed ?? 1;
    const movedOn = won && at + pushed < entries.length;
    const answer = movedOn && transition.from ? applied(transition.from, transition.update, entries.slice(at, at + pushed)) : doc;
    return { doc: answer, won, ...(refused.has(i) ? { refusedBy: refused.get(i) } : {}) };
  });
}

/**
 * `from` with an update of the engine's own applied: top-level $set, $unset,
 * $inc, and the outbox operators (which leave `pushed`, this transition's
 * entries, as the outbox: earlier entries are journaled already).
 */
function applied<T extends Transitionable>(from: T, update: UpdateFilter<T>, pushed: NonNullable<OutboxFields["outbox"]>): T {
  const doc = { ...from } as Record<string, unknown>;
  const ops = update as Record<string, Record<string, unknown> | undefined>;
  for (const [field, value] of Object.entries(ops.$set ?? {})) doc[field] = value;
  for (const field of Object.keys(ops.$unset ?? {})) delete doc[field];
  for (const [field, value] of Object.entries(ops.$inc ?? {})) if (field !== "outbox_n") doc[field] = ((doc[field] as number | undefined) ?? 0) + (value as number);
  doc.outbox = pushed;
  return doc as T;
}

function idOf<T>(filter: Filter<T>): string {
  const id = (filter as { _id?: unknown })._id;
  if (typeof id !== "string") throw new Error("a transition's filter names its document by _id");
  return id;
}
