/**
 * Documents written before namespaces have no `ns`: they are the default
 * namespace's (whose ids were always stored unqualified, so they keep their
 * `_id`s). Once, at start-up, each collection is walked in `_id` order a
 * batch at a time (one indexed read and at most one update a batch; nothing
 * is read twice), and every document without `ns` gets `ns: "default"`. Then
 * the collection's indexes of before namespaces, which the namespace-first
 * ones replace, are dropped (they are kept until then: their uniqueness
 * covers the documents not stamped yet), and the collection is marked done,
 * so later start-ups cost one read in all.
 *
 * Instances of an earlier version must be stopped before one of this version
 * starts: what they write after a collection is marked done has no `ns` and
 * is seen by no namespace.
 */
import { DEFAULT_NAMESPACE } from "../domain/auth/namespaces.js";
import { type Collection, type Doc, type DocId, type IndexSpec, indexName, type Store } from "../store/port.js";
import { JOURNAL_INDEXES_BEFORE_NAMESPACES } from "./journal/journal.js";
import { COUNTERS, EVENTS } from "./journal/records.js";
import type { Logger } from "./logger.js";
import { CHANNEL_INDEXES, COMMAND_INDEXES, LIVE_CHANNELS, LIVE_COMMANDS } from "./mailbox/live.js";
import { DISPATCH_INDEXES, DISPATCH_SWEEPER_INDEXES, DISPATCHES, THREAD_INDEXES, THREADS } from "./mailbox/records.js";
import { DISPATCH_SIGNALS } from "./mailbox/signal-receipts.js";
import { MEMBER_INDEXES, MESSAGE_INDEXES, POOL_MEMBERS, POOL_MESSAGES, POOL_RECORDS, POOL_WAKES, POOLS, RECORD_INDEXES, WAKE_INDEXES } from "./pool/records.js";

/** The names of a namespace's indexes that replace unscoped ones of the same name (not those a sweeper keeps store-wide). */
function replaced(scoped: IndexSpec[], kept: IndexSpec[] = []): string[] {
  const keptNames = new Set(kept.map(indexName));
  return scoped.map(indexName).filter((name) => !keptNames.has(name));
}

/** Every collection whose documents carry a namespace, with the indexes of before namespaces to drop once it is stamped. */
export const NAMESPACED_COLLECTIONS: ReadonlyArray<{ name: string; replacedIndexes: string[] }> = [
  { name: DISPATCHES, replacedIndexes: replaced(DISPATCH_INDEXES, DISPATCH_SWEEPER_INDEXES) },
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
  const done = new Set((await markers.find({ _id: { $in: NAMESPACED_COLLECTIONS.map(({ name }) => MARKER_PREFIX + name) } })).map((doc) => doc._id));
  let total = 0;
  for (const { name, replacedIndexes } of NAMESPACED_COLLECTIONS) {
    if (done.has(MARKER_PREFIX + name)) continue;
    const stamped = await stampCollection(store.collection<Doc>(name), batch);
    if (stamped > 0) log.info({ collection: name, documents: stamped, namespace: DEFAULT_NAMESPACE }, "documents written before namespaces now belong to the default namespace");
    await store.collection(name).dropIndexes(replacedIndexes);
    await markers.updateOne({ _id: MARKER_PREFIX + name }, { $set: { value: 1 } }, { upsert: true });
    total += stamped;
  }
  return total;
}

async function stampCollection(collection: Collection<Doc>, batch: number): Promise<number> {
  let stamped = 0;
  // Bounded: each round reads the next batch after the last one's end.
  for (let after: DocId | undefined; ;) {
    const page = await collection.find(after === undefined ? {} : { _id: { $gt: after } }, { sort: { _id: 1 }, limit: batch });
    const unstamped = page.filter((doc) => !("ns" in doc)).map((doc) => doc._id);
    if (unstamped.length > 0) {
      const { modifiedCount } = await collection.updateMany({ _id: { $in: unstamped }, ns: { $exists: false } }, { $set: { ns: DEFAULT_NAMESPACE } });
      stamped += modifiedCount;
    }
    if (page.length < batch) return stamped;
    after = page[page.length - 1]!._id;
  }
}
