/**
 * MailboxService's server streams end to end, through the real server
 * process and generated clients over every protocol: WatchDispatchSignals
 * (workers never poll) and live commands to a running run.
 */
import { Code } from "@connectrpc/connect";
import { beforeEach, describe, expect, it, onTestFinished } from "vitest";
import { DispatchSignalReason as Reason } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { LiveDeliveryOutcome as Outcome } from "../../gen/mailroom/v1/live_pb.js";
import { testClients } from "../support/e2e-auth.js";
import {
  ack,
  claimOne,
  emptyMailbox,
  enqueue,
  isolated,
  LONG_LEASE,
  ms,
  nextCommand,
  openLiveChannel,
  protocols,
  refusal,
  say,
  signalOf,
  uid,
  useClients,
  watchSignals,
} from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

describe.each(serverBackends())("MailboxService streams on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { mailbox } = useClients(() => server().url, protocol);

      describe("WatchDispatchSignals", () => {
        it("sends a heartbeat first, then a signal each time a dispatch of the watched thread becomes claimable", async () => {
          const thread = uid("signals");
          const signals = watchSignals(mailbox, thread);
          expect((await signals.next("the first frame")).frame.case).toBe("heartbeat");

          await enqueue(mailbox, uid("unwatched"));
          const first = await enqueue(mailbox, thread);
          const second = await enqueue(mailbox, thread);
          expect(await signals.nextMatching(signalOf, "the first enqueue's signal")).toMatchObject({ threadId: thread, dispatchId: first.dispatchId, reason: Reason.ENQUEUED });
          expect(await signals.nextMatching(signalOf, "the second enqueue's signal")).toMatchObject({ threadId: thread, dispatchId: second.dispatchId, reason: Reason.ENQUEUED });

          await ack(mailbox, await claimOne(mailbox, thread));
          expect(await signals.nextMatching(signalOf, "the thread's release")).toMatchObject({ threadId: thread, dispatchId: first.dispatchId, reason: Reason.THREAD_RELEASED });
          const held = await claimOne(mailbox, thread);
          await mailbox.nack({ dispatchId: held.dispatchId, claimToken: held.claimToken, error: "again" });
          expect(await signals.nextMatching(signalOf, "the nacked dispatch")).toMatchObject({ dispatchId: second.dispatchId, reason: Reason.AVAILABLE });
        });

        it("signals delayed work when it comes due, and work whose lease was reclaimed", async () => {
          const thread = uid("signals-later");
          const signals = watchSignals(mailbox, thread);
          expect((await signals.next("the first frame")).frame.case).toBe("heartbeat");
          const delayed = await enqueue(mailbox, thread, { schedule: { case: "delay", value: ms(300) } });
          expect(await signals.nextMatching(signalOf, "the delayed dispatch coming due")).toMatchObject({ dispatchId: delayed.dispatchId, reason: Reason.AVAILABLE });
          await claimOne(mailbox, thread, { leaseMs: 200 });
          expect(await signals.nextMatching(signalOf, "the expired lease being reclaimed")).toMatchObject({ dispatchId: delayed.dispatchId, reason: Reason.LEASE_RECLAIMED });
        });
      });

      describe("live commands", () => {
        const target = () => ({ threadId: uid("live-thread"), runId: uid("run") });

        it("DeliverLive with no channel open reports NO_SUBSCRIBER and stores nothing", async () => {
          const { outcome, commandId } = await mailbox.deliverLive({ target: target(), command: say("anyone there?") });
          expect(outcome).toBe(Outcome.NO_SUBSCRIBER);
          expect(commandId).not.toBe("");
          expect(await refusal(mailbox.ackLiveCommand({ commandId }))).toMatchObject({ code: Code.NotFound, detail: { reason: ErrorReason.ENTITY_NOT_FOUND } });
        });

        it("once the channel's first heartbeat arrived, DeliverLive reports DELIVERED and the command arrives on the channel", async () => {
          const to = target();
          const channel = await openLiveChannel(mailbox, to);
          const commandId = uid("cmd");
          const delivered = await mailbox.deliverLive({ target: to, command: { commandId, ...say("please also check the tests") } });
          expect(delivered).toMatchObject({ outcome: Outcome.DELIVERED, commandId });
          const command = await nextCommand(channel);
          expect(command).toMatchObject({ commandId, target: { threadId: to.threadId, runId: to.runId }, body: say("please also check the tests").body });
          expect(command.sentAt).toBeDefined();
          const cancel = await mailbox.deliverLive({ target: to, command: { body: { case: "cancel", value: { reason: "user pressed stop" } } } });
          expect(await nextCommand(channel)).toMatchObject({ commandId: cancel.commandId, body: { case: "cancel", value: { reason: "user pressed stop" } } });
        });

        it("commands not acked are sent again when a channel for the target opens again; acked ones are not", async () => {
          const to = target();
          const first = await openLiveChannel(mailbox, to);
          const acked = await mailbox.deliverLive({ target: to, command: say("one") });
          const unacked = await mailbox.deliverLive({ target: to, command: say("two") });
          expect((await nextCommand(first)).commandId).toBe(acked.commandId);
          expect((await nextCommand(first)).commandId).toBe(unacked.commandId);
          expect((await mailbox.ackLiveCommand({ commandId: acked.commandId })).newlyAcked).toBe(true);
          first.close();

          const reopened = await openLiveChannel(mailbox, to);
          const later = await mailbox.deliverLive({ target: to, command: say("three") });
          expect(later.outcome).toBe(Outcome.DELIVERED);
          const resent = await nextCommand(reopened, "the unacked command, sent again");
          expect(resent).toMatchObject({ commandId: unacked.commandId, body: say("two").body });
          expect((await nextCommand(reopened, "the command sent after re-opening")).commandId).toBe(later.commandId);
        });

        it("a command_id repeated for its target is delivered once; used for another target it gets ALREADY_EXISTS", async () => {
          const [first, second] = [target(), target()];
          const onFirst = await openLiveChannel(mailbox, first);
          await openLiveChannel(mailbox, second);
          const commandId = uid("cmd");
          expect((await mailbox.deliverLive({ target: first, command: { commandId, ...say("hello") } })).outcome).toBe(Outcome.DELIVERED);
          // A retried call: answered as delivered, not sent twice.
          expect((await mailbox.deliverLive({ target: first, command: { commandId, ...say("hello") } })).outcome).toBe(Outcome.DELIVERED);
          const marker = await mailbox.deliverLive({ target: first, command: say("marker") });
          expect([(await nextCommand(onFirst)).commandId, (await nextCommand(onFirst)).commandId]).toEqual([commandId, marker.commandId]);

          const reused = await refusal(mailbox.deliverLive({ target: second, command: { commandId, ...say("for someone else") } }));
          expect(reused.code).toBe(Code.AlreadyExists);
          expect(reused.message).toContain(commandId);
        });

        it("AckLiveCommand answers newly_acked true, then false; an unknown command id gets NOT_FOUND", async () => {
          const to = target();
          const channel = await openLiveChannel(mailbox, to);
          const { commandId } = await mailbox.deliverLive({ target: to, command: say("ack me") });
          await nextCommand(channel);
          expect((await mailbox.ackLiveCommand({ commandId })).newlyAcked).toBe(true);
          expect((await mailbox.ackLiveCommand({ commandId })).newlyAcked).toBe(false);
          expect(await refusal(mailbox.ackLiveCommand({ commandId: uid("no-such-command") }))).toMatchObject({ code: Code.NotFound, detail: { reason: ErrorReason.ENTITY_NOT_FOUND } });
        });

        it("a channel for one dispatch of the run gets commands for that dispatch or the whole run, not for another dispatch", async () => {
          const to = target();
          const channel = await openLiveChannel(mailbox, { ...to, dispatchId: "dispatch-1" });
          expect((await mailbox.deliverLive({ target: { ...to, dispatchId: "dispatch-2" }, command: say("not for you") })).outcome).toBe(Outcome.NO_SUBSCRIBER);
          const narrow = await mailbox.deliverLive({ target: { ...to, dispatchId: "dispatch-1" }, command: say("for dispatch-1") });
          const broad = await mailbox.deliverLive({ target: to, command: say("for the run") });
          expect([narrow.outcome, broad.outcome]).toEqual([Outcome.DELIVERED, Outcome.DELIVERED]);
          expect((await nextCommand(channel)).commandId).toBe(narrow.commandId);
          expect((await nextCommand(channel)).commandId).toBe(broad.commandId);
        });
      });
    });
  });

  describe.skipIf(!backend.available)("a server process that owns the whole mailbox", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { mailbox: producer } = useClients(() => server().url, protocol);
      beforeEach(() => emptyMailbox(producer));

      it("a worker loop that only watches signals and claims gets every job, each once", async () => {
        const worker = testClients({ baseUrl: server().url, protocol });
        onTestFinished(() => worker.close());
        const got: string[] = [];
        /** Claims and acks until nothing is claimable: what a worker does on a signal. */
        const work = async () => {
          for (;;) {
            const { dispatches } = await worker.mailbox.claim({ consumerId: "signal-worker", lease: LONG_LEASE, limit: 10 });
            if (dispatches.length === 0) return;
            for (const dispatch of dispatches) {
              got.push(dispatch.dispatchId);
              await ack(worker.mailbox, dispatch);
            }
          }
        };

        const signals = watchSignals(worker.mailbox);
        expect((await signals.next("the first frame")).frame.case).toBe("heartbeat");
        await work(); // after the first frame, once, for work from before the stream

        const threads = Array.from({ length: 4 }, () => uid("job-thread"));
        const rounds = 3;
        const delayedThreads = threads.slice(0, 2);
        const jobs = threads.length * rounds + delayedThreads.length;
        const producing = (async () => {
          const ids: string[] = [];
          for (let round = 0; round < rounds; round++) {
            for (const thread of threads) ids.push((await enqueue(producer, thread, { priority: (round * 37) % 256 })).dispatchId);
          }
          const delayed = await producer.enqueueBatch({ dispatches: delayedThreads.map((threadId) => ({ threadId, schedule: { case: "delay", value: ms(300) } })) });
          ids.push(...delayed.results.map((r) => r.dispatch!.dispatchId));
          return ids;
        })();

        while (got.length < jobs) {
          await signals.nextMatching(signalOf, `a signal (${got.length} of ${jobs} jobs done so far)`);
          await work();
        }
        expect([...got].sort()).toEqual([...(await producing)].sort());
        expect(new Set(got).size).toBe(got.length);
      });
    });
  });
});
