/**
 * Namespaces in the engine: two namespaces with identical ids never touch
 * each other, also through what the engine keeps once for all of them (the
 * journal and its tail, the outbox, work signals, live channels, pool
 * histories, wake matching, the sweepers); max_queued_dispatches holds per
 * namespace; and documents written before namespaces become the default
 * namespace's at start-up.
 */
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LiveDeliveryOutcome, LiveRunCommandSchema } from "../../gen/mailroom/v1/live_pb.js";
import { ListEventsRequestSchema, SubscribeRequestSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { WakeConditionSchema, WakeRegistrationStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import type { EnqueueCommand } from "../../src/domain/dispatch/commands.js";
import { parseReceipt } from "../../src/domain/dispatch/signal-receipts.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { EventKind } from "../../src/domain/events/kinds.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import { parseListEvents, parseSubscribe } from "../../src/domain/events/requests.js";
import { parseConfig } from "../../src/domain/pool/pool.js";
import { parseWakeCondition } from "../../src/domain/pool/wakes.js";
import type { Engine } from "../../src/engine/engine.js";
import type { EventDoc, JournalDoc } from "../../src/engine/journal/records.js";
import { dispatchEntry } from "../../src/engine/mailbox/dispatch-events.js";
import { DISPATCH_INDEXES, DISPATCHES, type DispatchDoc } from "../../src/engine/mailbox/records.js";
import { backfillNamespaces, NAMESPACED_COLLECTIONS } from "../../src/engine/namespace-backfill.js";
import { initialOutbox } from "../../src/engine/outbox.js";
import { silentLogger } from "../../src/engine/logger.js";
import type { NamespaceScope } from "../../src/engine/scope.js";
import type { Store } from "../../src/store/port.js";
import { CountingStore } from "../support/counting-store.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { member, runEvent } from "../support/pool-engine.js";
import { storeBackends } from "../support/stores.js";

const ALPHA = "alpha";
const BETA = "beta";
const LEASE = 30_000;

const dispatch = (threadId: string, dispatchId: string, fields: Partial<EnqueueCommand> = {}): EnqueueCommand => ({ threadId, dispatchId, priority: 128, maxAttempts: 5, schedule: undefined, ...fields });

async function enqueue(scope: NamespaceScope, command: EnqueueCommand): Promise<DispatchDoc> {
  const [outcome] = await scope.mailbox.enqueue([command]);
  if (!outcome || "error" in outcome) throw outcome?.error ?? new Error("no outcome");
  return outcome.dispatch;
}

function claimOne(scope: NamespaceScope, threadId?: string): Promise<DispatchDoc[]> {
  return scope.mailbox.claim({ threadId, consumerId: `worker-of-${scope.namespace}`, leaseMs: LEASE, limit: 10, waitMs: 0 });
}

async function refusal(call: Promise<unknown>): Promise<{ code: string; reason: ErrorReason; metadata?: Record<string, string> }> {
  try {
    await call;
  } catch (error) {
    if (error instanceof MailroomError) return { code: error.code, reason: error.details.reason, ...(error.details.metadata ? { metadata: error.details.metadata } : {}) };
    throw error;
  }
  throw new Error("the call succeeded");
}

/** The namespace's events, as ListEvents reads them. */
async function eventsOf(scope: NamespaceScope, engine: Engine): Promise<EventDoc[]> {
  await engine.tail.waitFor(await engine.journal.writtenHead());
  return (await scope.events.list(parseListEvents(create(ListEventsRequestSchema, { scope: { case: "all", value: {} }, pageSize: 1000 })))).events;
}

/** Lets callbacks queued by synchronous emissions run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe.each(storeBackends())("namespaces: $name backend", (backend) => {
  let store: Store;
  let harness: EngineHarness;
  let engine: Engine;
  let alpha: NamespaceScope;
  let beta: NamespaceScope;

  const start = async (options: Parameters<EngineHarness["instance"]>[0] = {}) => {
    engine = await harness.instance(options);
    alpha = engine.scope(ALPHA);
    beta = engine.scope(BETA);
  };

  beforeEach(async () => {
    if (!backend.available) return;
    store = await backend.open();
    harness = engineHarness(store);
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("what the engine keeps once for all namespaces keeps them apart", () => {
    beforeEach(() => start());

    it("identical dispatch ids, thread ids and dedupe keys are independent: no deduplication, claim or interrupt crosses", async () => {
      const first = await enqueue(alpha, dispatch("t1", "d1", { runId: "alpha-run", dedupeKey: "k" }));
      const [again] = await beta.mailbox.enqueue([dispatch("t1", "d1", { runId: "beta-run", dedupeKey: "k" })]);
      expect(again).toMatchObject({ deduplicated: false, dispatch: { _id: "d1", run_id: "beta-run" } });
      expect((await alpha.queries.get("d1")).run_id).toBe(first.run_id);
      const [claimed] = await claimOne(alpha);
      expect(claimed).toMatchObject({ _id: "d1", run_id: "alpha-run" });
      // A thread holds one claim per namespace.
      expect(await claimOne(beta, "t1")).toMatchObject([{ _id: "d1", run_id: "beta-run" }]);
      expect((await beta.mailbox.interrupt("t1", false)).newEpoch).toBe(1);
      expect(await alpha.threads.epoch("t1")).toBe(0);
      expect(await refusal(beta.mailbox.ack({ dispatchId: "d1", claimToken: claimed!.claim_token! }))).toMatchObject({ code: "failed_precondition", reason: ErrorReason.CLAIM_TOKEN_MISMATCH });
      expect(await refusal(engine.scope("gamma").queries.get("d1"))).toEqual({ code: "not_found", reason: ErrorReason.ENTITY_NOT_FOUND });
    });

    it("a dispatch wakes a waiting claim and the signal listeners of its namespace only", async () => {
      const heard: Record<string, string[]> = { [ALPHA]: [], [BETA]: [] };
      for (const ns of [ALPHA, BETA]) engine.signals.listen(ns, (signal) => heard[ns]!.push(signal.dispatchId));
      const leave = new AbortController();
      let woken = false;
      const waiting = engine.signals.wait(ALPHA, undefined, 60_000, leave.signal).then((w) => (woken = w));
      await enqueue(beta, dispatch("t1", "d1"));
      await engine.tail.waitFor(await engine.journal.writtenHead());
      await settle();
      expect(woken).toBe(false);
      expect(heard).toEqual({ [ALPHA]: [], [BETA]: ["d1"] });
      await enqueue(alpha, dispatch("t1", "d1"));
      await waiting;
      expect(woken).toBe(true);
      expect(heard).toEqual({ [ALPHA]: ["d1"], [BETA]: ["d1"] });
      leave.abort();
    });

    it("a long-poll claim returns its namespace's work, never another's", async () => {
      const claiming = alpha.mailbox.claim({ consumerId: "w", leaseMs: LEASE, limit: 1, waitMs: 60_000 });
      while (engine.signals.waiting < 1) await settle();
      await enqueue(beta, dispatch("t1", "d1", { runId: "beta-run" }));
      await enqueue(alpha, dispatch("t1", "d1", { runId: "alpha-run" }));
      expect(await claiming).toMatchObject([{ _id: "d1", run_id: "alpha-run" }]);
      expect((await beta.queries.get("d1")).status).toBe("QUEUED");
    });

    it("the lease sweeper reclaims both namespaces' expired claims of one dispatch id, each in its own namespace", async () => {
      for (const scope of [alpha, beta]) {
        await enqueue(scope, dispatch("t1", "d1"));
        expect(await claimOne(scope)).toHaveLength(1);
      }
      harness.clock.advance(LEASE + 1);
      expect(await engine.background.sweepLeases()).toBe(2);
      for (const scope of [alpha, beta]) {
        expect(await scope.queries.get("d1")).toMatchObject({ status: "QUEUED", attempt_count: 1 });
        expect((await eventsOf(scope, engine)).filter((e) => e.kind === EventKind.DISPATCH_LEASE_EXPIRED).map((e) => e.dispatch_id)).toEqual(["d1"]);
      }
    });

    it("delayed work coming due is signalled in its namespace only", async () => {
      const heard: string[] = [];
      engine.signals.listen(ALPHA, (signal) => heard.push(signal.dispatchId));
      await enqueue(beta, dispatch("t1", "d1", { schedule: { delayMs: 1_000 } }));
      harness.clock.advance(1_000);
      const betaHeard: string[] = [];
      engine.signals.listen(BETA, (signal) => betaHeard.push(signal.dispatchId));
      await engine.background.checkAvailability();
      expect(heard).toEqual([]);
      expect(betaHeard).toEqual(["d1"]);
    });

    it("the outbox repair journals a namespace's leftover events in that namespace", async () => {
      // A transition whose process died before journaling its event.
      const now = harness.clock.now();
      const entry = dispatchEntry({ kind: EventKind.DISPATCH_ENQUEUED, after: "QUEUED", summary: "enqueued", now });
      const doc: DispatchDoc = { _id: "d1", thread_id: "t1", run_id: "r1", priority: 128, epoch: 0, status: "QUEUED", terminal: false, available_at: now, attempt_count: 0, max_attempts: 5, created_at: now, updated_at: now, ...initialOutbox([entry], now) };
      await beta.mailbox.dispatches.insertOne(doc);
      harness.clock.advance(10_000);
      expect(await engine.outbox.repair()).toBe(1);
      expect((await eventsOf(beta, engine)).map((e) => [e.event_id, e.dispatch_id])).toEqual([[entry.event_id, "d1"]]);
      expect(await eventsOf(alpha, engine)).toEqual([]);
      expect((await beta.queries.get("d1")).outbox).toBeUndefined();
    });

    it("retention deletes every namespace's terminal dispatches", async () => {
      for (const scope of [alpha, beta]) {
        await enqueue(scope, dispatch("t1", "d1"));
        const [claimed] = await claimOne(scope);
        await scope.mailbox.ack({ dispatchId: "d1", claimToken: claimed!.claim_token! });
      }
      harness.clock.advance(8 * 86_400_000);
      await engine.background.purge();
      for (const scope of [alpha, beta]) expect((await refusal(scope.queries.get("d1"))).code).toBe("not_found");
    });

    it("a wake condition is matched against its namespace's events only", async () => {
      for (const scope of [alpha, beta]) {
        await scope.pools.open("p", parseConfig(undefined));
        for (const run of ["asker", "r"]) await scope.pools.join("p", member(run));
      }
      const condition = create(WakeConditionSchema, { conditionId: "c1", runId: "asker", filter: { runIds: ["r"] } });
      const { registration } = await alpha.wakes.suspend("p", parseWakeCondition("asker", condition));
      const repeated = await beta.wakes.suspend("p", parseWakeCondition("asker", condition));
      expect(repeated.deduplicated).toBe(false);
      const settled = new Promise<void>((resolve) => engine.wakeMatcher.whenSettled(ALPHA, "p", registration.conditionId, resolve));
      await beta.events.publish(parsePublish(runEvent("r", EventKind.USAGE_RECORDED, { eventId: "from-beta" }), harness.clock.now()));
      await alpha.events.publish(parsePublish(runEvent("r", EventKind.USAGE_RECORDED, { eventId: "from-alpha" }), harness.clock.now()));
      await settled;
      expect(await alpha.wakes.poll("p", "c1")).toMatchObject({ status: WakeRegistrationStatus.TRIGGERED, matchedEventId: "from-alpha" });
      expect(await beta.wakes.poll("p", "c1")).toMatchObject({ status: WakeRegistrationStatus.TRIGGERED, matchedEventId: "from-beta" });
    });

    it("a pool's history is kept per namespace: identical pool ids are numbered independently", async () => {
      await alpha.pools.open("p", parseConfig(undefined));
      await beta.pools.open("p", parseConfig(undefined));
      for (const run of ["a1", "a2", "a3"]) await alpha.pools.join("p", member(run));
      await beta.pools.join("p", member("b1"));
      const head = await engine.journal.writtenHead();
      await engine.tail.waitFor(head);
      await engine.history.follower.waitFor(head);
      const records = async (scope: NamespaceScope) => {
        const stream = await scope.pools.records("p", { afterCursor: 0, afterSequence: 0 });
        const abort = new AbortController();
        const seen: number[] = [];
        try {
          for (let frame = await stream.next(60_000, abort.signal); frame?.kind === "record"; frame = await stream.next(60_000, abort.signal)) seen.push(frame.record.seq);
        } finally {
          stream.close();
        }
        return seen;
      };
      // Opened, created (first join), then a record per join.
      expect(await records(alpha)).toEqual([1, 2, 3, 4, 5]);
      expect(await records(beta)).toEqual([1, 2, 3]);
      expect((await beta.pools.members.list("p")).map((m) => m.runId)).toEqual(["b1"]);
    });

    it("a live command reaches channels of its namespace only", async () => {
      const target = create(LiveRunCommandSchema, { target: { threadId: "t1", runId: "r1" } }).target!;
      const channel = await alpha.live.open(target);
      const command = (commandId: string) => create(LiveRunCommandSchema, { commandId, body: { case: "cancel", value: { reason: "stop" } } });
      expect((await beta.live.deliver(target, command("cmd-1"))).outcome).toBe(LiveDeliveryOutcome.NO_SUBSCRIBER);
      expect((await alpha.live.deliver(target, command("cmd-1"))).outcome).toBe(LiveDeliveryOutcome.DELIVERED);
      expect(channel.queue.size).toBe(1);
      expect((await refusal(beta.live.ack("cmd-1"))).code).toBe("not_found");
      expect(await alpha.live.ack("cmd-1")).toBe(true);
      await channel.close();
    });

    it("a subscription sees its namespace's events only, and its heartbeat cursor passes the others'", async () => {
      const subscription = await alpha.events.subscribe(parseSubscribe(create(SubscribeRequestSchema, { scope: { case: "all", value: {} } })));
      const abort = new AbortController();
      try {
        expect((await subscription.next(60_000, abort.signal))?.kind).toBe("caught_up");
        await beta.events.publish(parsePublish(runEvent("r", EventKind.USAGE_RECORDED, { eventId: "e1" }), harness.clock.now()));
        const { envelope } = await alpha.events.publish(parsePublish(runEvent("r", EventKind.USAGE_RECORDED, { eventId: "e1" }), harness.clock.now()));
        const frame = await subscription.next(60_000, abort.signal);
        expect(frame?.kind === "event" && frame.delivery.frame.item).toMatchObject({ event_id: "e1", _id: Number(envelope.eventSeq) });
        const last = await beta.events.publish(parsePublish(runEvent("r", EventKind.USAGE_RECORDED, { eventId: "e2" }), harness.clock.now()));
        await engine.tail.waitFor(Number(last.envelope.eventSeq));
        expect(await subscription.next(10, abort.signal)).toEqual({ kind: "heartbeat", position: Number(last.envelope.eventSeq), notice: undefined });
      } finally {
        subscription.close();
      }
    });

    it("pulled dispatch signals are leased per namespace", async () => {
      for (const scope of [alpha, beta]) await enqueue(scope, dispatch("t1", "d1"));
      const pull = (scope: NamespaceScope) => scope.signalReceipts.pull({ max: 10, expiresMs: 60_000, waitMs: 0 });
      const [mine] = await pull(alpha);
      const [theirs] = await pull(beta);
      expect([mine?.dispatchId, theirs?.dispatchId]).toEqual(["d1", "d1"]);
      expect(await pull(alpha)).toEqual([]);
      expect(await beta.signalReceipts.ack(parseReceipt(mine!.receipt))).toBe(false);
      expect(await alpha.signalReceipts.ack(parseReceipt(mine!.receipt))).toBe(true);
    });

    it("every event is journaled with its namespace", async () => {
      await enqueue(alpha, dispatch("t1", "d1"));
      await enqueue(beta, dispatch("t1", "d1"));
      await engine.events.publish(parsePublish(runEvent("r"), harness.clock.now()));
      const stored = await engine.journal.events.find({}, { sort: { _id: 1 } });
      expect(stored.map((doc) => (doc as EventDoc).ns)).toEqual([ALPHA, BETA, DEFAULT_NAMESPACE]);
    });
  });

  describe.skipIf(!backend.available)("max_queued_dispatches", () => {
    it("refuses what would pass the namespace's limit (RESOURCE_EXHAUSTED, QUEUE_LIMIT), enqueues nothing of it, and leaves other namespaces alone", async () => {
      await start({ maxQueuedDispatches: (ns) => (ns === ALPHA ? 3 : undefined) });
      await alpha.mailbox.enqueue([dispatch("t1", "d1"), dispatch("t1", "d2")]);
      const refused = await refusal(alpha.mailbox.enqueue([dispatch("t1", "d3"), dispatch("t1", "d4")]));
      expect(refused).toEqual({ code: "resource_exhausted", reason: ErrorReason.QUEUE_LIMIT, metadata: { namespace: ALPHA, limit: "3" } });
      expect((await refusal(alpha.queries.get("d3"))).code).toBe("not_found");
      await enqueue(alpha, dispatch("t1", "d3"));
      expect((await refusal(alpha.mailbox.enqueue([dispatch("t2", "d4")]))).reason).toBe(ErrorReason.QUEUE_LIMIT);
      await beta.mailbox.enqueue(Array.from({ length: 10 }, (_, i) => dispatch("t1", `b${i}`)));
    });

    it("counts the namespace's queued dispatches again after the count's time to live: claimed ones make room", async () => {
      await start({ maxQueuedDispatches: () => 2, queueCountTtlMs: 1_000 });
      await alpha.mailbox.enqueue([dispatch("t1", "d1"), dispatch("t2", "d2")]);
      expect(await claimOne(alpha)).toHaveLength(2);
      // The count is a second old at most: until it is taken again, the claimed ones still count.
      expect((await refusal(alpha.mailbox.enqueue([dispatch("t1", "d3")]))).reason).toBe(ErrorReason.QUEUE_LIMIT);
      harness.clock.advance(1_000);
      await alpha.mailbox.enqueue([dispatch("t1", "d3"), dispatch("t2", "d4")]);
    });

    it("costs nothing in a namespace without a limit: its queued dispatches are never counted", async () => {
      const counted = new CountingStore(store);
      engine = await harness.instance({ maxQueuedDispatches: (ns) => (ns === ALPHA ? 5 : undefined) });
      const other = await engineHarness(counted).instance({ maxQueuedDispatches: (ns) => (ns === ALPHA ? 5 : undefined) });
      counted.reset();
      await other.scope(BETA).mailbox.enqueue([dispatch("t1", "d1")]);
      expect(counted.counts.get(`${DISPATCHES}.countDocuments`)).toBeUndefined();
      await other.scope(ALPHA).mailbox.enqueue([dispatch("t1", "d1")]);
      expect(counted.counts.get(`${DISPATCHES}.countDocuments`)).toBe(1);
      await other.stop();
    });
  });

  describe.skipIf(!backend.available)("documents written before namespaces", () => {
    /** Makes the store look as an earlier version left it: no `ns` anywhere, the unscoped indexes, no backfill markers. */
    async function asBeforeNamespaces(): Promise<void> {
      for (const { name } of NAMESPACED_COLLECTIONS) await store.collection(name).updateMany({}, { $unset: { ns: "", delayed_until: "" } });
      await store.collection(DISPATCHES).createIndexes(DISPATCH_INDEXES.filter((spec) => spec.unique));
      await store.collection("counters").deleteMany({ _id: { $regex: "^namespaces_backfilled:" } } as never);
    }

    it("become the default namespace's at start-up: read, claimed and journaled as before, and the unscoped unique indexes are gone", async () => {
      const before = await harness.instance();
      await enqueue(before.scope(DEFAULT_NAMESPACE), dispatch("t1", "d1", { dedupeKey: "k" }));
      await enqueue(before.scope(DEFAULT_NAMESPACE), dispatch("t1", "d2"));
      await enqueue(before.scope(DEFAULT_NAMESPACE), dispatch("t3", "delayed", { schedule: { delayMs: 60_000 } }));
      await before.events.publish(parsePublish(runEvent("r", EventKind.USAGE_RECORDED, { eventId: "old-event" }), harness.clock.now()));
      await before.pools.open("p", parseConfig(undefined));
      await harness.stopAll();
      await asBeforeNamespaces();

      await start();
      const defaults = engine.scope(DEFAULT_NAMESPACE);
      for (const { name } of NAMESPACED_COLLECTIONS) expect(await store.collection(name).countDocuments({ ns: { $exists: false } } as never), name).toBe(0);
      expect((await defaults.queries.get("d1")).dedupe_key).toBe("k");
      const [again] = await defaults.mailbox.enqueue([dispatch("t1", "d9", { dedupeKey: "k" })]);
      expect(again).toMatchObject({ deduplicated: true, dispatch: { _id: "d1" } });
      expect((await claimOne(defaults)).map((d) => d._id)).toEqual(["d1"]);
      expect((await eventsOf(defaults, engine)).some((e) => e.event_id === "old-event")).toBe(true);
      expect((await defaults.pools.snapshot("p", 10)).poolId).toBe("p");
      // Delayed work is signalled when it comes due, as before.
      const heard: string[] = [];
      engine.signals.listen(DEFAULT_NAMESPACE, (signal) => heard.push(signal.dispatchId));
      harness.clock.advance(60_000);
      await engine.background.checkAvailability();
      expect(heard).toEqual(["delayed"]);
      // The unscoped one-claim-per-thread index is gone: another namespace holds a claim in thread t1 too.
      await enqueue(alpha, dispatch("t1", "d1", { dedupeKey: "k" }));
      expect(await claimOne(alpha)).toHaveLength(1);
    });

    it("are looked for once: a later start reads one marker document", async () => {
      await start();
      const counted = new CountingStore(engine.store);
      expect(await backfillNamespaces(counted, silentLogger)).toBe(0);
      expect(counted.total()).toBe(1);
    });

    it("are not looked for in a new deployment (no journal yet): it is marked done without reading a collection", async () => {
      const counted = new CountingStore(store);
      expect(await backfillNamespaces(counted, silentLogger)).toBe(0);
      expect([...counted.counts.keys()]).toEqual(["counters.find", "counters.bulkWrite"]);
      counted.reset();
      await backfillNamespaces(counted, silentLogger);
      expect(counted.total()).toBe(1);
    });
  });

  describe.skipIf(!backend.available)("the journal across namespaces", () => {
    it("refuses no event of one namespace for another's event id, and reads each back in its own", async () => {
      await start();
      for (const scope of [alpha, beta]) {
        const { deduplicated } = await scope.events.publish(parsePublish(runEvent(`${scope.namespace}-run`, EventKind.USAGE_RECORDED, { eventId: "same" }), harness.clock.now()));
        expect(deduplicated).toBe(false);
      }
      const again = await beta.events.publish(parsePublish(runEvent("beta-run", EventKind.USAGE_RECORDED, { eventId: "same" }), harness.clock.now()));
      expect(again).toMatchObject({ deduplicated: true, envelope: { runId: "beta-run" } });
      const stored = (await engine.journal.events.find({ event_id: "same" } as never)) as JournalDoc[];
      expect(stored.map((doc) => (doc as EventDoc).ns).sort()).toEqual([ALPHA, BETA]);
    });
  });
});
