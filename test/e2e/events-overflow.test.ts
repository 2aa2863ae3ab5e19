/**
 * EventService: a subscriber that falls behind, end to end through the real
 * server process. "Falling behind" is a client that stops reading its stream
 * entirely: HTTP/2 flow control then stops the server from sending, the
 * subscription's bounded queue fills, and its overflow policy acts. Each test
 * pauses a subscriber right after CAUGHT_UP, publishes, waits until the
 * server has handed every event to its subscriptions (observed through a
 * second subscription, never by sleeping), then resumes reading.
 *
 * On a busy machine: where a test bounds what got through, the publisher
 * sends a few events at a time, so the server's writer (which sends what the
 * paused client's connection still takes) gets its turn between them, and
 * the queue overflows because the connection is full, not because the server
 * fell behind; and each test does a few thousand round trips, with a hang
 * guard to match, not a speed limit.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it, onTestFinished } from "vitest";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import {
  type EventEnvelope,
  EventFrameKind,
  EventKind,
  EventOverflowReason,
  SubscriberOverflowPolicy as Policy,
} from "../../gen/mailroom/v1/event_pb.js";
import { testClients } from "../support/e2e-auth.js";
import {
  type Events,
  EventStream,
  handedToSubscribers,
  isEvent,
  noticesOf,
  PROGRESS,
  publish,
  publishMany,
  cursorSeq,
  type SubscribeInit,
  seqOf,
  TERMINAL,
} from "../support/events.js";
import { isolated, refusal, uid, useClients } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

/**
 * The slow subscriber sees 100,000 events; 3,000 (about 1.4 MB) still
 * overflow a paused connection (it takes a few hundred small frames) and a
 * 100-frame queue many times over, in a fraction of the time.
 */
const SLOW_EVENTS = 3_000;
const CAPACITY = 100;
/** Publishes in flight at once: few enough that the server's writer is never outrun between two of its turns. */
const PUBLISHERS = 4;
/** Each test publishes thousands of events over the network: a generous guard against a hang, not a speed limit. */
const HANG_GUARD_MS = 180_000;

/** The i-th event of a slow run: every 1,000th terminal, every 1,000th (offset 500) a non-progress RUN_STARTED, the rest progress. */
function kindOf(i: number): EventKind {
  if (i % 1000 === 999) return TERMINAL;
  if (i % 1000 === 499) return EventKind.RUN_STARTED;
  return PROGRESS;
}

const runScope = (runId: string) => ({ case: "runId" as const, value: runId });

