/**
 * Deleting a pool, and listing a pool's messages and wake conditions,
 * through the engine, on every backend: deletion takes everything of the
 * pool (its history too) and ends what waits on it; a pool opened again
 * starts a new history; an instance whose history lagged behind keeps
 * nothing of the deleted pool; a deletion cut short is finished by the sweep.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { beforeEach, describe, expect, it } from "vitest";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { MessageStatus, WakeRegistrationStatus as WakeStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { parsePoolList } from "../../src/domain/pool/pages.js";
import { parseConfig } from "../../src/domain/pool/pool.js";
import type { Engine } from "../../src/engine/engine.js";
import type { EngineHarness } from "../support/engines.js";
import { useTwoInstances } from "../support/instances.js";
import { historyCaughtUp, join, keptRecords, sendTo, suspend } from "../support/pool-engine.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-1";

async function refusal(call: Promise<unknown>): Promise<MailroomError> {
  const error = await call.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(MailroomError);
  return error as MailroomError;
}

/** How many documents of the pool each collection still holds. */
async function leftOf(engine: Engine, poolId = POOL) {
  return {
    members: await engine.pools.members.members.countDocuments({ pool_id: poolId }),
    messages: await engine.messages.messages.countDocuments({ pool_id: poolId }),
    wakes: await engine.wakes.wakes.countDocuments({ pool_id: poolId }),
    records: await engine.pools.history.records.countDocuments({ pool_id: poolId }),
    pool: await engine.pools.pools.countDocuments({ _id: poolId }),
  };
}

const NOTHING = { members: 0, messages: 0, wakes: 0, records: 0, pool: 0 };

