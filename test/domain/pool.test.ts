/**
 * The pool rules as pure functions (seed: agent_pool.rs): configuration,
 * members, who a message reaches, what a message may carry, and how a wake
 * condition is checked and scoped.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PayloadAccessMode } from "../../gen/mailroom/v1/event_pb.js";
import { AgentPoolConfigSchema, AgentPoolMemberSchema, RunAddressSchema, RunMessageSchema, WakeConditionSchema } from "../../gen/mailroom/v1/pool_pb.js";
import { EntityKind, ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { EventKind } from "../../src/domain/events/kinds.js";
import { MAX_BODY_BYTES, parseMessage } from "../../src/domain/pool/messages.js";
import { type Member, missingRequiredPolicies, observableRuns, parseAddress, parseConfig, parseMember, type PoolConfig, resolveRecipients, sameConfig } from "../../src/domain/pool/pool.js";
import { canWake, parseWakeCondition, ResumeInputPolicy, scopeWakeFilter } from "../../src/domain/pool/wakes.js";
import { SubscribePoolRequestSchema } from "../../gen/mailroom/v1/pool_service_pb.js";
import { cursor, filterScope } from "../../src/domain/events/scope.js";
import { pageToken, parsePoolList } from "../../src/domain/pool/pages.js";
import { parseSubscribePool, poolScope } from "../../src/domain/pool/subscribe.js";

const config = (overrides: Partial<PoolConfig> = {}): PoolConfig => ({ ...parseConfig(undefined), ...overrides });
const member = (runId: string, agentId: string, topics: string[] = [], policyRefs: string[] = []): Member => ({ runId, agentId, topics, policyRefs });

function refusal(action: () => unknown): MailroomError {
  try {
    action();
  } catch (error) {
    if (error instanceof MailroomError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

const members = [member("r3", "writer", ["draft"], ["pii"]), member("r1", "planner", ["plan", "draft"]), member("r2", "writer", [], ["pii"])];

describe("a pool's configuration", () => {
  it("defaults to no required policies, sender excluded from broadcasts and envelope-only wakes", () => {
    expect(parseConfig(undefined)).toEqual({ requiredPolicyRefs: [], includeSenderInPoolBroadcast: false, envelopeOnly: true, policyRefs: [] });
  });

  it("is compared after sorting and deduplicating its policies", () => {
    const a = parseConfig(create(AgentPoolConfigSchema, { policyRefs: [{ id: "b" }, { id: "a" }, { id: "b" }] }));
    const b = parseConfig(create(AgentPoolConfigSchema, { policyRefs: [{ id: "a" }, { id: "b" }] }));
    expect(sameConfig(a, b)).toBe(true);
    expect(sameConfig(a, parseConfig(undefined))).toBe(false);
  });

  it("refuses an empty policy id naming its field", () => {
    expect(refusal(() => parseConfig(create(AgentPoolConfigSchema, { policyRefs: [{ id: "" }] }))).details.field).toBe("config.policy_refs[0].id");
  });
});

describe("a member", () => {
  it("needs a run and an agent; its topics come back sorted and deduplicated", () => {
    expect(parseMember("member", create(AgentPoolMemberSchema, { runId: "r", agentId: "a", topics: ["z", "a", "z"], policyRefs: [] })).topics).toEqual(["a", "z"]);
    expect(refusal(() => parseMember("member", create(AgentPoolMemberSchema, { runId: "", agentId: "a", topics: [], policyRefs: [] }))).details.field).toBe("member.run_id");
    expect(refusal(() => parseMember("member", undefined)).details.field).toBe("member");
  });
});

describe("who a message reaches (resolve_address)", () => {
  it("a run address reaches that run only", () => {
    expect(resolveRecipients({ kind: "run", id: "r2" }, "r1", [], members, config())).toEqual(["r2"]);
  });

  it("an agent address reaches every run of the agent, sorted", () => {
    expect(resolveRecipients({ kind: "agent", id: "writer" }, "r1", [], members, config())).toEqual(["r2", "r3"]);
  });

  it("a topic address reaches every run subscribed to it, the sender included", () => {
    expect(resolveRecipients({ kind: "topic", id: "draft" }, "r1", [], members, config())).toEqual(["r1", "r3"]);
  });

  it("a pool broadcast leaves the sender out unless the pool includes it", () => {
    expect(resolveRecipients({ kind: "pool", id: "p" }, "r1", [], members, config())).toEqual(["r2", "r3"]);
    expect(resolveRecipients({ kind: "pool", id: "p" }, "r1", [], members, config({ includeSenderInPoolBroadcast: true }))).toEqual(["r1", "r2", "r3"]);
  });

  it("reaches only recipients holding every policy the message carries", () => {
    expect(resolveRecipients({ kind: "pool", id: "p" }, "r9", ["pii"], members, config())).toEqual(["r2", "r3"]);
    expect(resolveRecipients({ kind: "run", id: "r1" }, "r9", ["pii"], members, config())).toEqual([]);
  });

  it("names the policies a pool requires that the message lacks", () => {
    expect(missingRequiredPolicies(config({ requiredPolicyRefs: ["audit", "pii"] }), ["pii"])).toEqual(["audit"]);
  });
});

describe("an address", () => {
  it("needs a target, and a pool address must name the pool it is sent in", () => {
    expect(refusal(() => parseAddress("message.to", create(RunAddressSchema, {}), "p")).details.field).toBe("message.to.target");
    expect(refusal(() => parseAddress("message.to", create(RunAddressSchema, { target: { case: "poolId", value: "other" } }), "p")).details.field).toBe("message.to.pool_id");
    expect(parseAddress("message.to", create(RunAddressSchema, { target: { case: "topicId", value: "t" } }), "p")).toEqual({ kind: "topic", id: "t" });
  });
});

describe("a message", () => {
  const message = (fields: Record<string, unknown>) => create(RunMessageSchema, { fromRunId: "r1", to: { target: { case: "runId", value: "r2" } }, ...fields });

  it("gets an id and uses it as its idempotency key when none is given", () => {
    const out = parseMessage("message", message({}), "p", false, 0);
    expect(out.message.messageId).not.toBe("");
    expect(out.message.idempotencyKey).toBe(out.message.messageId);
  });

  it("refuses an inline body over the limit, naming the field", () => {
    const error = refusal(() => parseMessage("message", message({ body: { data: new Uint8Array(MAX_BODY_BYTES + 1), mediaType: "text/plain" } }), "p", false, 0));
    expect([error.code, error.details.field]).toEqual(["invalid_argument", "message.body.data"]);
  });

  it("Send refuses reply_to; Respond requires it and may leave `to` unset", () => {
    expect(refusal(() => parseMessage("message", message({ replyTo: "m0" }), "p", false, 0)).details.field).toBe("message.reply_to");
    expect(refusal(() => parseMessage("reply", message({}), "p", true, 0)).details.field).toBe("reply.reply_to");
    expect(parseMessage("reply", create(RunMessageSchema, { fromRunId: "r2", replyTo: "m0" }), "p", true, 0).message.replyTo).toBe("m0");
  });

  it("a response contract needs 1 to 1000 expected responses", () => {
    expect(refusal(() => parseMessage("message", message({ responseContract: { expectedResponses: 0 } }), "p", false, 0)).details.field).toBe("message.response_contract.expected_responses");
  });

  it("refuses more than 64 related refs on its address, naming the field", () => {
    const relatedRefs = Array.from({ length: 65 }, (_, i) => ({ kind: EntityKind.RUN, id: `r${i}` }));
    const error = refusal(() => parseMessage("message", message({ to: { target: { case: "runId", value: "r2" }, relatedRefs } }), "p", false, 0));
    expect([error.code, error.details.field]).toEqual(["invalid_argument", "message.to.related_refs"]);
  });

  it("refuses a related ref without a kind or an id, naming the field", () => {
    const to = (ref: Record<string, unknown>) => ({ target: { case: "runId", value: "r2" }, relatedRefs: [{ kind: EntityKind.RUN, id: "ok" }, ref] });
    expect(refusal(() => parseMessage("message", message({ to: to({ kind: EntityKind.RUN, id: "" }) }), "p", false, 0)).details.field).toBe("message.to.related_refs[1].id");
    expect(refusal(() => parseMessage("message", message({ to: to({ id: "x" }) }), "p", false, 0)).details.field).toBe("message.to.related_refs[1].kind");
  });

  it("refuses a destination ref id over 256 bytes, naming the field", () => {
    const to = { target: { case: "runId", value: "r2" }, destinationRef: { kind: 1, id: "d".repeat(257) } };
    expect(refusal(() => parseMessage("message", message({ to }), "p", false, 0)).details.field).toBe("message.to.destination_ref.id");
  });

  it("refuses a correlation key or value over 256 bytes, naming the field", () => {
    const long = "k".repeat(257);
    expect(refusal(() => parseMessage("message", message({ correlation: { keys: { [long]: "v" } } }), "p", false, 0)).details.field).toMatch(/^message\.correlation\.keys/);
    expect(refusal(() => parseMessage("message", message({ correlation: { keys: { k: long } } }), "p", false, 0)).details.field).toMatch(/^message\.correlation\.keys/);
  });
});

describe("a wake condition", () => {
  const condition = (fields: Record<string, unknown>) => create(WakeConditionSchema, { runId: "r1", ...fields });

  it("must be registered by the run it wakes", () => {
    const error = refusal(() => parseWakeCondition("r2", condition({})));
    expect([error.details.reason, error.details.field]).toEqual([ErrorReason.WAKE_RUN_MISMATCH, "condition.run_id"]);
  });

  it("defaults to resuming with the matching event's references", () => {
    expect(parseWakeCondition("r1", condition({})).condition.resumeWith).toBe(ResumeInputPolicy.MATCHING_EVENT_REFS);
  });

  it("a zero timeout is kept (it times out at once); an unset one never times out", () => {
    expect(parseWakeCondition("r1", condition({ timeout: {} })).timeoutMs).toBe(0);
    expect(parseWakeCondition("r1", condition({})).timeoutMs).toBeUndefined();
  });

  it("matches the whole retained history with match_history, after the registration by default, and refuses both match_history and `after`", () => {
    expect(parseWakeCondition("r1", condition({ matchHistory: true })).matchHistory).toBe(true);
    expect(parseWakeCondition("r1", condition({})).matchHistory).toBe(false);
    const error = refusal(() => parseWakeCondition("r1", condition({ matchHistory: true, after: { eventSeq: 5n } })));
    expect([error.code, error.details.field]).toEqual(["invalid_argument", "condition.match_history"]);
  });

  it("never wakes on a wake condition's own events", () => {
    expect(canWake(EventKind.WAKE_CONDITION_TRIGGERED)).toBe(false);
    expect(canWake(EventKind.RUN_MESSAGE_DELIVERED)).toBe(true);
  });
});

describe("a wake filter is scoped to the pool (scope_filter)", () => {
  const filter = { payloadAccess: PayloadAccessMode.FULL };

  it("sees only observable member runs: members holding all of the pool's policies", () => {
    expect(observableRuns(members, config({ policyRefs: ["pii"] }))).toEqual(["r3", "r2"]);
    expect([...scopeWakeFilter(filter, ["r2", "r3"], config()).runIds!]).toEqual(["r2", "r3"]);
  });

  it("narrows the runs it names to observable ones; none left matches nothing", () => {
    expect([...scopeWakeFilter({ ...filter, runIds: new Set(["r2", "x"]) }, ["r2", "r3"], config()).runIds!]).toEqual(["r2"]);
    expect(scopeWakeFilter({ ...filter, runIds: new Set(["x"]) }, ["r2"], config()).runIds!.size).toBe(0);
  });

  it("sees envelopes only when the pool's wake policy says so", () => {
    expect(scopeWakeFilter(filter, [], config({ envelopeOnly: true })).payloadAccess).toBe(PayloadAccessMode.ENVELOPE_ONLY);
    expect(scopeWakeFilter(filter, [], config({ envelopeOnly: false })).payloadAccess).toBe(PayloadAccessMode.FULL);
  });
});

describe("a pool-scoped subscription's cursors (SubscribePool)", () => {
  const filter = { payloadAccess: PayloadAccessMode.FULL };

  it("belong to one pool, one member and one filter, and never to an EventService subscription", () => {
    const scope = poolScope("p", "r1", filter);
    expect(scope).toEqual(poolScope("p", "r1", { ...filter }));
    for (const other of [poolScope("p", "r2", filter), poolScope("q", "r1", filter), poolScope("p", "r1", { ...filter, runIds: new Set(["r2"]) })]) expect(other).not.toEqual(scope);
    expect(scope).not.toEqual(filterScope(filter));
  });

  it("a cursor of another scope gets INVALID_ARGUMENT CURSOR_SCOPE_MISMATCH", () => {
    const request = create(SubscribePoolRequestSchema, { poolId: "p", runId: "r1", after: cursor(filterScope(filter), 3) });
    expect(refusal(() => parseSubscribePool(request)).details.reason).toBe(ErrorReason.CURSOR_SCOPE_MISMATCH);
    const own = create(SubscribePoolRequestSchema, { poolId: "p", runId: "r1", after: cursor(poolScope("p", "r1", filter), 3) });
    expect(parseSubscribePool(own).after).toBe(3);
  });
});

describe("a pool listing's page token", () => {
  it("resumes the listing of its own pool only", () => {
    const token = pageToken("p", { at: 5, key: "m-1" });
    expect(parsePoolList("p", { pageSize: 0, pageToken: token })).toEqual({ poolId: "p", pageSize: 100, after: { at: 5, key: "m-1" } });
    expect(refusal(() => parsePoolList("q", { pageSize: 0, pageToken: token })).details.field).toBe("page_token");
    expect(refusal(() => parsePoolList("p", { pageSize: 0, pageToken: "%%%" })).details.field).toBe("page_token");
    expect(refusal(() => parsePoolList("p", { pageSize: 1001, pageToken: "" })).details.field).toBe("page_size");
  });
});
