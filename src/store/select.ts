/**
 * Which store a process runs on, exactly as DESIGN.md says: `MONGODB_URI` when
 * given; otherwise a single-node replica set from mongodb-memory-server;
 * otherwise (no network, no binary) the memory backend, said loudly.
 */
import { MemoryStore } from "./memory/store.js";
import { MongoStore } from "./mongo/store.js";
import { startEphemeralReplicaSet } from "./mongo/memory-server.js";
import type { Store } from "./port.js";

export type StoreChoice = "auto" | "mongo" | "memory";

export interface StoreSelection {
  store: StoreChoice;
  /** A MongoDB replica set URI (the `MONGODB_URI` environment variable). */
  mongodbUri?: string;
  /** Database name on that MongoDB. */
  mongodbDatabase: string;
  /** Where a server-started mongod keeps its files (then durable); temporary files, not durable, when omitted. */
  dataDir?: string;
  /** The time bound of one store call (--store-timeout-ms). */
  timeoutMs?: number;
}

export interface SelectedStore {
  store: Store;
  /** Where the data lives, for the start-up log, e.g. "MONGODB_URI mongodb://h:27017". */
  location: string;
  /** Set when the preferred backend could not be had and another one was used. */
  fallbackReason?: string;
}

export class StoreSelectionError extends Error {}

export async function selectStore(selection: StoreSelection): Promise<SelectedStore> {
  if (selection.store === "memory") {
    return { store: new MemoryStore(), location: "process memory" };
  }
  if (selection.mongodbUri) {
    const store = await MongoStore.connect(selection.mongodbUri, selection.mongodbDatabase, { timeoutMs: selection.timeoutMs });
    return { store, location: `MONGODB_URI ${redactUri(selection.mongodbUri)}` };
  }
  const started = await startEphemeralReplicaSet({ dataDir: selection.dataDir });
  if (started.ok) {
    const store = await MongoStore.connect(started.uri, selection.mongodbDatabase, { onClose: started.stop, timeoutMs: selection.timeoutMs, durability: started.durability });
    const files = selection.dataDir ? `files in ${selection.dataDir}` : "temporary files, deleted when it stops";
    return { store, location: `mongodb-memory-server single-node replica set ${started.uri} (${files})` };
  }
  if (selection.store === "mongo") {
    throw new StoreSelectionError(`--store mongo: MONGODB_URI is not set and mongodb-memory-server could not start mongod: ${started.reason}`);
  }
  return { store: new MemoryStore(), location: "process memory", fallbackReason: `MONGODB_URI is not set and mongodb-memory-server could not start mongod (${started.reason})` };
}

/** Hides credentials in a connection string before it is logged. */
export function redactUri(uri: string): string {
  return uri.replace(/\/\/[^@/]*@/, "//***@");
}
