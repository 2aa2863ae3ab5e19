/**
 * Documents written before namespaces have no `ns`: they are the default
 * namespace's (whose ids were always stored unqualified, so they keep their
 * `_id`s). Once, at start-up, each collection is walked in `_id` order a
 * batch at a time (one indexed read and at most one update a batch; nothing
 * is read twice), and every document without `ns` gets `ns: "default"`. Then
 * the collection's indexes of before namespaces, which the namespace-first
 * ones replace, are dropped (they are kept until then: their uniqueness
 * covers the documents not stamped yet), and the collection is marked done,
 * so later start-ups cost one read in all (a new deployment is marked done
 * at once).
 *
 * Dispatches queued with a delay also get `delayed_until` (which the
 * availability clock's store-wide index holds): earlier versions found them
 * by comparing fields instead.
 *
 * Instances of an earlier version must be stopped before one of this version
 * starts: what they write after a collection is marked done has no `ns` and
 * is seen by no namespace.
 */
import { DEFAULT_NAMESPACE } from "../domain/auth/namespaces.js";
import { type BulkUpdate, type Collection, type Doc, type DocId, type IndexSpec, indexName, type Store } from "../store/port.js";
import { JOURNAL_COUNTER, JOURNAL_INDEXES_BEFORE_NAMESPACES } from "./journal/journal.js";
import { COUNTERS, EVENTS } from "./journal/records.js";
import type { Logger } from "./logger.js";
import { CHANNEL_INDEXES, COMMAND_INDEXES, LIVE_CHANNELS, LIVE_COMMANDS } from "./mailbox/live.js";
import { DISPATCH_INDEXES, DISPATCH_SWEEPER_INDEXES, DISPATCHES, type DispatchDoc, THREAD_INDEXES, THREADS } from "./mailbox/records.js";
import { DISPATCH_SIGNALS } from "./mailbox/signal-receipts.js";
import { MEMBER_INDEXES, MESSAGE_INDEXES, POOL_MEMBERS, POOL_MESSAGES, POOL_RECORDS, POOL_WAKES, POOLS, RECORD_INDEXES, WAKE_INDEXES } from "./pool/records.js";

/** The names of a namespace's indexes that replace unscoped ones of the same name (not those a sweeper keeps store-wide). */
function replaced(scoped: IndexSpec[], kept: IndexSpec[] = []): string[] {
  const keptNames = new Set(kept.map(indexName));
  return scoped.map(indexName).filter((name) => !keptNames.has(name));
}

/** A field an earlier version did not write, for a document that needs it: the update that adds it (conditional on its absence). */
type Upgrade = (doc: Doc) => BulkUpdate<Doc> | undefined;

/** A queued dispatch delayed when it was queued (an earlier version's test) gets `delayed_until`. */
const delayedUntil: Upgrade = (doc) => {
  const dispatch = doc as DispatchDoc;
  if (dispatch.status !== "QUEUED" || dispatch.delayed_until !== undefined || !(dispatch.available_at > dispatch.updated_at)) return undefined;
  return { updateOne: { filter: { _id: doc._id, status: "QUEUED", delayed_until: { $exists: false } }, update: { $set: { delayed_until: dispatch.available_at } } } };
};

/** Every collection whose documents carry a namespace, with the indexes of before namespaces to drop once it is stamped. */
export const NAMESPACED_COLLECTIONS: ReadonlyArray<{ name: string; replacedIndexes: string[]; upgrade?: Upgrade }> = [
  { name: DISPATCHES, replacedIndexes: replaced(DISPATCH_INDEXES, DISPATCH_SWEEPER_INDEXES), upgrade: delayedUntil },
  { name: THREADS, replacedIndexes: replaced(THREAD_INDEXES) },
  { name: LIVE_CHANNELS, replacedIndexes: replaced(CHANNEL_INDEXES) },
  { name: LIVE_COMMANDS, replacedIndexes: replaced(COMMAND_INDEXES) },
  { name: DISPATCH_SIGNALS, replacedIndexes: [] },
  { name: POOLS, replacedIndexes: [] },
  { name: POOL_MEMBERS, replacedIndexes: replaced(MEMBER_INDEXES) },
  { name: POOL_MESSAGES, replacedIndexes: replaced(MESSAGE_INDEXES) },
  { name: POOL_WAKES, replacedIndexes: replaced(WAKE_INDEXES) },
  { name: POOL_RECORDS, replacedIndexes: replaced(RECORD_INDEXES) },
  { name: EVENTS, replacedIndexes: JOURNAL_INDEXES_BEFORE_NAMESPACES },
];

interface MarkerDoc extends Doc {
  _id: string;
  value: number;
}

const MARKER_PREFIX = "namespaces_backfilled:";
const BATCH = 1000;

/** Stamps documents of before namespaces as the default namespace's; returns how many it stamped. Call after the namespace-first indexes exist. */
export async function backfillNamespaces(store: Store, log: Logger, batch = BATCH): Promise<number> {
  const markers = store.collection<MarkerDoc>(COUNTERS);
  const markerIds = NAMESPACED_COLLECTIONS.map(({ name }) => MARKER_PREFIX + name);
  const done = new Set((await markers.find({ _id: { $in: [...markerIds, JOURNAL_COUNTER] } })).map((doc) => doc._id));
  if (done.size === 0) {
    // A new deployment (no journal counter: every write journals an event, and the counter is never deleted) has nothing to stamp.
    await markers.bulkWrite(markerIds.map((_id) => ({ updateOne: { filter: { _id }, update: { $set: { value: 1 } }, upsert: true } })));
    return 0;
  }
  let total = 0;
  for (const { name, replacedIndexes, upgrade } of NAMESPACED_COLLECTIONS) {
    if (done.has(MARKER_PREFIX + name)) continue;
    const stamped = await stampCollection(store.collection<Doc>(name), batch, upgrade);
    if (stamped > 0) log.info({ collection: name, documents: stamped, namespace: DEFAULT_NAMESPACE }, "documents written before namespaces now belong to the default namespace");
    await store.collection(name).dropIndexes(replacedIndexes);
    await markers.updateOne({ _id: MARKER_PREFIX + name }, { $set: { value: 1 } }, { upsert: true });
    total += stamped;
  }
  return total;
}

async function stampCollection(collection: Collection<Doc>, batch: number, upgrade?: Upgrade): Promise<number> {
  let stamped = 0;
  // Bounded: each round reads the next batch after the last one's end.
  for (let after: DocId | undefined; ;) {
    const page = await collection.find(after === undefined ? {} : { _id: { $gt: after } }, { sort: { _id: 1 }, limit: batch });
    const unstamped = page.filter((doc) => !("ns" in doc)).map((doc) => doc._id);
    if (unstamped.length > 0) {
      const { modifiedCount } = await collection.updateMany({ _id: { $in: unstamped }, ns: { $exists: false } }, { $set: { ns: DEFAULT_NAMESPACE } });
      stamped += modifiedCount;
    }
    const upgrades = upgrade ? page.flatMap((doc) => upgrade(doc) ?? []) : [];
    if (upgrades.length > 0) await collection.bulkWrite(upgrades);
    if (page.length < batch) return stamped;
    after = page[page.length - 1]!._id;
  }
}
