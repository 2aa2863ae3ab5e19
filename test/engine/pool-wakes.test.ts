/**
 * Wake conditions and persisted deadlines through the engine, on every
 * backend, with two server instances on one store: a wake is triggered by
 * the first matching event its registration can see (one already journaled
 * after its `after` cursor included), by whichever instance sees it, exactly
 * once; deadlines fire exactly once; a registrant that died before scanning
 * is finished by the repair sweep.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type AgentEvent, AgentEventSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { RunMessageSchema, type WakeRegistration, WakeRegistrationStatus as WakeStatus, WakeConditionSchema } from "../../gen/mailroom/v1/pool_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import { parseMessage } from "../../src/domain/pool/messages.js";
import { parseConfig, parseMember } from "../../src/domain/pool/pool.js";
import { parseWakeCondition } from "../../src/domain/pool/wakes.js";
import type { Engine } from "../../src/engine/engine.js";
import type { Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { until } from "../support/mailbox.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-1";

function runEvent(runId: string, kind = EventKind.USAGE_RECORDED): AgentEvent {
  return create(AgentEventSchema, { envelope: { runId, kind }, payload: { case: "redactedSummary", value: `${runId} did something` } });
}

async function publish(engine: Engine, runId: string, kind?: EventKind): Promise<{ seq: number; eventId: string }> {
  const { envelope } = await engine.events.publish(parsePublish(runEvent(runId, kind), engine.clock.now()));
  return { seq: Number(envelope.eventSeq), eventId: envelope.eventId };
}

async function join(engine: Engine, runId: string, agentId = "agent"): Promise<void> {
  await engine.pools.join(POOL, parseMember("member", { $typeName: "mailroom.v1.AgentPoolMember", runId, agentId, policyRefs: [], topics: [] }));
}

function suspend(engine: Engine, runId: string, fields: Record<string, unknown> = {}) {
  return engine.wakes.suspend(POOL, parseWakeCondition(runId, create(WakeConditionSchema, { runId, ...fields })));
}

/** The registration once it has left REGISTERED, awaited through the instance's matcher (no polling). */
async function settled(engine: Engine, conditionId: string): Promise<WakeRegistration> {
  let release: () => void = () => undefined;
  const changed = new Promise<void>((resolve) => (release = resolve));
  const stop = engine.wakeMatcher.whenSettled(DEFAULT_NAMESPACE, POOL, conditionId, release);
  try {
    const now = await engine.wakes.poll(POOL, conditionId);
    if (now.status !== WakeStatus.REGISTERED) return now;
    await changed;
    return await engine.wakes.poll(POOL, conditionId);
  } finally {
    stop();
  }
}

async function countKind(engine: Engine, kind: EventKind): Promise<number> {
  return engine.journal.events.countDocuments({ kind, pool_id: POOL });
}