describe.each(storeBackends())("deleting and listing pools on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("two instances", () => {
    const instances = useTwoInstances(backend);
    let harness: EngineHarness;
    let one: Engine;
    let two: Engine;

    beforeEach(async () => {
      ({ harness, one, two } = instances());
      await one.pools.open(POOL, parseConfig(undefined));
      await join(one, POOL, "a");
      await join(one, POOL, "b");
    });

    describe("DeletePool", () => {
      it("removes members, messages, wake conditions and history, cancelling the registered conditions; the pool is then NOT_FOUND", async () => {
        await sendTo(one, POOL, "a", "b");
        const waiting = await suspend(one, POOL, "a", { filter: { runIds: ["nobody"] } });
        await suspend(one, POOL, "b", { timeout: {} });
        await historyCaughtUp(two);
        const watching = await two.pools.records(POOL, { afterCursor: 0, afterSequence: 0 });
        const settled = new Promise<void>((resolve) => two.wakeMatcher.whenSettled(DEFAULT_NAMESPACE, POOL, waiting.registration.conditionId, resolve));

        expect(await one.poolDeletion.delete(POOL)).toEqual({ cancelledWakes: 1 });
        await settled;
        expect(await leftOf(two)).toEqual(NOTHING);
        expect((await refusal(two.pools.get(POOL))).code).toBe("not_found");
        expect((await refusal(two.poolDeletion.delete(POOL))).code).toBe("not_found");
        expect((await refusal(sendTo(two, POOL, "a", "b"))).code).toBe("not_found");
        const deleted = await one.journal.events.findOne({ pool_id: POOL, kind: EventKind.AGENT_POOL_DELETED });
        expect(deleted).not.toBeNull();
        // A reader of the pool's history (WatchPool) ends with NOT_FOUND once the deletion reaches it.
        const abort = new AbortController();
        const ended = await (async () => {
          for (;;) {
            const frame = await watching.next(60_000, abort.signal).catch((error: unknown) => error);
            if (frame instanceof MailroomError || frame === undefined) return frame;
          }
        })();
        expect(ended).toMatchObject({ code: "not_found", details: { reason: ErrorReason.ENTITY_NOT_FOUND } });
        watching.close();
      });

      it("a pool opened again under the same id starts a new history at 1", async () => {
        await one.poolDeletion.delete(POOL);
        await two.pools.open(POOL, parseConfig(undefined));
        await join(two, POOL, "c");
        await historyCaughtUp(one);
        const records = await keptRecords(one, POOL);
        expect(records.map((r) => [r.seq, r.kind])).toEqual([[1, EventKind.AGENT_POOL_OPENED], [2, EventKind.AGENT_POOL_CREATED], [3, EventKind.AGENT_POOL_RUN_JOINED]]);
        expect((await one.pools.members.list(POOL)).map((m) => m.runId)).toEqual(["c"]);
      });

      it("an instance whose history lags behind a deletion keeps nothing of the deleted pool, and numbers the new one from 1", async () => {
        await historyCaughtUp(one);
        await two.stop();
        await one.pools.history.follower.stop(); // it falls behind from here
        await sendTo(one, POOL, "a", "b");
        await one.poolDeletion.delete(POOL);
        await one.pools.open(POOL, parseConfig(undefined));
        await join(one, POOL, "c");
        const three = await harness.instance();
        await historyCaughtUp(three);
        expect((await keptRecords(three, POOL)).map((r) => [r.seq, r.kind])).toEqual([[1, EventKind.AGENT_POOL_OPENED], [2, EventKind.AGENT_POOL_CREATED], [3, EventKind.AGENT_POOL_RUN_JOINED]]);
        expect(await three.pools.history.records.countDocuments({ pool_id: POOL })).toBe(3);
      });

      it("a deletion whose process stopped half-way is NOT_FOUND to calls, refuses a re-open for now, and is finished by the sweep", async () => {
        await one.pools.markDeleted(POOL); // and then the process stopped
        expect((await refusal(two.pools.join(POOL, (await one.pools.members.list(POOL))[0]!))).code).toBe("not_found");
        expect((await refusal(two.pools.open(POOL, parseConfig(undefined)))).code).toBe("unavailable");
        expect(await two.poolBackground.deletion.resume(harness.clock.now())).toBe(0); // not yet: it may still be running
        harness.clock.advance(60_000);
        expect(await two.poolBackground.deletion.resume(harness.clock.now())).toBe(1);
        expect(await leftOf(two)).toEqual(NOTHING);
        expect((await two.pools.open(POOL, parseConfig(undefined))).opened).toBe(true);
      });
    });

    describe("ListMessages and ListWakeConditions", () => {
      it("page through every message of the pool in the order sent, whatever its status", async () => {
        const sent = [];
        for (let i = 0; i < 7; i++) {
          harness.clock.advance(i % 3 === 0 ? 1 : 0); // several within one millisecond too
          sent.push((await sendTo(i % 2 ? one : two, POOL, "a", i === 3 ? "nobody" : "b", i === 5 ? { responseContract: { expectedResponses: 1 } } : {})).receipt);
        }
        await one.messages.cancel(POOL, sent[5]!.messageId, "a");
        const listed = [];
        let token = "";
        do {
          const page = await two.messages.list(parsePoolList(POOL, { pageSize: 3, pageToken: token }));
          expect(page.messages.length).toBeLessThanOrEqual(3);
          listed.push(...page.messages);
          token = page.nextPageToken;
        } while (token !== "");
        expect(listed.map((m) => m.message?.messageId)).toEqual(sent.map((r) => r.messageId));
        expect(listed.map((m) => m.receipt?.status)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => (i === 3 ? MessageStatus.FAILED : i === 5 ? MessageStatus.CANCELLED : MessageStatus.DELIVERED)));
      });

      it("page through every wake condition of the pool in the order registered, whatever its status", async () => {
        const registered = [];
        for (let i = 0; i < 5; i++) registered.push((await suspend(i % 2 ? one : two, POOL, "a", { filter: { runIds: ["nobody"] }, ...(i === 1 ? { timeout: {} } : {}) })).registration);
        await one.wakes.cancel(POOL, registered[3]!.conditionId);
        const first = await two.wakes.list(parsePoolList(POOL, { pageSize: 2, pageToken: "" }));
        const second = await two.wakes.list(parsePoolList(POOL, { pageSize: 2, pageToken: first.nextPageToken }));
        const third = await two.wakes.list(parsePoolList(POOL, { pageSize: 2, pageToken: second.nextPageToken }));
        expect(third.nextPageToken).toBe("");
        const listed = [...first.wakes, ...second.wakes, ...third.wakes];
        expect(listed.map((w) => w.registration?.conditionId)).toEqual(registered.map((r) => r.conditionId));
        expect(listed.map((w) => w.registration?.status)).toEqual([WakeStatus.REGISTERED, WakeStatus.TIMED_OUT, WakeStatus.REGISTERED, WakeStatus.CANCELLED, WakeStatus.REGISTERED]);
      });

      it("refuse another pool's page token, and answer NOT_FOUND for an unknown pool", async () => {
        await sendTo(one, POOL, "a", "b");
        await sendTo(one, POOL, "a", "b");
        const { nextPageToken } = await one.messages.list(parsePoolList(POOL, { pageSize: 1, pageToken: "" }));
        expect(() => parsePoolList("other", { pageSize: 1, pageToken: nextPageToken })).toThrow(/page_token/);
        expect(() => parsePoolList(POOL, { pageSize: 1, pageToken: "not-a-token" })).toThrow(/page_token/);
        expect((await refusal(one.messages.list(parsePoolList("unknown", { pageSize: 1, pageToken: "" })))).code).toBe("not_found");
      });
    });
  });
});
