/**
 * The journal and its live tail: positions, idempotent appends, and one
 * ordered, gap-free feed per instance even when writes commit out of order.
 */
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentEventSchema, EventEnvelopeSchema, EventFamily, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ChangeFeed } from "../../src/engine/change-feed.js";
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { Journal } from "../../src/engine/journal/journal.js";
import { type EventDoc, eventOf, pendingEvent } from "../../src/engine/journal/records.js";
import { JournalTail } from "../../src/engine/journal/tail.js";
import { silentLogger } from "../../src/engine/logger.js";
import type { Store } from "../../src/store/port.js";
import { CountingStore } from "../support/counting-store.js";
import { storeBackends } from "../support/stores.js";

function draft(eventId: string, runId = "run-1") {
  const event = create(AgentEventSchema, {
    envelope: create(EventEnvelopeSchema, { eventId, kind: EventKind.USAGE_RECORDED, family: EventFamily.USAGE, runId }),
    payload: { case: "redactedSummary", value: `summary of ${eventId}` },
  });
  return pendingEvent(event, 1_700_000_000_000);
}

interface Instance {
  journal: Journal;
  feed: ChangeFeed;
  tail: JournalTail;
  delivered: EventDoc[];
  stop(): Promise<void>;
}

async function startInstance(store: Store, holeTimeoutMs = 50): Promise<Instance> {
  const journal = new Journal(store, silentLogger);
  await journal.init();
  const feed = new ChangeFeed(store, silentLogger, { retryDelayMs: 10 });
  const tail = new JournalTail(journal, feed, silentLogger, { holeTimeoutMs });
  tail.attach();
  const delivered: EventDoc[] = [];
  tail.subscribe((events) => delivered.push(...events));
  await feed.start();
  await tail.start();
  return {
    journal, feed, tail, delivered,
    stop: async () => {
      tail.stop();
      await feed.stop();
    },
  };
}

