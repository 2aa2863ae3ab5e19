/**
 * Pulled dispatch signals (seed: pull_dispatch_signals, DispatchSignalReceipt)
 * through the engine, on every backend, with two server instances on one
 * store: a signal for each dispatch that is claimable, delivered again until
 * acknowledged (each delivery counted), never to two pullers at once, on any
 * instance whichever enqueued it (even one that stopped since); and nothing
 * is written for signals until they are pulled.
 */
import { beforeEach, describe, expect, it } from "vitest";
import { DispatchSignalReason } from "../../gen/mailroom/v1/dispatch_pb.js";
import type { EnqueueCommand } from "../../src/domain/dispatch/commands.js";
import { parseReceipt, type PullCommand } from "../../src/domain/dispatch/signal-receipts.js";
import type { Engine } from "../../src/engine/engine.js";
import type { PulledSignal } from "../../src/engine/mailbox/signal-receipts.js";
import type { DispatchDoc } from "../../src/engine/mailbox/records.js";
import type { EngineHarness } from "../support/engines.js";
import { useTwoInstances } from "../support/instances.js";
import { storeBackends } from "../support/stores.js";

const LEASE_MS = 5_000;

async function enqueue(engine: Engine, threadId: string, extra: Partial<EnqueueCommand> = {}): Promise<DispatchDoc> {
  const [outcome] = await engine.mailbox.enqueue([{ threadId, priority: 128, maxAttempts: 5, schedule: undefined, ...extra }]);
  if (!outcome || "error" in outcome) throw new Error("enqueue failed");
  return outcome.dispatch;
}

/** A signal is a queued dispatch: once enqueued it is there for any instance (kept so the tests read as before). */
async function stored(_engine: Engine): Promise<void> {}

function pull(engine: Engine, command: Partial<PullCommand> = {}): Promise<PulledSignal[]> {
  return engine.signalReceipts.pull({ max: 10, expiresMs: LEASE_MS, waitMs: 0, ...command });
}

const receiptOf = (signal: PulledSignal) => parseReceipt(signal.receipt);

