/**
 * The seed's pool semantics end to end (issue 13), through the real server
 * process: a pool's history outlives the journal's retention (WatchPool from
 * the start, ListMessages, a run's inbox), numbered densely; SubscribePool
 * scoped by the server; a wake on what already happened; DeletePool.
 *
 * The retention suite runs a server with `--event-retention-ms 2000` and
 * waits for the purge's log line (not for time) before reading.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { EventFrameKind, EventKind, PayloadAccessMode } from "../../gen/mailroom/v1/event_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { MessageStatus, WakeRegistrationStatus as Wake } from "../../gen/mailroom/v1/pool_pb.js";
import type { SubscribePoolResponse } from "../../gen/mailroom/v1/pool_service_pb.js";
import { publish } from "../support/events.js";
import { drainStream, Frames, isolated, refusal, uid, useClients } from "../support/mailbox.js";
import { describeRecord, inboxMessages, join, openInbox, poolRecords, poolWith, send, suspend, toRun, watchPool } from "../support/pools.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

const RETENTION_MS = 2_000;

describe.each(serverBackends())("a pool's history and the seed's pool semantics on the $name backend", (backend) => {
  describe.skipIf(!backend.available)(`a server keeping journal events ${RETENTION_MS} ms`, () => {
    const server = useServerProcess({ backend: isolated(backend), args: ["--event-retention-ms", String(RETENTION_MS)] });
    const { pools, events } = useClients(() => server().url, "grpc");

    it("after retention deleted the pool's events, WatchPool from the start replays every record, numbered 1, 2, 3..., and its messages and inbox come back in full", async () => {
      const { poolId, runs } = await poolWith(pools, { writer: {}, reader: {} });
      const sent = [];
      for (let i = 0; i < 5; i++) sent.push((await send(pools, poolId, { fromRunId: runs.writer.runId, to: toRun(runs.reader.runId), body: { data: new TextEncoder().encode(`#${i}`), mediaType: "text/plain" } })).receipt);
      const wake = await suspend(pools, poolId, runs.reader.runId, { filter: { runIds: [runs.writer.runId], kinds: [EventKind.RUN_COMPLETED] } });
      await pools.cancelWake({ poolId, conditionId: wake.registration.conditionId });
      const before = await poolRecords(pools, poolId);
      const last = before.at(-1)!.cursor;

      // Retention deletes the pool's events from the journal (the purge logs how far it got).
      await server().waitForLog((line) => line.msg === "deleted journal events past retention" && Number(line.purged_through) >= Number(last), `a purge through event_seq ${last}`);
      const { frames } = await events.listEvents({ scope: { case: "filter", value: { poolIds: [poolId] } }, pageSize: 1000 });
      expect(frames).toEqual([]);

      const after = await poolRecords(pools, poolId);
      expect(after).toEqual(before);
      expect(after.map((r) => r.sequence)).toEqual(after.map((_, i) => BigInt(i + 1)));
      expect(after.map(describeRecord).slice(0, 4)).toEqual(["opened", `created by ${runs.writer.runId}`, `memberJoined ${runs.writer.runId}`, `memberJoined ${runs.reader.runId}`]);
      // From any record's cursor or sequence, the rest.
      expect(await poolRecords(pools, poolId, after[3]!.cursor)).toEqual(after.slice(4));
      const listed = [];
      for (let token = ""; ;) {
        const page = await pools.listMessages({ poolId, pageSize: 2, pageToken: token });
        listed.push(...page.messages);
        if ((token = page.nextPageToken) === "") break;
      }
      expect(listed.map((m) => [m.message?.messageId, m.receipt?.status])).toEqual(sent.map((r) => [r.messageId, MessageStatus.DELIVERED]));
      const wakes = await pools.listWakeConditions({ poolId });
      expect(wakes.wakes.map((w) => w.registration?.status)).toEqual([Wake.CANCELLED]);
      const inbox = await openInbox(pools, poolId, runs.reader.runId);
      expect((await inboxMessages(inbox, 5, "the reader's inbox")).map((m) => m.message?.messageId)).toEqual(sent.map((r) => r.messageId));
    });

    it("WatchPool after a sequence gets exactly the later records; beyond the latest is OUT_OF_RANGE CURSOR_AHEAD", async () => {
      const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
      await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId) });
      const all = await poolRecords(pools, poolId);
      const latest = (await pools.getPool({ poolId })).snapshot!.sequence;
      expect(latest).toBe(all.at(-1)!.sequence);
      const frames = new Frames((signal) => pools.watchPool({ poolId, afterSequence: 2n }, { signal }));
      try {
        const records = [];
        for (;;) {
          const frame = await frames.next("records after sequence 2");
          if (frame.frame.case === "heartbeat") break;
          records.push(frame.frame.value!);
        }
        expect(records).toEqual(all.slice(2));
      } finally {
        frames.close();
      }
      const ahead = await refusal(drainStream(pools.watchPool({ poolId, afterSequence: latest + 1n })));
      expect(ahead).toMatchObject({ code: Code.OutOfRange, detail: { reason: ErrorReason.CURSOR_AHEAD, field: "after_sequence" } });
      const both = await refusal(drainStream(pools.watchPool({ poolId, afterSequence: 1n, afterCursor: all[0]!.cursor })));
      expect(both).toMatchObject({ code: Code.InvalidArgument, detail: { field: "after_sequence" } });
    });
  });

  describe.skipIf(!backend.available)("a server with the default retention", () => {
    const server = useServerProcess({ backend: isolated(backend) });
    const { pools, events } = useClients(() => server().url, "grpc");

    it("a member's SubscribePool shows no event its pool's policies exclude, and no payload where the pool is envelope-only", async () => {
      const { poolId, runs } = await poolWith(pools, { watcher: { policies: ["observe"] }, seen: { policies: ["observe"] }, hidden: {} }, { policyRefs: [{ id: "observe" }] });
      const full = (runId: string, kind: EventKind) => events.publish({ event: { envelope: { runId, kind }, payload: { case: "full", value: { data: new TextEncoder().encode("secret"), mediaType: "text/plain" } } } });
      await full(runs.hidden.runId, EventKind.RUN_STARTED);
      await full(uid("outsider"), EventKind.RUN_STARTED);
      await full(runs.seen.runId, EventKind.RUN_STARTED);
      const frames = new Frames<SubscribePoolResponse>((signal) => pools.subscribePool({ poolId, runId: runs.watcher.runId, filter: { payloadAccess: PayloadAccessMode.FULL } }, { signal }));
      try {
        const seen = [];
        for (;;) {
          const frame = (await frames.next("the member's view up to caught up")).frame!;
          if (frame.kind === EventFrameKind.CAUGHT_UP) break;
          seen.push(frame.event!);
        }
        expect(seen.map((e) => e.envelope?.runId)).not.toContain(runs.hidden.runId);
        expect(new Set(seen.map((e) => e.envelope?.runId))).toEqual(new Set([runs.watcher.runId, runs.seen.runId]));
        expect(seen.map((e) => e.payload.case)).not.toContain("full");
        expect(seen.find((e) => e.envelope?.kind === EventKind.RUN_STARTED)?.envelope?.runId).toBe(runs.seen.runId);
      } finally {
        frames.close();
      }
      const outsider = await refusal(drainStream(pools.subscribePool({ poolId, runId: uid("outsider") })));
      expect(outsider).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.RUN_NOT_MEMBER } });
    });

    it("a wake condition registered with match_history triggers at once on a past matching event; without it, it waits", async () => {
      const { poolId, runs } = await poolWith(pools, { waiter: {}, worker: {} });
      const past = await publish(events, { runId: runs.worker.runId, kind: EventKind.RUN_COMPLETED });
      const filter = { runIds: [runs.worker.runId], kinds: [EventKind.RUN_COMPLETED] };
      const withHistory = await suspend(pools, poolId, runs.waiter.runId, { filter, matchHistory: true });
      expect(withHistory.registration).toMatchObject({ status: Wake.TRIGGERED, matchedEventId: past.eventId });
      expect((await suspend(pools, poolId, runs.waiter.runId, { filter })).registration.status).toBe(Wake.REGISTERED);
      const both = await refusal(suspend(pools, poolId, runs.waiter.runId, { filter, matchHistory: true, after: { eventSeq: 1n } }));
      expect(both).toMatchObject({ code: Code.InvalidArgument, detail: { field: "condition.match_history" } });
    });

    it("a WatchPool record's cursor and an inbox message's cursor work as a wake condition's `after`", async () => {
      const { poolId, runs } = await poolWith(pools, { waiter: {}, sender: {} });
      const inbox = await openInbox(pools, poolId, runs.waiter.runId);
      await send(pools, poolId, { fromRunId: runs.sender.runId, to: toRun(runs.waiter.runId) });
      const [read] = await inboxMessages(inbox, 1, "the first message");
      // Sent after the read, before the registration: `after` = the read's cursor still sees it.
      const { receipt } = await send(pools, poolId, { fromRunId: runs.sender.runId, to: toRun(runs.waiter.runId) });
      const filter = { runIds: [runs.sender.runId], kinds: [EventKind.RUN_MESSAGE_DELIVERED] };
      const byInbox = await suspend(pools, poolId, runs.waiter.runId, { filter, after: { eventSeq: read!.cursor } });
      expect(byInbox.registration.status).toBe(Wake.TRIGGERED);
      expect(byInbox.registration.resumeInput?.eventRefs.map((r) => r.id)).toContain(receipt.messageId);
      const records = await poolRecords(pools, poolId);
      const byRecord = await suspend(pools, poolId, runs.waiter.runId, { filter, after: { eventSeq: records.find((r) => r.record.case === "message")!.cursor } });
      expect(byRecord.registration.status).toBe(Wake.TRIGGERED);
    });

    it("DeletePool ends the pool's WatchPool with NOT_FOUND, cancels its wakes, and the id can be opened again with a new history", async () => {
      const { poolId, runs } = await poolWith(pools, { a: {} });
      const { registration } = await suspend(pools, poolId, runs.a.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] } });
      const watching = watchPool(pools, poolId);
      expect((await watching.next("the first record")).frame.case).toBe("record");
      expect((await pools.deletePool({ poolId })).cancelledWakeConditions).toBe(1n);
      const ended = await (async () => {
        for (;;) {
          const outcome = await watching.next("the end of WatchPool").catch((error: unknown) => error);
          if (outcome instanceof Error) return outcome;
        }
      })();
      expect(String(ended)).toMatch(/not.found/i);
      expect((await refusal(pools.getPool({ poolId }))).code).toBe(Code.NotFound);
      expect((await refusal(pools.deletePool({ poolId }))).code).toBe(Code.NotFound);
      expect((await refusal(pools.pollWake({ poolId, conditionId: registration.conditionId }))).code).toBe(Code.NotFound);
      await pools.openPool({ poolId });
      await join(pools, poolId, { runId: runs.a.runId });
      expect((await poolRecords(pools, poolId)).map((r) => [r.sequence, r.record.case])).toEqual([[1n, "opened"], [2n, "created"], [3n, "memberJoined"]]);
    });
  });
});
