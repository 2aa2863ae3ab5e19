/**
 * A pool's history through the engine, on every backend, with two server
 * instances on one store: each record kept for the pool's life (journal
 * retention does not reach it), numbered 1, 2, 3... in journal order
 * whichever instance wrote it, readable from any number or position; the
 * journal's retention waits for what the history has not kept yet.
 */
import { beforeEach, describe, expect, it } from "vitest";
import { EventFamily, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { parseConfig } from "../../src/domain/pool/pool.js";
import type { Engine } from "../../src/engine/engine.js";
import type { EventDoc } from "../../src/engine/journal/records.js";
import type { EngineHarness } from "../support/engines.js";
import { useTwoInstances } from "../support/instances.js";
import { historyCaughtUp, join, keptRecords, publish, sendTo, suspend } from "../support/pool-engine.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-1";
const RETENTION_MS = 1_000;

/** The pool's events as the journal has them now, in order. */
async function journaled(engine: Engine, poolId = POOL): Promise<EventDoc[]> {
  return (await engine.journal.events.find({ pool_id: poolId, family: EventFamily.AGENT_POOL }, { sort: { _id: 1 } })) as EventDoc[];
}

/** Lets retention delete everything journaled so far (the clock moves past it); the new purged-through position. */
async function expireJournal(harness: EngineHarness, engine: Engine): Promise<number> {
  harness.clock.advance(RETENTION_MS * 2);
  return engine.retention.purge();
}

describe.each(storeBackends())("a pool's history on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("two instances", () => {
    const instances = useTwoInstances(backend, { events: { retentionMs: RETENTION_MS } });
    let harness: EngineHarness;
    let one: Engine;
    let two: Engine;

    beforeEach(async () => {
      ({ harness, one, two } = instances());
      await one.pools.open(POOL, parseConfig(undefined));
    });

    describe("records are numbered 1, 2, 3... in journal order", () => {
      it("whichever of two instances wrote them, also when they write at once", async () => {
        await Promise.all([
          ...["a", "b", "c", "d"].map((run) => join(one, POOL, run)),
          ...["e", "f", "g", "h"].map((run) => join(two, POOL, run)),
        ]);
        await Promise.all([sendTo(one, POOL, "a", "b"), sendTo(two, POOL, "e", "f"), suspend(one, POOL, "c"), suspend(two, POOL, "g"), sendTo(two, POOL, "h", "a")]);
        await historyCaughtUp(one);
        await historyCaughtUp(two);
        const journal = await journaled(one);
        for (const reader of [one, two]) {
          const records = await keptRecords(reader, POOL);
          expect(records.map((r) => r.seq)).toEqual(journal.map((_, i) => i + 1));
          expect(records.map((r) => [r.journal_seq, r.kind])).toEqual(journal.map((e) => [e._id, e.kind]));
        }
      });

      it("starts at 1 with the opening, and a reader after a number or a position gets exactly the later records", async () => {
        await join(one, POOL, "a");
        await join(two, POOL, "b");
        await sendTo(one, POOL, "a", "b");
        await historyCaughtUp(one);
        const all = await keptRecords(one, POOL);
        expect(all[0]).toMatchObject({ seq: 1, kind: EventKind.AGENT_POOL_OPENED });
        for (const [i, record] of all.entries()) {
          expect(await keptRecords(two, POOL, { afterSequence: record.seq })).toEqual(all.slice(i + 1));
          expect(await keptRecords(two, POOL, { afterCursor: record.journal_seq })).toEqual(all.slice(i + 1));
        }
      });

      it("a number beyond the pool's latest record gets OUT_OF_RANGE CURSOR_AHEAD", async () => {
        await historyCaughtUp(one);
        const latest = (await keptRecords(one, POOL)).length;
        const refused = await one.pools.records(POOL, { afterCursor: 0, afterSequence: latest + 1 }).catch((error: unknown) => error);
        expect(refused).toBeInstanceOf(MailroomError);
        expect((refused as MailroomError).details).toMatchObject({ reason: ErrorReason.CURSOR_AHEAD, field: "after_sequence" });
      });
    });

    describe("records outlive the journal's retention", () => {
      it("after retention deleted every event of the pool, its history still has every record, its inboxes every message", async () => {
        await join(one, POOL, "a");
        await join(two, POOL, "b");
        await sendTo(one, POOL, "a", "b");
        await sendTo(two, POOL, "b", "a");
        await sendTo(one, POOL, "a", "b");
        await historyCaughtUp(one);
        const before = await keptRecords(one, POOL);
        const inboxBefore = await keptRecords(one, POOL, { recipient: "b" });
        expect(inboxBefore).toHaveLength(2);

        const purged = await expireJournal(harness, one);
        expect(purged).toBeGreaterThanOrEqual(before.at(-1)!.journal_seq);
        expect(await journaled(one)).toEqual([]);
        expect(await keptRecords(two, POOL)).toEqual(before);
        expect(await keptRecords(two, POOL, { recipient: "b" })).toEqual(inboxBefore);
        // A position older than the retained journal still resumes.
        expect(await keptRecords(two, POOL, { afterCursor: before[1]!.journal_seq })).toEqual(before.slice(2));
        const snapshot = await two.pools.snapshot(POOL, 10);
        expect([snapshot.cursor, snapshot.sequence]).toEqual([BigInt(before.at(-1)!.journal_seq), BigInt(before.length)]);
      });

      it("retention stops at what an instance's history has not kept yet, and an instance starting up keeps it", async () => {
        await join(one, POOL, "a");
        await historyCaughtUp(one);
        await two.stop();
        // As if the instance fell behind: its history follower stops where it is.
        await one.pools.history.follower.stop();
        const kept = one.pools.history.position;
        await join(one, POOL, "b");
        await sendTo(one, POOL, "a", "b");
        const purged = await expireJournal(harness, one);
        expect(purged).toBeLessThanOrEqual(kept);

        const three = await harness.instance();
        await historyCaughtUp(three);
        expect((await keptRecords(three, POOL)).map((r) => r.kind)).toEqual([
          EventKind.AGENT_POOL_OPENED, EventKind.AGENT_POOL_CREATED, EventKind.AGENT_POOL_RUN_JOINED, EventKind.AGENT_POOL_RUN_JOINED,
          EventKind.RUN_MESSAGE_ACCEPTED, EventKind.RUN_MESSAGE_DELIVERED,
        ]);
        expect(await expireJournal(harness, three)).toBeGreaterThan(purged);
      });

      it("an event that is not the pool's (a run's own) is not part of its history", async () => {
        await join(one, POOL, "a");
        await publish(one, "a", EventKind.RUN_STARTED);
        await historyCaughtUp(one);
        expect((await keptRecords(one, POOL)).map((r) => r.kind)).not.toContain(EventKind.RUN_STARTED);
      });
    });
  });
});