describe.each(storeBackends({ faults: true }))("wake conditions: $name backend", (backend) => {
  let store: Store;
  let harness: EngineHarness;
  let one: Engine;
  let two: Engine;

  beforeEach(async () => {
    if (!backend.available) return;
    store = await backend.open();
    harness = engineHarness(store);
    one = await harness.instance();
    two = await harness.instance();
    await one.pools.open(POOL, parseConfig(undefined));
    await join(one, "sleeper");
    await join(one, "worker");
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("matching", () => {
    it("an event journaled before the registration but after its `after` cursor triggers it at once", async () => {
      const before = one.tail.position;
      const early = await publish(two, "worker");
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"] }, after: { eventSeq: BigInt(before) } });
      expect([registration?.status, registration?.matchedEventId]).toEqual([WakeStatus.TRIGGERED, early.eventId]);
    });

    it("without a cursor, only events after the registration wake it", async () => {
      await publish(one, "worker");
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"] } });
      expect(registration?.status).toBe(WakeStatus.REGISTERED);
      const later = await publish(two, "worker");
      const woken = await settled(one, registration!.conditionId);
      expect([woken.status, woken.matchedEventId]).toEqual([WakeStatus.TRIGGERED, later.eventId]);
      expect(woken.resumeInput?.eventRefs.map((ref) => ref.id)).toContain(later.eventId);
    });

    it("with match_history (the seed's suspend_until), the first matching event already journaled triggers it at once, however old", async () => {
      const first = await publish(two, "worker");
      await publish(one, "worker");
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"], kinds: [EventKind.USAGE_RECORDED] }, matchHistory: true });
      expect([registration?.status, registration?.matchedEventId]).toEqual([WakeStatus.TRIGGERED, first.eventId]);
    });

    it("with match_history and nothing matching yet, it waits like any other", async () => {
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"], kinds: [EventKind.RUN_COMPLETED] }, matchHistory: true });
      expect(registration?.status).toBe(WakeStatus.REGISTERED);
      const later = await publish(two, "worker", EventKind.RUN_COMPLETED);
      expect((await settled(one, registration!.conditionId)).matchedEventId).toBe(later.eventId);
    });

    it("an event of a run that is not a member never wakes it", async () => {
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["stranger", "worker"] } });
      await publish(two, "stranger");
      const member = await publish(two, "worker");
      const woken = await settled(one, registration!.conditionId);
      expect(woken.matchedEventId).toBe(member.eventId);
    });

    it("a filter scoped to no member run matches nothing, and the stored wake says so", async () => {
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["stranger"] } });
      const snapshot = await one.pools.snapshot(POOL, 10);
      const stored = snapshot.wakes.find((w) => w.registration?.conditionId === registration!.conditionId);
      expect([stored?.matchesNothing, stored?.condition?.filter?.runIds]).toEqual([true, []]);
      const open = (await one.pools.snapshot(POOL, 10)).wakes.length;
      await suspend(one, "sleeper", { filter: { runIds: ["worker"] }, conditionId: "scoped" });
      expect((await one.pools.snapshot(POOL, 10)).wakes.filter((w) => w.matchesNothing)).toHaveLength(open);
    });

    it("is triggered exactly once when both instances see many matching events", async () => {
      const wakes = await Promise.all(Array.from({ length: 20 }, (_, i) => suspend(i % 2 ? one : two, "sleeper", { filter: { runIds: ["worker"] }, conditionId: `w${i}` })));
      await Promise.all(Array.from({ length: 10 }, (_, i) => publish(i % 2 ? one : two, "worker")));
      const results = await Promise.all(wakes.map((w) => settled(two, w.registration!.conditionId)));
      expect(results.every((r) => r.status === WakeStatus.TRIGGERED)).toBe(true);
      // A trigger's status is stored before its event is journaled (outbox): wait for the journal.
      await until(async () => (await countKind(one, EventKind.WAKE_CONDITION_TRIGGERED)) >= 20, "every trigger event to be journaled");
      expect(await countKind(one, EventKind.WAKE_CONDITION_TRIGGERED)).toBe(20);
      await one.tail.waitFor(two.tail.position);
      await two.tail.waitFor(one.tail.position);
      // Exactly once: no instance triggered a condition the other had triggered.
      expect(await countKind(one, EventKind.WAKE_CONDITION_TRIGGERED)).toBe(20);
      expect(one.wakeMatcher.watching + two.wakeMatcher.watching).toBe(0);
    });

    it("an `after` cursor ahead of the journal is refused (OUT_OF_RANGE CURSOR_AHEAD), and records nothing", async () => {
      const head = await one.journal.reservedHead();
      const refused = await suspend(one, "sleeper", { filter: { runIds: ["worker"] }, after: { eventSeq: BigInt(head + 1000) } }).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(MailroomError);
      expect([(refused as MailroomError).code, (refused as MailroomError).details.reason]).toEqual(["out_of_range", ErrorReason.CURSOR_AHEAD]);
      expect(await countKind(one, EventKind.WAKE_CONDITION_REGISTERED)).toBe(0);
    });

    it("a registration is refused for a run that is not a member, and records nothing", async () => {
      const refused = await suspend(one, "stranger").catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(MailroomError);
      expect((refused as MailroomError).details.reason).toBe(ErrorReason.RUN_NOT_MEMBER);
      expect(await countKind(one, EventKind.WAKE_CONDITION_REGISTERED)).toBe(0);
    });

    it("a repeated idempotency key returns the registration as it is now", async () => {
      const first = await suspend(one, "sleeper", { filter: { runIds: ["worker"] }, idempotencyKey: "once" });
      await publish(one, "worker");
      await settled(one, first.registration!.conditionId);
      const again = await suspend(two, "sleeper", { filter: { runIds: ["worker"] }, idempotencyKey: "once" });
      expect([again.deduplicated, again.registration?.status, again.registration?.conditionId]).toEqual([true, WakeStatus.TRIGGERED, first.registration!.conditionId]);
      expect(await countKind(one, EventKind.WAKE_CONDITION_REGISTERED)).toBe(1);
    });
  });

  describe.skipIf(!backend.available)("a snapshot", () => {
    it("lists at most 1000 registered wake conditions, the oldest, and says when there are more", async () => {
      for (let i = 0; i < 1001; i++) await suspend(one, "sleeper", { filter: { runIds: ["stranger"] }, conditionId: `w${String(i).padStart(4, "0")}` });
      const snapshot = await two.pools.snapshot(POOL, 1);
      expect([snapshot.wakes.length, snapshot.wakesTruncated]).toEqual([1000, true]);
      expect(snapshot.wakes[0]?.registration?.conditionId).toBe("w0000");
      await one.wakes.cancel(POOL, "w0000");
      const after = await two.pools.snapshot(POOL, 1);
      expect([after.wakes.length, after.wakesTruncated, after.wakes[0]?.registration?.conditionId]).toEqual([1000, false, "w0001"]);
    });
  });

  describe.skipIf(!backend.available)("an instance starting up", () => {
    it("watches every registered condition, read from the store a page at a time, however many there are", async () => {
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"] } });
      const model = (await one.wakes.wakes.findOne({ condition_id: registration!.conditionId }))!;
      // More than a page's worth, stored as a registrant would have left them.
      await one.wakes.wakes.insertMany(Array.from({ length: 1_500 }, (_, i) => ({ ...model, _id: `${POOL}\u0000bulk-${i}`, condition_id: `bulk-${i}`, idempotency_key: `bulk-${i}`, outbox: [], status_event_id: "" })));
      const three = await harness.instance();
      await three.wakeMatcher.rechecked;
      expect(three.wakeMatcher.watching).toBe(1_501);
      const woken = await publish(two, "worker");
      expect((await settled(three, "bulk-1499")).matchedEventId).toBe(woken.eventId);
    });

    it("triggers a wake whose matching event was journaled while no matcher was running", async () => {
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"] } });
      // As if every instance went down right after the event was journaled.
      one.wakeMatcher.stop();
      two.wakeMatcher.stop();
      const missed = await publish(one, "worker");
      await one.tail.waitFor(missed.seq);
      expect((await one.wakes.poll(POOL, registration!.conditionId)).status).toBe(WakeStatus.REGISTERED);
      const three = await harness.instance();
      await three.wakeMatcher.rechecked;
      const woken = await three.wakes.poll(POOL, registration!.conditionId);
      expect([woken.status, woken.matchedEventId]).toEqual([WakeStatus.TRIGGERED, missed.eventId]);
    });
  });

  describe.skipIf(!backend.available)("deadlines", () => {
    it("a zero timeout times out at once", async () => {
      const { registration } = await suspend(one, "sleeper", { timeout: {} });
      expect(registration?.status).toBe(WakeStatus.TIMED_OUT);
    });

    it("a wake timeout fires exactly once when both instances sweep at the same moment", async () => {
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"] }, timeout: { seconds: 2n } });
      harness.clock.advance(2_000);
      await Promise.all([one.poolBackground.runDue(), two.poolBackground.runDue(), one.poolBackground.runDue()]);
      expect((await two.wakes.poll(POOL, registration!.conditionId)).status).toBe(WakeStatus.TIMED_OUT);
      expect(await countKind(one, EventKind.WAKE_CONDITION_TIMED_OUT)).toBe(1);
      await publish(one, "worker");
      expect((await one.wakes.poll(POOL, registration!.conditionId)).status).toBe(WakeStatus.TIMED_OUT);
    });

    it("a response contract times out exactly once, and not before its deadline", async () => {
      const out = parseMessage("message", create(RunMessageSchema, {
        fromRunId: "worker",
        to: { target: { case: "runId", value: "sleeper" } },
        responseContract: { expectedResponses: 1, timeout: { seconds: 5n } },
      }), POOL, false, harness.clock.now());
      const { receipt } = await one.messages.send(POOL, out);
      harness.clock.advance(4_999);
      await Promise.all([one.poolBackground.runDue(), two.poolBackground.runDue()]);
      expect(await countKind(one, EventKind.RUN_MESSAGE_TIMED_OUT)).toBe(0);
      harness.clock.advance(1);
      await Promise.all([one.poolBackground.runDue(), two.poolBackground.runDue()]);
      expect(await countKind(one, EventKind.RUN_MESSAGE_TIMED_OUT)).toBe(1);
      const stored = await one.messages.messages.findOne({ pool_id: POOL, message_id: receipt.messageId });
      expect(stored?.status).toBe("TIMED_OUT");
    });
  });

  describe.skipIf(!backend.available)("repair", () => {
    it("a registration whose registrant stopped before scanning is finished by the repair sweep", async () => {
      const { registration } = await suspend(one, "sleeper", { filter: { runIds: ["worker"] } });
      // As if the registrant died between journaling the registration and scanning.
      await one.wakes.wakes.updateOne({ condition_id: registration!.conditionId }, { $set: { scanned: false } });
      const missed = await publish(two, "worker");
      await two.tail.waitFor(missed.seq);
      await one.tail.waitFor(missed.seq);
      expect((await one.wakes.poll(POOL, registration!.conditionId)).status).toBe(WakeStatus.REGISTERED);
      harness.clock.advance(5_000);
      await two.poolBackground.runDue();
      const woken = await one.wakes.poll(POOL, registration!.conditionId);
      expect([woken.status, woken.matchedEventId]).toEqual([WakeStatus.TRIGGERED, missed.eventId]);
    });
  });
});
