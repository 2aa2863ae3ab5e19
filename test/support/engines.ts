/**
 * Engines for engine-level tests: a manual clock, no background timers (tests
 * run sweeps themselves), and as many instances on one store as a test needs.
 */
import { ManualClock } from "../../src/domain/clock.js";
import { Engine, type EngineOptions } from "../../src/engine/engine.js";
import type { Store } from "../../src/store/port.js";

export interface EngineHarness {
  clock: ManualClock;
  /** Starts another instance on the same store and clock. */
  instance(options?: EngineOptions): Promise<Engine>;
  stopAll(): Promise<void>;
}

export function engineHarness(store: Store, defaults: EngineOptions = {}): EngineHarness {
  const clock = new ManualClock();
  const engines: Engine[] = [];
  return {
    clock,
    async instance(options = {}) {
      const engine = await Engine.start(store, { clock, background: false, journal: { holeTimeoutMs: 50 }, ...defaults, ...options });
      engines.push(engine);
      return engine;
    },
    async stopAll() {
      await Promise.all(engines.splice(0).map((engine) => engine.stop()));
    },
  };
}
