/**
 * MailboxService end to end: the real server process (its lease sweeper runs
 * every 250 ms), generated clients over gRPC, gRPC-Web and Connect, and an
 * independent gRPC implementation, on every backend.
 *
 * Streams (signals, live commands) are in mailbox-streams.test.ts, several
 * server instances on one store in mailbox-instances.test.ts. That every
 * transition appears in the journal is checked once EventService can be
 * subscribed to.
 */
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { beforeEach, describe, expect, it, onTestFinished } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { EntityKind } from "../../gen/mailroom/v1/common_pb.js";
import { RunDispatchStatus as Status } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { testClients } from "../support/e2e-auth.js";
import { type GrpcJsFailure, grpcJsMailbox } from "../support/grpc-js-mailbox.js";
import {
  ack,
  claimOne,
  countIn,
  drainStream,
  emptyMailbox,
  enqueue,
  isolated,
  LONG_LEASE,
  longPollThenEnqueue,
  type Mailbox,
  ms,
  protocols,
  refusal,
  uid,
  until,
  useClients,
} from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";
import { useInProcessServers } from "../support/in-process-servers.js";
import { storeBackends } from "../support/stores.js";

/** Generous: the issue asks for 100 ms; this only catches a claim that did not wake at all. */
const LONG_POLL_BOUND_MS = 1_000;
const MAX_LEASE_MS = 3_600_000;