describe.each(storeBackends())("pulled dispatch signals on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("two instances", () => {
    const instances = useTwoInstances(backend);
    let harness: EngineHarness;
    let one: Engine;
    let two: Engine;

    beforeEach(() => {
      ({ harness, one, two } = instances());
    });

    it("a dispatch enqueued on one instance is a signal any instance pulls, first delivered with 0 redelivery attempts", async () => {
      const dispatch = await enqueue(one, "thread-1");
      await stored(two);
      const [signal, ...more] = await pull(two);
      expect(more).toEqual([]);
      expect(signal).toMatchObject({ threadId: "thread-1", dispatchId: dispatch._id, reason: DispatchSignalReason.ENQUEUED, redeliveryAttempts: 0, expiresAt: harness.clock.now() + LEASE_MS });
      expect(await pull(one)).toEqual([]); // leased
    });

    it("a signal not acknowledged comes back once its lease ends, with redelivery attempts one higher, and a fresh receipt", async () => {
      await enqueue(one, "thread-1");
      await stored(one);
      const [first] = await pull(one);
      harness.clock.advance(LEASE_MS);
      const [second] = await pull(two);
      expect(second).toMatchObject({ dispatchId: first!.dispatchId, redeliveryAttempts: 1 });
      expect(second!.receipt).not.toBe(first!.receipt);
      // The first receipt no longer holds; the second does.
      expect(await one.signalReceipts.ack(receiptOf(first!))).toBe(false);
      expect(await two.signalReceipts.ack(receiptOf(second!))).toBe(true);
      harness.clock.advance(LEASE_MS);
      expect(await pull(one)).toEqual([]);
    });

    it("an acknowledged signal is not delivered again; acknowledging it twice answers false the second time", async () => {
      await enqueue(one, "thread-1");
      await stored(one);
      const [signal] = await pull(one);
      expect(await one.signalReceipts.ack(receiptOf(signal!))).toBe(true);
      expect(await two.signalReceipts.ack(receiptOf(signal!))).toBe(false);
      harness.clock.advance(LEASE_MS * 2);
      expect(await pull(two)).toEqual([]);
    });

    it("a nacked signal is due again at once, or after its delay (the seed's nack_with_delay)", async () => {
      await enqueue(one, "thread-1");
      await stored(one);
      const [first] = await pull(one);
      expect(await one.signalReceipts.nack(receiptOf(first!), 0)).toBe(true);
      const [second] = await pull(two);
      expect(second).toMatchObject({ dispatchId: first!.dispatchId, redeliveryAttempts: 1 });
      expect(await two.signalReceipts.nack(receiptOf(second!), 2_000)).toBe(true);
      expect(await pull(one)).toEqual([]);
      harness.clock.advance(2_000);
      expect((await pull(one))[0]).toMatchObject({ redeliveryAttempts: 2 });
    });

    it("a dispatch available later is a signal due from then", async () => {
      await enqueue(one, "thread-1", { schedule: { delayMs: 10_000 } });
      await stored(two);
      expect(await pull(two)).toEqual([]);
      harness.clock.advance(10_000);
      expect((await pull(two))[0]).toMatchObject({ threadId: "thread-1", reason: DispatchSignalReason.AVAILABLE });
    });

    it("two pullers at once never get the same signal, and between them get every one", async () => {
      const dispatches = await Promise.all(Array.from({ length: 12 }, (_, i) => enqueue(i % 2 ? one : two, `thread-${i}`)));
      await stored(one);
      await stored(two);
      const [a, b] = await Promise.all([pull(one, { max: 10 }), pull(two, { max: 10 })]);
      const rest = await pull(one, { max: 10 });
      const ids = [...a, ...b, ...rest].map((s) => s.dispatchId);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids.sort()).toEqual(dispatches.map((d) => d._id).sort());
    });

    it("the dispatch becoming claimable again replaces its signal: the count starts again and an outstanding receipt no longer holds", async () => {
      const dispatch = await enqueue(one, "thread-1");
      await stored(one);
      const [old] = await pull(one);
      const [claimed] = await one.mailbox.claim({ consumerId: "w", leaseMs: 60_000, limit: 1, waitMs: 0, threadId: "thread-1" });
      await one.mailbox.nack({ dispatchId: dispatch._id, claimToken: claimed!.claim_token! }, undefined, "try again");
      await stored(two);
      const [fresh] = await pull(two);
      expect(fresh).toMatchObject({ dispatchId: dispatch._id, redeliveryAttempts: 0 });
      expect(await one.signalReceipts.ack(receiptOf(old!))).toBe(false);
    });

    it("is there for any instance, also once the instance that enqueued the dispatch has stopped", async () => {
      const dispatch = await enqueue(two, "thread-1");
      await two.stop();
      const three = await harness.instance();
      expect((await pull(three)).map((s) => s.dispatchId)).toEqual([dispatch._id]);
    });

    it("costs nothing until pulled: enqueuing, claiming and acking write no signal", async () => {
      const dispatch = await enqueue(one, "thread-1");
      const [claimed] = await one.mailbox.claim({ consumerId: "w", leaseMs: 60_000, limit: 1, waitMs: 0 });
      await one.mailbox.ack({ dispatchId: dispatch._id, claimToken: claimed!.claim_token! });
      expect(await one.signalReceipts.receipts.countDocuments({})).toBe(0);
      expect(await pull(one)).toEqual([]);
    });

    it("a pull waiting for a signal (long poll) returns once one is stored", async () => {
      const waiting = pull(two, { waitMs: 30_000 });
      const dispatch = await enqueue(one, "thread-1");
      expect((await waiting).map((s) => s.dispatchId)).toEqual([dispatch._id]);
    });

    it("receipts, settled or not, are deleted once unchanged for longer than the dispatch retention", async () => {
      await enqueue(one, "thread-1");
      await enqueue(one, "thread-2");
      const [settled, unsettled] = await pull(one, { max: 2 });
      await one.signalReceipts.ack(receiptOf(settled!));
      harness.clock.advance(7 * 86_400_000);
      await one.background.purge();
      expect(await one.signalReceipts.receipts.countDocuments({})).toBe(2);
      harness.clock.advance(1);
      await one.background.purge();
      expect(await one.signalReceipts.receipts.countDocuments({})).toBe(0);
      expect(unsettled).toBeDefined();
    });
  });
});
