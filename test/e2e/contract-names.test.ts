/**
 * Small contract frictions, fixed additively or pinned as documented:
 * ExtendLease takes `lease` as Claim does (its first name, `extension`, still
 * works); CountDispatches answers every status asked for, zeros included
 * (proto3 JSON leaves a zero count out of the entry, never the entry);
 * OpenPool opens a pool and its first JoinRun creates it.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { RunDispatchStatus as Status } from "../../gen/mailroom/v1/dispatch_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { curlConnect } from "../support/http-tools.js";
import { claimOne, enqueue, isolated, ms, refusal, uid, useClients } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

describe.each(serverBackends())("contract names on the $name backend", (backend) => {
  const server = useServerProcess({ backend: isolated(backend) });

  describe.skipIf(!backend.available)("through the generated clients", () => {
    const { mailbox, pools, events } = useClients(() => server().url, "grpc");

    describe("ExtendLease takes the new lease as `lease`, the name Claim uses", () => {
      it("runs the new lease from now for `lease`, as for `extension`", async () => {
        const threadId = uid("thread");
        await enqueue(mailbox, threadId);
        const held = await claimOne(mailbox, threadId, { leaseMs: 5_000 });
        const byLease = (await mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, lease: ms(600_000) })).dispatch!;
        const leaseMs = Number(byLease.leaseUntil!.seconds) * 1000 - Number(byLease.updatedAt!.seconds) * 1000;
        expect(leaseMs).toBeGreaterThanOrEqual(599_000);
        expect(leaseMs).toBeLessThanOrEqual(601_000);
        const byExtension = (await mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, extension: ms(600_000) })).dispatch!;
        expect(byExtension.status).toBe(Status.CLAIMED);
        const both = (await mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, lease: ms(600_000), extension: ms(600_000) })).dispatch!;
        expect(both.status).toBe(Status.CLAIMED);
      });

      it.each([
        ["neither", {}, /lease: is required/],
        ["both, different", { lease: ms(60_000), extension: ms(30_000) }, /lease: differs from extension/],
        ["a zero lease", { lease: ms(0) }, /lease: must be above 0/],
      ])("refuses %s with INVALID_ARGUMENT naming `lease`, and changes nothing", async (_case, given, message) => {
        const threadId = uid("thread");
        await enqueue(mailbox, threadId);
        const held = await claimOne(mailbox, threadId);
        const refused = await refusal(mailbox.extendLease({ dispatchId: held.dispatchId, claimToken: held.claimToken, ...given }));
        expect(refused).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.INVALID_FIELD, field: "lease" } });
        expect(refused.message).toMatch(message);
        expect((await mailbox.getDispatch({ dispatchId: held.dispatchId })).dispatch?.leaseUntil).toEqual(held.leaseUntil);
      });
    });

    describe("CountDispatches", () => {
      it("answers every status asked for, in the order asked, zeros included", async () => {
        const threadId = uid("thread");
        await enqueue(mailbox, threadId);
        const { counts, total } = await mailbox.countDispatches({ threadId, statuses: [Status.ACKED, Status.QUEUED, Status.CLAIMED] });
        expect(counts.map(({ status, count }) => [status, count])).toEqual([
          [Status.ACKED, 0n],
          [Status.QUEUED, 1n],
          [Status.CLAIMED, 0n],
        ]);
        expect(total).toBe(1n);
      });

      it("answers all six statuses when none is asked for", async () => {
        const { counts } = await mailbox.countDispatches({ threadId: uid("empty-thread") });
        expect(counts.map(({ status, count }) => [status, count])).toEqual(
          [Status.QUEUED, Status.CLAIMED, Status.ACKED, Status.CANCELLED, Status.SUPERSEDED, Status.DEAD_LETTER].map((status) => [status, 0n]),
        );
      });

      it("in JSON (curl), has an entry for each status; a zero count is left out of the entry, as proto3 JSON does", async () => {
        const threadId = uid("thread");
        const reply = await curlConnect(server().url, "/mailroom.v1.MailboxService/CountDispatches", JSON.stringify({ threadId, statuses: ["RUN_DISPATCH_STATUS_QUEUED", "RUN_DISPATCH_STATUS_ACKED"] }));
        expect(JSON.parse(reply.body)).toEqual({ counts: [{ status: "RUN_DISPATCH_STATUS_QUEUED" }, { status: "RUN_DISPATCH_STATUS_ACKED" }] });
      });
    });

    describe("a pool is opened by OpenPool and created by its first member", () => {
      it("OpenPool answers opened, not created; the first JoinRun answers pool_created; the journal says OPENED then CREATED", async () => {
        const poolId = uid("pool");
        const opened = await pools.openPool({ poolId });
        expect(opened).toMatchObject({ opened: true, snapshot: { created: false } });
        expect((await pools.joinRun({ poolId, member: { runId: "first", agentId: "a" } })).poolCreated).toBe(true);
        expect((await pools.joinRun({ poolId, member: { runId: "second", agentId: "a" } })).poolCreated).toBe(false);
        expect((await pools.openPool({ poolId })).opened).toBe(false);
        const { frames } = await events.listEvents({ scope: { case: "filter", value: { poolIds: [poolId] } } });
        expect(frames.map((frame) => frame.event?.envelope?.kind).filter((kind) => kind === EventKind.AGENT_POOL_OPENED || kind === EventKind.AGENT_POOL_CREATED)).toEqual([
          EventKind.AGENT_POOL_OPENED,
          EventKind.AGENT_POOL_CREATED,
        ]);
      });
    });
  });
});
