/**
 * A pool's members through the engine, on every backend, with two server
 * instances on one store: one document each, so the pool's own document does
 * not grow with them; at most 1000, also when instances join at once; a
 * place freed by a leave is taken again; pools whose document still held
 * its members (an earlier version) are read as before.
 */
import { beforeEach, describe, expect, it } from "vitest";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { MAX_MEMBERS, parseConfig } from "../../src/domain/pool/pool.js";
import type { Engine } from "../../src/engine/engine.js";
import { type MemberDoc, memberDocId, type PoolDoc } from "../../src/engine/pool/records.js";
import { useTwoInstances } from "../support/instances.js";
import { historyCaughtUp, join, keptRecords, member } from "../support/pool-engine.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-1";

/** Fills the pool's places but `free` directly in the store (a pool with that many members, without a thousand joins). */
async function fill(engine: Engine, free: number): Promise<void> {
  const now = engine.clock.now();
  const docs: MemberDoc[] = [];
  for (let slot = 0; slot < MAX_MEMBERS - free; slot++) {
    const runId = `filler-${String(slot).padStart(4, "0")}`;
    docs.push({ _id: memberDocId(POOL, runId), pool_id: POOL, run_id: runId, agent_id: "filler", policy_refs: [], topics: [], slot, version: 0, joined_at: now, updated_at: now });
  }
  await engine.pools.members.members.insertMany(docs);
}

async function refusal(call: Promise<unknown>): Promise<MailroomError> {
  const error = await call.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(MailroomError);
  return error as MailroomError;
}

describe.each(storeBackends())("pool members on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("two instances", () => {
    const instances = useTwoInstances(backend);
    let one: Engine;
    let two: Engine;

    beforeEach(async () => {
      ({ one, two } = instances());
      await one.pools.open(POOL, parseConfig(undefined));
    });

    it("the pool's document does not grow as runs join (members have documents of their own)", async () => {
      await join(one, POOL, "first", { topics: ["t"] });
      const small = JSON.stringify(await one.pools.pools.findOne({ _id: POOL })).length;
      for (let i = 0; i < 50; i++) await join(i % 2 ? one : two, POOL, `run-${i}`, { topics: Array.from({ length: 64 }, (_, t) => `topic-${t}`), policies: Array.from({ length: 32 }, (_, p) => `policy-${p}`) });
      const pool = (await one.pools.pools.findOne({ _id: POOL }))!;
      expect(pool.members).toBeUndefined();
      expect(JSON.stringify(pool).length).toBeLessThanOrEqual(small + 100);
      expect((await two.pools.members.list(POOL)).map((m) => m.runId)).toEqual(["first", ...Array.from({ length: 50 }, (_, i) => `run-${i}`)].sort());
    });

    it("the first join creates the pool once, and its record comes before every join's, also when two instances join at once", async () => {
      const joined = await Promise.all([...Array.from({ length: 6 }, (_, i) => join(i % 2 ? one : two, POOL, `run-${i}`))]);
      expect(joined.filter((j) => j.poolCreated)).toHaveLength(1);
      await historyCaughtUp(one);
      const kinds = (await keptRecords(one, POOL)).map((r) => r.kind);
      expect(kinds).toEqual([EventKind.AGENT_POOL_OPENED, EventKind.AGENT_POOL_CREATED, ...Array(6).fill(EventKind.AGENT_POOL_RUN_JOINED)]);
    });

    it("at most 1000 members: with one place left, of five runs joining at once on two instances one gets in", async () => {
      await fill(one, 1);
      const outcomes = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => join(i % 2 ? one : two, POOL, `late-${i}`)));
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
      for (const outcome of outcomes) {
        if (outcome.status === "rejected") expect(outcome.reason).toMatchObject({ code: "resource_exhausted", details: { reason: ErrorReason.LIMIT_EXCEEDED } });
      }
      expect(await one.pools.members.members.countDocuments({ pool_id: POOL })).toBe(MAX_MEMBERS);
    });

    it("a member updating its topics takes no new place; a leave frees one for the next run", async () => {
      await fill(one, 1);
      await join(one, POOL, "last");
      await join(two, POOL, "last", { topics: ["news"] });
      expect((await one.pools.members.member(POOL, "last")).topics).toEqual(["news"]);
      expect((await refusal(join(one, POOL, "another"))).code).toBe("resource_exhausted");
      await two.pools.leave(POOL, "filler-0007");
      await join(one, POOL, "another");
      expect((await one.pools.members.member(POOL, "another")).runId).toBe("another");
    });

    it("a member whose process stopped between its leave record and freeing its place does not hold the place for good", async () => {
      await fill(one, 0);
      // Left, its record journaled (no outbox), but its document still there.
      await one.pools.members.members.updateOne({ _id: memberDocId(POOL, "filler-0003") }, { $set: { left: true } });
      expect((await refusal(one.pools.members.member(POOL, "filler-0003"))).details.reason).toBe(ErrorReason.RUN_NOT_MEMBER);
      await join(two, POOL, "newcomer");
      expect(await one.pools.members.members.countDocuments({ pool_id: POOL })).toBe(MAX_MEMBERS);
    });

    it("leaving twice gets FAILED_PRECONDITION RUN_NOT_MEMBER; leaving and joining again works", async () => {
      await join(one, POOL, "run-1");
      await one.pools.leave(POOL, "run-1");
      expect((await refusal(two.pools.leave(POOL, "run-1"))).details.reason).toBe(ErrorReason.RUN_NOT_MEMBER);
      await join(two, POOL, "run-1", { agentId: "again" });
      expect((await one.pools.members.list(POOL)).map((m) => [m.runId, m.agentId])).toEqual([["run-1", "again"]]);
    });

    it("a pool whose document holds its members (an earlier version) has them moved into their own documents when read", async () => {
      const legacy: PoolDoc = {
        _id: "legacy",
        config: { required_policy_refs: [], include_sender_in_pool_broadcast: false, envelope_only: true, policy_refs: [] },
        created: true,
        members: [{ run_id: "r1", agent_id: "a", policy_refs: [], topics: ["t"] }, { run_id: "r2", agent_id: "b", policy_refs: ["p"], topics: [] }],
        created_at: 0,
        updated_at: 0,
      };
      await one.pools.pools.insertOne(legacy);
      const snapshot = await two.pools.snapshot("legacy", 10);
      expect(snapshot.members.map((m) => m.runId)).toEqual(["r1", "r2"]);
      expect((await one.pools.pools.findOne({ _id: "legacy" }))?.members).toBeUndefined();
      await one.pools.join("legacy", member("r3"));
      expect((await one.pools.members.list("legacy")).map((m) => m.runId)).toEqual(["r1", "r2", "r3"]);
    });
  });
});
