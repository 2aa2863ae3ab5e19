/**
 * The memory backend's emulated change stream: an ordered, bounded log of
 * change documents in MongoDB's shape, read by cursors that resume after a
 * token. Like MongoDB's oplog it forgets the oldest changes once full (by
 * count and by bytes: a change holds its inserted document, or the values
 * its update wrote, which stay in memory as long as the change does); a
 * cursor that must resume before them fails with ChangeStreamHistoryLostError.
 */
import {
  type ChangeEvent,
  type ChangeStream,
  ChangeStreamHistoryLostError,
  type Doc,
  type DocId,
  type ResumeToken,
  StoreError,
  type WatchOptions,
} from "../port.js";
import { compileFilter } from "./bson-order.js";
import type { ChangeSink, StoreChange } from "./collection.js";

/** A change as MongoDB's change stream documents it (what `$match` stages see). */
interface ChangeDocument {
  operationType: "insert" | "update" | "delete";
  ns: { db: string; coll: string };
  documentKey: { _id: DocId };
  fullDocument?: Record<string, unknown>;
  updateDescription?: { updatedFields: Record<string, unknown>; removedFields: string[] };
}

/**
 * A retained change, compact: its document shares the stored version (never
 * changed in place), its update the written values; MongoDB's change
 * document is built only when a stream reads it.
 */
interface Entry extends StoreChange {
  seq: number;
}

/** Bytes of changes retained when not told otherwise. */
export const DEFAULT_CHANGE_LOG_BYTES = 64 * 1024 * 1024;

/**
 * Changes retained when not told otherwise. In-process streams read as
 * changes come: a stream behind by more than this gets
 * ChangeStreamHistoryLostError and its owner reopens it and catches up
 * from the collections (as after a MongoDB oplog rollover).
 */
export const DEFAULT_CHANGE_LOG_CAPACITY = 10_000;

export function tokenFor(seq: number): ResumeToken {
  return { _data: seq.toString(16).padStart(16, "0") };
}

function seqOf(token: ResumeToken): number {
  const data = token._data;
  if (typeof data !== "string" || !/^[0-9a-f]{16}$/.test(data)) throw new StoreError("invalid resume token");
  return Number.parseInt(data, 16);
}

export class ChangeLog implements ChangeSink {
  /** Retained entries are entries[head..]; the ones before were forgotten (dropped in chunks, not shifted on every write). */
  private entries: Entry[] = [];
  private head = 0;
  private bytes = 0;
  private lastSeq = 0;
  private waiters = new Set<() => void>();
  /** One `ns` value per collection, shared by the change documents built for it. */
  private readonly namespaces = new Map<string, { db: string; coll: string }>();

  constructor(
    private readonly database: string,
    /** How many changes are retained for resuming. */
    readonly capacity = DEFAULT_CHANGE_LOG_CAPACITY,
    /** How many bytes of changes are retained for resuming. */
    public maxBytes = DEFAULT_CHANGE_LOG_BYTES,
  ) {}

  emit(change: StoreChange): void {
    const entry = change as Entry;
    entry.seq = ++this.lastSeq;
    this.entries.push(entry);
    this.bytes += change.bytes;
    // Always keep the newest change, whatever its size.
    while (this.entries.length - this.head > 1 && (this.entries.length - this.head > this.capacity || this.bytes > this.maxBytes)) {
      this.bytes -= this.entries[this.head]!.bytes;
      this.entries[this.head++] = undefined as unknown as Entry;
    }
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  get headSeq(): number {
    return this.lastSeq;
  }

  /** Entries after `seq`, or undefined when some of them are no longer retained. */
  after(seq: number): Entry[] | undefined {
    const first = this.entries[this.head]?.seq ?? this.lastSeq + 1;
    if (seq < first - 1) return undefined;
    return this.entries.slice(this.head + seq - first + 1);
  }

  /** Resolves on the next change (or when `signal` is aborted). */
  next(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const wake = () => {
        signal.removeEventListener("abort", wake);
        this.waiters.delete(wake);
        resolve();
      };
      this.waiters.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  /** MongoDB's change document of an entry (what `$match` stages see). */
  document(entry: Entry): ChangeDocument {
    let ns = this.namespaces.get(entry.collection);
    if (!ns) this.namespaces.set(entry.collection, (ns = Object.freeze({ db: this.database, coll: entry.collection })));
    const change: ChangeDocument = { operationType: entry.operationType, ns, documentKey: { _id: entry.id } };
    if (entry.fullDocument) change.fullDocument = entry.fullDocument;
    if (entry.updated) change.updateDescription = { updatedFields: Object.fromEntries(entry.updated), removedFields: [...(entry.removed ?? [])] };
    return change;
  }

  open<T extends Doc>(options: WatchOptions, lookup: (collection: string, id: DocId) => Record<string, unknown> | undefined): ChangeStream<T> {
    const start = options.resumeAfter ? seqOf(options.resumeAfter) : this.lastSeq;
    return new MemoryChangeStream<T>(this, start, options, lookup);
  }
}

class MemoryChangeStream<T extends Doc> implements ChangeStream<T> {
  private position: number;
  private readonly closed = new AbortController();
  private readonly matcher: { test(doc: object): boolean } | undefined;
  private readonly collections: Set<string> | undefined;

  constructor(
    private readonly log: ChangeLog,
    start: number,
    private readonly options: WatchOptions,
    private readonly lookup: (collection: string, id: DocId) => Record<string, unknown> | undefined,
  ) {
    this.position = start;
    this.collections = options.collections ? new Set(options.collections) : undefined;
    this.matcher = options.match?.length ? compileFilter({ $and: options.match.map((stage) => stage) }) : undefined;
  }

  get resumeToken(): ResumeToken {
    return tokenFor(this.position);
  }

  async close(): Promise<void> {
    this.closed.abort();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChangeEvent<T>> {
    while (!this.closed.signal.aborted) {
      const pending = this.log.after(this.position);
      if (pending === undefined) {
        throw new ChangeStreamHistoryLostError(`change stream position ${this.position} is no longer retained (the memory change log keeps the last ${this.log.capacity} changes, at most ${this.log.maxBytes} bytes of them)`);
      }
      if (pending.length === 0) {
        await this.log.next(this.closed.signal);
        continue;
      }
      for (const entry of pending) {
        if (this.closed.signal.aborted) return;
        this.position = entry.seq;
        if (this.collections && !this.collections.has(entry.collection)) continue;
        const change = this.log.document(entry);
        if (this.matcher && !this.matcher.test(change)) continue;
        yield this.toEvent(entry.seq, change);
      }
    }
  }

  private toEvent(seq: number, change: ChangeDocument): ChangeEvent<T> {
    let fullDocument = change.fullDocument;
    if (change.operationType === "update" && this.options.fullDocument === "updateLookup") {
      fullDocument = this.lookup(change.ns.coll, change.documentKey._id);
    }
    return {
      token: tokenFor(seq),
      operationType: change.operationType,
      collection: change.ns.coll,
      documentKey: { ...change.documentKey },
      ...(fullDocument ? { fullDocument: structuredClone(fullDocument) as unknown as T } : {}),
      // Built for this read: its values are the stored ones, so the reader gets copies.
      ...(change.updateDescription ? { updateDescription: structuredClone(change.updateDescription) } : {}),
    };
  }
}
