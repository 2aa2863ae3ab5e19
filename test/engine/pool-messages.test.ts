/**
 * Response contracts through the engine, on every backend: which replies
 * count, and that a reply is counted once however often it is retried.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MessageStatus, RunMessageSchema, WakeConditionSchema, WakeRegistrationStatus as WakeStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import { parseMessage } from "../../src/domain/pool/messages.js";
import { parseConfig, parseMember } from "../../src/domain/pool/pool.js";
import { parseWakeCondition } from "../../src/domain/pool/wakes.js";
import type { Engine } from "../../src/engine/engine.js";
import type { Store } from "../../src/store/port.js";
import { type AgentEvent, AgentEventSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-1";

async function join(engine: Engine, runId: string): Promise<void> {
  await engine.pools.join(POOL, parseMember("member", { $typeName: "mailroom.v1.AgentPoolMember", runId, agentId: `agent-${runId}`, policyRefs: [], topics: [] }));
}

function message(fields: Record<string, unknown>, reply = false) {
  return parseMessage(reply ? "reply" : "message", create(RunMessageSchema, fields), POOL, reply, new ManualClock().now());
}

describe.each(storeBackends())("response contracts: $name backend", (backend) => {
  let store: Store;
  let harness: EngineHarness;
  let engine: Engine;
  let asking: string;

  beforeEach(async () => {
    if (!backend.available) return;
    store = await backend.open();
    harness = engineHarness(store);
    engine = await harness.instance();
    await engine.pools.open(POOL, parseConfig(undefined));
    for (const run of ["asker", "a", "b"]) await join(engine, run);
    const sent = await engine.messages.send(POOL, message({ fromRunId: "asker", to: { target: { case: "poolId", value: POOL } }, responseContract: { expectedResponses: 2 } }));
    asking = sent.receipt.messageId;
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("counting replies", () => {
    it("a reply that reached nobody (EXPIRED) does not count", async () => {
      const expired = await engine.messages.respond(POOL, message({ fromRunId: "a", replyTo: asking, expiresAt: timestampFromMs(engine.clock.now() - 1) }, true), false);
      expect([expired.receipt.status, expired.original.responseCount]).toEqual([MessageStatus.EXPIRED, 0]);
    });

    it("a retried reply is counted once, also when the first attempt stopped before counting it", async () => {
      // As if the server died after recording the reply and before counting it.
      await engine.messages.send(POOL, message({ fromRunId: "a", to: { target: { case: "runId", value: "asker" } }, idempotencyKey: "a-reply" }));
      const retried = await engine.messages.respond(POOL, message({ fromRunId: "a", replyTo: asking, idempotencyKey: "a-reply" }, true), false);
      expect([retried.deduplicated, retried.original.responseCount]).toEqual([true, 1]);
      const again = await engine.messages.respond(POOL, message({ fromRunId: "a", replyTo: asking, idempotencyKey: "a-reply" }, true), false);
      expect([again.deduplicated, again.original.responseCount, again.original.status]).toEqual([true, 1, MessageStatus.DELIVERED]);
      const second = await engine.messages.respond(POOL, message({ fromRunId: "b", replyTo: asking }, true), false);
      expect([second.original.responseCount, second.original.status]).toEqual([2, MessageStatus.RESPONDED]);
    });
  });

  describe.skipIf(!backend.available)("a wake's deadline", () => {
    it("is shown only while it can still fire", async () => {
      const { registration } = await engine.wakes.suspend(POOL, parseWakeCondition("asker", create(WakeConditionSchema, { runId: "asker", filter: { runIds: ["a"] }, timeout: { seconds: 60n } })));
      expect(registration.deadline).toBeDefined();
      const event: AgentEvent = create(AgentEventSchema, { envelope: { runId: "a", kind: EventKind.USAGE_RECORDED } });
      const { envelope } = await engine.events.publish(parsePublish(event, engine.clock.now()));
      await engine.tail.waitFor(Number(envelope.eventSeq));
      const settled = await new Promise<WakeStatus>((resolve) => {
        const stop = engine.wakeMatcher.whenSettled(DEFAULT_NAMESPACE, POOL, registration.conditionId, () => resolve(WakeStatus.TRIGGERED));
        void engine.wakes.poll(POOL, registration.conditionId).then((r) => r.status !== WakeStatus.REGISTERED && (stop(), resolve(r.status)));
      });
      expect(settled).toBe(WakeStatus.TRIGGERED);
      const after = await engine.wakes.poll(POOL, registration.conditionId);
      expect([after.status, after.deadline]).toEqual([WakeStatus.TRIGGERED, undefined]);
    });
  });
});
