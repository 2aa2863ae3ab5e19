/**
 * Two server instances (engines) on one fresh store of a backend, for each
 * test of the enclosing suite, with a manual clock; stopped and the store
 * discarded after each test.
 */
import { afterEach, beforeEach } from "vitest";
import type { Engine, EngineOptions } from "../../src/engine/engine.js";
import type { Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "./engines.js";
import type { StoreBackend } from "./stores.js";

export interface TwoInstances {
  store: Store;
  harness: EngineHarness;
  one: Engine;
  two: Engine;
}

export function useTwoInstances(backend: StoreBackend, defaults: EngineOptions = {}): () => TwoInstances {
  let current: TwoInstances | undefined;
  beforeEach(async () => {
    const store = await backend.open();
    const harness = engineHarness(store, defaults);
    current = { store, harness, one: await harness.instance(), two: await harness.instance() };
  });
  afterEach(async () => {
    if (!current) return;
    await current.harness.stopAll();
    await backend.dispose(current.store);
    current = undefined;
  });
  return () => {
    if (!current) throw new Error("the instances start in beforeEach: use them inside tests");
    return current;
  };
}
