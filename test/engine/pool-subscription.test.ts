/**
 * SubscribePool through the engine (seed: AgentPool::subscribe,
 * scope_filter), on every backend, with two server instances: a member sees
 * the journal as the pool lets it, whatever its filter asks; membership
 * changes apply from their own records on.
 */
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventKind, PayloadAccessMode, SubscriberOverflowPolicy } from "../../gen/mailroom/v1/event_pb.js";
import { AgentPoolConfigSchema } from "../../gen/mailroom/v1/pool_pb.js";
import { SubscribePoolRequestSchema } from "../../gen/mailroom/v1/pool_service_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { parseConfig } from "../../src/domain/pool/pool.js";
import { parseSubscribePool } from "../../src/domain/pool/subscribe.js";
import type { Engine } from "../../src/engine/engine.js";
import { eventOf } from "../../src/engine/journal/records.js";
import type { ScopedPoolSubscription } from "../../src/engine/pool/scoped-subscription.js";
import { useTwoInstances } from "../support/instances.js";
import { join, publish } from "../support/pool-engine.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-1";

function open(engine: Engine, runId: string, fields: Record<string, unknown> = {}): Promise<ScopedPoolSubscription> {
  return engine.poolSubscriptions.open(parseSubscribePool(create(SubscribePoolRequestSchema, { poolId: POOL, runId, ...fields })));
}

/** What the member saw (run and kind of each event), up to the event published with `marker` as its summary. */
async function seenUntil(subscription: ScopedPoolSubscription, markerRun: string, markerKind: EventKind): Promise<string[]> {
  const seen: string[] = [];
  const abort = new AbortController();
  for (;;) {
    const frame = await subscription.next(10_000, abort.signal);
    if (!frame) throw new Error("the subscription ended");
    if (frame.kind === "heartbeat") throw new Error(`no event within 10 s after ${seen.join(", ")}`);
    if (frame.kind !== "event") continue;
    const envelope = eventOf(frame.delivery.frame.item).envelope!;
    seen.push(`${envelope.runId} ${EventKind[envelope.kind]}`);
    if (envelope.runId === markerRun && envelope.kind === markerKind) return seen;
  }
}

async function endOf(subscription: ScopedPoolSubscription): Promise<unknown> {
  const abort = new AbortController();
  for (;;) {
    let frame;
    try {
      frame = await subscription.next(10_000, abort.signal);
    } catch (error) {
      return error;
    }
    if (frame === undefined) return frame;
    if (frame.kind === "heartbeat") return new Error("no end within 10 s");
  }
}

