/**
 * The availability clock: delayed work is signalled when it comes due, with
 * the background timers running, also when time moves on while a check runs.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../../src/engine/engine.js";
import type { DispatchDoc } from "../../src/engine/mailbox/records.js";
import { DispatchSignalReason, type WorkSignal } from "../../src/engine/mailbox/work-signals.js";
import type { Filter, FindOptions, Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { storeBackends } from "../support/stores.js";

const DELAY_MS = 50;

/** The next signal for the dispatch, however long the background timers take to send it (the test's timeout bounds the wait). */
function nextSignal(engine: Engine, dispatchId: string): Promise<WorkSignal> {
  return new Promise((resolve) => {
    const stop = engine.signals.listen((signal) => {
      if (signal.dispatchId !== dispatchId) return;
      stop();
      resolve(signal);
    });
  });
}

describe.each(storeBackends())("availability clock: $name backend", (backend) => {
  let store: Store;
  let harness: EngineHarness;

  beforeEach(async () => {
    if (!backend.available) return;
    store = await backend.open();
    harness = engineHarness(store);
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(store);
  });

  it.skipIf(!backend.available)("signals a dispatch that came due while the previous check was querying", async () => {
    const engine = await harness.instance({ background: true });
    const dispatches = engine.mailbox.dispatches;
    const find = dispatches.find.bind(dispatches);
    // The due-work query takes a millisecond: the clock reads after it are one later.
    dispatches.find = async (filter: Filter<DispatchDoc>, options?: FindOptions) => {
      const found = await find(filter, options);
      if ("$expr" in filter) harness.clock.advance(1);
      return found;
    };

    const [outcome] = await engine.mailbox.enqueue([{ threadId: "t1", priority: 128, maxAttempts: 5, schedule: { delayMs: DELAY_MS } }]);
    if (!outcome || "error" in outcome) throw new Error("enqueue failed");
    // The timer (DELAY_MS of real time) fires a millisecond before the dispatch is due.
    harness.clock.advance(DELAY_MS - 1);

    const signal = await nextSignal(engine, outcome.dispatch._id);
    expect(signal).toEqual({ threadId: "t1", dispatchId: outcome.dispatch._id, reason: DispatchSignalReason.AVAILABLE });
  });
});
