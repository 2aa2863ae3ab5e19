/**
 * What the mailbox costs in store operations (on MongoDB each is a majority
 * round trip), on every backend: batches and concurrent calls share their
 * round trips, and long polls are woken only as many as there is work for.
 * The figures are upper bounds: on MongoDB, where each operation takes longer,
 * more concurrent calls share each batch, never fewer.
 */
import { afterEach, beforeEach, describe, expect, it, onTestFinished } from "vitest";
import type { EnqueueCommand } from "../../src/domain/dispatch/commands.js";
import type { Engine } from "../../src/engine/engine.js";
import type { DispatchDoc } from "../../src/engine/mailbox/records.js";
import { CountingStore } from "../support/counting-store.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { storeBackends } from "../support/stores.js";

const LEASE = 30_000;

function commands(count: number, threads: number, offset = 0): EnqueueCommand[] {
  return Array.from({ length: count }, (_, i) => ({ threadId: `t${(offset + i) % threads}`, priority: 128, maxAttempts: 5, schedule: undefined }));
}

async function ackAll(engine: Engine, claimed: DispatchDoc[]): Promise<number> {
  const results = await engine.mailbox.ackMany(claimed.map((d) => ({ dispatchId: d._id, claimToken: d.claim_token! })));
  return results.filter((r) => !(r instanceof Error)).length;
}

describe.each(storeBackends())("mailbox store operations: $name backend", (backend) => {
  let counted: CountingStore;
  let harness: EngineHarness;
  let engine: Engine;

  beforeEach(async () => {
    if (!backend.available) return;
    counted = new CountingStore(await backend.open());
    harness = engineHarness(counted);
    engine = await harness.instance();
    counted.reset();
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(counted.inner);
  });

  describe.skipIf(!backend.available)("per acked job", () => {
    it("the batch path (EnqueueBatch 100, Claim 50, AckBatch) costs at most 2 store operations per job, whatever the number of threads", async () => {
      let acked = 0;
      for (let round = 0; round < 5; round++) {
        await engine.mailbox.enqueue(commands(100, 60, round * 100));
        for (let c = 0; c < 4 && acked < (round + 1) * 100; c++) {
          const claimed = await engine.mailbox.claim({ consumerId: "w", leaseMs: LEASE, limit: 50, waitMs: 0 });
          acked += await ackAll(engine, claimed);
        }
      }
      await engine.outbox.drain();
      expect(acked).toBe(500);
      expect(counted.total() / acked).toBeLessThanOrEqual(2);
    });

    it("the unary path (Enqueue, Claim limit 1, Ack) at 16 concurrent workers costs at most 8 store operations per job", async () => {
      const jobs = 320;
      let enqueued = 0;
      let acked = 0;
      const worker = async (w: number) => {
        while (enqueued < jobs) {
          enqueued++;
          await engine.mailbox.enqueue(commands(1, 1000, enqueued));
          const [claimed] = await engine.mailbox.claim({ consumerId: `w${w}`, leaseMs: LEASE, limit: 1, waitMs: 0 });
          if (claimed) {
            await engine.mailbox.ack({ dispatchId: claimed._id, claimToken: claimed.claim_token! });
            acked++;
          }
        }
      };
      await Promise.all(Array.from({ length: 16 }, (_, w) => worker(w)));
      // Whatever the workers raced past is claimed and acked now.
      for (let claimed = await engine.mailbox.claim({ consumerId: "late", leaseMs: LEASE, limit: 100, waitMs: 0 }); claimed.length > 0; claimed = await engine.mailbox.claim({ consumerId: "late", leaseMs: LEASE, limit: 100, waitMs: 0 })) {
        acked += await ackAll(engine, claimed);
      }
      await engine.outbox.drain();
      expect(acked).toBe(jobs);
      expect(counted.total() / acked).toBeLessThanOrEqual(8);
    });

    it("a claim that takes a thread's last queued dispatch marks the thread idle without reading the queue again", async () => {
      await engine.mailbox.enqueue(commands(1, 1));
      counted.reset();
      const [claimed] = await engine.mailbox.claim({ consumerId: "w", leaseMs: LEASE, limit: 1, waitMs: 0 });
      expect(counted.counts.get("dispatches.findOne")).toBeUndefined();
      await engine.mailbox.ack({ dispatchId: claimed!._id, claimToken: claimed!.claim_token! });
      // Idle: the next claim finds no candidate thread and stops there.
      counted.reset();
      expect(await engine.mailbox.claim({ consumerId: "w", leaseMs: LEASE, limit: 1, waitMs: 0 })).toEqual([]);
      expect(counted.total()).toBe(1);
    });
  });

  describe.skipIf(!backend.available)("waiting claims", () => {
    it("1,000 waiting claims and a batch of 100 dispatches: each dispatch is claimed once, by a woken claim, and only about as many claims wake as there are dispatches", async () => {
      const leave = new AbortController();
      onTestFinished(() => leave.abort());
      const waiting = Array.from({ length: 1000 }, (_, w) => engine.mailbox.claim({ consumerId: `w${w}`, leaseMs: LEASE, limit: 1, waitMs: 60_000 }, leave.signal));
      // Every claim found nothing and waits.
      while (engine.signals.waiting < 1000) await new Promise((resolve) => setImmediate(resolve));
      counted.reset();
      await engine.mailbox.enqueue(commands(100, 100));
      while (engine.signals.waiting > 900) await new Promise((resolve) => setImmediate(resolve));
      const woken: DispatchDoc[][] = [];
      for (const claim of waiting) {
        // The woken ones answer; the others are still waiting (and are not awaited).
        void claim.then((claimed) => woken.push(claimed));
      }
      while (woken.length < 100) await new Promise((resolve) => setImmediate(resolve));
      const claimed = woken.flat();
      expect(new Set(claimed.map((d) => d._id)).size).toBe(100);
      expect(claimed).toHaveLength(100);
      expect(engine.signals.waiting).toBe(900);
      // A woken claim shares its batch with the others: far fewer store operations than woken claims.
      expect(counted.total("dispatches.") + counted.total("threads.")).toBeLessThan(100);
    });
  });
});
