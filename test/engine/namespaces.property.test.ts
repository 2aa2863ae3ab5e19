/**
 * Two namespaces with identical ids on one store behave exactly as the same
 * two namespaces each on a store of its own: random sequences of mailbox,
 * event and pool calls (dispatch, thread, event, pool, run and message ids
 * drawn from a few, so they collide across namespaces all the time) answer
 * the same, call by call, and leave the same state. A missing namespace
 * filter anywhere (a query, an index, a signal, a sweep, a fan-out) makes
 * some answer differ.
 *
 * MAILROOM_PROPERTY_RUNS sets the number of runs (e.g. 2000 for a soak).
 */
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { ListEventsRequestSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { RunMessageSchema } from "../../gen/mailroom/v1/pool_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { MailroomError } from "../../src/domain/errors.js";
import { EventKind } from "../../src/domain/events/kinds.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import { parseListEvents } from "../../src/domain/events/requests.js";
import { parseMessage } from "../../src/domain/pool/messages.js";
import { parseConfig } from "../../src/domain/pool/pool.js";
import { Engine } from "../../src/engine/engine.js";
import type { EventDoc } from "../../src/engine/journal/records.js";
import type { DispatchDoc } from "../../src/engine/mailbox/records.js";
import type { NamespaceScope } from "../../src/engine/scope.js";
import type { Store } from "../../src/store/port.js";
import { member, runEvent } from "../support/pool-engine.js";
import { storeBackends } from "../support/stores.js";

/** MAILROOM_PROPERTY_RUNS sets the number of runs (e.g. 2000 for a soak). */
const RUNS = Number(process.env.MAILROOM_PROPERTY_RUNS ?? 0);
const NAMESPACES = ["alpha", "beta"] as const;
const LEASE = 30_000;

const ns = fc.constantFrom(0, 1);
const dispatchId = fc.constantFrom("d1", "d2", "d3");
const threadId = fc.constantFrom("t1", "t2");
const runId = fc.constantFrom("r1", "r2");
const op = fc.oneof(
  fc.record({ kind: fc.constant("enqueue" as const), ns, dispatchId, threadId, dedupe: fc.boolean(), priority: fc.constantFrom(100, 200), delayed: fc.boolean() }),
  fc.record({ kind: fc.constant("claim" as const), ns, threadId: fc.option(threadId, { nil: undefined }), limit: fc.integer({ min: 1, max: 2 }) }),
  fc.record({ kind: fc.constant("claimDispatch" as const), ns, dispatchId }),
  fc.record({ kind: fc.constantFrom("ack" as const, "nack" as const, "cancel" as const, "extend" as const), ns, dispatchId }),
  fc.record({ kind: fc.constant("interrupt" as const), ns, threadId }),
  fc.record({ kind: fc.constantFrom("get" as const, "list" as const, "count" as const, "queued" as const, "epoch" as const, "terminal" as const, "pull" as const), ns, dispatchId, threadId }),
  fc.record({ kind: fc.constant("time" as const), ms: fc.constantFrom(1_000, LEASE + 1) }),
  fc.record({ kind: fc.constant("publish" as const), ns, eventId: fc.constantFrom("e1", "e2"), runId }),
  fc.record({ kind: fc.constant("events" as const), ns, runId: fc.option(runId, { nil: undefined }) }),
  fc.record({ kind: fc.constantFrom("open" as const, "join" as const, "send" as const, "snapshot" as const), ns, runId, messageId: fc.constantFrom("m1", "m2") }),
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

/** One Mailroom: its engines, and which serves each namespace. */
interface World {
  engines: Engine[];
  scope(ns: number): NamespaceScope;
  /** The latest claim token of each namespace's dispatch (tokens are random: each world has its own). */
  tokens: Map<string, string>;
}

const view = (d: DispatchDoc) => ({
  id: d._id, thread: d.thread_id, run: d.run_id, priority: d.priority, dedupe: d.dedupe_key, epoch: d.epoch, status: d.status,
  available_at: d.available_at, attempts: d.attempt_count, last_error: d.last_error, claimed: d.claim_token !== undefined,
  claimed_by: d.claimed_by, lease_until: d.lease_until, completed_at: d.completed_at, updated_at: d.updated_at,
});

/** An event as both worlds can agree on it: its position and the engine's own event ids differ, the rest may not. */
const eventView = (e: EventDoc) => ({ kind: e.kind, published: e.kind === EventKind.USAGE_RECORDED ? e.event_id : undefined, run: e.run_id, thread: e.thread_id, dispatch: e.dispatch_id });

async function outcome(call: () => Promise<unknown>): Promise<unknown> {
  try {
    return { ok: await call() };
  } catch (error) {
    if (error instanceof MailroomError) return { refused: error.code, reason: error.details.reason };
    throw error;
  }
}

/** What the background does on its timers (the clock has just moved). */
async function sweep(world: World): Promise<void> {
  for (const engine of world.engines) {
    await engine.background.sweepLeases();
    await engine.background.checkAvailability();
    await engine.poolBackground.runDue();
  }
}

async function apply(world: World, o: Exclude<Op, { kind: "time" }>, clock: ManualClock): Promise<unknown> {
  const scope = world.scope(o.ns);
  const name = NAMESPACES[o.ns];
  const remember = (docs: DispatchDoc[]) => {
    for (const doc of docs) world.tokens.set(`${o.ns}/${doc._id}`, doc.claim_token!);
    return docs.map(view);
  };
  const ref = (id: string) => ({ dispatchId: id, claimToken: world.tokens.get(`${o.ns}/${id}`) ?? "ct_00000000000000000000000000000000" });
  switch (o.kind) {
    case "enqueue":
      return outcome(async () => (await scope.mailbox.enqueue([{
        dispatchId: o.dispatchId, threadId: o.threadId, runId: `${name}-run`, priority: o.priority, maxAttempts: 2,
        dedupeKey: o.dedupe ? "k" : undefined, schedule: o.delayed ? { delayMs: 1_000 } : undefined,
      }])).map((r) => ("error" in r ? { error: r.error.details.reason } : { dispatch: view(r.dispatch), deduplicated: r.deduplicated })));
    case "claim":
      return outcome(async () => remember(await scope.mailbox.claim({ threadId: o.threadId, consumerId: `${name}-worker`, leaseMs: LEASE, limit: o.limit, waitMs: 0 })));
    case "claimDispatch":
      return outcome(async () => remember([await scope.mailbox.claimDispatch(o.dispatchId, `${name}-worker`, LEASE)]));
    case "ack":
      return outcome(async () => view(await scope.mailbox.ack(ref(o.dispatchId))));
    case "nack":
      return outcome(async () => view(await scope.mailbox.nack(ref(o.dispatchId), undefined, "again")));
    case "cancel":
      return outcome(async () => view((await scope.mailbox.cancel(o.dispatchId, undefined)).dispatch));
    case "extend":
      return outcome(async () => view((await scope.mailbox.extendLease(ref(o.dispatchId), LEASE)).dispatch));
    case "interrupt":
      return outcome(async () => {
        const r = await scope.mailbox.interrupt(o.threadId, true);
        return { epoch: r.newEpoch, active: r.active && view(r.active), superseded: r.superseded.map(view) };
      });
    case "get":
      return outcome(async () => view(await scope.queries.get(o.dispatchId)));
    case "list":
      return outcome(async () => (await scope.queries.list({ pageSize: 100 })).items.map(view));
    case "terminal":
      return outcome(async () => (await scope.queries.listTerminal({ threadId: o.threadId, pageSize: 100 })).items.map(view));
    case "count":
      return outcome(() => scope.queries.count(undefined, undefined));
    case "queued":
      return outcome(async () => (await scope.queries.queuedThreads(100, undefined)).items);
    case "epoch":
      return outcome(() => scope.threads.epoch(o.threadId));
    case "pull":
      return outcome(async () => (await scope.signalReceipts.pull({ max: 10, expiresMs: 60_000, waitMs: 0 })).map((s) => [s.threadId, s.dispatchId, s.redeliveryAttempts]));
    case "publish":
      return outcome(async () => (await scope.events.publish(parsePublish(runEvent(o.runId, EventKind.USAGE_RECORDED, { eventId: o.eventId, tags: [name] }), clock.now()))).deduplicated);
    case "events": {
      const engine = world.engines[world.engines.length === 1 ? 0 : o.ns]!;
      await engine.tail.waitFor(await engine.journal.writtenHead());
      const request = create(ListEventsRequestSchema, { scope: o.runId ? { case: "runId", value: o.runId } : { case: "all", value: {} }, pageSize: 1000 });
      return outcome(async () => (await scope.events.list(parseListEvents(request))).events.map(eventView));
    }
    case "open":
      return outcome(async () => (await scope.pools.open("p", parseConfig(undefined))).opened);
    case "join":
      return outcome(async () => (await scope.pools.join("p", member(o.runId))).poolCreated);
    case "send":
      return outcome(async () => {
        const message = create(RunMessageSchema, { messageId: o.messageId, idempotencyKey: o.messageId, fromRunId: o.runId, to: { target: { case: "runId", value: o.runId === "r1" ? "r2" : "r1" } } });
        const { receipt, deduplicated } = await scope.messages.send("p", parseMessage("message", message, "p", false, clock.now()));
        return { status: receipt.status, to: receipt.deliveredTo, deduplicated };
      });
    case "snapshot":
      return outcome(async () => {
        const snapshot = await scope.pools.snapshot("p", 10);
        return { created: snapshot.created, members: snapshot.members.map((m) => m.runId), messages: snapshot.messages.map((m) => [m.message?.messageId, m.receipt?.status]) };
      });
  }
}

describe.each(storeBackends())("two namespaces on one store: $name backend", (backend) => {
  const opened: Store[] = [];
  const started: Engine[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((engine) => engine.stop()));
    await Promise.all(opened.splice(0).map((store) => backend.dispose(store)));
  });

  const engineOn = async (clock: ManualClock) => {
    const store = await backend.open();
    opened.push(store);
    const engine = await Engine.start(store, { clock, background: false, journal: { holeTimeoutMs: 50 } });
    started.push(engine);
    return engine;
  };

  it.skipIf(!backend.available)("answer every call and end as two stores of their own would", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
        const clock = new ManualClock();
        const shared = await engineOn(clock);
        const own = [await engineOn(clock), await engineOn(clock)];
        const worlds: World[] = [
          { engines: [shared], scope: (i) => shared.scope(NAMESPACES[i]!), tokens: new Map() },
          { engines: own, scope: (i) => own[i]!.scope(NAMESPACES[i]!), tokens: new Map() },
        ];
        try {
          for (const [step, o] of ops.entries()) {
            if (o.kind === "time") {
              clock.advance(o.ms);
              for (const world of worlds) await sweep(world);
              continue;
            }
            const [together, apart] = [await apply(worlds[0]!, o, clock), await apply(worlds[1]!, o, clock)];
            expect(together, `step ${step}: ${JSON.stringify(o)}`).toEqual(apart);
          }
          for (const i of [0, 1]) {
            const [together, apart] = await Promise.all(worlds.map(async (world) => (await world.scope(i).queries.list({ pageSize: 1000 })).items.map(view)));
            expect(together).toEqual(apart);
          }
        } finally {
          await Promise.all(started.splice(0).map((engine) => engine.stop()));
          await Promise.all(opened.splice(0).map((store) => backend.dispose(store)));
        }
      }),
      { numRuns: RUNS > 0 ? RUNS : backend.name === "mongo" ? 8 : 40 },
    );
  });
});