describe.each(storeBackends())("pool-scoped subscriptions on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("two instances", () => {
    const instances = useTwoInstances(backend);
    let one: Engine;
    let two: Engine;
    const subscriptions: ScopedPoolSubscription[] = [];

    beforeEach(async () => {
      ({ one, two } = instances());
      await one.pools.open(POOL, parseConfig(create(AgentPoolConfigSchema, { policyRefs: [{ id: "observe" }] })));
      await join(one, POOL, "watcher", { policies: ["observe"] });
      await join(one, POOL, "seen", { policies: ["observe"] });
      await join(one, POOL, "hidden");
    });
    afterEach(async () => {
      for (const subscription of subscriptions.splice(0)) subscription.close();
    });

    async function subscribe(engine: Engine, runId: string, fields: Record<string, unknown> = {}) {
      const subscription = await open(engine, runId, fields);
      subscriptions.push(subscription);
      return subscription;
    }

    it("shows events of observable members only: not a non-member's, not those of a member without the pool's policies", async () => {
      await publish(two, "outsider");
      await publish(two, "hidden");
      await publish(two, "seen", EventKind.RUN_STARTED);
      const seen = await seenUntil(await subscribe(one, "watcher"), "seen", EventKind.RUN_STARTED);
      expect(seen).toEqual(["watcher AGENT_POOL_CREATED", "watcher AGENT_POOL_RUN_JOINED", "seen AGENT_POOL_RUN_JOINED", "seen RUN_STARTED"]);
    });

    it("leaves out an event carrying a policy the member does not hold, and shows it to a member who holds it", async () => {
      await join(one, POOL, "cleared", { policies: ["observe", "secret"] });
      await publish(two, "seen", EventKind.RUN_STARTED, { policyRefs: [{ id: "secret" }] });
      await publish(two, "seen", EventKind.RUN_COMPLETED);
      const filter = { runIds: ["seen"] };
      expect(await seenUntil(await subscribe(two, "watcher", { filter }), "seen", EventKind.RUN_COMPLETED)).toEqual(["seen AGENT_POOL_RUN_JOINED", "seen RUN_COMPLETED"]);
      expect(await seenUntil(await subscribe(one, "cleared", { filter }), "seen", EventKind.RUN_COMPLETED)).toEqual(["seen AGENT_POOL_RUN_JOINED", "seen RUN_STARTED", "seen RUN_COMPLETED"]);
    });

    it("gives envelopes only when the pool says so, whatever the filter asks", async () => {
      const envelopeOnly = await subscribe(one, "watcher", { filter: { payloadAccess: PayloadAccessMode.FULL } });
      expect(envelopeOnly.payloadAccess).toBe(PayloadAccessMode.ENVELOPE_ONLY);
      await one.pools.open("open-pool", parseConfig(create(AgentPoolConfigSchema, { wakePolicy: { envelopeOnly: false } })));
      await join(one, "open-pool", "reader");
      const full = await one.poolSubscriptions.open(parseSubscribePool(create(SubscribePoolRequestSchema, { poolId: "open-pool", runId: "reader", filter: { payloadAccess: PayloadAccessMode.FULL } })));
      subscriptions.push(full);
      expect(full.payloadAccess).toBe(PayloadAccessMode.FULL);
    });

    it("follows membership: a run's events are seen from its join record on, and not from its leave record on", async () => {
      const live = await subscribe(one, "watcher", { start: 2 /* LATEST */, queue: { capacity: 64, overflow: SubscriberOverflowPolicy.BACKPRESSURE_CALLER } });
      await publish(two, "newcomer", EventKind.RUN_STARTED);
      await join(two, POOL, "newcomer", { policies: ["observe"] });
      await publish(two, "newcomer", EventKind.USAGE_RECORDED);
      await two.pools.leave(POOL, "newcomer");
      await publish(two, "newcomer", EventKind.RUN_COMPLETED);
      await publish(two, "seen", EventKind.RUN_COMPLETED);
      expect(await seenUntil(live, "seen", EventKind.RUN_COMPLETED)).toEqual(["newcomer AGENT_POOL_RUN_JOINED", "newcomer USAGE_RECORDED", "seen RUN_COMPLETED"]);
    });

    it("ends with RUN_NOT_MEMBER when the member leaves, and with NOT_FOUND when the pool is deleted", async () => {
      const leaving = await subscribe(one, "seen", { start: 2 });
      const staying = await subscribe(two, "watcher", { start: 2 });
      await two.pools.leave(POOL, "seen");
      expect(await endOf(leaving)).toMatchObject({ code: "failed_precondition", details: { reason: ErrorReason.RUN_NOT_MEMBER } });
      await one.poolDeletion.delete(POOL);
      expect(await endOf(staying)).toMatchObject({ code: "not_found" });
    });

    it("is refused for a run that is not a member (RUN_NOT_MEMBER) and for an unknown pool (NOT_FOUND)", async () => {
      const outsider = await open(one, "outsider").catch((error: unknown) => error);
      expect(outsider).toBeInstanceOf(MailroomError);
      expect((outsider as MailroomError).details.reason).toBe(ErrorReason.RUN_NOT_MEMBER);
      const unknown = await one.poolSubscriptions.open(parseSubscribePool(create(SubscribePoolRequestSchema, { poolId: "nope", runId: "watcher" }))).catch((error: unknown) => error);
      expect((unknown as MailroomError).code).toBe("not_found");
    });
  });
});
