/**
 * An instance starting on a store another instance left (issue 11): it closes
 * the journal positions below the head whose writes never landed, but never
 * those retention already deleted, and its start-up costs a bounded number of
 * store operations however many positions it has to close.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentEventSchema, EventEnvelopeSchema, EventFamily, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { Engine } from "../../src/engine/engine.js";
import { type JournalDoc, pendingEvent } from "../../src/engine/journal/records.js";
import type { Store } from "../../src/store/port.js";
import { InterceptedStore } from "../../src/store/intercept.js";
import { CountingStore } from "../support/counting-store.js";
import { storeBackends } from "../support/stores.js";

const RETENTION_MS = 60_000;

describe.each(storeBackends())("an engine restarting on a $name store", (backend) => {
  let store: Store;
  const clock = new ManualClock();
  const running: Engine[] = [];
  const start = async (on: Store = store) => {
    const engine = await Engine.start(on, { clock, background: false, journal: { holeTimeoutMs: 50 }, events: { retentionMs: RETENTION_MS } });
    running.push(engine);
    return engine;
  };
  const stop = async (engine: Engine) => {
    running.splice(running.indexOf(engine), 1);
    await engine.stop();
  };
  const draft = (eventId: string) =>
    pendingEvent(create(AgentEventSchema, { envelope: create(EventEnvelopeSchema, { eventId, kind: EventKind.USAGE_RECORDED, family: EventFamily.USAGE, runId: "run-1" }) }), clock.now());
  const append = async (engine: Engine, count: number, prefix: string) => {
    for (let i = 0; i < count; i++) await engine.journal.append([draft(`${prefix}-${i}`)], DEFAULT_NAMESPACE);
  };
  const tombstones = async () => ((await store.collection<JournalDoc>("events").find({ tombstone: true } as never, { sort: { _id: 1 } })) as JournalDoc[]).map((doc) => doc._id);

  beforeEach(async () => {
    if (backend.available) store = await backend.open();
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((engine) => engine.stop()));
    if (store) await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("after retention deleted part of the journal", () => {
    it("writes no tombstone at or below the purged mark", async () => {
      const first = await start();
      await append(first, 20, "old");
      clock.advance(RETENTION_MS + 1);
      await append(first, 10, "new");
      await first.tail.waitFor(30);
      expect(await first.journal.purgeBefore(clock.now() - RETENTION_MS, first.tail.position)).toBe(20);
      await stop(first);

      const second = await start();
      expect(second.tail.position).toBe(30);
      expect(await tombstones()).toEqual([]);
      expect(await second.journal.oldest()).toBe(21);
    });

    it("starts at the purged mark when retention deleted everything, and closes nothing below it", async () => {
      const first = await start();
      await append(first, 25, "old");
      await first.tail.waitFor(25);
      clock.advance(RETENTION_MS + 1);
      expect(await first.journal.purgeBefore(clock.now() - RETENTION_MS, first.tail.position)).toBe(25);
      await stop(first);

      const second = await start();
      expect(second.tail.position).toBe(25);
      await append(second, 1, "after-restart");
      await second.tail.waitFor(26);
      expect(await tombstones()).toEqual([]);
    });
  });

  describe.skipIf(!backend.available)("with positions reserved by writers that died", () => {
    /** Starts an instance through a counting store: how many store operations its start-up made. */
    async function startCounted(): Promise<CountingStore> {
      const counting = new CountingStore(store);
      await start(counting);
      return counting;
    }

    it("closes them all with a number of store operations that does not grow with their count", async () => {
      const writer = await start();
      await append(writer, 1, "first");
      await writer.journal.allocate(10);
      await append(writer, 1, "after-few");
      await stop(writer);
      const few = await startCounted();
      expect(await tombstones()).toHaveLength(10);

      const writer2 = await start();
      await writer2.journal.allocate(900);
      await append(writer2, 1, "after-many");
      await Promise.all(running.splice(0).map((engine) => engine.stop()));
      const many = await startCounted();
      expect(await tombstones()).toHaveLength(910);

      // One page read and one bulk insert close up to a thousand positions.
      expect(many.counts.get("events.insertOne") ?? 0).toBe(0);
      expect(many.total("events.")).toBe(few.total("events."));
      expect(many.total()).toBe(few.total());
    });

    it("reads and closes the positions below the head a thousand at a time", async () => {
      const writer = await start();
      await writer.journal.allocate(4_500);
      await append(writer, 1, "head");
      await stop(writer);
      // Reads of every journal position in a range (what closing holes reads; followers read events by filter too).
      let rangeReads = 0;
      const watching = new InterceptedStore(store, {
        operation: (call) => {
          const filter = call.args[0] as Record<string, unknown> | undefined;
          if (call.collection === "events" && call.operation === "find" && filter && Object.keys(filter).join() === "_id") rangeReads++;
          return call.run();
        },
      });
      const counted = new CountingStore(watching);
      await start(counted);
      expect(await tombstones()).toHaveLength(4_500);
      expect(counted.counts.get("events.insertOne") ?? 0).toBe(0);
      expect(counted.counts.get("events.insertMany")).toBe(5);
      expect(rangeReads).toBe(5);
    });
  });
});