describe.each(storeBackends({ faults: true }))("journal: $name backend", (backend) => {
  let store: Store;
  const instances: Instance[] = [];
  const start = async (holeTimeoutMs?: number) => {
    const instance = await startInstance(store, holeTimeoutMs);
    instances.push(instance);
    return instance;
  };

  beforeEach(async () => {
    if (backend.available) store = await backend.open();
  });
  afterEach(async () => {
    await Promise.all(instances.splice(0).map((i) => i.stop()));
    if (store) await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("append", () => {
    it("records events at consecutive positions, in the order given", async () => {
      const { journal } = await start();
      const first = await journal.append([draft("a"), draft("b")], DEFAULT_NAMESPACE);
      const second = await journal.append([draft("c")], DEFAULT_NAMESPACE);
      expect([...first, ...second]).toEqual([
        { seq: 1, deduplicated: false },
        { seq: 2, deduplicated: false },
        { seq: 3, deduplicated: false },
      ]);
      const docs = (await journal.range(0, 10, 10)) as EventDoc[];
      expect(docs.map((d) => [d._id, d.event_id])).toEqual([[1, "a"], [2, "b"], [3, "c"]]);
      const event = eventOf(docs[1]!);
      expect(event.envelope!.eventSeq).toBe(2n);
      expect(event.envelope!.journalCursor!.eventSeq).toBe(2n);
      expect(event.payload).toEqual({ case: "redactedSummary", value: "summary of b" });
    });

    it("records an event id once: appending it again reports the first position", async () => {
      const { journal, tail } = await start();
      await journal.append([draft("a")], DEFAULT_NAMESPACE);
      const again = await journal.append([draft("b"), draft("a")], DEFAULT_NAMESPACE);
      expect(again).toEqual([{ seq: 2, deduplicated: false }, { seq: 1, deduplicated: true }]);
      // The position reserved for the duplicate is closed, so the tail moves past it.
      await journal.append([draft("c")], DEFAULT_NAMESPACE);
      await tail.waitFor(4);
      expect(tail.position).toBe(4);
    });
  });

  describe.skipIf(!backend.available)("group commit", () => {
    it("concurrent appends share one position allocation and one insert, each call's events consecutive and in order", async () => {
      const counted = new CountingStore(store);
      const journal = new Journal(counted, silentLogger);
      await journal.init();
      counted.reset();
      // All made in one event loop turn: one group.
      const calls = await Promise.all(Array.from({ length: 20 }, (_, c) => journal.append([draft(`c${c}-a`), draft(`c${c}-b`)], DEFAULT_NAMESPACE)));
      for (const outcomes of calls) expect(outcomes[1]!.seq).toBe(outcomes[0]!.seq + 1);
      expect(new Set(calls.flat().map((o) => o.seq)).size).toBe(40);
      expect(counted.counts.get("counters.findOneAndUpdate")).toBe(1);
      expect(counted.counts.get("events.insertMany")).toBe(1);
      const docs = (await journal.range(0, 40, 40)) as EventDoc[];
      expect(docs.map((d) => d.event_id)).toEqual(calls.flatMap((_, c) => [`c${c}-a`, `c${c}-b`]));
    });

    it("a failed allocation fails only its group; later appends go on", async () => {
      let failNext = true;
      const failing: Store = Object.create(store, {
        collection: {
          value: (name: string) => {
            const inner = store.collection(name);
            if (name !== "counters") return inner;
            return Object.assign(Object.create(inner) as typeof inner, {
              findOneAndUpdate: (...args: Parameters<typeof inner.findOneAndUpdate>) => {
                if (failNext) {
                  failNext = false;
                  return Promise.reject(new Error("allocation failed"));
                }
                return inner.findOneAndUpdate(...args);
              },
            });
          },
        },
      }) as Store;
      const journal = new Journal(failing, silentLogger);
      await journal.init();
      await expect(journal.append([draft("x")], DEFAULT_NAMESPACE)).rejects.toThrow("allocation failed");
      expect(await journal.append([draft("y")], DEFAULT_NAMESPACE)).toEqual([{ seq: 1, deduplicated: false }]);
    });
  });

  describe.skipIf(!backend.available)("tail", () => {
    it("delivers every event of many concurrent writers exactly once, in position order", async () => {
      const { journal, tail, delivered } = await start();
      const writers = Array.from({ length: 8 }, (_, w) =>
        (async () => {
          for (let i = 0; i < 25; i++) await journal.append([draft(`w${w}-e${i}`), draft(`w${w}-f${i}`)], DEFAULT_NAMESPACE);
        })(),
      );
      await Promise.all(writers);
      const head = await journal.writtenHead();
      await tail.waitFor(head);
      expect(delivered).toHaveLength(400);
      expect(delivered.map((d) => d._id)).toEqual([...delivered.map((d) => d._id)].sort((a, b) => a - b));
      expect(new Set(delivered.map((d) => d.event_id)).size).toBe(400);
    });

    it("does not deliver past a position whose write has not landed, then closes it when it never does", async () => {
      const { journal, tail, delivered } = await start(100);
      await journal.append([draft("before")], DEFAULT_NAMESPACE);
      const abandoned = await journal.allocate(1); // a writer that crashed after reserving
      await journal.append([draft("after")], DEFAULT_NAMESPACE);
      expect(delivered.map((d) => d.event_id)).toEqual(["before"]);
      await tail.waitFor(abandoned + 1);
      expect(delivered.map((d) => d.event_id)).toEqual(["before", "after"]);
      // The abandoned position is closed: a late writer cannot land behind the edge.
      const late = await journal.events.insertOne({ _id: abandoned, ...draft("late") }).catch((e: unknown) => e);
      expect(late).toBeInstanceOf(Error);
    });

    it("lets a write that lands late, but before the timeout, take its place in order", async () => {
      const { journal, tail, delivered } = await start(5_000);
      const reserved = await journal.allocate(1);
      await journal.append([draft("second")], DEFAULT_NAMESPACE);
      await journal.events.insertOne({ _id: reserved, ...draft("first") });
      await tail.waitFor(reserved + 1);
      expect(delivered.map((d) => d.event_id)).toEqual(["first", "second"]);
    });

    it("gives two instances on one store the same sequence", async () => {
      const one = await start();
      const two = await start();
      await Promise.all([
        (async () => { for (let i = 0; i < 20; i++) await one.journal.append([draft(`one-${i}`)], DEFAULT_NAMESPACE); })(),
        (async () => { for (let i = 0; i < 20; i++) await two.journal.append([draft(`two-${i}`)], DEFAULT_NAMESPACE); })(),
      ]);
      const head = await one.journal.writtenHead();
      await Promise.all([one.tail.waitFor(head), two.tail.waitFor(head)]);
      expect(one.delivered.map((d) => d.event_id)).toEqual(two.delivered.map((d) => d.event_id));
      expect(one.delivered).toHaveLength(40);
    });

    it("starts at the head, closing positions below it whose writes never landed", async () => {
      const writer = new Journal(store, silentLogger);
      await writer.init();
      await writer.append([draft("old-1")], DEFAULT_NAMESPACE);
      const abandoned = await writer.allocate(1);
      await writer.append([draft("old-2")], DEFAULT_NAMESPACE);
      const { tail, delivered, journal } = await start();
      expect(tail.position).toBe(abandoned + 1);
      expect(delivered).toEqual([]);
      expect((await journal.range(abandoned - 1, abandoned, 1))[0]).toEqual({ _id: abandoned, tombstone: true });
      await journal.append([draft("new")], DEFAULT_NAMESPACE);
      await tail.waitFor(abandoned + 2);
      expect(delivered.map((d) => d.event_id)).toEqual(["new"]);
    });

    it("keeps recent events for subscribers attaching close behind the edge", async () => {
      const { journal, tail } = await start();
      await journal.append([draft("a"), draft("b"), draft("c")], DEFAULT_NAMESPACE);
      await tail.waitFor(3);
      expect(tail.recentAfter(1)!.map((d) => d.event_id)).toEqual(["b", "c"]);
      expect(tail.recentAfter(3)).toEqual([]);
    });
  });
});
