/**
 * What the engine does when its store misbehaves (issue 11): change streams
 * that break after losing changes, writes slower than the journal's hole
 * timeout, positions that keep being closed. Each store backend is wrapped in
 * a FaultStore, which injects exactly the fault a test names.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AgentEventSchema, EventEnvelopeSchema, EventFamily, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { LiveDeliveryOutcome, LiveRunCommandSchema } from "../../gen/mailroom/v1/live_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { ChangeFeed } from "../../src/engine/change-feed.js";
import { Engine, type EngineOptions } from "../../src/engine/engine.js";
import { Journal } from "../../src/engine/journal/journal.js";
import { type EventDoc, type JournalDoc, pendingEvent } from "../../src/engine/journal/records.js";
import { silentLogger } from "../../src/engine/logger.js";
import { InterceptedStore } from "../../src/store/intercept.js";
import { type Store, StoreUnavailableError } from "../../src/store/port.js";
import { FaultStore, STREAM_FAULTS } from "../support/fault-store.js";
import { storeBackends } from "../support/stores.js";

function draft(eventId: string) {
  const event = create(AgentEventSchema, {
    envelope: create(EventEnvelopeSchema, { eventId, kind: EventKind.USAGE_RECORDED, family: EventFamily.USAGE, runId: "run-1" }),
  });
  return pendingEvent(event, 1_700_000_000_000);
}

describe.each(storeBackends())("the engine on a failing $name store", (backend) => {
  let store: Store;
  const engines: Engine[] = [];
  const clock = new ManualClock();
  const start = async (on: Store, options: EngineOptions = {}) => {
    const engine = await Engine.start(on, { clock, background: false, journal: { holeTimeoutMs: 50 }, ...options });
    engines.push(engine);
    return engine;
  };

  beforeEach(async () => {
    if (backend.available) store = await backend.open();
  });
  afterEach(async () => {
    await Promise.all(engines.splice(0).map((engine) => engine.stop()));
    if (store) await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("live commands after the change stream reopens", () => {
    it.each(STREAM_FAULTS)("reach a channel that stayed open, though they were stored while the stream was down (%s)", async (fault) => {
      const faults = new FaultStore(store, { seed: 1 });
      const receiver = await start(faults, { changeFeed: { retryDelayMs: 5 } });
      const sender = await start(store);
      const target = create(LiveRunCommandSchema, { target: { threadId: "thread-1", runId: "run-1" } }).target!;
      const channel = await receiver.scope(DEFAULT_NAMESPACE).live.open(target);
      // The receiver's stream loses what it reads from here on; then breaks.
      faults.streams.gap();
      const command = create(LiveRunCommandSchema, { commandId: "cmd-1", body: { case: "cancel", value: { reason: "stop" } } });
      expect((await sender.scope(DEFAULT_NAMESPACE).live.deliver(target, command)).outcome).toBe(LiveDeliveryOutcome.DELIVERED);
      const reopened = receiver.feed.reopened();
      faults.streams.break(fault);
      await reopened;
      expect(channel.queue.shift()?.commandId).toBe("cmd-1");
      // Sent once: a command the channel already had is not sent again by a later resync.
      const again = receiver.feed.reopened();
      faults.streams.break(fault);
      await again;
      expect(channel.queue.size).toBe(0);
    });
  });

  describe.skipIf(!backend.available)("thread readiness hints after a claim whose hint was never written", () => {
    // Found by the fault-injecting store: Threads.released() lowered the hint
    // of a requeued dispatch only when the hint named it as the thread's
    // claim. When the claim's own hint write never happened (a slow write that
    // landed after its caller gave up, or a process that died in between) and
    // a claim attempt meanwhile recomputed the hint as idle, the requeued
    // dispatch was hidden from claims across threads until something else
    // touched its thread. A requeue now lowers the hint whatever it says.
    it("a dispatch requeued after its lease expired can be claimed across threads again", async () => {
      const faults = new FaultStore(store, { seed: 1 });
      const engine = await start(faults, { storeTimeoutMs: 100 });
      const claim = () => engine.mailbox.claim({ consumerId: "w", leaseMs: 1_000, limit: 1, waitMs: 0 });
      await engine.mailbox.enqueue([{ threadId: "hinted", dispatchId: "d-1", priority: 128, maxAttempts: 5, schedule: undefined }]);
      faults.inject((call) => call.collection === "dispatches" && call.operation === "findOneAndUpdate", "slow", { ms: 300 });
      await expect(claim()).rejects.toBeInstanceOf(StoreUnavailableError);
      await faults.settled();
      expect((await engine.queries.get("d-1")).status).toBe("CLAIMED");
      expect(await claim()).toEqual([]);
      clock.advance(1_001);
      expect((await engine.mailbox.reclaimExpired(10)).map((d) => d._id)).toEqual(["d-1"]);
      expect((await claim()).map((d) => d._id)).toEqual(["d-1"]);
    });
  });

  describe.skipIf(!backend.available)("the change feed", () => {
    it("closes a reopened stream when catching up fails, and keeps exactly one open once it succeeds", async () => {
      const faults = new FaultStore(store, { seed: 1 });
      const feed = new ChangeFeed(faults, silentLogger, { retryDelayMs: 5 });
      feed.on("things", () => undefined);
      let failures = 2;
      feed.onResync(async () => {
        if (failures-- > 0) throw new StoreUnavailableError("catch-up read failed");
      });
      await feed.start();
      try {
        const reopened = feed.reopened();
        faults.streams.break("resumable");
        await reopened;
        expect(faults.openStreams).toBe(1);
      } finally {
        await feed.stop();
      }
      expect(faults.openStreams).toBe(0);
    });
  });

  describe.skipIf(!backend.available)("the journal's hole timeout", () => {
    it("outlasts a write slower than one second but within the store bound: the writer keeps its position, nothing is closed", async () => {
      const faults = new FaultStore(store, { seed: 1 });
      // The default hole timeout: just above the store bound (here 2 s).
      const engine = await start(faults, { storeTimeoutMs: 2_000, journal: {} });
      let slowInsertStarted: () => void = () => undefined;
      const started = new Promise<void>((resolve) => (slowInsertStarted = resolve));
      faults.inject((call) => {
        const match = call.collection === "events" && call.operation === "insertMany";
        if (match) slowInsertStarted();
        return match;
      }, "slow", { ms: 1_500 });
      const slow = engine.journal.append([draft("slow")], DEFAULT_NAMESPACE);
      await started;
      const [fast] = await engine.journal.append([draft("fast")], DEFAULT_NAMESPACE);
      const [landed] = await slow;
      expect(landed).toEqual({ seq: fast!.seq - 1, deduplicated: false });
      await engine.tail.waitFor(fast!.seq);
      expect(await engine.journal.events.countDocuments({ tombstone: true } as never)).toBe(0);
    });

    it("is counted for each hole from when it blocks: a write a moment late is not closed by an older hole's timer", async () => {
      const faults = new FaultStore(store, { seed: 1 });
      const engine = await start(faults, { journal: { holeTimeoutMs: 1_000 } });
      const writeOf = (eventId: string) => faults.hold((call) => call.collection === "events" && call.operation === "insertMany" && (call.args[0] as EventDoc[]).some((doc) => doc.event_id === eventId));
      vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
      try {
        // Hole A: a write on its way while a later one lands (the timer starts now).
        const first = writeOf("a");
        const writingA = engine.journal.append([draft("a")], DEFAULT_NAMESPACE);
        await first.reached;
        await engine.journal.append([draft("after-a")], DEFAULT_NAMESPACE);
        await vi.advanceTimersByTimeAsync(600);
        // Hole C opens behind A; then A lands, so C is the one holding the tail back.
        const third = writeOf("c");
        const writingC = engine.journal.append([draft("c")], DEFAULT_NAMESPACE);
        await third.reached;
        const [afterC] = await engine.journal.append([draft("after-c")], DEFAULT_NAMESPACE);
        first.release();
        await writingA;
        // A whole timeout after A's hole opened, but not after C's.
        await vi.advanceTimersByTimeAsync(500);
        expect(await engine.journal.events.countDocuments({ tombstone: true } as never)).toBe(0);
        third.release();
        expect((await writingC)[0]!.seq).toBe(afterC!.seq - 1);
      } finally {
        vi.useRealTimers();
      }
      await engine.tail.waitFor(4);
      expect(await engine.journal.events.countDocuments({ tombstone: true } as never)).toBe(0);
    });

    it("answers UNAVAILABLE (not an internal error) when its positions keep being closed before its write lands", async () => {
      // A store on which a reader always closes the positions a write is about to fill.
      const closing = new InterceptedStore(store, {
        operation: async (call) => {
          if (call.collection === "events" && call.operation === "insertMany") {
            const docs = call.args[0] as JournalDoc[];
            if (docs.every((doc) => "event_id" in doc)) await store.collection<JournalDoc>("events").insertMany(docs.map((doc) => ({ _id: doc._id, tombstone: true })));
          }
          return call.run();
        },
      });
      const journal = new Journal(closing, silentLogger);
      await journal.init();
      await expect(journal.append([draft("never")], DEFAULT_NAMESPACE)).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(((await journal.events.find({})) as EventDoc[]).filter((doc) => doc.event_id)).toEqual([]);
    });
  });
});
