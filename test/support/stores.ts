/**
 * The storage backends every backend-parameterised suite runs against: memory
 * always, mongo when the global setup found a MongoDB (otherwise its tests are
 * reported as skipped and the setup printed why).
 */
import { inject } from "vitest";
import { randomUUID } from "node:crypto";
import { MemoryStore } from "../../src/store/memory/store.js";
import { MongoStore } from "../../src/store/mongo/store.js";
import type { Store } from "../../src/store/port.js";

export interface StoreBackend {
  name: "memory" | "mongo";
  available: boolean;
  /** A fresh, empty store. */
  open(): Promise<Store>;
  /**
   * A second connection to the same data (a new client for mongo). The memory
   * backend lives in one process, so it returns the same store.
   */
  reconnect(store: Store): Promise<Store>;
  /** Closes and discards the store's data. */
  dispose(store: Store): Promise<void>;
}

const databases = new WeakMap<Store, string>();

export function storeBackends(): StoreBackend[] {
  const uri = inject("mongodbUri");
  return [
    {
      name: "memory",
      available: true,
      open: async () => new MemoryStore(),
      reconnect: async (store) => store,
      dispose: async (store) => store.close(),
    },
    {
      name: "mongo",
      available: uri !== "",
      open: async () => {
        const database = `mailroom_test_${randomUUID().slice(0, 8)}`;
        const store = await MongoStore.connect(uri, database);
        databases.set(store, database);
        return store;
      },
      reconnect: async (store) => {
        const database = databases.get(store);
        if (!database) throw new Error("reconnect: unknown store");
        const again = await MongoStore.connect(uri, database);
        databases.set(again, database);
        return again;
      },
      dispose: async (store) => {
        if (store instanceof MongoStore) await store.dropDatabase().catch(() => undefined);
        await store.close();
      },
    },
  ];
}
