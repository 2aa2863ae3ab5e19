/**
 * The memory backend: the storage port in process, with MongoDB's query and
 * update semantics (mingo) and an emulated change stream. Nothing survives the
 * process; the server says so when it runs on it.
 */
import { type ChangeStream, type Collection, type Doc, type Durability, type Store, StoreUnavailableError, type WatchOptions } from "../port.js";
import { ChangeLog } from "./change-log.js";
import { MemoryCollection } from "./collection.js";

export interface MemoryStoreOptions {
  /** Changes retained for resuming change streams (default 50,000). */
  changeLogCapacity?: number;
}

export class MemoryStore implements Store {
  readonly backend = "memory" as const;
  readonly durability: Durability = {
    durable: false,
    description: "in process memory only: every acknowledged write is lost when the process exits",
  };
  private readonly collections = new Map<string, MemoryCollection<Doc>>();
  private readonly changes: ChangeLog;
  private closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.changes = new ChangeLog("mailroom", options.changeLogCapacity);
  }

  collection<T extends Doc>(name: string): Collection<T> & MemoryCollection<T> {
    let collection = this.collections.get(name);
    if (!collection) {
      collection = new MemoryCollection<Doc>(name, this.changes);
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
