/**
 * The event journal's subscriptions, through the engine, on every backend:
 * replay then live with no gap or duplicate at the seam, resuming, bounded
 * queues and their notices, retention and cursors.
 */
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type AgentEvent,
  AgentEventSchema,
  EventKind,
  EventOverflowReason,
  SubscriberOverflowPolicy as Policy,
} from "../../gen/mailroom/v1/event_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { EVERYTHING, type FilterSpec } from "../../src/domain/events/filter.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import type { SubscribeCommand } from "../../src/domain/events/requests.js";
import type { OverflowNotice } from "../../src/domain/events/subscriber-queue.js";
import type { Engine } from "../../src/engine/engine.js";
import type { Subscription, SubscriptionFrame } from "../../src/engine/events/subscription.js";
import type { EventDoc } from "../../src/engine/journal/records.js";
import type { Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { storeBackends } from "../support/stores.js";

function runEvent(runId: string, kind: EventKind, note = ""): AgentEvent {
  return create(AgentEventSchema, { envelope: { runId, kind }, payload: { case: "redactedSummary", value: note } });
}

async function publish(engine: Engine, runId: string, kind = EventKind.USAGE_RECORDED, note = ""): Promise<number> {
  const { envelope } = await engine.events.publish(parsePublish(runEvent(runId, kind, note), engine.clock.now()));
  return Number(envelope.eventSeq);
}

function command(overrides: Partial<SubscribeCommand> = {}): SubscribeCommand {
  return {
    scope: { kind: "all" },
    filter: EVERYTHING,
    start: "earliest",
    queue: { capacity: 1024, terminalReserve: 16, policy: Policy.BACKPRESSURE_CALLER },
    heartbeatMs: 60_000,
    maxFramesPerMessage: 1,
    ...overrides,
  };
}

/** Takes frames until `count` events arrived (or a frame of another kind when `until` says so). */
async function events(subscription: Subscription, count: number, heartbeatMs = 5_000): Promise<{ docs: EventDoc[]; frames: SubscriptionFrame[] }> {
  const docs: EventDoc[] = [];
  const frames: SubscriptionFrame[] = [];
  const abort = new AbortController();
  while (docs.length < count) {
    const frame = await subscription.next(heartbeatMs, abort.signal);
    if (!frame) throw new Error("subscription ended");
    frames.push(frame);
    if (frame.kind === "event") docs.push(frame.delivery.frame.item);
    if (frame.kind === "heartbeat") throw new Error(`no event for ${heartbeatMs} ms after ${docs.length} of ${count}`);
  }
  return { docs, frames };
}

async function nextFrame(subscription: Subscription, heartbeatMs = 5_000): Promise<SubscriptionFrame> {
  const frame = await subscription.next(heartbeatMs, new AbortController().signal);
  if (!frame) throw new Error("subscription ended");
  return frame;
}

describe.each(storeBackends({ faults: true }))("event subscriptions: $name backend", (backend) => {
  let store: Store;
  let harness: EngineHarness;
  let engine: Engine;
  const open: Subscription[] = [];
  const subscribe = async (c: SubscribeCommand, on = engine) => {
    const s = await on.events.subscribe(c);
    open.push(s);
    return s;
  };

  beforeEach(async () => {
    if (!backend.available) return;
    store = await backend.open();
    harness = engineHarness(store);
    engine = await harness.instance();
  });
  afterEach(async () => {
    if (!backend.available) return;
    open.splice(0).forEach((s) => s.close());
    await harness.stopAll();
    await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("publish", () => {
    it("records a run's event once per event id, answering a repeat with the first recording", async () => {
      const event = runEvent("run-1", EventKind.RUN_STARTED, "first");
      event.envelope!.eventId = "evt-1";
      const first = await engine.events.publish(parsePublish(event, engine.clock.now()));
      const again = runEvent("run-1", EventKind.RUN_STARTED, "retry");
      again.envelope!.eventId = "evt-1";
      const second = await engine.events.publish(parsePublish(again, engine.clock.now()));
      expect(second.deduplicated).toBe(true);
      expect(second.envelope.eventSeq).toBe(first.envelope.eventSeq);
      expect(await engine.journal.events.countDocuments({ event_id: "evt-1" })).toBe(1);
    });
  });

  describe.skipIf(!backend.available)("replay, caught up, live", () => {
    it("replays the journal, sends one CAUGHT_UP frame, then continues live", async () => {
      const before = [await publish(engine, "r"), await publish(engine, "r")];
      const subscription = await subscribe(command());
      const replay = await events(subscription, 2);
      expect(replay.docs.map((d) => d._id)).toEqual(before);
      const caughtUp = await nextFrame(subscription);
      expect(caughtUp).toMatchObject({ kind: "caught_up", position: before[1] });
      const later = await publish(engine, "r");
      expect((await events(subscription, 1)).docs.map((d) => d._id)).toEqual([later]);
    });

    it("delivers every event exactly once, in order, across the seam while many writers publish on two instances", async () => {
      const other = await harness.instance();
      for (let i = 0; i < 50; i++) await publish(i % 2 ? engine : other, `run-${i % 5}`);
      const subscription = await subscribe(command());
      const writers = Array.from({ length: 6 }, (_, w) =>
        (async () => {
          for (let i = 0; i < 40; i++) await publish(w % 2 ? engine : other, `run-${(w + i) % 5}`);
        })(),
      );
      const received = events(subscription, 50 + 240, 10_000);
      await Promise.all(writers);
      const ids = (await received).docs.map((d) => d._id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(ids).toHaveLength(290);
    });

    it("starts at the live edge when asked for the latest, skipping the history", async () => {
      await publish(engine, "r");
      const subscription = await subscribe(command({ start: "latest" }));
      expect(await nextFrame(subscription)).toMatchObject({ kind: "caught_up" });
      const fresh = await publish(engine, "r");
      expect((await events(subscription, 1)).docs[0]!._id).toBe(fresh);
    });

    it("sends heartbeats with the current cursor when idle, from which a resume misses nothing", async () => {
      const subscription = await subscribe(command({ scope: { kind: "run", runId: "mine" }, filter: { ...EVERYTHING, runIds: new Set(["mine"]) } }));
      expect(await nextFrame(subscription, 20)).toMatchObject({ kind: "caught_up" });
      await publish(engine, "someone-else");
      const beat = await nextFrame(subscription, 20);
      expect(beat.kind).toBe("heartbeat");
      const position = (beat as { position: number }).position;
      expect(position).toBe(await engine.journal.writtenHead());
      subscription.close();
      const mine = await publish(engine, "mine");
      const resumed = await subscribe(command({ scope: { kind: "run", runId: "mine" }, filter: { ...EVERYTHING, runIds: new Set(["mine"]) }, after: position }));
      expect((await events(resumed, 1)).docs[0]!._id).toBe(mine);
    });

    it("shows every mailbox transition to a subscriber", async () => {
      const subscription = await subscribe(command({ scope: { kind: "filter", fingerprint: "t" }, filter: { ...EVERYTHING, threadIds: new Set(["thread-x"]) } }));
      await engine.mailbox.enqueue([{ threadId: "thread-x", priority: 1, maxAttempts: 2, schedule: undefined }]);
      const [held] = await engine.mailbox.claim({ consumerId: "w", leaseMs: 1000, limit: 1, waitMs: 0 });
      await engine.mailbox.ack({ dispatchId: held!._id, claimToken: held!.claim_token! });
      const kinds = (await events(subscription, 3)).docs.map((d) => d.kind);
      expect(kinds).toEqual([EventKind.DISPATCH_ENQUEUED, EventKind.DISPATCH_CLAIMED, EventKind.DISPATCH_ACKED]);
    });
  });

  describe.skipIf(!backend.available)("a subscriber that falls behind", () => {
    const slow = (policy: Policy, capacity = 10, terminalReserve = 2, filter: FilterSpec = EVERYTHING) =>
      command({ filter, queue: { capacity, terminalReserve, policy }, start: "latest" });

    it("BACKPRESSURE_CALLER loses nothing: it lags and catches up from the journal", async () => {
      const subscription = await subscribe(slow(Policy.BACKPRESSURE_CALLER, 5, 1));
      expect(await nextFrame(subscription)).toMatchObject({ kind: "caught_up" });
      const published: number[] = [];
      for (let i = 0; i < 200; i++) published.push(await publish(engine, "r", i % 10 === 0 ? EventKind.RUN_COMPLETED : EventKind.MODEL_STREAM_DELTA));
      expect(subscription.queued).toBeLessThanOrEqual(5);
      const { docs, frames } = await events(subscription, 200);
      expect(docs.map((d) => d._id)).toEqual(published);
      expect(frames.every((f) => f.kind !== "event" || f.delivery.notice === undefined)).toBe(true);
    });

    it("DROP_PROGRESS keeps the queue bounded, keeps every terminal event that fits, reports the gaps, and repair_from replays what was dropped", async () => {
      const subscription = await subscribe(slow(Policy.DROP_PROGRESS, 10, 2));
      expect(await nextFrame(subscription)).toMatchObject({ kind: "caught_up" });
      const terminal: number[] = [];
      const all: number[] = [];
      for (let i = 0; i < 300; i++) {
        // 7 terminal events: fewer than the queue holds, so none has to go.
        const isTerminal = i % 40 === 39;
        const seq = await publish(engine, "r", isTerminal ? EventKind.RUN_COMPLETED : EventKind.MODEL_STREAM_DELTA);
        all.push(seq);
        if (isTerminal) terminal.push(seq);
        expect(subscription.queued).toBeLessThanOrEqual(10);
      }
      const received: EventDoc[] = [];
      const notices = [];
      for (;;) {
        const frame = await nextFrame(subscription, 50);
        if (frame.kind === "heartbeat") {
          if (frame.notice) notices.push(frame.notice);
          break;
        }
        if (frame.kind === "event") {
          received.push(frame.delivery.frame.item);
          if (frame.delivery.notice) notices.push(frame.delivery.notice);
        }
      }
      const receivedIds = received.map((d) => d._id);
      expect(terminal.every((seq) => receivedIds.includes(seq))).toBe(true);
      const dropped = notices.reduce((sum, n) => sum + n.droppedCount, 0);
      expect(receivedIds.length + dropped).toBe(300);
      expect(notices.every((n) => n.terminalPreserved)).toBe(true);
      // Re-subscribing after repair_from delivers the dropped events again.
      const repairFrom = Math.min(...notices.map((n) => n.repairFrom));
      const repair = await subscribe(command({ after: repairFrom }));
      const replayed = (await events(repair, all.filter((seq) => seq > repairFrom).length)).docs.map((d) => d._id);
      const missing = all.filter((seq) => !receivedIds.includes(seq));
      expect(missing.every((seq) => replayed.includes(seq))).toBe(true);
    });

    it("never loses a terminal event: a queue full of them makes the subscription lag and catch up from the journal", async () => {
      const subscription = await subscribe(slow(Policy.DROP_PROGRESS, 3, 1));
      expect(await nextFrame(subscription)).toMatchObject({ kind: "caught_up" });
      const terminal: number[] = [];
      for (let i = 0; i < 8; i++) terminal.push(await publish(engine, "r", EventKind.RUN_FAILED));
      const { docs, frames } = await events(subscription, 8);
      expect(docs.map((d) => d._id)).toEqual(terminal);
      expect(frames.some((f) => f.kind === "event" && f.delivery.notice)).toBe(false);
      expect(subscription.queued).toBeLessThanOrEqual(3);
    });

    it("a DROP_PROGRESS subscriber that lagged still skips progress while it catches up, and reports what it skipped", async () => {
      const subscription = await subscribe(slow(Policy.DROP_PROGRESS, 3, 1));
      expect(await nextFrame(subscription)).toMatchObject({ kind: "caught_up" });
      const terminal: number[] = [];
      for (let i = 0; i < 4; i++) terminal.push(await publish(engine, "r", EventKind.RUN_FAILED));
      const progress: number[] = [];
      for (let i = 0; i < 50; i++) progress.push(await publish(engine, "r", EventKind.MODEL_STREAM_DELTA));
      terminal.push(await publish(engine, "r", EventKind.RUN_FAILED));
      const received: number[] = [];
      const notices: OverflowNotice[] = [];
      while (!received.includes(terminal[4]!)) {
        const frame = await nextFrame(subscription);
        if (frame.kind === "event") received.push(frame.delivery.frame.item._id);
        const notice = frame.kind === "event" ? frame.delivery.notice : frame.notice;
        if (notice) notices.push(notice);
      }
      expect(received.filter((seq) => terminal.includes(seq))).toEqual(terminal);
      const dropped = notices.reduce((sum, n) => sum + n.droppedCount, 0);
      expect(dropped).toBeGreaterThan(40);
      expect(received.length + dropped).toBe(terminal.length + progress.length);
      expect(notices.every((n) => n.reason === EventOverflowReason.POLICY_DROPPED_PROGRESS && n.terminalPreserved)).toBe(true);
    });

    it("replays history without applying the overflow policy: a new subscriber gets every event, at its own pace", async () => {
      const all: number[] = [];
      for (let i = 0; i < 40; i++) all.push(await publish(engine, "r", i % 2 ? EventKind.MODEL_STREAM_DELTA : EventKind.USAGE_RECORDED));
      const subscription = await subscribe({ ...slow(Policy.DROP_PROGRESS, 5, 2), start: "earliest" });
      const { docs, frames } = await events(subscription, 40);
      expect(docs.map((d) => d._id)).toEqual(all);
      expect(frames.some((f) => f.kind === "event" && f.delivery.notice)).toBe(false);
    });

    it("FAIL_SUBSCRIBER delivers what was queued, the last frame carrying the notice, then fails with RESOURCE_EXHAUSTED", async () => {
      const subscription = await subscribe(slow(Policy.FAIL_SUBSCRIBER, 5, 1));
      expect(await nextFrame(subscription)).toMatchObject({ kind: "caught_up" });
      for (let i = 0; i < 20; i++) await publish(engine, "r");
      const frames: SubscriptionFrame[] = [];
      const error = await (async () => {
        for (;;) frames.push(await nextFrame(subscription));
      })().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MailroomError);
      expect([(error as MailroomError).code, (error as MailroomError).details.reason]).toEqual(["resource_exhausted", ErrorReason.SUBSCRIBER_OVERFLOW]);
      const last = frames.at(-1)!;
      expect(last.kind === "event" && last.delivery.notice?.policy).toBe(Policy.FAIL_SUBSCRIBER);
    });
  });

  describe.skipIf(!backend.available)("cursors and retention", () => {
    it("refuses a cursor older than the retained journal with OUT_OF_RANGE, and one ahead of it", async () => {
      const first = await publish(engine, "r");
      await publish(engine, "r");
      harness.clock.advance(10_000);
      const kept = await publish(engine, "r");
      await engine.tail.waitFor(kept);
      // Everything recorded 5 s ago or earlier goes.
      const retention = await harness.instance({ events: { retentionMs: 5_000 } });
      const purgedThrough = await retention.retention.purge();
      expect(purgedThrough).toBe(kept - 1);
      const expired = await engine.events.subscribe(command({ after: first })).catch((e: unknown) => e);
      expect(expired).toMatchObject({ code: "out_of_range", details: { reason: ErrorReason.CURSOR_EXPIRED, metadata: { oldest_event_seq: String(kept) } } });
      const ahead = await engine.events.subscribe(command({ after: kept + 1000 })).catch((e: unknown) => e);
      expect(ahead).toMatchObject({ code: "out_of_range", details: { reason: ErrorReason.CURSOR_AHEAD } });
      const fromStart = await subscribe(command());
      expect((await events(fromStart, 1)).docs[0]!._id).toBe(kept);
    });

    it("lists a range page by page, never past the live edge", async () => {
      const seqs: number[] = [];
      for (let i = 0; i < 7; i++) seqs.push(await publish(engine, i % 2 ? "odd" : "even"));
      const even = { ...EVERYTHING, runIds: new Set(["even"]) };
      const page1 = await engine.events.list({ scope: { kind: "run", runId: "even" }, filter: even, pageSize: 2 });
      expect(page1.events.map((d) => d._id)).toEqual([seqs[0], seqs[2]]);
      expect(page1.end).toBe(false);
      const page2 = await engine.events.list({ scope: { kind: "run", runId: "even" }, filter: even, pageSize: 2, after: page1.next });
      expect(page2.events.map((d) => d._id)).toEqual([seqs[4], seqs[6]]);
      const page3 = await engine.events.list({ scope: { kind: "run", runId: "even" }, filter: even, pageSize: 2, after: page2.next });
      expect(page3).toMatchObject({ events: [], end: true });
    });
  });
});