describe.each(serverBackends())("MailboxService on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const clients = useClients(() => server().url, protocol);
      const { mailbox } = clients;
      /** Another worker: a client with its own connection. */
      const anotherWorker = (): Mailbox => {
        const other = testClients({ baseUrl: server().url, protocol });
        onTestFinished(() => other.close());
        return other.mailbox;
      };

      describe("a thread has at most one CLAIMED dispatch", () => {
        it("two workers claiming the same thread concurrently never both get a dispatch", async () => {
          const thread = uid("contended");
          for (let i = 0; i < 3; i++) await enqueue(mailbox, thread);
          const workers = [mailbox, anotherWorker()];
          for (let round = 1; round <= 3; round++) {
            const claims = await Promise.all(
              Array.from({ length: 10 }, (_, i) => workers[i % 2]!.claim({ threadId: thread, consumerId: `worker-${i % 2}`, lease: LONG_LEASE, limit: 1 })),
            );
            const won = claims.flatMap((c) => c.dispatches);
            expect(won, `round ${round}: dispatches handed out`).toHaveLength(1);
            expect(await countIn(mailbox, thread, Status.CLAIMED)).toBe(1);
            await ack(mailbox, won[0]!);
          }
          expect((await mailbox.claim({ threadId: thread, consumerId: "late", lease: LONG_LEASE, limit: 1 })).dispatches).toEqual([]);
          expect(await countIn(mailbox, thread, Status.ACKED)).toBe(3);
        });

        it("ClaimDispatch of another dispatch in a claimed thread gets FAILED_PRECONDITION THREAD_HAS_CLAIM", async () => {
          const thread = uid("busy");
          await enqueue(mailbox, thread);
          const waiting = await enqueue(mailbox, thread);
          await claimOne(mailbox, thread);
          const busy = await refusal(mailbox.claimDispatch({ dispatchId: waiting.dispatchId, consumerId: "eager", lease: LONG_LEASE }));
          expect(busy).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.THREAD_HAS_CLAIM, entity: { kind: EntityKind.THREAD, id: thread } } });
          expect(await countIn(mailbox, thread, Status.CLAIMED)).toBe(1);
        });

        it("the thread's next dispatch becomes claimable when the claimed one is cancelled", async () => {
          const thread = uid("cancelled");
          await enqueue(mailbox, thread);
          const next = await enqueue(mailbox, thread);
          const held = await claimOne(mailbox, thread);
          const { dispatch, changed } = await mailbox.cancel({ dispatchId: held.dispatchId, reason: "user closed the chat" });
          expect([dispatch?.status, dispatch?.lastError, changed]).toEqual([Status.CANCELLED, "user closed the chat", true]);
          expect((await claimOne(mailbox, thread)).dispatchId).toBe(next.dispatchId);
          const again = await mailbox.cancel({ dispatchId: held.dispatchId, reason: "twice" });
          expect([again.changed, again.dispatch?.lastError]).toEqual([false, "user closed the chat"]);
        });
      });

      describe("within a thread, dispatches are claimed highest priority first, then oldest", () => {
        it("claims in priority order, and in enqueue order among equal priorities", async () => {
          const thread = uid("order");
          const low = await enqueue(mailbox, thread, { priority: 10 });
          const highOld = await enqueue(mailbox, thread, { priority: 200 });
          const normal = await enqueue(mailbox, thread);
          const highNew = await enqueue(mailbox, thread, { priority: 200 });
          expect(normal.priority).toBe(128);
          const order: string[] = [];
          for (let i = 0; i < 4; i++) {
            const held = await claimOne(mailbox, thread);
            order.push(held.dispatchId);
            await ack(mailbox, held);
          }
          expect(order).toEqual([highOld, highNew, normal, low].map((d) => d.dispatchId));
        });

        it("a delayed dispatch is not claimed before its time, even with the highest priority", async () => {
          const thread = uid("delayed");
          const later = await enqueue(mailbox, thread, { priority: 255, schedule: { case: "delay", value: ms(60_000) } });
          const now = await enqueue(mailbox, thread, { priority: 0 });
          expect((await claimOne(mailbox, thread)).dispatchId).toBe(now.dispatchId);
          const early = await refusal(mailbox.claimDispatch({ dispatchId: later.dispatchId, consumerId: "eager", lease: LONG_LEASE }));
          expect(early).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.DISPATCH_NOT_AVAILABLE } });
        });
      });

      describe("an expired lease can never be acked; the dispatch is redelivered", () => {
        it("the sweeper requeues it, the late ack gets FAILED_PRECONDITION, and the next claim gets a fresh token", async () => {
          const thread = uid("expiry");
          const enqueued = await enqueue(mailbox, thread);
          const first = await claimOne(mailbox, thread, { consumerId: "slow", leaseMs: 200 });

          const requeued = await until(async () => {
            const { dispatch } = await mailbox.getDispatch({ dispatchId: enqueued.dispatchId });
            return dispatch?.status === Status.QUEUED && dispatch;
          }, "the lease sweeper to requeue the dispatch");
          expect(requeued).toMatchObject({ attemptCount: 1, claimToken: "", lastError: expect.stringContaining("lease expired") });

          const late = await refusal(ack(mailbox, first));
          expect(late).toMatchObject({
            code: Code.FailedPrecondition,
            detail: { reason: ErrorReason.DISPATCH_NOT_CLAIMED, entity: { kind: EntityKind.DISPATCH, id: enqueued.dispatchId }, metadata: { status: "RUN_DISPATCH_STATUS_QUEUED" } },
          });

          const second = await claimOne(mailbox, thread, { consumerId: "fast" });
          expect(second).toMatchObject({ dispatchId: enqueued.dispatchId, attemptCount: 2, claimedBy: "fast" });
          expect(second.claimToken).not.toBe(first.claimToken);
          const stale = await refusal(ack(mailbox, first));
          expect(stale).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.CLAIM_TOKEN_MISMATCH } });
          expect((await ack(mailbox, second)).status).toBe(Status.ACKED);
        });

        it("an expired claim whose attempts are spent is dead-lettered by the sweeper", async () => {
          const thread = uid("expiry-last");
          const enqueued = await enqueue(mailbox, thread, { maxAttempts: 1 });
          await claimOne(mailbox, thread, { leaseMs: 100 });
          const dead = await until(async () => {
            const { dispatch } = await mailbox.getDispatch({ dispatchId: enqueued.dispatchId });
            return dispatch?.status === Status.DEAD_LETTER && dispatch;
          }, "the lease sweeper to dead-letter the dispatch");
          expect(dead.lastError).toContain("lease expired");
          expect(dead.completedAt).toBeDefined();
        });
      });

      describe("nack", () => {
        it("requeues at the retry time until max_attempts, then dead-letters, keeping last_error", async () => {
          const thread = uid("nack");
          const enqueued = await enqueue(mailbox, thread, { maxAttempts: 3 });
          for (let attempt = 1; attempt <= 3; attempt++) {
            const held = await claimOne(mailbox, thread);
            expect(held.attemptCount).toBe(attempt);
            const { dispatch } = await mailbox.nack({ dispatchId: held.dispatchId, claimToken: held.claimToken, error: `failure ${attempt}` });
            expect(dispatch).toMatchObject({ status: attempt < 3 ? Status.QUEUED : Status.DEAD_LETTER, lastError: `failure ${attempt}`, attemptCount: attempt });
          }
          const { dispatch } = await mailbox.getDispatch({ dispatchId: enqueued.dispatchId });
          expect(dispatch).toMatchObject({ status: Status.DEAD_LETTER, lastError: "failure 3", attemptCount: 3, maxAttempts: 3 });
          expect(dispatch?.completedAt).toBeDefined();
          expect((await mailbox.claim({ threadId: thread, consumerId: "w", lease: LONG_LEASE, limit: 1 })).dispatches).toEqual([]);
          const terminal = await mailbox.listTerminalDispatches({ threadId: thread });
          expect(terminal.dispatches.map((d) => [d.dispatchId, d.status])).toEqual([[enqueued.dispatchId, Status.DEAD_LETTER]]);
        });

        it("with a delay, the dispatch is not claimable before the retry time", async () => {
          const thread = uid("nack-later");
          await enqueue(mailbox, thread);
          const held = await claimOne(mailbox, thread);
          const { dispatch } = await mailbox.nack({ dispatchId: held.dispatchId, claimToken: held.claimToken, retry: { case: "delay", value: ms(60_000) } });
          expect(dispatch?.status).toBe(Status.QUEUED);
          expect(timestampMs(dispatch!.availableAt!) - timestampMs(dispatch!.updatedAt!)).toBe(60_000);
          expect((await mailbox.claim({ threadId: thread, consumerId: "w", lease: LONG_LEASE, limit: 1 })).dispatches).toEqual([]);
        });
      });

      describe("interrupt", () => {
        it("returns the active dispatch and supersedes exactly the thread's older queued ones, listing them when detailed", async () => {
          const thread = uid("interrupted");
          const bystander = await enqueue(mailbox, uid("bystander"));
          await enqueue(mailbox, thread);
          const active = await claimOne(mailbox, thread);
          const queued = [await enqueue(mailbox, thread), await enqueue(mailbox, thread, { priority: 250 })];

          const outcome = await mailbox.interrupt({ threadId: thread, detailed: true });
          expect(outcome.newDispatchEpoch).toBe(1n);
          expect(outcome.activeDispatch).toMatchObject({ dispatchId: active.dispatchId, status: Status.CLAIMED });
          expect(outcome.supersededCount).toBe(2n);
          expect(outcome.supersededDispatches.map((d) => [d.dispatchId, d.status])).toEqual(queued.map((d) => [d.dispatchId, Status.SUPERSEDED]));

          expect((await mailbox.getDispatch({ dispatchId: bystander.dispatchId })).dispatch?.status).toBe(Status.QUEUED);
          expect((await mailbox.getDispatchEpoch({ threadId: thread })).dispatchEpoch).toBe(1n);
          // New work belongs to the new epoch and is claimed once the active run ends.
          const fresh = await enqueue(mailbox, thread);
          expect(fresh.dispatchEpoch).toBe(1n);
          await ack(mailbox, active);
          expect((await claimOne(mailbox, thread)).dispatchId).toBe(fresh.dispatchId);
        });

        it("without detailed, counts the superseded dispatches but does not list them", async () => {
          const thread = uid("interrupted-brief");
          await enqueue(mailbox, thread);
          const outcome = await mailbox.interrupt({ threadId: thread, detailed: false });
          expect([outcome.supersededCount, outcome.supersededDispatches, outcome.activeDispatch]).toEqual([1n, [], undefined]);
        });

        it("an unknown thread is at epoch 0", async () => {
          expect((await mailbox.getDispatchEpoch({ threadId: uid("never-seen") })).dispatchEpoch).toBe(0n);
        });
      });

      describe("ExtendLease tells a worker that only heartbeats when to stop", () => {
        it("extends the lease and says interrupted once the thread was interrupted", async () => {
          const thread = uid("heartbeat");
          await enqueue(mailbox, thread);
          const held = await claimOne(mailbox, thread, { leaseMs: 10_000 });
          const before = await mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, extension: ms(60_000) });
          expect([before.interrupted, before.threadEpoch]).toEqual([false, 0n]);
          expect(timestampMs(before.dispatch!.leaseUntil!)).toBeGreaterThan(timestampMs(held.leaseUntil!));
          await mailbox.interrupt({ threadId: thread, detailed: false });
          const after = await mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, extension: ms(60_000) });
          expect([after.interrupted, after.threadEpoch, after.dispatch?.status]).toEqual([true, 1n, Status.CLAIMED]);
        });

        it("on a cancelled dispatch gets FAILED_PRECONDITION with reason DISPATCH_CANCELLED", async () => {
          const thread = uid("heartbeat-cancelled");
          await enqueue(mailbox, thread);
          const held = await claimOne(mailbox, thread);
          await mailbox.cancel({ dispatchId: held.dispatchId, reason: "" });
          const stop = await refusal(mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, extension: ms(60_000) }));
          expect(stop).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.DISPATCH_CANCELLED, entity: { kind: EntityKind.DISPATCH, id: held.dispatchId } } });
        });

        it("on a superseded dispatch gets FAILED_PRECONDITION with reason DISPATCH_SUPERSEDED", async () => {
          const thread = uid("heartbeat-superseded");
          await enqueue(mailbox, thread);
          const held = await claimOne(mailbox, thread);
          const { dispatch } = await mailbox.supersedeClaimed({ dispatchId: held.dispatchId, claimToken: held.claimToken, reason: "newer input" });
          expect([dispatch?.status, dispatch?.lastError]).toEqual([Status.SUPERSEDED, "newer input"]);
          const stop = await refusal(mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, extension: ms(60_000) }));
          expect(stop).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.DISPATCH_SUPERSEDED } });
        });
      });

      describe("a claimed dispatch records its run", () => {
        it("RecordDispatchStart and RecordRunResult are kept on the dispatch; Ack repeated with the same token returns it unchanged", async () => {
          const thread = uid("run");
          await enqueue(mailbox, thread, { runId: "run-1", agentId: "agent-1", payload: { data: new TextEncoder().encode('{"q":1}'), mediaType: "application/json" } });
          const held = await claimOne(mailbox, thread);
          expect(held).toMatchObject({ runId: "run-1", agentId: "agent-1", payload: { mediaType: "application/json" } });
          await mailbox.recordDispatchStart({ dispatchId: held.dispatchId, claimToken: held.claimToken, dispatchInstanceId: "instance-1" });
          const { dispatch } = await mailbox.recordRunResult({
            dispatchId: held.dispatchId,
            claimToken: held.claimToken,
            result: { runStatus: 3, termination: { kind: 1, detail: "done" }, response: "42" },
          });
          expect(dispatch).toMatchObject({ status: Status.CLAIMED, dispatchInstanceId: "instance-1", runStatus: 3, runResponse: "42", termination: { kind: 1, detail: "done" } });
          const acked = await ack(mailbox, held);
          const again = await ack(mailbox, held);
          expect([again.status, timestampMs(again.completedAt!)]).toEqual([Status.ACKED, timestampMs(acked.completedAt!)]);
        });
      });

      describe("dedupe", () => {
        it("a repeated dedupe key returns the original dispatch with deduplicated = true and enqueues nothing", async () => {
          const thread = uid("dedupe");
          const first = await mailbox.enqueue({ dispatch: { threadId: thread, dedupeKey: "request-1", runId: "run-a" } });
          const again = await mailbox.enqueue({ dispatch: { threadId: thread, dedupeKey: "request-1", runId: "run-b", priority: 1 } });
          expect(first.deduplicated).toBe(false);
          expect(again.deduplicated).toBe(true);
          expect(again.dispatch).toMatchObject({ dispatchId: first.dispatch!.dispatchId, runId: "run-a", priority: 128 });
          expect(await countIn(mailbox, thread, Status.QUEUED)).toBe(1);
          // The same key in another thread is another dispatch.
          const elsewhere = await mailbox.enqueue({ dispatch: { threadId: uid("dedupe-other"), dedupeKey: "request-1" } });
          expect(elsewhere.deduplicated).toBe(false);
        });

        it("a dispatch_id repeated in its thread is a duplicate; in another thread it gets ALREADY_EXISTS", async () => {
          const thread = uid("dispatch-id");
          const dispatchId = uid("d");
          await enqueue(mailbox, thread, { dispatchId });
          expect((await mailbox.enqueue({ dispatch: { threadId: thread, dispatchId } })).deduplicated).toBe(true);
          const taken = await refusal(mailbox.enqueue({ dispatch: { threadId: uid("thief"), dispatchId } }));
          expect(taken).toMatchObject({ code: Code.AlreadyExists, detail: { field: "dispatch.dispatch_id", entity: { kind: EntityKind.DISPATCH, id: dispatchId } } });
        });
      });

      describe("long-poll Claim", () => {
        it("returns a dispatch enqueued while it waits, long before `wait` runs out", async () => {
          const poll = await longPollThenEnqueue(mailbox, mailbox, uid("long-poll"));
          expect(poll.waitedForTheEnqueue, "Claim was still waiting while the thread was empty").toBe(true);
          expect(poll.claimed.map((d) => d.dispatchId)).toEqual([poll.enqueued.dispatchId]);
          console.log(`long-poll Claim (${backend.name}, ${protocol}) returned ${poll.latencyMs.toFixed(1)} ms after the enqueue completed`);
          expect(poll.latencyMs).toBeLessThan(LONG_POLL_BOUND_MS);
        });

        it("returns empty once `wait` has passed with nothing to claim", async () => {
          const started = performance.now();
          const { dispatches } = await mailbox.claim({ threadId: uid("idle"), consumerId: "poller", lease: LONG_LEASE, limit: 1, wait: ms(300) });
          const took = performance.now() - started;
          expect(dispatches).toEqual([]);
          // Timers may fire a millisecond early; the server never answers before its wait.
          expect(took).toBeGreaterThanOrEqual(295);
        });
      });

      describe("EnqueueBatch and AckBatch", () => {
        it("EnqueueBatch answers each entry in request order: enqueued, deduplicated, or refused on its own", async () => {
          const [t1, t2] = [uid("batch"), uid("batch")];
          const taken = await enqueue(mailbox, uid("batch-elsewhere"), { dispatchId: uid("d") });
          const { results } = await mailbox.enqueueBatch({
            dispatches: [
              { threadId: t1, priority: 10 },
              { threadId: t2, dedupeKey: "k" },
              { threadId: t2, dedupeKey: "k" },
              { threadId: t1, dispatchId: taken.dispatchId },
            ],
          });
          expect(results).toHaveLength(4);
          expect(results[0]).toMatchObject({ deduplicated: false, dispatch: { threadId: t1, priority: 10, status: Status.QUEUED } });
          expect(results[1]).toMatchObject({ deduplicated: false, dispatch: { threadId: t2, dedupeKey: "k" } });
          expect(results[2]).toMatchObject({ deduplicated: true, dispatch: { dispatchId: results[1]!.dispatch!.dispatchId } });
          expect(results[3]!.dispatch).toBeUndefined();
          expect(results[3]!.error).toMatchObject({ code: Code.AlreadyExists, detail: { field: "dispatches[3].dispatch_id", entity: { kind: EntityKind.DISPATCH, id: taken.dispatchId } } });
          for (const r of results.slice(0, 3)) expect(r.error).toBeUndefined();
          expect([await countIn(mailbox, t1, Status.QUEUED), await countIn(mailbox, t2, Status.QUEUED)]).toEqual([1, 1]);
        });

        it.each([
          ["dispatches[2].priority", { priority: 256 }],
          ["dispatches[2].thread_id", { threadId: "" }],
          ["dispatches[2].max_attempts", { maxAttempts: 0 }],
        ])("one bad entry refuses the whole batch, naming %s, and enqueues nothing", async (field, bad) => {
          const thread = uid("batch-refused");
          const error = await refusal(mailbox.enqueueBatch({ dispatches: [{ threadId: thread }, { threadId: thread }, { threadId: thread, ...bad }] }));
          expect(error).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.INVALID_FIELD, field } });
          expect((await mailbox.countDispatches({ threadId: thread })).total).toBe(0n);
        });

        it("AckBatch with one stale token fails that entry only", async () => {
          const threads = [uid("ack-batch"), uid("ack-batch"), uid("ack-batch")];
          for (const thread of threads) await enqueue(mailbox, thread);
          const held = await Promise.all(threads.map((thread) => claimOne(mailbox, thread)));
          // The middle claim goes stale: nacked and claimed again under a new token.
          await mailbox.nack({ dispatchId: held[1]!.dispatchId, claimToken: held[1]!.claimToken, error: "retry" });
          const current = await claimOne(mailbox, threads[1]!);
          const missing = uid("missing");

          const { results } = await mailbox.ackBatch({
            claims: [...held, { dispatchId: missing, claimToken: "ct_0" }].map((d) => ({ dispatchId: d.dispatchId, claimToken: d.claimToken })),
          });
          expect(results.map((r) => r.dispatchId)).toEqual([...held.map((d) => d.dispatchId), missing]);
          expect(results.map((r) => r.dispatch?.status)).toEqual([Status.ACKED, undefined, Status.ACKED, undefined]);
          expect(results[1]!.error).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.CLAIM_TOKEN_MISMATCH } });
          expect(results[3]!.error).toMatchObject({ code: Code.NotFound, detail: { reason: ErrorReason.ENTITY_NOT_FOUND } });
          expect([results[0]!.error, results[2]!.error]).toEqual([undefined, undefined]);
          // Reads never show a claim token: the current claim proves itself by working.
          expect((await mailbox.getDispatch({ dispatchId: current.dispatchId })).dispatch).toMatchObject({ status: Status.CLAIMED, claimToken: "" });
          expect((await mailbox.extendLease({ dispatchId: current.dispatchId, claimToken: current.claimToken, extension: LONG_LEASE })).dispatch?.status).toBe(Status.CLAIMED);
        });
      });

      describe("a claim token is a fence", () => {
        it("a wrong token gets FAILED_PRECONDITION CLAIM_TOKEN_MISMATCH from every fenced call and changes nothing", async () => {
          const thread = uid("fence");
          await enqueue(mailbox, thread);
          const held = await claimOne(mailbox, thread);
          const wrong = { dispatchId: held.dispatchId, claimToken: "ct_wrong" };
          // All at once; each refusal is caught as its call is made (they answer in any order).
          const calls: Array<[string, ReturnType<typeof refusal>]> = [
            ["Ack", refusal(mailbox.ack(wrong))],
            ["Nack", refusal(mailbox.nack({ ...wrong, error: "x" }))],
            ["DeadLetter", refusal(mailbox.deadLetter({ ...wrong, error: "x" }))],
            ["ExtendLease", refusal(mailbox.extendLease({ ...wrong, extension: ms(1_000) }))],
            ["RecordDispatchStart", refusal(mailbox.recordDispatchStart({ ...wrong, dispatchInstanceId: "i" }))],
            ["RecordRunResult", refusal(mailbox.recordRunResult({ ...wrong, result: { runStatus: 3 } }))],
            ["SupersedeClaimed", refusal(mailbox.supersedeClaimed({ ...wrong, reason: "x" }))],
          ];
          for (const [name, refused] of calls) {
            const error = await refused;
            expect([name, error.code, error.detail?.reason]).toEqual([name, Code.FailedPrecondition, ErrorReason.CLAIM_TOKEN_MISMATCH]);
          }
          const { dispatch } = await mailbox.getDispatch({ dispatchId: held.dispatchId });
          expect(dispatch).toMatchObject({ status: Status.CLAIMED, claimToken: "", attemptCount: 1, lastError: "", dispatchInstanceId: "" });
          expect(timestampMs(dispatch!.leaseUntil!)).toBe(timestampMs(held.leaseUntil!));
          expect((await ack(mailbox, held)).status).toBe(Status.ACKED); // the claim held is still the one in force
        });
      });

      describe("bad input gets INVALID_ARGUMENT naming the field, NOT_FOUND for unknown ids, and the server keeps serving", () => {
        const invalid: Array<{ rpc: string; field: string; call: (m: Mailbox) => Promise<unknown> }> = [
          { rpc: "Enqueue", field: "dispatch", call: (m) => m.enqueue({}) },
          { rpc: "Enqueue", field: "dispatch.thread_id", call: (m) => m.enqueue({ dispatch: { threadId: "" } }) },
          { rpc: "Enqueue", field: "dispatch.priority", call: (m) => m.enqueue({ dispatch: { threadId: "t", priority: 256 } }) },
          { rpc: "Enqueue", field: "dispatch.max_attempts", call: (m) => m.enqueue({ dispatch: { threadId: "t", maxAttempts: 1001 } }) },
          { rpc: "Enqueue", field: "dispatch.delay", call: (m) => m.enqueue({ dispatch: { threadId: "t", schedule: { case: "delay", value: ms(366 * 86_400_000) } } }) },
          { rpc: "Enqueue", field: "dispatch.payload.data", call: (m) => m.enqueue({ dispatch: { threadId: "t", payload: { data: new Uint8Array(256 * 1024 + 1) } } }) },
          { rpc: "Claim", field: "lease", call: (m) => m.claim({ consumerId: "w", lease: ms(0), limit: 1 }) },
          { rpc: "Claim", field: "lease", call: (m) => m.claim({ consumerId: "w", limit: 1 }) },
          { rpc: "Claim", field: "lease", call: (m) => m.claim({ consumerId: "w", lease: ms(MAX_LEASE_MS + 1), limit: 1 }) },
          { rpc: "Claim", field: "limit", call: (m) => m.claim({ consumerId: "w", lease: LONG_LEASE, limit: 0 }) },
          { rpc: "Claim", field: "limit", call: (m) => m.claim({ consumerId: "w", lease: LONG_LEASE, limit: 101 }) },
          { rpc: "Claim", field: "consumer_id", call: (m) => m.claim({ consumerId: "", lease: LONG_LEASE, limit: 1 }) },
          { rpc: "Claim", field: "wait", call: (m) => m.claim({ consumerId: "w", lease: LONG_LEASE, limit: 1, wait: ms(60_001) }) },
          { rpc: "Claim", field: "thread_id", call: (m) => m.claim({ threadId: "bad\u0000id", consumerId: "w", lease: LONG_LEASE, limit: 1 }) },
          { rpc: "ClaimDispatch", field: "lease", call: (m) => m.claimDispatch({ dispatchId: "d", consumerId: "w", lease: ms(0) }) },
          { rpc: "Ack", field: "claim_token", call: (m) => m.ack({ dispatchId: "d", claimToken: "" }) },
          { rpc: "ExtendLease", field: "extension", call: (m) => m.extendLease({ dispatchId: "d", claimToken: "ct", extension: ms(MAX_LEASE_MS + 1) }) },
          { rpc: "ExtendLease", field: "extension", call: (m) => m.extendLease({ dispatchId: "d", claimToken: "ct", extension: ms(0) }) },
          { rpc: "Interrupt", field: "thread_id", call: (m) => m.interrupt({ threadId: "" }) },
          { rpc: "ListDispatches", field: "statuses[0]", call: (m) => m.listDispatches({ statuses: [Status.UNSPECIFIED] }) },
          { rpc: "ListDispatches", field: "page_size", call: (m) => m.listDispatches({ pageSize: 1001 }) },
          { rpc: "ListDispatches", field: "page_token", call: (m) => m.listDispatches({ pageToken: "not-a-token" }) },
          { rpc: "EnqueueBatch", field: "dispatches", call: (m) => m.enqueueBatch({ dispatches: [] }) },
          { rpc: "AckBatch", field: "claims", call: (m) => m.ackBatch({ claims: [] }) },
          { rpc: "AckBatch", field: "claims[1].claim_token", call: (m) => m.ackBatch({ claims: [{ dispatchId: "a", claimToken: "ct" }, { dispatchId: "b", claimToken: "" }] }) },
          { rpc: "PurgeTerminal", field: "completed_before", call: (m) => m.purgeTerminal({}) },
          { rpc: "ReclaimExpiredLeases", field: "limit", call: (m) => m.reclaimExpiredLeases({ limit: 1001 }) },
          { rpc: "DeliverLive", field: "target", call: (m) => m.deliverLive({ command: { body: { case: "cancel", value: {} } } }) },
          // An empty run_id is a thread-wide target (seed: deliver_live(thread)); the thread is what is required.
          { rpc: "DeliverLive", field: "target.thread_id", call: (m) => m.deliverLive({ target: { runId: "r" }, command: { body: { case: "cancel", value: {} } } }) },
          { rpc: "DeliverLive", field: "command.messages.messages", call: (m) => m.deliverLive({ target: { threadId: "t" }, command: { body: { case: "messages", value: {} } } }) },
          { rpc: "DeliverLive", field: "command.body", call: (m) => m.deliverLive({ target: { threadId: "t", runId: "r" }, command: {} }) },
          { rpc: "AckLiveCommand", field: "command_id", call: (m) => m.ackLiveCommand({ commandId: "" }) },
          { rpc: "OpenLiveChannel", field: "target.thread_id", call: (m) => drainStream(m.openLiveChannel({ target: { runId: "r" } })) },
          { rpc: "WatchDispatchSignals", field: "heartbeat_interval", call: (m) => drainStream(m.watchDispatchSignals({ heartbeatInterval: ms(500) })) },
        ];

        it.each(invalid)("$rpc: INVALID_ARGUMENT naming $field", async ({ field, call }) => {
          const error = await refusal(call(mailbox));
          expect(error).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.INVALID_FIELD, field } });
          expect(error.message).toContain(field);
        });

        const unknown: Array<{ rpc: string; call: (m: Mailbox, id: string) => Promise<unknown> }> = [
          { rpc: "GetDispatch", call: (m, id) => m.getDispatch({ dispatchId: id }) },
          { rpc: "Ack", call: (m, id) => m.ack({ dispatchId: id, claimToken: "ct_0" }) },
          { rpc: "Nack", call: (m, id) => m.nack({ dispatchId: id, claimToken: "ct_0" }) },
          { rpc: "ExtendLease", call: (m, id) => m.extendLease({ dispatchId: id, claimToken: "ct_0", extension: ms(1_000) }) },
          { rpc: "Cancel", call: (m, id) => m.cancel({ dispatchId: id }) },
          { rpc: "ClaimDispatch", call: (m, id) => m.claimDispatch({ dispatchId: id, consumerId: "w", lease: LONG_LEASE }) },
        ];

        it.each(unknown)("$rpc: NOT_FOUND naming the unknown dispatch", async ({ call }) => {
          const id = uid("no-such-dispatch");
          const error = await refusal(call(mailbox, id));
          expect(error).toMatchObject({ code: Code.NotFound, detail: { reason: ErrorReason.ENTITY_NOT_FOUND, entity: { kind: EntityKind.DISPATCH, id } } });
        });

        it("keeps serving after all of them, with nothing logged as an error", async () => {
          expect((await clients.health.check({ service: "mailroom.v1.MailboxService" })).status).toBe(ServingStatus.SERVING);
          const thread = uid("after-bad-input");
          await enqueue(mailbox, thread);
          await ack(mailbox, await claimOne(mailbox, thread));
          expect(server().logs.filter((line) => line.level === "error" || line.level === "fatal")).toEqual([]);
        });
      });
    });

    describe("an independent gRPC implementation (@grpc/grpc-js, service loaded from proto/)", () => {
      interface Dispatch {
        dispatch_id: string;
        thread_id: string;
        status: string;
        priority: number;
        claim_token: string;
        attempt_count: number;
        payload: { data: Buffer; media_type: string } | null;
      }
      const connect = () => {
        const client = grpcJsMailbox(`127.0.0.1:${server().port}`);
        onTestFinished(() => client.close());
        return client;
      };

      it("enqueues, claims and acks", async () => {
        const client = connect();
        const thread = uid("grpc-js");
        const { dispatch } = await client.call<{ dispatch: Dispatch }>("Enqueue", {
          dispatch: { thread_id: thread, priority: 7, payload: { data: Buffer.from("hello"), media_type: "text/plain" } },
        });
        expect(dispatch).toMatchObject({ thread_id: thread, priority: 7, status: "RUN_DISPATCH_STATUS_QUEUED" });
        const { dispatches } = await client.call<{ dispatches: Dispatch[] }>("Claim", { thread_id: thread, consumer_id: "grpc-js", lease: { seconds: "30", nanos: 0 }, limit: 1 });
        expect(dispatches).toHaveLength(1);
        expect(dispatches[0]).toMatchObject({ dispatch_id: dispatch.dispatch_id, status: "RUN_DISPATCH_STATUS_CLAIMED", attempt_count: 1 });
        expect(dispatches[0]!.payload?.data.toString()).toBe("hello");
        const acked = await client.call<{ dispatch: Dispatch }>("Ack", { dispatch_id: dispatches[0]!.dispatch_id, claim_token: dispatches[0]!.claim_token });
        expect(acked.dispatch.status).toBe("RUN_DISPATCH_STATUS_ACKED");
      });

      it("gets INVALID_ARGUMENT (3) with the ErrorDetail naming the field in grpc-status-details-bin", async () => {
        const failure = (await connect().call("Enqueue", { dispatch: { thread_id: uid("grpc-js"), priority: 256 } }).catch((e: unknown) => e)) as GrpcJsFailure;
        expect(failure.code).toBe(3);
        expect(failure.details).toContain("dispatch.priority");
        expect(failure.errorDetails).toMatchObject([{ reason: ErrorReason.INVALID_FIELD, field: "dispatch.priority" }]);
      });

      it("gets FAILED_PRECONDITION (9) with reason CLAIM_TOKEN_MISMATCH for a wrong token", async () => {
        const client = connect();
        const thread = uid("grpc-js");
        const { dispatch } = await client.call<{ dispatch: Dispatch }>("Enqueue", { dispatch: { thread_id: thread } });
        await client.call("Claim", { thread_id: thread, consumer_id: "grpc-js", lease: { seconds: "30", nanos: 0 }, limit: 1 });
        const failure = (await client.call("Ack", { dispatch_id: dispatch.dispatch_id, claim_token: "ct_wrong" }).catch((e: unknown) => e)) as GrpcJsFailure;
        expect(failure.code).toBe(9);
        expect(failure.errorDetails).toMatchObject([{ reason: ErrorReason.CLAIM_TOKEN_MISMATCH }]);
      });
    });
  });

  describe.skipIf(!backend.available)("a server process that owns the whole mailbox (tests that look at every thread)", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { mailbox } = useClients(() => server().url, protocol);
      beforeEach(() => emptyMailbox(mailbox));

      it("a claim across threads returns at most one dispatch per thread, highest priority first, then oldest", async () => {
        const [a, b, c] = [uid("a"), uid("b"), uid("c")];
        await enqueue(mailbox, a, { priority: 5 });
        const aTop = await enqueue(mailbox, a, { priority: 250 });
        const bTop = await enqueue(mailbox, b, { priority: 100 });
        const cTop = await enqueue(mailbox, c, { priority: 250 });
        await enqueue(mailbox, c, { priority: 250 });
        const { dispatches } = await mailbox.claim({ consumerId: "w", lease: LONG_LEASE, limit: 10 });
        expect(dispatches.map((d) => d.dispatchId)).toEqual([aTop, cTop, bTop].map((d) => d.dispatchId));
        // Every thread now holds a claim: nothing more until one ends.
        expect((await mailbox.claim({ consumerId: "w", lease: LONG_LEASE, limit: 10 })).dispatches).toEqual([]);
        await ack(mailbox, dispatches[1]!);
        const next = await mailbox.claim({ consumerId: "w", lease: LONG_LEASE, limit: 10 });
        expect(next.dispatches.map((d) => [d.threadId, d.priority])).toEqual([[c, 250]]);
        expect((await mailbox.listQueuedThreads({})).threadIds).toEqual([]);
      });

      it("ListQueuedThreads names exactly the threads with claimable work", async () => {
        const [ready, busy, later] = [uid("ready"), uid("busy"), uid("later")];
        await enqueue(mailbox, ready);
        await enqueue(mailbox, busy);
        await enqueue(mailbox, busy);
        await claimOne(mailbox, busy);
        await enqueue(mailbox, later, { schedule: { case: "delay", value: ms(60_000) } });
        expect((await mailbox.listQueuedThreads({})).threadIds).toEqual([ready]);
      });

      it("PurgeTerminal removes only terminal dispatches completed before the cutoff", async () => {
        const thread = uid("purge");
        await enqueue(mailbox, thread, { dedupeKey: "old" });
        const old = await ack(mailbox, await claimOne(mailbox, thread));
        const cancelled = (await mailbox.cancel({ dispatchId: (await enqueue(mailbox, uid("purge"))).dispatchId })).dispatch!;
        const queued = await enqueue(mailbox, thread);
        const claimedThread = uid("purge-claimed");
        await enqueue(mailbox, claimedThread);
        const claimed = await claimOne(mailbox, claimedThread);
        const cutoff = Math.max(timestampMs(old.completedAt!), timestampMs(cancelled.completedAt!)) + 1;
        await until(async () => Date.now() >= cutoff, "the clock to pass the cutoff");
        const recent = await ack(mailbox, await claimOne(mailbox, thread));
        expect(recent.dispatchId).toBe(queued.dispatchId);
        expect(timestampMs(recent.completedAt!)).toBeGreaterThanOrEqual(cutoff);

        const { purgedCount } = await mailbox.purgeTerminal({ completedBefore: timestampFromMs(cutoff) });
        expect(purgedCount).toBe(2n);
        for (const gone of [old, cancelled]) {
          expect((await refusal(mailbox.getDispatch({ dispatchId: gone.dispatchId }))).code).toBe(Code.NotFound);
        }
        expect((await mailbox.getDispatch({ dispatchId: recent.dispatchId })).dispatch?.status).toBe(Status.ACKED);
        expect((await mailbox.getDispatch({ dispatchId: claimed.dispatchId })).dispatch?.status).toBe(Status.CLAIMED);
        // Deleting a dispatch releases its dedupe key.
        expect((await mailbox.enqueue({ dispatch: { threadId: thread, dedupeKey: "old" } })).deduplicated).toBe(false);
      });
    });
  });
});

