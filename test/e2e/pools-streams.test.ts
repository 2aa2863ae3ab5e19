/**
 * PoolService end to end, the pool's record streams: a run's inbox
 * (ReceiveMessages) and WatchPool, read in part, disconnected and resumed
 * from the last cursor seen, over gRPC, gRPC-Web and Connect.
 */
import { Code } from "@connectrpc/connect";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { describe, expect, it } from "vitest";
import { MessageStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { isolated, protocols, refusal, uid, useClients } from "../support/mailbox.js";
import { body, describeRecord, inboxMessages, join, openInbox, poolRecords, poolWith, recordOf, send, toAgent, toPool, toRun, watchPool } from "../support/pools.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

describe.each(serverBackends())("PoolService record streams on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { pools } = useClients(() => server().url, protocol);

      describe("ReceiveMessages: a run's inbox resumes after the last cursor seen with no gap and no duplicate", () => {
        it("reading 3 of 5 messages, disconnecting while 3 more arrive, and resuming after the 3rd gives all 8 once, in order", async () => {
          const { poolId, runs } = await poolWith(pools, { reader: { agentId: "readers", topics: ["news"] }, other: { agentId: "readers" }, sender: {} });
          const sendTo = async (n: number) => {
            const ids: string[] = [];
            for (let i = 0; i < n; i++) {
              const to = [toRun(runs.reader.runId), toAgent("readers"), toPool(poolId)][i % 3]!;
              ids.push((await send(pools, poolId, { fromRunId: runs.sender.runId, to, body: body(`#${i}`) })).receipt.messageId);
              // Not for the reader: never in its inbox.
              await send(pools, poolId, { fromRunId: runs.sender.runId, to: toRun(runs.other.runId) });
              await send(pools, poolId, { fromRunId: runs.sender.runId, to: toRun(uid("stranger")) });
            }
            return ids;
          };
          const early = await sendTo(5);
          const first = await openInbox(pools, poolId, runs.reader.runId);
          const seen = await inboxMessages(first, 3, "the first three");
          first.close();
          const late = await sendTo(3);
          const resumed = await openInbox(pools, poolId, runs.reader.runId, seen.at(-1)!.cursor);
          const rest = await inboxMessages(resumed, 5, "the rest, after resuming");

          const union = [...seen, ...rest];
          expect(union.map((m) => m.message?.messageId)).toEqual([...early, ...late]);
          const cursors = union.map((m) => m.cursor);
          expect(cursors.every((c, i) => i === 0 || c > cursors[i - 1]!)).toBe(true);
          expect(union.every((m) => m.receipt?.status === MessageStatus.DELIVERED && m.receipt.deliveredTo.includes(runs.reader.runId))).toBe(true);

          const whole = await openInbox(pools, poolId, runs.reader.runId);
          expect(await inboxMessages(whole, 8, "the whole inbox")).toEqual(union);
        });

        it("an open inbox receives messages sent after it caught up, live", async () => {
          const { poolId, runs } = await poolWith(pools, { reader: {}, sender: {} });
          const inbox = await openInbox(pools, poolId, runs.reader.runId);
          const { receipt } = await send(pools, poolId, { fromRunId: runs.sender.runId, to: toRun(runs.reader.runId) });
          const [message] = await inboxMessages(inbox, 1, "the live message");
          expect(message).toMatchObject({ message: { messageId: receipt.messageId, fromRunId: runs.sender.runId }, receipt: { messageId: receipt.messageId, status: MessageStatus.DELIVERED } });
          expect(message?.cursor).toBe(receipt.journalCursor?.eventSeq);
        });
      });

      describe("a record stream refuses a bad request before its first frame", () => {
        it("ReceiveMessages: a cursor ahead of the journal gets OUT_OF_RANGE (CURSOR_AHEAD) and no frame; an unknown pool NOT_FOUND", async () => {
          const { poolId, runs } = await poolWith(pools, { reader: {} });
          const frames: unknown[] = [];
          const read = async (request: { poolId: string; afterCursor: bigint }) => {
            for await (const frame of pools.receiveMessages({ ...request, runId: runs.reader.runId })) frames.push(frame);
          };
          expect(await refusal(read({ poolId, afterCursor: 1n << 40n }))).toMatchObject({ code: Code.OutOfRange, detail: { reason: ErrorReason.CURSOR_AHEAD } });
          expect(await refusal(read({ poolId: uid("no-such-pool"), afterCursor: 0n }))).toMatchObject({ code: Code.NotFound });
          expect(frames).toEqual([]);
        });
      });

      describe("WatchPool resumes after the last cursor seen with no gap and no duplicate", () => {
        it("reading part of the records, disconnecting while more are written, and resuming gives every record once, in order", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          for (let i = 0; i < 4; i++) await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId) });
          const first = watchPool(pools, poolId);
          const seen = [];
          for (let i = 0; i < 7; i++) seen.push(await first.nextMatching(recordOf, `record ${i + 1}`));
          first.close();
          for (let i = 0; i < 3; i++) await send(pools, poolId, { fromRunId: runs.b.runId, to: toRun(runs.a.runId) });
          await join(pools, poolId, { runId: uid("late") });
          await pools.leaveRun({ poolId, runId: runs.a.runId });

          const all = await poolRecords(pools, poolId);
          const resumed = watchPool(pools, poolId, seen.at(-1)!.cursor);
          const rest = [];
          while (rest.length < all.length - seen.length) rest.push(await resumed.nextMatching(recordOf, `record ${seen.length + rest.length + 1}`));
          expect([...seen, ...rest]).toEqual(all);
          expect(all.map((r) => r.cursor).every((c, i, cursors) => i === 0 || c > cursors[i - 1]!)).toBe(true);
          // Opened, created, 2 joins, 7 messages of 2 records each, a join and a leave.
          expect(all.map(describeRecord).filter((d) => d.startsWith("message"))).toHaveLength(14);
          expect(all).toHaveLength(20);

          // Live after the resume: a message to the run that left.
          const { receipt } = await send(pools, poolId, { fromRunId: runs.b.runId, to: toRun(runs.a.runId) });
          const live = await resumed.nextMatching(recordOf, "a live record");
          expect(describeRecord(live)).toBe(`message ${receipt.messageId} ${MessageStatus.FAILED}`);
          expect(live.cursor).toBe(receipt.journalCursor?.eventSeq);
        });
      });
    });
  });
});
