/**
 * The seed's mailbox and event bus semantics end to end (issue 13), through
 * the real server process over gRPC and Connect: pulled dispatch signals
 * delivered again until acknowledged; live commands for whatever runs in a
 * thread, and checked as the contract limits them; PublishBatch all or
 * nothing at consecutive positions.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { DispatchSignalReason } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { LiveDeliveryOutcome, ToolCallOutcome } from "../../gen/mailroom/v1/live_pb.js";
import type { DispatchSignalReceipt } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { enqueue, isolated, type Mailbox, ms, nextCommand, openLiveChannel, refusal, say, uid, useClients } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

/** Pulls (waiting up to `waitMs`) until the dispatch's signal comes; signals of other dispatches are acked. */
async function pullFor(mailbox: Mailbox, dispatchId: string, options: { expiresMs?: number; waitMs?: number } = {}): Promise<DispatchSignalReceipt> {
  for (;;) {
    const { receipts } = await mailbox.pullDispatchSignals({ max: 100, expires: ms(options.expiresMs ?? 30_000), wait: ms(options.waitMs ?? 10_000) });
    if (receipts.length === 0) throw new Error(`no signal for ${dispatchId} within the wait`);
    const mine = receipts.find((r) => r.signal?.dispatchId === dispatchId);
    for (const other of receipts.filter((r) => r !== mine)) await mailbox.ackDispatchSignal({ receipt: other.receipt });
    if (mine) return mine;
  }
}

describe.each(serverBackends())("the seed's mailbox and event bus semantics on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(["grpc", "connect"] as const)("over %s", (protocol) => {
      const { mailbox, events } = useClients(() => server().url, protocol);

      describe("pulled dispatch signals (seed: pull_dispatch_signals, DispatchSignalReceipt)", () => {
        it("a signal not acknowledged comes back when its lease ends, with redelivery_attempts one higher; acknowledged, it does not", async () => {
          const dispatch = await enqueue(mailbox, uid("thread"));
          const first = await pullFor(mailbox, dispatch.dispatchId, { expiresMs: 1_000 });
          expect(first).toMatchObject({ signal: { threadId: dispatch.threadId, reason: DispatchSignalReason.ENQUEUED }, redeliveryAttempts: 0 });
          // Not acked: the long poll returns once the 1 s lease has ended.
          const second = await pullFor(mailbox, dispatch.dispatchId, { expiresMs: 60_000 });
          expect(second.redeliveryAttempts).toBe(1);
          expect((await mailbox.ackDispatchSignal({ receipt: first.receipt })).acked).toBe(false);
          expect((await mailbox.ackDispatchSignal({ receipt: second.receipt })).acked).toBe(true);
          expect((await mailbox.ackDispatchSignal({ receipt: second.receipt })).acked).toBe(false);
        });

        it("a nacked signal comes back at once with one more attempt; a bad receipt is INVALID_ARGUMENT", async () => {
          const dispatch = await enqueue(mailbox, uid("thread"));
          const first = await pullFor(mailbox, dispatch.dispatchId);
          expect((await mailbox.nackDispatchSignal({ receipt: first.receipt })).nacked).toBe(true);
          const again = await pullFor(mailbox, dispatch.dispatchId);
          expect(again.redeliveryAttempts).toBe(1);
          await mailbox.ackDispatchSignal({ receipt: again.receipt });
          expect(await refusal(mailbox.ackDispatchSignal({ receipt: "not-a-receipt" }))).toMatchObject({ code: Code.InvalidArgument, detail: { field: "receipt" } });
          expect(await refusal(mailbox.pullDispatchSignals({ max: 101 }))).toMatchObject({ code: Code.InvalidArgument, detail: { field: "max" } });
        });
      });

      describe("live commands (seed: deliver_live(thread), open_live_channel(thread))", () => {
        it("a channel for a thread receives commands for any run of it; a command for a thread reaches the channel of whatever runs in it", async () => {
          const threadId = uid("thread");
          const wide = await openLiveChannel(mailbox, { threadId, runId: "" });
          const toRun = await mailbox.deliverLive({ target: { threadId, runId: "run-7" }, command: say("to run-7") });
          expect(toRun.outcome).toBe(LiveDeliveryOutcome.DELIVERED);
          expect((await nextCommand(wide)).commandId).toBe(toRun.commandId);

          const other = uid("thread");
          const running = await openLiveChannel(mailbox, { threadId: other, runId: "run-8" });
          const toThread = await mailbox.deliverLive({ target: { threadId: other }, command: say("whoever runs") });
          expect(toThread.outcome).toBe(LiveDeliveryOutcome.DELIVERED);
          expect((await nextCommand(running)).commandId).toBe(toThread.commandId);
          expect((await mailbox.deliverLive({ target: { threadId: uid("idle") }, command: say("nobody") })).outcome).toBe(LiveDeliveryOutcome.NO_SUBSCRIBER);
        });

        it("an empty LiveMessages is INVALID_ARGUMENT, and so are more than 100 decisions", async () => {
          const threadId = uid("thread");
          await openLiveChannel(mailbox, { threadId, runId: "run-1" });
          const empty = await refusal(mailbox.deliverLive({ target: { threadId, runId: "run-1" }, command: { body: { case: "messages", value: { messages: [] } } } }));
          expect(empty).toMatchObject({ code: Code.InvalidArgument, detail: { reason: ErrorReason.INVALID_FIELD, field: "command.messages.messages" } });
          const decisions = Array.from({ length: 101 }, (_, i) => ({ toolCallId: `call-${i}`, outcome: ToolCallOutcome.APPROVE }));
          const many = await refusal(mailbox.deliverLive({ target: { threadId, runId: "run-1" }, command: { body: { case: "decisions", value: { decisions } } } }));
          expect(many).toMatchObject({ code: Code.InvalidArgument, detail: { field: "command.decisions.decisions" } });
        });
      });

      describe("PublishBatch (seed: publish_all)", () => {
        it("a batch of 100 lands all at consecutive positions, in order", async () => {
          const runId = uid("run");
          const batch = Array.from({ length: 100 }, (_, i) => ({ envelope: { runId, kind: EventKind.CUSTOM, customKind: `step-${i}` } }));
          const { envelopes, deduplicated } = await events.publishBatch({ events: batch });
          expect(deduplicated).toBe(false);
          const first = envelopes[0]!.eventSeq;
          expect(envelopes.map((e) => e.eventSeq)).toEqual(envelopes.map((_, i) => first + BigInt(i)));
          const { frames } = await events.listEvents({ scope: { case: "runId", value: runId }, pageSize: 1000 });
          expect(frames.map((f) => f.event?.envelope?.customKind)).toEqual(batch.map((e) => e.envelope.customKind));
          const retried = await events.publishBatch({ events: envelopes.map((envelope) => ({ envelope: { runId, kind: EventKind.CUSTOM, customKind: envelope.customKind, eventId: envelope.eventId } })) });
          expect(retried.deduplicated).toBe(true);
        });

        it("a batch of 100 with one bad event is INVALID_ARGUMENT naming it, and nothing of it is recorded", async () => {
          const runId = uid("run");
          const batch = Array.from({ length: 100 }, (_, i) => ({ envelope: { runId, kind: i === 57 ? EventKind.DISPATCH_ACKED : EventKind.RUN_STARTED } }));
          const refused = await refusal(events.publishBatch({ events: batch }));
          expect(refused).toMatchObject({ code: Code.InvalidArgument, detail: { field: "events[57].envelope.kind" } });
          expect((await events.listEvents({ scope: { case: "runId", value: runId } })).frames).toEqual([]);
        });
      });
    });
  });
});
