/**
 * A pool's snapshot and its cursor agree under concurrent changes: a change
 * made while the snapshot is being read is either in the snapshot or after
 * its cursor (so WatchPool after the cursor shows it), never neither.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseConfig, parseMember } from "../../src/domain/pool/pool.js";
import type { Engine } from "../../src/engine/engine.js";
import type { Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { GatedStore } from "../support/gated-store.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-1";

function join(engine: Engine, runId: string) {
  return engine.pools.join(POOL, parseMember("member", { $typeName: "mailroom.v1.AgentPoolMember", runId, agentId: "agent", policyRefs: [], topics: [] }));
}

describe.each(storeBackends())("pool snapshots on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("a change made while a snapshot is read", () => {
    let store: Store;
    let harness: EngineHarness;
    let writer: Engine;

    beforeEach(async () => {
      store = await backend.open();
      harness = engineHarness(store);
      writer = await harness.instance();
      await writer.pools.open(POOL, parseConfig(undefined));
      await join(writer, "run-1");
    });
    afterEach(async () => {
      await harness.stopAll();
      await backend.dispose(store);
    });

    it("is in the snapshot when its record is at or before the snapshot's cursor", async () => {
      const view = new GatedStore(store, "reader");
      const side = engineHarness(view);
      try {
        const reader = await side.instance();
        let joined: { seq: number } | undefined;
        view.gate = async (label) => {
          if (label !== "reader events.findOne") return;
          view.gate = undefined;
          // The snapshot is about to read the pool's latest position: a run joins first.
          joined = await join(writer, "run-2");
        };
        const snapshot = await reader.pools.snapshot(POOL, 10);
        expect(joined, "the join ran while the snapshot was read").toBeDefined();
        expect(Number(snapshot.cursor)).toBeGreaterThanOrEqual(joined!.seq);
        expect(snapshot.members.map((m) => m.runId)).toEqual(["run-1", "run-2"]);
      } finally {
        await side.stopAll();
      }
    });
  });
});
