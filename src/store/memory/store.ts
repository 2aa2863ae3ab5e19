/**
 * The memory backend: the storage port in process, with MongoDB's query and
 * update semantics (mingo) and an emulated change stream. Nothing survives the
 * process; the server says so when it runs on it.
 */
import { type ChangeStream, type Collection, type Doc, type Durability, type Store, StoreUnavailableError, type WatchOptions } from "../port.js";
import { MemoryBudget } from "./budget.js";
import { ChangeLog, DEFAULT_CHANGE_LOG_BYTES } from "./change-log.js";
import { MemoryCollection } from "./collection.js";

export interface MemoryStoreOptions {
  /** Changes retained for resuming change streams (default 10,000). */
  changeLogCapacity?: number;
  /** Approximate bytes of documents the store holds at most (default: no limit; the server sets --memory-store-max-bytes). */
  maxBytes?: number;
}

/** The change log may hold this share of the store's limit (and at least 1 MiB). */
const CHANGE_LOG_SHARE = 8;

export class MemoryStore implements Store {
  readonly backend = "memory" as const;
  readonly durability: Durability = {
    durable: false,
    description: "in process memory only: every acknowledged write is lost when the process exits",
  };
  private readonly collections = new Map<string, MemoryCollection<Doc>>();
  private readonly changes: ChangeLog;
  private readonly budget = new MemoryBudget();
  private closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.changes = new ChangeLog("mailroom", options.changeLogCapacity);
    if (options.maxBytes !== undefined) this.limitTo(options.maxBytes);
  }

  /**
   * Caps the approximate bytes of documents stored (a write past it gets
   * StoreFullError, see budget.ts) and, at an eighth of that, the change
   * log's bytes.
   */
  limitTo(maxBytes: number): void {
    this.budget.maxBytes = maxBytes;
    this.changes.maxBytes = Math.min(DEFAULT_CHANGE_LOG_BYTES, Math.max(1024 * 1024, Math.floor(maxBytes / CHANGE_LOG_SHARE)));
  }

  /** Approximate bytes of documents stored. */
  get usedBytes(): number {
    return this.budget.used;
  }

  collection<T extends Doc>(name: string): Collection<T> & MemoryCollection<T> {
    let collection = this.collections.get(name);
    if (!collection) {
      collection = new MemoryCollection<Doc>(name, this.changes, this.budget);
      this.collections.set(name, collection);
    }
    return collection as unknown as MemoryCollection<T>;
  }

  async watch<T extends Doc = Doc>(options: WatchOptions = {}): Promise<ChangeStream<T>> {
    return this.changes.open<T>(options, (collection, id) => this.collections.get(collection)?.lookup(id));
  }

  async ping(): Promise<void> {
    if (this.closed) throw new StoreUnavailableError("memory store is closed");
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
