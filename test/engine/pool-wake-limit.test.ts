/**
 * A pool's registered wake conditions are bounded: each is matched against
 * every journal event of the runs it observes, on every instance, so past
 * MAX_REGISTERED_WAKES_PER_POOL a registration gets RESOURCE_EXHAUSTED
 * (LIMIT_EXCEEDED) and records nothing; settled ones make room again.
 */
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WakeConditionSchema, WakeRegistrationStatus as WakeStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { parseConfig, parseMember } from "../../src/domain/pool/pool.js";
import { MAX_REGISTERED_WAKES_PER_POOL, parseWakeCondition } from "../../src/domain/pool/wakes.js";
import type { Engine } from "../../src/engine/engine.js";
import type { WakeDoc } from "../../src/engine/pool/records.js";
import type { Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { storeBackends } from "../support/stores.js";

const POOL = "pool-limit";

function suspend(engine: Engine, conditionId: string) {
  return engine.wakes.suspend(POOL, parseWakeCondition("sleeper", create(WakeConditionSchema, { runId: "sleeper", conditionId, filter: { runIds: ["worker"] } })));
}

describe.each(storeBackends())("registered wake conditions per pool: $name backend", (backend) => {
  let store: Store;
  let harness: EngineHarness;
  let engine: Engine;

  beforeEach(async () => {
    if (!backend.available) return;
    store = await backend.open();
    harness = engineHarness(store);
    engine = await harness.instance();
    await engine.pools.open(POOL, parseConfig(undefined));
    for (const runId of ["sleeper", "worker"]) {
      await engine.pools.join(POOL, parseMember("member", { $typeName: "mailroom.v1.AgentPoolMember", runId, agentId: runId, policyRefs: [], topics: [] }));
    }
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(store);
  });

  it.skipIf(!backend.available)(`refuses the registration past ${MAX_REGISTERED_WAKES_PER_POOL} with RESOURCE_EXHAUSTED, recording nothing, until one settles`, async () => {
    const first = await suspend(engine, "w-first");
    // The others as stored copies of the first (registering them one by one would only take longer).
    const stored = (await engine.wakes.wakes.findOne({ pool_id: POOL, condition_id: "w-first" }))!;
    const { outbox: _outbox, outbox_at: _outboxAt, ...shape } = stored;
    const copies: WakeDoc[] = Array.from({ length: MAX_REGISTERED_WAKES_PER_POOL - 1 }, (_, i) => ({
      ...shape, _id: `${POOL}\u0000w${i}`, condition_id: `w${i}`, idempotency_key: `w${i}`, scanned: true,
    }));
    await engine.wakes.wakes.insertMany(copies);

    const refused = await suspend(engine, "w-over").catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(MailroomError);
    expect([(refused as MailroomError).code, (refused as MailroomError).details.reason]).toEqual(["resource_exhausted", ErrorReason.LIMIT_EXCEEDED]);
    expect(await engine.wakes.wakes.findOne({ pool_id: POOL, condition_id: "w-over" })).toBeNull();

    expect((await engine.wakes.cancel(POOL, first.registration.conditionId)).status).toBe(WakeStatus.CANCELLED);
    expect((await suspend(engine, "w-over")).registration.status).toBe(WakeStatus.REGISTERED);
  });
});