describe.each(storeBackends())("an in-process server whose lease sweeper has not run yet, on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("an ack after the lease expired", () => {
    const clock = new ManualClock(Date.now());
    // The sweepers are off: the test moves the clock and reclaims by RPC.
    const running = useInProcessServers(backend, { engine: { clock, background: false }, logLevel: "warn" });

    it.each(protocols)("over %s gets FAILED_PRECONDITION LEASE_EXPIRED; ReclaimExpiredLeases then redelivers the dispatch", async (protocol) => {
      const { mailbox, close } = testClients({ baseUrl: running().servers[0]!.url, protocol });
      onTestFinished(close);
      const thread = uid("expired");
      const enqueued = await enqueue(mailbox, thread);
      const held = await claimOne(mailbox, thread, { leaseMs: 1_000 });
      clock.advance(1_000);

      const late = await refusal(ack(mailbox, held));
      expect(late).toMatchObject({ code: Code.FailedPrecondition, detail: { reason: ErrorReason.LEASE_EXPIRED, entity: { kind: EntityKind.DISPATCH, id: held.dispatchId } } });
      expect(late.message).toContain("expired");
      expect((await mailbox.getDispatch({ dispatchId: held.dispatchId })).dispatch?.status).toBe(Status.CLAIMED);
      expect((await refusal(mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, extension: ms(1_000) }))).detail?.reason).toBe(ErrorReason.LEASE_EXPIRED);

      const { dispatches } = await mailbox.reclaimExpiredLeases({});
      expect(dispatches.map((d) => [d.dispatchId, d.status])).toEqual([[enqueued.dispatchId, Status.QUEUED]]);
      const again = await claimOne(mailbox, thread);
      expect([again.dispatchId, again.attemptCount]).toEqual([enqueued.dispatchId, 2]);
      expect((await ack(mailbox, again)).status).toBe(Status.ACKED);
    });
  });
});
