/**
 * The storage backends every backend-parameterised suite runs against: memory
 * always, mongo when the global setup found a MongoDB (otherwise its tests are
 * reported as skipped and the setup printed why), and, for the engine and
 * end-to-end suites that ask for it, the fault-injecting backend: memory seen
 * through a FaultStore that delays calls and breaks change streams after
 * losing changes (faults a correct engine hides completely), seeded by
 * MAILROOM_FAULT_SEED (default 1).
 */
import { inject } from "vitest";
import { randomUUID } from "node:crypto";
import { MemoryStore } from "../../src/store/memory/store.js";
import { MongoStore } from "../../src/store/mongo/store.js";
import type { Store } from "../../src/store/port.js";
import { type FaultPlan, FaultStore } from "./fault-store.js";

export interface StoreBackend {
  name: "memory" | "mongo" | "fault-injecting";
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

/** The seed of the fault-injecting backend's faults; print it with a failure to replay it. */
export const FAULT_SEED = Number(process.env.MAILROOM_FAULT_SEED ?? 1);

/**
 * Faults the engine must hide from its callers: slow calls and change streams
 * that lose changes, then fail in every way MongoDB's can. (Calls that fail
 * are for the invariant suites, whose clients retry.)
 */
export function transparentFaults(seed: number): FaultPlan {
  return { seed, delay: { rate: 0.05, maxMs: 3 }, streamBreak: { rate: 0.03, maxGap: 3 } };
}

function faultBackend(): StoreBackend {
  let instances = 0;
  return {
    name: "fault-injecting",
    available: true,
    open: async () => new FaultStore(new MemoryStore(), transparentFaults(FAULT_SEED)),
    // Another instance on the same data, with faults of its own.
    reconnect: async (store) => new FaultStore((store as FaultStore).inner, transparentFaults(FAULT_SEED + ++instances)),
    dispose: async (store) => store.close(),
  };
}

/** Memory and mongo; with `faults`, also the fault-injecting backend. */
export function storeBackends(options: { faults?: boolean } = {}): StoreBackend[] {
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
    ...(options.faults ? [faultBackend()] : []),
  ];
}