describe.each(serverBackends())("EventService overflow policies on the $name backend", { timeout: HANG_GUARD_MS }, (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });
    const { events: publisher } = useClients(() => server().url, "connect");

    /**
     * A subscriber to the run on a connection of its own (so pausing it holds
     * back nothing else), registered (CAUGHT_UP read) and from then on paused:
     * it reads nothing until the test asks for the next frame.
     */
    async function pausedSubscriber(runId: string, queue: SubscribeInit["queue"]): Promise<EventStream> {
      const clients = testClients({ baseUrl: server().url, protocol: "grpc" });
      const stream = new EventStream(clients.events, { scope: runScope(runId), queue });
      onTestFinished(() => {
        stream.close();
        clients.close();
      });
      expect((await stream.next("CAUGHT_UP")).kind).toBe(EventFrameKind.CAUGHT_UP);
      return stream;
    }

    /**
     * Publishes `count` events of `runId` (kinds by `kindOf`, the last one
     * terminal and published after all the others) while `paused` reads
     * nothing, and waits until the server has handed all of them to it.
     * `concurrency` publishes are in flight at once.
     */
    async function publishWhilePaused(events: Events, runId: string, count: number, concurrency?: number): Promise<EventEnvelope[]> {
      const published = await publishMany(events, count - 1, (i) => ({ runId, kind: kindOf(i) }), concurrency);
      published.push(await publish(events, { runId, kind: TERMINAL }, "last"));
      await handedToSubscribers(events, runId, seqOf(published.at(-1)!));
      return [...published].sort((a, b) => seqOf(a) - seqOf(b));
    }

    describe("DROP_PROGRESS", () => {
      it(
        `keeps at most capacity (${CAPACITY}) events queued for a subscriber that stopped reading, drops only progress events, ` +
          "reports every dropped one in notices, and resubscribing from repair_from delivers them again",
        async () => {
          const runId = uid("slow-run");
          const slow = await pausedSubscriber(runId, { capacity: CAPACITY, overflow: Policy.DROP_PROGRESS });

          // Few publishers: the queue must overflow because the connection is full (see `Bounded` below).
          const published = await publishWhilePaused(publisher, runId, SLOW_EVENTS, PUBLISHERS);
          const last = seqOf(published.at(-1)!);
          const frames = await slow.framesThrough(last, "the last event, after resuming");

          const delivered = frames.filter(isEvent).map(cursorSeq);
          expect(delivered, "delivered in journal order, none twice").toEqual([...new Set(delivered)].sort((a, b) => a - b));
          const deliveredSet = new Set(delivered);
          const dropped = published.filter((e) => !deliveredSet.has(seqOf(e)));

          // Only progress events were dropped: every terminal and every other non-progress event arrived.
          expect(dropped.length, "events dropped while paused").toBeGreaterThan(0);
          expect(dropped.filter((e) => e.kind !== PROGRESS)).toEqual([]);
          expect(published.filter((e) => e.kind !== PROGRESS).every((e) => deliveredSet.has(seqOf(e)))).toBe(true);

          // The notices account for every dropped event, and say where to repair from.
          const notices = noticesOf(frames);
          expect(notices.length).toBeGreaterThan(0);
          expect(notices.reduce((sum, n) => sum + Number(n.droppedCount), 0)).toBe(dropped.length);
          for (const notice of notices) {
            expect(notice).toMatchObject({
              policy: Policy.DROP_PROGRESS,
              reason: EventOverflowReason.POLICY_DROPPED_PROGRESS,
              terminalPreserved: true,
              gapStart: { scope: { scope: runScope(runId) } },
              gapEnd: { scope: { scope: runScope(runId) } },
              repairFrom: { scope: { scope: runScope(runId) }, eventSeq: notice.gapStart!.eventSeq - 1n },
            });
            expect(notice.gapEnd!.eventSeq).toBeGreaterThanOrEqual(notice.gapStart!.eventSeq);
          }
          const within = (seq: number) => notices.some((n) => seq >= Number(n.gapStart!.eventSeq) && seq <= Number(n.gapEnd!.eventSeq));
          expect(dropped.filter((e) => !within(seqOf(e))), "dropped events outside every notice's gap").toEqual([]);

          // Bounded: past the first gap, everything delivered waited in the server's queue (what was
          // sent before the queue filled is all older), so no more than its capacity got through.
          const firstGap = Math.min(...notices.map((n) => Number(n.gapStart!.eventSeq)));
          expect(delivered.filter((seq) => seq > firstGap).length).toBeLessThanOrEqual(CAPACITY);

          // Resubscribing after the earliest repair_from replays the journal: every dropped event, once, in order.
          const repairFrom = notices.map((n) => n.repairFrom!).reduce((a, b) => (b.eventSeq < a.eventSeq ? b : a));
          const repair = new EventStream(publisher, { scope: runScope(runId), after: repairFrom, queue: { capacity: 1000 } });
          onTestFinished(() => repair.close());
          const replayed = (await repair.framesThrough(last, "the replay of the gap")).filter(isEvent).map(cursorSeq);
          expect(replayed).toEqual(published.map(seqOf).filter((seq) => seq > Number(repairFrom.eventSeq)));
          expect(dropped.every((e) => replayed.includes(seqOf(e)))).toBe(true);
        },
      );
    });

    describe("FAIL_SUBSCRIBER", () => {
      /**
       * Reads the paused subscriber to its end and checks how it ended: a
       * gapless prefix of `published`, the notice on the very last frame
       * naming the first event not delivered, then RESOURCE_EXHAUSTED
       * (SUBSCRIBER_OVERFLOW). Returns what was delivered and the notice.
       */
      async function expectFailedAfterNotice(slow: EventStream, runId: string, published: EventEnvelope[]) {
        const { frames, error } = await slow.untilFailure("the overflow failure");
        expect(await refusal(Promise.reject(error))).toMatchObject({ code: Code.ResourceExhausted, detail: { reason: ErrorReason.SUBSCRIBER_OVERFLOW } });
        const delivered = frames.filter(isEvent).map(cursorSeq);
        expect(delivered.length).toBeGreaterThan(0);
        expect(delivered).toEqual(published.slice(0, delivered.length).map(seqOf));
        expect(frames.slice(0, -1).filter((f) => f.overflow)).toEqual([]);
        const firstLost = published[delivered.length]!;
        const notice = frames.at(-1)!.overflow!;
        expect(notice).toMatchObject({
          policy: Policy.FAIL_SUBSCRIBER,
          reason: EventOverflowReason.SUBSCRIBER_QUEUE_FULL,
          gapStart: { eventSeq: firstLost.eventSeq },
          repairFrom: { scope: { scope: runScope(runId) }, eventSeq: firstLost.eventSeq - 1n },
          terminalPreserved: firstLost.kind !== TERMINAL,
        });
        return { delivered, notice };
      }

      it("delivers what was queued, the last frame carrying the notice, then ends the stream with RESOURCE_EXHAUSTED (SUBSCRIBER_OVERFLOW); repair_from resumes with nothing lost", async () => {
        const runId = uid("failing-run");
        const slow = await pausedSubscriber(runId, { capacity: 10, overflow: Policy.FAIL_SUBSCRIBER });
        const published = await publishWhilePaused(publisher, runId, 1_500);
        const { delivered, notice } = await expectFailedAfterNotice(slow, runId, published);

        const resumed = new EventStream(publisher, { scope: runScope(runId), after: notice.repairFrom });
        onTestFinished(() => resumed.close());
        const rest = (await resumed.framesThrough(seqOf(published.at(-1)!), "the rest of the run")).filter(isEvent).map(cursorSeq);
        expect([...delivered, ...rest]).toEqual(published.map(seqOf));
      });

      it("ends the stream the same way when terminal events overflow it: it never drops a terminal event and carries on", async () => {
        const runId = uid("failing-terminal-run");
        const slow = await pausedSubscriber(runId, { capacity: 10, overflow: Policy.FAIL_SUBSCRIBER });
        const published = (await publishMany(publisher, 1_500, () => ({ runId, kind: TERMINAL }))).sort((a, b) => seqOf(a) - seqOf(b));
        await handedToSubscribers(publisher, runId, seqOf(published.at(-1)!));
        await expectFailedAfterNotice(slow, runId, published);
      });
    });

    describe("BACKPRESSURE_CALLER", () => {
      it("loses nothing: a subscriber that stopped reading lags, and after it resumes receives every event exactly once, in order, with no notice", async () => {
        const runId = uid("lagging-run");
        const slow = await pausedSubscriber(runId, { capacity: 10, overflow: Policy.BACKPRESSURE_CALLER });

        const published = await publishWhilePaused(publisher, runId, 2_500);
        const frames = await slow.framesThrough(seqOf(published.at(-1)!), "the last event, after resuming");
        expect(frames.filter(isEvent).map(cursorSeq)).toEqual(published.map(seqOf));
        expect(noticesOf(frames)).toEqual([]);
      });
    });
  });
});
