/**
 * Every mailbox state change is an event a Subscribe stream sees, end to
 * end through the real server process over every protocol: each transition
 * of a dispatch (enqueue, claim, start, lease extension, result, nack and
 * retry, ack, dead letter, cancel, supersede, lease expiry and reclaim) and
 * each thread interrupt, in the order they happened, scoped to the dispatch's
 * thread, run and agent. (Live commands are not journal events: the contract
 * has no event kind for them.)
 */
import { describe, expect, it, onTestFinished } from "vitest";
import { type EventEnvelope, EventFamily, EventFrameKind, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import type { RunDispatch } from "../../gen/mailroom/v1/dispatch_pb.js";
import { type Events, EventStream, isEvent, type SubscribeInit } from "../support/events.js";
import { claimOne, enqueue, isolated, LONG_LEASE, protocols, uid, useClients } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

const Kind = EventKind;
const status = (name: string) => `RUN_DISPATCH_STATUS_${name}`;

/** What a transition's event says: its kind, the dispatch it concerns and the states before and after. */
function transition(kind: EventKind, dispatch: RunDispatch, before: string, after: string) {
  return { kind, dispatchId: dispatch.dispatchId, stateBefore: before === "" ? "" : status(before), stateAfter: status(after) };
}

type Expected = ReturnType<typeof transition> | { kind: EventKind.THREAD_INTERRUPTED };

/** A stream registered (CAUGHT_UP seen) before the test changes anything. */
async function watch(events: Events, scope: SubscribeInit["scope"]): Promise<EventStream> {
  const stream = new EventStream(events, { scope });
  onTestFinished(() => stream.close());
  expect((await stream.next("CAUGHT_UP")).kind).toBe(EventFrameKind.CAUGHT_UP);
  return stream;
}

/** The next `count` event envelopes of the stream. */
async function envelopes(stream: EventStream, count: number, what: string): Promise<EventEnvelope[]> {
  const found: EventEnvelope[] = [];
  while (found.length < count) {
    const frame = await stream.next(`${what}: event ${found.length + 1} of ${count}`);
    if (isEvent(frame)) found.push(frame.event!.envelope!);
  }
  return found;
}

describe.each(serverBackends())("mailbox transitions as journal events on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { mailbox, events } = useClients(() => server().url, protocol);

      /** A fresh thread, run and agent, with streams on the thread (filter), the run and the agent. */
      async function scenario() {
        const ids = { threadId: uid("thread"), runId: uid("run"), agentId: uid("agent") };
        const streams = {
          thread: await watch(events, { case: "filter", value: { threadIds: [ids.threadId] } }),
          run: await watch(events, { case: "runId", value: ids.runId }),
          agent: await watch(events, { case: "agentId", value: ids.agentId }),
        };
        const add = (extra: { maxAttempts?: number; runId?: string } = {}) => enqueue(mailbox, ids.threadId, { runId: ids.runId, agentId: ids.agentId, ...extra });
        /** Checks that the thread stream shows exactly these events next, each with the scenario's scope. */
        const expectThread = async (expected: Expected[]) => {
          const seen = await envelopes(streams.thread, expected.length, "the thread's events");
          expect(seen).toMatchObject(expected.map((e) => ({ family: EventFamily.MAILBOX, threadId: ids.threadId, ...e })));
          for (const envelope of seen.filter((e) => e.kind !== Kind.THREAD_INTERRUPTED)) expect(envelope).toMatchObject({ agentId: ids.agentId });
          return seen;
        };
        return { ids, streams, add, expectThread };
      }

      it("a dispatch's life (enqueue, claim, start, lease extension, result, nack for retry, claim again, ack) is journaled step by step with its dispatch, thread, run and agent", async () => {
        const { ids, streams, add, expectThread } = await scenario();
        const dispatch = await add({ maxAttempts: 3 });
        const first = await claimOne(mailbox, ids.threadId);
        await mailbox.recordDispatchStart({ dispatchId: first.dispatchId, claimToken: first.claimToken, dispatchInstanceId: uid("instance") });
        await mailbox.extendLease({ dispatchId: first.dispatchId, claimToken: first.claimToken, extension: LONG_LEASE });
        await mailbox.recordRunResult({ dispatchId: first.dispatchId, claimToken: first.claimToken, result: { runStatus: 3, response: "partial" } });
        await mailbox.nack({ dispatchId: first.dispatchId, claimToken: first.claimToken, error: "flaky tool" });
        const second = await claimOne(mailbox, ids.threadId);
        await mailbox.ack({ dispatchId: second.dispatchId, claimToken: second.claimToken });

        const expected = [
          transition(Kind.DISPATCH_ENQUEUED, dispatch, "", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, dispatch, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_STARTED, dispatch, "CLAIMED", "CLAIMED"),
          transition(Kind.DISPATCH_LEASE_EXTENDED, dispatch, "CLAIMED", "CLAIMED"),
          transition(Kind.DISPATCH_RESULT_RECORDED, dispatch, "CLAIMED", "CLAIMED"),
          transition(Kind.DISPATCH_NACKED, dispatch, "CLAIMED", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, dispatch, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_ACKED, dispatch, "CLAIMED", "ACKED"),
        ];
        const seen = await expectThread(expected);
        expect(seen.map((e) => e.runId)).toEqual(expected.map(() => ids.runId));
        expect(seen.map((e) => e.eventSeq)).toEqual([...seen.map((e) => e.eventSeq)].sort((a, b) => (a < b ? -1 : 1)));
        // The run's and the agent's streams see the same events.
        expect(await envelopes(streams.run, expected.length, "the run's events")).toMatchObject(expected);
        expect(await envelopes(streams.agent, expected.length, "the agent's events")).toMatchObject(expected);
      });

      it("each way a dispatch ends is journaled: nack of the last attempt (NACKED, then DEAD_LETTERED), dead letter by the worker, cancel while queued or claimed, supersede while claimed", async () => {
        const { ids, add, expectThread } = await scenario();
        const lastAttempt = await add({ maxAttempts: 1 });
        let held = await claimOne(mailbox, ids.threadId);
        await mailbox.nack({ dispatchId: held.dispatchId, claimToken: held.claimToken, error: "gave up" });
        const deadLettered = await add();
        held = await claimOne(mailbox, ids.threadId);
        await mailbox.deadLetter({ dispatchId: held.dispatchId, claimToken: held.claimToken, error: "poison" });
        const cancelledQueued = await add();
        await mailbox.cancel({ dispatchId: cancelledQueued.dispatchId, reason: "not needed" });
        const cancelledClaimed = await add();
        held = await claimOne(mailbox, ids.threadId);
        await mailbox.cancel({ dispatchId: cancelledClaimed.dispatchId, reason: "user pressed stop" });
        const superseded = await add();
        held = await claimOne(mailbox, ids.threadId);
        await mailbox.supersedeClaimed({ dispatchId: held.dispatchId, claimToken: held.claimToken, reason: "newer input" });

        await expectThread([
          transition(Kind.DISPATCH_ENQUEUED, lastAttempt, "", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, lastAttempt, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_NACKED, lastAttempt, "CLAIMED", "DEAD_LETTER"),
          transition(Kind.DISPATCH_DEAD_LETTERED, lastAttempt, "CLAIMED", "DEAD_LETTER"),
          transition(Kind.DISPATCH_ENQUEUED, deadLettered, "", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, deadLettered, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_DEAD_LETTERED, deadLettered, "CLAIMED", "DEAD_LETTER"),
          transition(Kind.DISPATCH_ENQUEUED, cancelledQueued, "", "QUEUED"),
          transition(Kind.DISPATCH_CANCELLED, cancelledQueued, "QUEUED", "CANCELLED"),
          transition(Kind.DISPATCH_ENQUEUED, cancelledClaimed, "", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, cancelledClaimed, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_CANCELLED, cancelledClaimed, "CLAIMED", "CANCELLED"),
          transition(Kind.DISPATCH_ENQUEUED, superseded, "", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, superseded, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_SUPERSEDED, superseded, "CLAIMED", "SUPERSEDED"),
        ]);
      });

      it("an interrupt journals THREAD_INTERRUPTED for the thread (it concerns no run) and supersedes the thread's queued work; the claimed dispatch runs on", async () => {
        const { ids, streams, add, expectThread } = await scenario();
        const running = await add();
        await claimOne(mailbox, ids.threadId);
        const waiting = await add();
        const { newDispatchEpoch } = await mailbox.interrupt({ threadId: ids.threadId });

        const seen = await expectThread([
          transition(Kind.DISPATCH_ENQUEUED, running, "", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, running, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_ENQUEUED, waiting, "", "QUEUED"),
          { kind: Kind.THREAD_INTERRUPTED },
          transition(Kind.DISPATCH_SUPERSEDED, waiting, "QUEUED", "SUPERSEDED"),
        ]);
        expect(seen[3]).toMatchObject({ runId: "", dispatchId: "", stateBefore: `epoch ${newDispatchEpoch - 1n}`, stateAfter: `epoch ${newDispatchEpoch}` });
        // The run's stream sees the run's dispatches only: not the thread's interrupt.
        expect((await envelopes(streams.run, 4, "the run's events")).map((e) => e.kind)).toEqual([
          Kind.DISPATCH_ENQUEUED,
          Kind.DISPATCH_CLAIMED,
          Kind.DISPATCH_ENQUEUED,
          Kind.DISPATCH_SUPERSEDED,
        ]);
      });

      it("a lease that expires is reclaimed by the server on its own: LEASE_EXPIRED back to QUEUED, and on the last attempt LEASE_EXPIRED then DEAD_LETTERED", async () => {
        const { ids, add, expectThread } = await scenario();
        const dispatch = await add({ maxAttempts: 2 });
        await claimOne(mailbox, ids.threadId, { leaseMs: 300 });
        await expectThread([
          transition(Kind.DISPATCH_ENQUEUED, dispatch, "", "QUEUED"),
          transition(Kind.DISPATCH_CLAIMED, dispatch, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_LEASE_EXPIRED, dispatch, "CLAIMED", "QUEUED"),
        ]);
        await claimOne(mailbox, ids.threadId, { leaseMs: 300 });
        await expectThread([
          transition(Kind.DISPATCH_CLAIMED, dispatch, "QUEUED", "CLAIMED"),
          transition(Kind.DISPATCH_LEASE_EXPIRED, dispatch, "CLAIMED", "DEAD_LETTER"),
          transition(Kind.DISPATCH_DEAD_LETTERED, dispatch, "CLAIMED", "DEAD_LETTER"),
        ]);
      });

      it("a run's stream sees only its own run's dispatches, even in a thread shared with another run", async () => {
        const { ids, streams, add } = await scenario();
        const other = await add({ runId: uid("other-run") });
        const mine = await add();
        const kinds = await envelopes(streams.run, 1, "the run's events");
        expect(kinds).toMatchObject([{ kind: Kind.DISPATCH_ENQUEUED, dispatchId: mine.dispatchId, runId: ids.runId }]);
        expect((await envelopes(streams.thread, 2, "the thread's events")).map((e) => e.dispatchId)).toEqual([other.dispatchId, mine.dispatchId]);
      });
    });
  });
});

