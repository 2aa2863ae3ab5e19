/**
 * The availability clock: delayed work is signalled when it comes due, with
 * the background timers running, also when time moves on while a check runs.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../../src/engine/engine.js";
import { DISPATCHES } from "../../src/engine/mailbox/records.js";
import { DispatchSignalReason, type WorkSignal } from "../../src/engine/mailbox/work-signals.js";
import { InterceptedStore } from "../../src/store/intercept.js";
import type { Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { storeBackends } from "../support/stores.js";

const DELAY_MS = 50;

/** The next signal for the dispatch, however long the background timers take to send it (the test's timeout bounds the wait). */
function nextSignal(engine: Engine, dispatchId: string): Promise<WorkSignal> {
  return new Promise((resolve) => {
    const stop = engine.signals.listen(DEFAULT_NAMESPACE, (signal) => {
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
    // The due-work query (delayed dispatches up to now) takes a millisecond: the clock reads after it are one later.
    const slowDueWork = new InterceptedStore(store, {
      operation: async (call) => {
        const found = await call.run();
        const filter = call.args[0] as { delayed_until?: { $lte?: number } };
        if (call.collection === DISPATCHES && call.operation === "find" && filter.delayed_until?.$lte !== undefined) harness.clock.advance(1);
        return found;
      },
    });
    harness = engineHarness(slowDueWork);
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(store);
  });

  it.skipIf(!backend.available)("signals a dispatch that came due while the previous check was querying", async () => {
    const engine = await harness.instance({ background: true });

    const [outcome] = await engine.mailbox.enqueue([{ threadId: "t1", priority: 128, maxAttempts: 5, schedule: { delayMs: DELAY_MS } }]);
    if (!outcome || "error" in outcome) throw new Error("enqueue failed");
    // The timer (DELAY_MS of real time) fires a millisecond before the dispatch is due.
    harness.clock.advance(DELAY_MS - 1);

    const signal = await nextSignal(engine, outcome.dispatch._id);
    expect(signal).toEqual({ threadId: "t1", dispatchId: outcome.dispatch._id, reason: DispatchSignalReason.AVAILABLE });
  });
});
