/**
 * PoolService end to end, wake conditions: SuspendUntil, PollWake, CancelWake
 * and AwaitWake on the real server process over gRPC, gRPC-Web and Connect,
 * woken by pool records and by events runs publish through EventService.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { EntityKind } from "../../gen/mailroom/v1/common_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ResumeInputPolicy, WakeRegistrationStatus as Wake } from "../../gen/mailroom/v1/pool_pb.js";
import { publish } from "../support/events.js";
import { drainStream, isolated, ms, protocols, refusal, uid, useClients } from "../support/mailbox.js";
import { awaitWake, describeRecord, join, poolRecords, poolWith, send, suspend, toRun } from "../support/pools.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

describe.each(serverBackends())("PoolService wake conditions on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { pools, events } = useClients(() => server().url, protocol);
      const started = (runId: string, summary = "") => publish(events, { kind: EventKind.RUN_STARTED, runId }, summary);

      describe("a matching event after `after` triggers the condition, even one journaled before it was registered", () => {
        it("a condition registered after the message it waits for, with `after` before it, is TRIGGERED at once by that message", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {}, sender: {} });
          const { receipt } = await send(pools, poolId, { fromRunId: runs.sender.runId, to: toRun(runs.waiter.runId) });
          const delivered = receipt.journalCursor!.eventSeq;
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, {
            filter: { runIds: [runs.sender.runId], kinds: [EventKind.RUN_MESSAGE_DELIVERED] },
            after: { eventSeq: delivered - 1n },
          });
          expect(registration.status).toBe(Wake.TRIGGERED);
          const records = await poolRecords(pools, poolId);
          const deliveredRecord = records.find((r) => r.cursor === delivered)!;
          expect(deliveredRecord.record.case).toBe("message");
          expect(registration.resumeInput?.eventRefs).toContainEqual({ kind: EntityKind.MESSAGE, id: receipt.messageId, $typeName: "mailroom.v1.EntityRef" });
          expect(registration.matchedEventId).not.toBe("");
          expect(describeRecord(records.at(-1)!)).toBe(`wake ${registration.conditionId} ${Wake.TRIGGERED}`);
        });

        it("with `after` at a member's JoinRun cursor, an event the member published since then triggers it", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {}, worker: {} });
          const event = await started(runs.worker.runId, "worker started");
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, {
            filter: { runIds: [runs.worker.runId], kinds: [EventKind.RUN_STARTED] },
            after: { eventSeq: runs.worker.cursor },
            resumeWith: ResumeInputPolicy.REDACTED_SUMMARY,
          });
          expect(registration).toMatchObject({ status: Wake.TRIGGERED, matchedEventId: event.eventId, resumeInput: { redactedSummary: "worker started" } });
        });

        it("without `after`, an event journaled before the registration does not trigger it", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {}, worker: {} });
          await started(runs.worker.runId);
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { runIds: [runs.worker.runId], kinds: [EventKind.RUN_STARTED] } });
          expect(registration.status).toBe(Wake.REGISTERED);
          expect((await pools.pollWake({ poolId, conditionId: registration.conditionId })).registration?.status).toBe(Wake.REGISTERED);
        });
      });

      describe("conditions see only events of member runs", () => {
        it("an event a non-member run publishes does not trigger a condition; the next one a member publishes does", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {}, worker: {} });
          const outsider = uid("outsider");
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, {
            filter: { runIds: [outsider, runs.worker.runId], kinds: [EventKind.RUN_COMPLETED] },
          });
          expect(registration.status).toBe(Wake.REGISTERED);
          const ignored = await publish(events, { kind: EventKind.RUN_COMPLETED, runId: outsider });
          const waking = await publish(events, { kind: EventKind.RUN_COMPLETED, runId: runs.worker.runId });
          const frames = await awaitWake(pools, poolId, registration.conditionId);
          expect(frames.at(-1)).toMatchObject({ status: Wake.TRIGGERED, matchedEventId: waking.eventId });
          expect(frames.at(-1)?.matchedEventId).not.toBe(ignored.eventId);
          // The condition as stored: its filter narrowed to the member run.
          const wakeRecord = (await poolRecords(pools, poolId)).find((r) => r.record.case === "wake")!;
          expect(wakeRecord.record.value).toMatchObject({ condition: { filter: { runIds: [runs.worker.runId] } } });
        });

        it("a condition with no run filter is not woken by a non-member's event, even one registered with `after` before it", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {} });
          const before = (await pools.getPool({ poolId })).snapshot!.cursor;
          await publish(events, { kind: EventKind.RUN_COMPLETED, runId: uid("outsider") });
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, after: { eventSeq: before } });
          expect(registration.status).toBe(Wake.REGISTERED);
          await publish(events, { kind: EventKind.RUN_COMPLETED, runId: uid("outsider") });
          const waking = await publish(events, { kind: EventKind.RUN_COMPLETED, runId: runs.waiter.runId });
          expect((await awaitWake(pools, poolId, registration.conditionId)).at(-1)).toMatchObject({ status: Wake.TRIGGERED, matchedEventId: waking.eventId });
        });

        it("members without the pool's policies are not observed", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: { policies: ["observe"] }, hidden: {}, seen: { policies: ["observe"] } }, { policyRefs: [{ id: "observe" }] });
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] } });
          await publish(events, { kind: EventKind.RUN_COMPLETED, runId: runs.hidden.runId });
          const waking = await publish(events, { kind: EventKind.RUN_COMPLETED, runId: runs.seen.runId });
          expect((await awaitWake(pools, poolId, registration.conditionId)).at(-1)).toMatchObject({ status: Wake.TRIGGERED, matchedEventId: waking.eventId });
        });
      });

      describe("AwaitWake: the registration as it is, then once it leaves REGISTERED", () => {
        it("a condition is TRIGGERED by an event a member run publishes through EventService.Publish", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {}, worker: {} });
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { runIds: [runs.worker.runId], kinds: [EventKind.RUN_COMPLETED] } });
          const awaiting = awaitWake(pools, poolId, registration.conditionId);
          const event = await publish(events, { kind: EventKind.RUN_COMPLETED, runId: runs.worker.runId });
          const frames = await awaiting;
          expect(frames.map((r) => r.status)).toEqual([Wake.REGISTERED, Wake.TRIGGERED]);
          expect(frames[1]).toMatchObject({
            conditionId: registration.conditionId,
            runId: runs.waiter.runId,
            matchedEventId: event.eventId,
            // The matching event and its subject (Publish makes the run the subject).
            resumeInput: { eventRefs: [{ kind: EntityKind.EVENT, id: event.eventId }, { kind: EntityKind.RUN, id: runs.worker.runId }] },
          });
          expect(frames[1]?.journalCursor?.eventSeq).toBeGreaterThan(event.eventSeq);
          expect((await pools.pollWake({ poolId, conditionId: registration.conditionId })).registration).toEqual(frames[1]);
        });

        it("a condition with timeout 0 is TIMED_OUT at once", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {} });
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(0) });
          expect(registration.status).toBe(Wake.TIMED_OUT);
          expect((await awaitWake(pools, poolId, registration.conditionId)).map((r) => r.status)).toEqual([Wake.TIMED_OUT]);
          const records = (await poolRecords(pools, poolId)).filter((r) => r.record.case === "wake").map(describeRecord);
          expect(records).toEqual([Wake.REGISTERED, Wake.TIMED_OUT].map((s) => `wake ${registration.conditionId} ${s}`));
        });

        it("a condition with a 200 ms timeout and no matching event ends TIMED_OUT, once", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {} });
          const begun = Date.now();
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(200) });
          expect(registration.status).toBe(Wake.REGISTERED);
          expect(timestampMs(registration.deadline!)).toBeGreaterThanOrEqual(begun + 200);
          const frames = await awaitWake(pools, poolId, registration.conditionId);
          // Loose: only catches a timeout that did not fire by itself.
          expect(Date.now() - begun).toBeLessThan(5_000);
          expect(frames.map((r) => r.status)).toEqual([Wake.REGISTERED, Wake.TIMED_OUT]);
          const marker = await join(pools, poolId, { runId: uid("marker") });
          const records = await poolRecords(pools, poolId);
          expect(records.at(-1)?.cursor).toBe(marker.cursor);
          expect(records.filter((r) => r.record.case === "wake").map(describeRecord)).toEqual([Wake.REGISTERED, Wake.TIMED_OUT].map((s) => `wake ${registration.conditionId} ${s}`));
        });

        it("AwaitWake of an unknown condition gets NOT_FOUND", async () => {
          const { poolId } = await poolWith(pools, { waiter: {} });
          expect((await refusal(drainStream(pools.awaitWake({ poolId, conditionId: uid("no-such-condition") })))).code).toBe(Code.NotFound);
        });
      });

      describe("PollWake and CancelWake", () => {
        it("PollWake answers the registration as it is now", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {} });
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(60_000) });
          expect((await pools.pollWake({ poolId, conditionId: registration.conditionId })).registration).toEqual(registration);
          expect(registration.journalCursor?.eventSeq).toBe((await poolRecords(pools, poolId)).at(-1)?.cursor);
          expect((await refusal(pools.pollWake({ poolId, conditionId: uid("nothing") }))).code).toBe(Code.NotFound);
        });

        it("CancelWake makes a REGISTERED condition CANCELLED; a terminal one is returned unchanged", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {}, worker: {} });
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] } });
          const cancelled = (await pools.cancelWake({ poolId, conditionId: registration.conditionId })).registration!;
          expect(cancelled.status).toBe(Wake.CANCELLED);
          expect((await pools.cancelWake({ poolId, conditionId: registration.conditionId })).registration).toEqual(cancelled);
          await publish(events, { kind: EventKind.RUN_COMPLETED, runId: runs.worker.runId });
          expect((await pools.pollWake({ poolId, conditionId: registration.conditionId })).registration).toEqual(cancelled);

          const { registration: other } = await suspend(pools, poolId, runs.waiter.runId, { filter: { runIds: [runs.worker.runId], kinds: [EventKind.RUN_FAILED] } });
          await publish(events, { kind: EventKind.RUN_FAILED, runId: runs.worker.runId });
          const triggered = (await awaitWake(pools, poolId, other.conditionId)).at(-1)!;
          expect(triggered.status).toBe(Wake.TRIGGERED);
          expect((await pools.cancelWake({ poolId, conditionId: other.conditionId })).registration).toEqual(triggered);
          const wakeRecords = (await poolRecords(pools, poolId)).filter((r) => r.record.case === "wake").map(describeRecord);
          expect(wakeRecords).toEqual([
            `wake ${registration.conditionId} ${Wake.REGISTERED}`,
            `wake ${registration.conditionId} ${Wake.CANCELLED}`,
            `wake ${other.conditionId} ${Wake.REGISTERED}`,
            `wake ${other.conditionId} ${Wake.TRIGGERED}`,
          ]);
        });
      });

      describe("SuspendUntil: idempotency and who may register", () => {
        it("a repeated idempotency key registers nothing and returns the registration as it is now", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {} });
          const condition = { idempotencyKey: uid("key"), filter: { kinds: [EventKind.RUN_COMPLETED] } };
          const first = await suspend(pools, poolId, runs.waiter.runId, condition);
          expect(first.deduplicated).toBe(false);
          const again = await suspend(pools, poolId, runs.waiter.runId, { ...condition, timeout: ms(0) });
          expect(again).toEqual({ registration: first.registration, deduplicated: true });
          const cancelled = (await pools.cancelWake({ poolId, conditionId: first.registration.conditionId })).registration;
          const now = await suspend(pools, poolId, runs.waiter.runId, { ...condition, conditionId: uid("other-id") });
          expect(now).toEqual({ registration: cancelled, deduplicated: true });
          expect((await poolRecords(pools, poolId)).filter((r) => r.record.case === "wake")).toHaveLength(2);
        });

        it("a condition for another run than the registering one gets INVALID_ARGUMENT WAKE_RUN_MISMATCH", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {}, other: {} });
          const before = await poolRecords(pools, poolId);
          const mismatch = await refusal(pools.suspendUntil({ poolId, runId: runs.waiter.runId, condition: { runId: runs.other.runId } }));
          expect(mismatch).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.WAKE_RUN_MISMATCH, field: "condition.run_id" } });
          expect(await poolRecords(pools, poolId)).toEqual(before);
        });

        it("a timeout above 30 days gets INVALID_ARGUMENT condition.timeout", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {} });
          const refused = await refusal(suspend(pools, poolId, runs.waiter.runId, { timeout: ms(30 * 86_400_000 + 1_000) }));
          expect(refused).toMatchObject({ code: Code.InvalidArgument, detail: { field: "condition.timeout" } });
          expect((await pools.getPool({ poolId })).snapshot?.wakes).toEqual([]);
        });

        it("a run that is not a member gets FAILED_PRECONDITION RUN_NOT_MEMBER", async () => {
          const { poolId } = await poolWith(pools, { waiter: {} });
          const stranger = uid("stranger");
          const before = await pools.getPool({ poolId });
          const refused = await refusal(suspend(pools, poolId, stranger, { filter: { kinds: [EventKind.RUN_COMPLETED] } }));
          expect(refused).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.RUN_NOT_MEMBER, entity: { kind: EntityKind.RUN, id: stranger } } });
          expect(await pools.getPool({ poolId })).toEqual(before);
        });

        it("a registered condition is in the snapshot's wakes until it leaves REGISTERED", async () => {
          const { poolId, runs } = await poolWith(pools, { waiter: {} });
          const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] } });
          expect((await pools.getPool({ poolId })).snapshot?.wakes.map((w) => w.registration)).toEqual([registration]);
          await pools.cancelWake({ poolId, conditionId: registration.conditionId });
          expect((await pools.getPool({ poolId })).snapshot?.wakes).toEqual([]);
        });
      });
    });
  });
});
