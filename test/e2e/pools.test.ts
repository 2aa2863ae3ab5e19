/**
 * PoolService end to end, pools and messages: the real server process,
 * generated clients over gRPC, gRPC-Web and Connect, and an independent gRPC
 * implementation, on every backend.
 *
 * Wake conditions are in pools-wakes.test.ts, resuming the record streams in
 * pools-streams.test.ts, restarts and several instances in
 * pools-instances.test.ts.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { EntityKind } from "../../gen/mailroom/v1/common_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { MessageStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { drainStream, isolated, ms, protocols, refusal, uid, useClients } from "../support/mailbox.js";
import { type GrpcJsPoolRefusal, type GrpcJsPools, grpcJsPools } from "../support/pools-grpc-js.js";
import {
  type AddressInit,
  body,
  describeRecord,
  inboxMessages,
  join,
  newPool,
  openInbox,
  policies,
  poolRecords,
  poolWith,
  recordsUntil,
  send,
  toAgent,
  toPool,
  toRun,
  toTopic,
  watchPool,
} from "../support/pools.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";
import { useInProcessServers } from "../support/in-process-servers.js";
import { storeBackends } from "../support/stores.js";
import { testClients } from "../support/e2e-auth.js";

const MAX_BODY_BYTES = 64 * 1024;

describe.each(serverBackends())("PoolService on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { pools } = useClients(() => server().url, protocol);

      /** Everything a refused call might have changed: the snapshot and every record. */
      const stateOf = async (poolId: string) => ({
        snapshot: (await pools.getPool({ poolId })).snapshot,
        records: (await poolRecords(pools, poolId)).map(describeRecord),
      });

      describe("a pool is opened once with a config that is fixed from then on", () => {
        const config = { messagePolicy: { requiredPolicyRefs: policies("tenant:a"), includeSenderInPoolBroadcast: true }, policyRefs: policies("observe") };

        it("OpenPool returns the snapshot with the config; re-opening with the same config answers opened=false", async () => {
          const poolId = uid("pool");
          const first = await pools.openPool({ poolId, config });
          expect(first.opened).toBe(true);
          expect(first.snapshot).toMatchObject({ poolId, created: false, members: [], config: { ...config, wakePolicy: { envelopeOnly: true } } });
          const again = await pools.openPool({ poolId, config });
          expect(again.opened).toBe(false);
          expect(again.snapshot?.config).toEqual(first.snapshot?.config);
          expect((await poolRecords(pools, poolId)).map((r) => r.record.case)).toEqual(["opened"]);
        });

        it("re-opening with another config gets FAILED_PRECONDITION POOL_CONFIG_CONFLICT and the config stays", async () => {
          const poolId = uid("pool");
          await pools.openPool({ poolId, config });
          const before = await stateOf(poolId);
          for (const other of [undefined, { ...config, messagePolicy: { ...config.messagePolicy, includeSenderInPoolBroadcast: false } }, { ...config, policyRefs: policies("observe", "more") }]) {
            const conflict = await refusal(pools.openPool({ poolId, config: other }));
            expect(conflict).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.POOL_CONFIG_CONFLICT, entity: { kind: EntityKind.AGENT_POOL, id: poolId } } });
          }
          expect(await stateOf(poolId)).toEqual(before);
        });

        it("an unknown pool gets NOT_FOUND from GetPool, JoinRun, ListMembers, Send and WatchPool", async () => {
          const poolId = uid("never-opened");
          const calls = [
            () => pools.getPool({ poolId }),
            () => pools.joinRun({ poolId, member: { runId: "r", agentId: "a" } }),
            () => pools.listMembers({ poolId }),
            () => pools.send({ poolId, message: { fromRunId: "r", to: toRun("s") } }),
            () => drainStream(pools.watchPool({ poolId })),
          ];
          for (const call of calls) expect(await refusal(call())).toMatchObject({ code: Code.NotFound, detail: { entity: { kind: EntityKind.AGENT_POOL, id: poolId } } });
        });
      });

      describe("membership: the first join creates the pool; runs join, update and leave", () => {
        it("the first JoinRun answers pool_created=true, every later one false, and the pool records say so once", async () => {
          const poolId = await newPool(pools);
          expect((await pools.getPool({ poolId })).snapshot?.created).toBe(false);
          const first = await pools.joinRun({ poolId, member: { runId: "run-1", agentId: "agent-1" } });
          const second = await pools.joinRun({ poolId, member: { runId: "run-2", agentId: "agent-1" } });
          const rejoin = await pools.joinRun({ poolId, member: { runId: "run-1", agentId: "agent-1", topics: ["t"] } });
          expect([first.poolCreated, second.poolCreated, rejoin.poolCreated]).toEqual([true, false, false]);
          expect(first.cursor < second.cursor && second.cursor < rejoin.cursor).toBe(true);
          expect((await pools.getPool({ poolId })).snapshot?.created).toBe(true);
          const records = await poolRecords(pools, poolId);
          expect(records.map(describeRecord)).toEqual(["opened", "created by run-1", "memberJoined run-1", "memberJoined run-2", "memberJoined run-1"]);
          expect(records.at(-1)?.cursor).toBe(rejoin.cursor);
        });

        it("a re-join replaces the run's topics and policies; LeaveRun removes it, and leaving again gets RUN_NOT_MEMBER", async () => {
          const poolId = await newPool(pools);
          await join(pools, poolId, { runId: "run-1", agentId: "agent", topics: ["a", "b"], policies: ["p"] });
          const updated = await pools.joinRun({ poolId, member: { runId: "run-1", agentId: "agent", topics: ["c"], policyRefs: [] } });
          expect(updated.member).toMatchObject({ runId: "run-1", topics: ["c"], policyRefs: [] });
          expect((await pools.listMembers({ poolId })).members).toMatchObject([{ runId: "run-1", topics: ["c"], policyRefs: [] }]);
          const left = await pools.leaveRun({ poolId, runId: "run-1" });
          expect(left.member).toMatchObject({ runId: "run-1", agentId: "agent", topics: ["c"] });
          expect((await pools.listMembers({ poolId })).members).toEqual([]);
          const again = await refusal(pools.leaveRun({ poolId, runId: "run-1" }));
          expect(again).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.RUN_NOT_MEMBER, entity: { kind: EntityKind.RUN, id: "run-1" } } });
          expect((await poolRecords(pools, poolId)).at(-1)).toMatchObject({ cursor: left.cursor, record: { case: "memberLeft", value: { runId: "run-1" } } });
        });

        it("ListMembers answers the members sorted by run_id, whatever order they joined in", async () => {
          const poolId = await newPool(pools);
          for (const runId of ["run-c", "run-a", "run-d", "run-b"]) await join(pools, poolId, { runId, agentId: "agent" });
          await pools.leaveRun({ poolId, runId: "run-d" });
          expect((await pools.listMembers({ poolId })).members.map((m) => m.runId)).toEqual(["run-a", "run-b", "run-c"]);
        });

        it("more than 64 topics or 32 policies for a member, or 32 policies for a pool, get INVALID_ARGUMENT naming the field", async () => {
          const poolId = await newPool(pools);
          const before = await stateOf(poolId);
          const many = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
          const joining = (member: { topics?: string[]; policyRefs?: Array<{ id: string }> }) => refusal(pools.joinRun({ poolId, member: { runId: "r", agentId: "a", ...member } }));
          expect((await joining({ topics: many(65, "t") })).detail?.field).toBe("member.topics");
          expect((await joining({ policyRefs: policies(...many(33, "p")) })).detail?.field).toBe("member.policy_refs");
          expect(await stateOf(poolId)).toEqual(before);
          await join(pools, poolId, { runId: "r", topics: many(64, "t"), policies: many(32, "p") });
          const tooMany = await refusal(pools.openPool({ poolId: uid("pool"), config: { policyRefs: policies(...many(33, "p")) } }));
          expect(tooMany).toMatchObject({ code: Code.InvalidArgument, detail: { field: "config.policy_refs" } });
        });

        it("JoinRun without run_id or agent_id gets INVALID_ARGUMENT naming the field and changes nothing", async () => {
          const poolId = await newPool(pools);
          const before = await stateOf(poolId);
          expect((await refusal(pools.joinRun({ poolId, member: { agentId: "a" } }))).detail?.field).toBe("member.run_id");
          expect((await refusal(pools.joinRun({ poolId, member: { runId: "r" } }))).detail?.field).toBe("member.agent_id");
          expect(await stateOf(poolId)).toEqual(before);
        });
      });

      describe("GetPool: the pool as a whole", () => {
        it("has the members, their topics sorted and deduplicated, recent messages oldest first, registered wakes and the latest record's cursor", async () => {
          const { poolId, runs } = await poolWith(pools, { a: { topics: ["zeta", "alpha"] }, b: { topics: ["alpha", "mid"] } });
          const sent = [];
          for (let i = 0; i < 3; i++) sent.push((await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId), body: body(`#${i}`) })).receipt);
          const wake = await pools.suspendUntil({ poolId, runId: runs.b.runId, condition: { runId: runs.b.runId, filter: { kinds: [] } } });
          const { snapshot } = await pools.getPool({ poolId, maxMessages: 2 });
          expect(snapshot?.members.map((m) => m.runId)).toEqual([runs.a.runId, runs.b.runId].sort());
          expect(snapshot?.topics).toEqual(["alpha", "mid", "zeta"]);
          expect(snapshot?.messages.map((m) => m.message?.messageId)).toEqual(sent.slice(1).map((r) => r.messageId));
          expect(snapshot?.messages.map((m) => m.receipt?.status)).toEqual([MessageStatus.DELIVERED, MessageStatus.DELIVERED]);
          expect(snapshot?.messages.map((m) => m.receipt?.journalCursor?.eventSeq)).toEqual(sent.slice(1).map((r) => r.journalCursor?.eventSeq));
          expect(snapshot?.messagesTruncated).toBe(true);
          expect(snapshot?.wakes.map((w) => w.registration?.conditionId)).toEqual([wake.registration?.conditionId]);
          const records = await poolRecords(pools, poolId);
          expect(snapshot?.cursor).toBe(records.at(-1)?.cursor);
          expect((await pools.getPool({ poolId })).snapshot?.messagesTruncated).toBe(false);
        });

        it("WatchPool after the snapshot's cursor sees only later records", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId) });
          const { snapshot } = await pools.getPool({ poolId });
          const later = await join(pools, poolId, { runId: uid("late") });
          const records = await poolRecords(pools, poolId, snapshot!.cursor);
          expect(records.map(describeRecord)).toEqual([`memberJoined ${later.runId}`]);
          expect(records[0]?.cursor).toBe(later.cursor);
        });
      });

      describe("Send: an address reaches the members it names that hold the message's policies", () => {
        it("a run address reaches that run; an agent address every run of the agent; a topic address every subscriber", async () => {
          const { poolId, runs } = await poolWith(pools, {
            sender: { agentId: "planner" },
            w2: { agentId: "worker", topics: ["reviews"] },
            w1: { agentId: "worker" },
            other: { agentId: "critic", topics: ["reviews", "ops"] },
          });
          const from = runs.sender.runId;
          const delivered = async (to: AddressInit) => (await send(pools, poolId, { fromRunId: from, to })).receipt;
          expect(await delivered(toRun(runs.w1.runId))).toMatchObject({ status: MessageStatus.DELIVERED, deliveredTo: [runs.w1.runId] });
          expect((await delivered(toAgent("worker"))).deliveredTo).toEqual([runs.w1.runId, runs.w2.runId].sort());
          expect((await delivered(toTopic("reviews"))).deliveredTo).toEqual([runs.w2.runId, runs.other.runId].sort());
          expect((await delivered(toTopic("ops"))).deliveredTo).toEqual([runs.other.runId]);
        });

        it("a pool broadcast reaches every member but the sender", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {}, c: {} });
          const { receipt } = await send(pools, poolId, { fromRunId: runs.b.runId, to: toPool(poolId) });
          expect(receipt.deliveredTo).toEqual([runs.a.runId, runs.c.runId].sort());
        });

        it("a pool broadcast reaches the sender too when the pool's message policy includes it", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} }, { messagePolicy: { includeSenderInPoolBroadcast: true } });
          const { receipt } = await send(pools, poolId, { fromRunId: runs.b.runId, to: toPool(poolId) });
          expect(receipt.deliveredTo).toEqual([runs.a.runId, runs.b.runId].sort());
        });

        it("a pool address naming another pool gets INVALID_ARGUMENT message.to.pool_id", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          const wrong = await refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId, to: toPool(uid("elsewhere")) } }));
          expect(wrong).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.INVALID_FIELD, field: "message.to.pool_id" } });
        });

        it("members that do not hold every policy the message carries are not delivered to", async () => {
          const { poolId, runs } = await poolWith(pools, { sender: {}, both: { policies: ["pii", "eu"] }, pii: { policies: ["pii"] }, none: {} });
          const { receipt } = await send(pools, poolId, { fromRunId: runs.sender.runId, to: toPool(poolId), policyRefs: policies("pii", "eu") });
          expect(receipt.deliveredTo).toEqual([runs.both.runId]);
          const { receipt: onePolicy } = await send(pools, poolId, { fromRunId: runs.sender.runId, to: toPool(poolId), policyRefs: policies("pii") });
          expect(onePolicy.deliveredTo).toEqual([runs.both.runId, runs.pii.runId].sort());
          const inbox = await openInbox(pools, poolId, runs.none.runId);
          const { receipt: plain } = await send(pools, poolId, { fromRunId: runs.sender.runId, to: toRun(runs.none.runId) });
          expect((await inboxMessages(inbox, 1, "the only message without policies"))[0]?.message?.messageId).toBe(plain.messageId);
        });

        it("delivered_to is sorted and names each run once, whatever order the runs joined in", async () => {
          const poolId = await newPool(pools);
          const sender = await join(pools, poolId, { runId: uid("sender") });
          for (const runId of ["run-9", "run-1", "run-5"]) await join(pools, poolId, { runId, agentId: "same", topics: ["t", "u"] });
          expect((await send(pools, poolId, { fromRunId: sender.runId, to: toAgent("same") })).receipt.deliveredTo).toEqual(["run-1", "run-5", "run-9"]);
          expect((await send(pools, poolId, { fromRunId: sender.runId, to: toTopic("u") })).receipt.deliveredTo).toEqual(["run-1", "run-5", "run-9"]);
        });
      });

      describe("Send: a message's statuses", () => {
        it("a delivered message is recorded ACCEPTED then DELIVERED, and the receipt is the DELIVERED record's", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          const watch = watchPool(pools, poolId, (await pools.getPool({ poolId })).snapshot!.cursor);
          const { receipt } = await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId), body: body("hello") });
          const records = await recordsUntil(watch, (r) => r.record.case === "message" && r.record.value.receipt?.status === MessageStatus.DELIVERED, "the DELIVERED record");
          expect(records.map(describeRecord)).toEqual([`message ${receipt.messageId} ${MessageStatus.ACCEPTED}`, `message ${receipt.messageId} ${MessageStatus.DELIVERED}`]);
          const delivered = records[1]!.record.value as { receipt: { journalCursor?: { eventSeq: bigint }; deliveredTo: string[] } };
          expect(delivered.receipt.deliveredTo).toEqual([runs.b.runId]);
          expect(receipt.journalCursor?.eventSeq).toBe(delivered.receipt.journalCursor?.eventSeq);
          expect(records[0]!.cursor < records[1]!.cursor).toBe(true);
        });

        it("a message whose expires_at has passed is EXPIRED and delivered to no one", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          const inbox = await openInbox(pools, poolId, runs.b.runId);
          const { receipt } = await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId), expiresAt: timestampFromMs(Date.now() - 1_000) });
          expect(receipt).toMatchObject({ status: MessageStatus.EXPIRED, deliveredTo: [] });
          const { receipt: later } = await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId), expiresAt: timestampFromMs(Date.now() + 60_000) });
          expect(later.status).toBe(MessageStatus.DELIVERED);
          expect((await inboxMessages(inbox, 1, "the unexpired message"))[0]?.message?.messageId).toBe(later.messageId);
          expect((await poolRecords(pools, poolId)).filter((r) => r.record.case === "message").map(describeRecord)).toEqual([
            `message ${receipt.messageId} ${MessageStatus.EXPIRED}`,
            `message ${later.messageId} ${MessageStatus.ACCEPTED}`,
            `message ${later.messageId} ${MessageStatus.DELIVERED}`,
          ]);
        });

        it("a message no member matches is FAILED", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          for (const to of [toRun(uid("stranger")), toAgent("nobody"), toTopic("unheard"), toRun(runs.b.runId)]) {
            const policyRefs = to.target.value === runs.b.runId ? policies("not-held") : [];
            expect((await send(pools, poolId, { fromRunId: runs.a.runId, to, policyRefs })).receipt).toMatchObject({ status: MessageStatus.FAILED, deliveredTo: [] });
          }
          const alone = await poolWith(pools, { solo: {} });
          expect((await send(pools, alone.poolId, { fromRunId: alone.runs.solo.runId, to: toPool(alone.poolId) })).receipt.status).toBe(MessageStatus.FAILED);
        });

        it("a repeated idempotency key returns the first receipt with deduplicated=true and changes nothing", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {}, c: {} });
          const message = { fromRunId: runs.a.runId, to: toRun(runs.b.runId), messageId: uid("message") };
          const first = await send(pools, poolId, message);
          expect(first.deduplicated).toBe(false);
          const before = await stateOf(poolId);
          await join(pools, poolId, { runId: runs.b.runId, agentId: runs.b.agentId, topics: ["changed"] });
          const afterJoin = await stateOf(poolId);
          const again = await send(pools, poolId, { ...message, to: toPool(poolId), body: body("another body") });
          expect(again).toEqual({ receipt: first.receipt, deduplicated: true });
          const byKey = await send(pools, poolId, { fromRunId: runs.c.runId, to: toRun(runs.a.runId), idempotencyKey: message.messageId });
          expect(byKey).toEqual({ receipt: first.receipt, deduplicated: true });
          expect(await stateOf(poolId)).toEqual(afterJoin);
          expect(afterJoin.records.slice(0, before.records.length)).toEqual(before.records);
        });

        it("a member holding the pool's required policies may send only messages that carry them: otherwise SENDER_POLICY_MISSING", async () => {
          const { poolId, runs } = await poolWith(pools, { a: { policies: ["tenant:a"] }, b: { policies: ["tenant:a"] } }, { messagePolicy: { requiredPolicyRefs: policies("tenant:a") } });
          const before = await stateOf(poolId);
          const missing = await refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId, to: toRun(runs.b.runId) } }));
          expect(missing).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.SENDER_POLICY_MISSING } });
          expect(await stateOf(poolId)).toEqual(before);
          const { receipt } = await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId), policyRefs: policies("tenant:a") });
          expect(receipt).toMatchObject({ status: MessageStatus.DELIVERED, deliveredTo: [runs.b.runId] });
        });
      });

      describe("Send: refused requests change nothing", () => {
        it("an inline body above 64 KiB gets INVALID_ARGUMENT naming message.body.data; exactly 64 KiB is accepted", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          const before = await stateOf(poolId);
          const tooBig = await refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId, to: toRun(runs.b.runId), body: { data: new Uint8Array(MAX_BODY_BYTES + 1) } } }));
          expect(tooBig).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.INVALID_FIELD, field: "message.body.data" } });
          expect(await stateOf(poolId)).toEqual(before);
          const { receipt } = await send(pools, poolId, { fromRunId: runs.a.runId, to: toRun(runs.b.runId), body: { data: new Uint8Array(MAX_BODY_BYTES) } });
          expect(receipt.status).toBe(MessageStatus.DELIVERED);
        });

        it("a sender that is not a member gets FAILED_PRECONDITION RUN_NOT_MEMBER", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          const before = await stateOf(poolId);
          const stranger = uid("stranger");
          const refused = await refusal(pools.send({ poolId, message: { fromRunId: stranger, to: toRun(runs.b.runId) } }));
          expect(refused).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.RUN_NOT_MEMBER, entity: { kind: EntityKind.RUN, id: stranger } } });
          await pools.leaveRun({ poolId, runId: runs.a.runId });
          const left = await stateOf(poolId);
          expect((await refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId, to: toRun(runs.b.runId) } }))).detail?.reason).toBe(ErrorReason.RUN_NOT_MEMBER);
          expect(await stateOf(poolId)).toEqual(left);
          expect(left.records.slice(0, before.records.length)).toEqual(before.records);
        });

        it("an address without a target gets INVALID_ARGUMENT message.to.target; no address at all message.to", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          const before = await stateOf(poolId);
          expect(await refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId, to: {} } }))).toMatchObject({ code: Code.InvalidArgument, detail: { field: "message.to.target" } });
          expect(await refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId } }))).toMatchObject({ code: Code.InvalidArgument, detail: { field: "message.to" } });
          expect(await refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId, to: toRun(runs.b.runId), replyTo: "x" } }))).toMatchObject({ code: Code.InvalidArgument, detail: { field: "message.reply_to" } });
          expect(await stateOf(poolId)).toEqual(before);
        });

        it("a response contract expecting 0 or more than 1000 replies, or timing out after more than 30 days, gets INVALID_ARGUMENT naming the field", async () => {
          const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
          const before = await stateOf(poolId);
          const withContract = (responseContract: { expectedResponses: number; timeout?: ReturnType<typeof ms> }) =>
            refusal(pools.send({ poolId, message: { fromRunId: runs.a.runId, to: toRun(runs.b.runId), responseContract } }));
          for (const expectedResponses of [0, 1001]) {
            expect(await withContract({ expectedResponses })).toMatchObject({ code: Code.InvalidArgument, detail: { field: "message.response_contract.expected_responses" } });
          }
          expect(await withContract({ expectedResponses: 1, timeout: ms(30 * 86_400_000 + 1_000) })).toMatchObject({ code: Code.InvalidArgument, detail: { field: "message.response_contract.timeout" } });
          expect(await stateOf(poolId)).toEqual(before);
        });

        it("a message to an unknown pool gets NOT_FOUND naming the pool", async () => {
          const poolId = uid("never-opened");
          expect(await refusal(pools.send({ poolId, message: { fromRunId: "a", to: toRun("b") } }))).toMatchObject({ code: Code.NotFound, detail: { entity: { kind: EntityKind.AGENT_POOL, id: poolId } } });
        });
      });

      describe("Respond and response contracts", () => {
        const contract = (expectedResponses: number, timeoutMs?: number) => ({ expectedResponses, timeout: timeoutMs === undefined ? undefined : ms(timeoutMs) });

        it("a message expecting 2 replies is RESPONDED once two recipients have replied; Respond answers the original's receipt", async () => {
          const { poolId, runs } = await poolWith(pools, { asker: {}, x: {}, y: {} });
          const asker = await openInbox(pools, poolId, runs.asker.runId);
          const { receipt: asked } = await send(pools, poolId, { fromRunId: runs.asker.runId, to: toPool(poolId), responseContract: contract(2) });
          expect(asked).toMatchObject({ status: MessageStatus.DELIVERED, responseCount: 0 });
          const first = await pools.respond({ poolId, reply: { fromRunId: runs.x.runId, replyTo: asked.messageId, body: body("one") } });
          expect(first.receipt).toMatchObject({ status: MessageStatus.DELIVERED, deliveredTo: [runs.asker.runId] });
          expect(first.original).toMatchObject({ messageId: asked.messageId, status: MessageStatus.DELIVERED, responseCount: 1 });
          const second = await pools.respond({ poolId, reply: { fromRunId: runs.y.runId, replyTo: asked.messageId } });
          expect(second.original).toMatchObject({ messageId: asked.messageId, status: MessageStatus.RESPONDED, responseCount: 2 });
          const replies = await inboxMessages(asker, 2, "the two replies");
          expect(replies.map((m) => [m.message?.messageId, m.message?.replyTo])).toEqual([[first.receipt?.messageId, asked.messageId], [second.receipt?.messageId, asked.messageId]]);
          const records = (await poolRecords(pools, poolId)).filter((r) => r.record.case === "message" && r.record.value.message?.messageId === asked.messageId);
          expect(records.map((r) => (r.record.value as { receipt: { status: MessageStatus } }).receipt.status)).toEqual([MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.RESPONDED]);
          expect(records.at(-1)?.cursor).toBe(second.original?.journalCursor?.eventSeq);
          const cancelled = await refusal(pools.cancelMessage({ poolId, messageId: asked.messageId, runId: runs.asker.runId }));
          expect(cancelled).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.ALREADY_TERMINAL } });
        });

        it("a repeated reply (same idempotency key) is not counted twice", async () => {
          const { poolId, runs } = await poolWith(pools, { asker: {}, x: {} });
          const { receipt: asked } = await send(pools, poolId, { fromRunId: runs.asker.runId, to: toRun(runs.x.runId), responseContract: contract(2) });
          const reply = { fromRunId: runs.x.runId, replyTo: asked.messageId, idempotencyKey: uid("reply") };
          const first = await pools.respond({ poolId, reply });
          const again = await pools.respond({ poolId, reply });
          expect([first.deduplicated, again.deduplicated]).toEqual([false, true]);
          expect(again.receipt).toEqual(first.receipt);
          expect(again.original).toMatchObject({ status: MessageStatus.DELIVERED, responseCount: 1 });
        });

        it("a repeated reply returns its first receipt with deduplicated=true even once the original is terminal", async () => {
          const { poolId, runs } = await poolWith(pools, { asker: {}, x: {} });
          const { receipt: asked } = await send(pools, poolId, { fromRunId: runs.asker.runId, to: toRun(runs.x.runId), responseContract: contract(2) });
          const reply = { fromRunId: runs.x.runId, replyTo: asked.messageId, idempotencyKey: uid("reply") };
          const first = await pools.respond({ poolId, reply });
          const { receipt: cancelled } = await pools.cancelMessage({ poolId, messageId: asked.messageId, runId: runs.asker.runId });
          const before = await stateOf(poolId);
          const retried = await pools.respond({ poolId, reply });
          expect(retried).toMatchObject({ receipt: first.receipt, original: cancelled, deduplicated: true });
          expect(await stateOf(poolId)).toEqual(before);
        });

        it("the sender responding to its own message gets INVALID_ARGUMENT REPLY_LOOP; a run it was not delivered to NOT_MESSAGE_RECIPIENT; both change nothing", async () => {
          const { poolId, runs } = await poolWith(pools, { asker: {}, x: {}, bystander: {} });
          const { receipt: asked } = await send(pools, poolId, { fromRunId: runs.asker.runId, to: toRun(runs.x.runId), responseContract: contract(1) });
          const before = await stateOf(poolId);
          const loop = await refusal(pools.respond({ poolId, reply: { fromRunId: runs.asker.runId, replyTo: asked.messageId } }));
          expect(loop).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.REPLY_LOOP } });
          const outsider = await refusal(pools.respond({ poolId, reply: { fromRunId: runs.bystander.runId, replyTo: asked.messageId } }));
          expect(outsider).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.NOT_MESSAGE_RECIPIENT } });
          const unknown = await refusal(pools.respond({ poolId, reply: { fromRunId: runs.x.runId, replyTo: uid("no-such-message") } }));
          expect(unknown.code).toBe(Code.NotFound);
          expect(await stateOf(poolId)).toEqual(before);
        });

        it("a response timeout fires once: the message is TIMED_OUT, recorded by exactly one RUN_MESSAGE_TIMED_OUT record, and takes no more replies", async () => {
          const { poolId, runs } = await poolWith(pools, { asker: {}, x: {} });
          const watch = watchPool(pools, poolId, (await pools.getPool({ poolId })).snapshot!.cursor);
          const { receipt: asked } = await send(pools, poolId, { fromRunId: runs.asker.runId, to: toRun(runs.x.runId), responseContract: contract(1, 300) });
          const isTimedOut = (r: { record: { case?: string; value?: unknown } }) => r.record.case === "message" && (r.record.value as { receipt?: { status: MessageStatus } }).receipt?.status === MessageStatus.TIMED_OUT;
          const read = await recordsUntil(watch, isTimedOut, "the TIMED_OUT record");
          expect(read.map(describeRecord)).toEqual([MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.TIMED_OUT].map((s) => `message ${asked.messageId} ${s}`));
          const late = await refusal(pools.respond({ poolId, reply: { fromRunId: runs.x.runId, replyTo: asked.messageId } }));
          expect(late).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.ALREADY_TERMINAL } });
          // A record written after the timeout: every record before it has been seen.
          const marker = await join(pools, poolId, { runId: uid("marker") });
          const rest = await recordsUntil(watch, (r) => r.cursor === marker.cursor, "the marker record");
          expect(rest.filter(isTimedOut)).toEqual([]);
          expect((await poolRecords(pools, poolId)).filter(isTimedOut)).toHaveLength(1);
          expect((await pools.getPool({ poolId })).snapshot?.messages.at(-1)?.receipt).toMatchObject({ status: MessageStatus.TIMED_OUT, responseCount: 0 });
        });

        it("CancelMessage by the sender makes a message awaiting replies CANCELLED; by anyone else NOT_MESSAGE_SENDER", async () => {
          const { poolId, runs } = await poolWith(pools, { asker: {}, x: {} });
          const { receipt: asked } = await send(pools, poolId, { fromRunId: runs.asker.runId, to: toRun(runs.x.runId), responseContract: contract(1, 60_000) });
          const before = await stateOf(poolId);
          const notSender = await refusal(pools.cancelMessage({ poolId, messageId: asked.messageId, runId: runs.x.runId }));
          expect(notSender).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.NOT_MESSAGE_SENDER, entity: { kind: EntityKind.MESSAGE, id: asked.messageId } } });
          expect(await stateOf(poolId)).toEqual(before);
          const { receipt } = await pools.cancelMessage({ poolId, messageId: asked.messageId, runId: runs.asker.runId });
          expect(receipt).toMatchObject({ messageId: asked.messageId, status: MessageStatus.CANCELLED, deliveredTo: [runs.x.runId] });
          const records = await poolRecords(pools, poolId);
          expect(records.at(-1)).toMatchObject({ cursor: receipt?.journalCursor?.eventSeq });
          expect(describeRecord(records.at(-1)!)).toBe(`message ${asked.messageId} ${MessageStatus.CANCELLED}`);
          expect((await refusal(pools.respond({ poolId, reply: { fromRunId: runs.x.runId, replyTo: asked.messageId } }))).detail?.reason).toBe(ErrorReason.ALREADY_TERMINAL);
          expect((await refusal(pools.cancelMessage({ poolId, messageId: asked.messageId, runId: runs.asker.runId }))).detail?.reason).toBe(ErrorReason.ALREADY_TERMINAL);
        });

        it("CancelMessage of a message that expects no replies gets ALREADY_TERMINAL", async () => {
          const { poolId, runs } = await poolWith(pools, { asker: {}, x: {} });
          const { receipt: told } = await send(pools, poolId, { fromRunId: runs.asker.runId, to: toRun(runs.x.runId) });
          expect((await refusal(pools.cancelMessage({ poolId, messageId: told.messageId, runId: runs.asker.runId }))).detail?.reason).toBe(ErrorReason.ALREADY_TERMINAL);
        });
      });
    });

    describe("through @grpc/grpc-js (proto-loader)", () => {
      let client: GrpcJsPools;
      beforeAll(() => {
        client = grpcJsPools(`127.0.0.1:${server().port}`);
      });
      afterAll(() => client?.close());

      it("opens a pool, joins two runs and delivers a message between them; a non-member sender gets FAILED_PRECONDITION RUN_NOT_MEMBER", async () => {
        const poolId = uid("grpc-js-pool");
        expect(await client.call("OpenPool", { pool_id: poolId, config: { message_policy: { include_sender_in_pool_broadcast: true } } })).toMatchObject({ opened: true });
        const joined = await client.call<{ pool_created: boolean; cursor: string }>("JoinRun", { pool_id: poolId, member: { run_id: "run-a", agent_id: "agent" } });
        expect(joined.pool_created).toBe(true);
        await client.call("JoinRun", { pool_id: poolId, member: { run_id: "run-b", agent_id: "agent" } });
        const sent = await client.call<{ receipt: { status: string; delivered_to: string[] }; deduplicated: boolean }>("Send", { pool_id: poolId, message: { from_run_id: "run-a", to: { pool_id: poolId } } });
        expect(sent).toMatchObject({ receipt: { status: "MESSAGE_STATUS_DELIVERED", delivered_to: ["run-a", "run-b"] }, deduplicated: false });
        const refused = await client.call("Send", { pool_id: poolId, message: { from_run_id: "run-z", to: { run_id: "run-a" } } }).catch((error: GrpcJsPoolRefusal) => error);
        expect(refused).toEqual({ code: 9, reasons: ["RUN_NOT_MEMBER"] });
      });

      it("registers a wake condition with timeout 0, which is TIMED_OUT at once, and polls it", async () => {
        const poolId = uid("grpc-js-pool");
        await client.call("OpenPool", { pool_id: poolId });
        await client.call("JoinRun", { pool_id: poolId, member: { run_id: "run-a", agent_id: "agent" } });
        const suspended = await client.call<{ registration: { status: string; condition_id: string } }>("SuspendUntil", {
          pool_id: poolId,
          run_id: "run-a",
          condition: { run_id: "run-a", timeout: { seconds: 0, nanos: 0 } },
        });
        expect(suspended.registration.status).toBe("WAKE_REGISTRATION_STATUS_TIMED_OUT");
        const polled = await client.call<{ registration: { status: string } }>("PollWake", { pool_id: poolId, condition_id: suspended.registration.condition_id });
        expect(polled.registration.status).toBe("WAKE_REGISTRATION_STATUS_TIMED_OUT");
        const mismatch = await client.call("SuspendUntil", { pool_id: poolId, run_id: "run-a", condition: { run_id: "run-b" } }).catch((error: GrpcJsPoolRefusal) => error);
        expect(mismatch).toEqual({ code: 3, reasons: ["WAKE_RUN_MISMATCH"] });
      });
    });
  });
});


describe.each(storeBackends())("an in-process server whose clock stands still, on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("GetPool lists the recent messages in the order they were sent", () => {
    const clock = new ManualClock(Date.now());
    const running = useInProcessServers(backend, { engine: { clock, background: false }, logLevel: "warn" });

    it("messages sent within one millisecond, with ids of their senders' choosing, are listed oldest first, and the most recent are kept when truncated", async () => {
      const { pools, close } = testClients({ baseUrl: running().servers[0]!.url, protocol: "grpc" });
      onTestFinished(close);
      const { poolId, runs } = await poolWith(pools, { a: {}, b: {} });
      const ids = ["m-c", "m-a", "m-d", "m-b"];
      for (const messageId of ids) await send(pools, poolId, { messageId, fromRunId: runs.a.runId, to: toRun(runs.b.runId) });
      const listed = async (maxMessages: number) => (await pools.getPool({ poolId, maxMessages })).snapshot!.messages.map((m) => m.message?.messageId);
      expect(await listed(10)).toEqual(ids);
      expect(await listed(2)).toEqual(ids.slice(2));
    });
  });
});
