/**
 * Checking EventService requests: what a run may publish, how filters match
 * and identify themselves, and how subscriptions are scoped and bounded.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  AgentEventSchema,
  EventCursorSchema,
  EventFamily,
  EventFilterSchema,
  EventKind,
  SubscriberOverflowPolicy,
} from "../../gen/mailroom/v1/event_pb.js";
import { SubscribeRequestSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import { fingerprint, matches, parseEventFilter } from "../../src/domain/events/filter.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import { parseQueueConfig, parseSubscribe } from "../../src/domain/events/requests.js";
import { cursor } from "../../src/domain/events/scope.js";

function refusal(run: () => unknown): MailroomError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(MailroomError);
    return error as MailroomError;
  }
  throw new Error("expected a refusal");
}

const event = (envelope: Record<string, unknown>, payload?: { case: "full"; value: { data: Uint8Array; mediaType: string } }) =>
  create(AgentEventSchema, { envelope, ...(payload ? { payload } : {}) });

describe("publish", () => {
  it("completes what the server owns: id, family, schema version, recorded time, delivery, source", () => {
    const published = parsePublish(event({ runId: "r1", kind: EventKind.MODEL_STREAM_DELTA }), 1_000);
    expect(published.envelope).toMatchObject({ family: EventFamily.MODEL, schemaVersion: 1, deliverySemantics: 1, source: { id: "r1" } });
    expect(published.envelope!.eventId).not.toBe("");
    expect(Number(published.envelope!.recordedAt!.seconds)).toBe(1);
  });

  it.each([
    ["no run id", { kind: EventKind.RUN_STARTED }, "event.envelope.run_id"],
    ["no kind", { runId: "r" }, "event.envelope.kind"],
    ["a mailbox kind (the server's own)", { runId: "r", kind: EventKind.DISPATCH_ACKED }, "event.envelope.kind"],
    ["a pool kind (the server's own)", { runId: "r", kind: EventKind.WAKE_CONDITION_TRIGGERED }, "event.envelope.kind"],
    ["a server-assigned event_seq", { runId: "r", kind: EventKind.RUN_STARTED, eventSeq: 5n }, "event.envelope.event_seq"],
    ["a family that is not the kind's", { runId: "r", kind: EventKind.RUN_STARTED, family: EventFamily.USAGE }, "event.envelope.family"],
    ["CUSTOM without its custom_kind", { runId: "r", kind: EventKind.CUSTOM }, "event.envelope.custom_kind"],
    ["a custom_kind on another kind", { runId: "r", kind: EventKind.RUN_STARTED, customKind: "x" }, "event.envelope.custom_kind"],
    ["33 tags", { runId: "r", kind: EventKind.RUN_STARTED, tags: Array.from({ length: 33 }, (_, i) => `t${i}`) }, "event.envelope.tags"],
    ["a source id of 1 MiB", { runId: "r", kind: EventKind.RUN_STARTED, source: { kind: 3, id: "s".repeat(1 << 20) } }, "event.envelope.source.id"],
    ["a source id with NUL and terminal escapes", { runId: "r", kind: EventKind.RUN_STARTED, source: { kind: 3, id: "run\u0000\u001b[31m" } }, "event.envelope.source.id"],
    ["a destination id with a control character", { runId: "r", kind: EventKind.RUN_STARTED, destination: { kind: 1, id: "a\nb" } }, "event.envelope.destination.id"],
    ["an occurred_at in year 9999", { runId: "r", kind: EventKind.RUN_STARTED, occurredAt: { seconds: 253_370_764_800n, nanos: 0 } }, "event.envelope.occurred_at"],
  ])("refuses %s, naming the field", (_name, envelope, field) => {
    const error = refusal(() => parsePublish(event(envelope), 0));
    expect([error.code, error.details.field]).toEqual(["invalid_argument", field]);
  });

  it("refuses a payload above 256 KiB", () => {
    const error = refusal(() => parsePublish(event({ runId: "r", kind: EventKind.RUN_STARTED }, { case: "full", value: { data: new Uint8Array(256 * 1024 + 1), mediaType: "x" } }), 0));
    expect(error.details.field).toBe("event.full.data");
  });
});

describe("event filters", () => {
  const fields = { run_id: "r1", agent_id: "a1", family: EventFamily.RUN, kind: EventKind.RUN_STARTED, tags: ["x", "y"] };

  it("match when every constrained list admits the event (OR within a list, AND across lists)", () => {
    const filter = parseEventFilter("filter", create(EventFilterSchema, { runIds: ["r0", "r1"], kinds: [EventKind.RUN_STARTED], tags: ["y", "z"] }));
    expect(matches(filter, fields)).toBe(true);
    expect(matches(filter, { ...fields, kind: EventKind.RUN_FAILED })).toBe(false);
    expect(matches(filter, { ...fields, tags: ["z"] })).toBe(true);
    expect(matches(filter, { ...fields, tags: [] })).toBe(false);
  });

  it("match nothing through an empty set (a pool scoped to no member runs)", () => {
    expect(matches({ payloadAccess: 3, runIds: new Set() }, fields)).toBe(false);
  });

  it("have the same fingerprint whatever the order of their lists, and differ when they select differently", () => {
    const a = parseEventFilter("f", create(EventFilterSchema, { runIds: ["b", "a"], kinds: [EventKind.RUN_STARTED, EventKind.RUN_FAILED] }));
    const b = parseEventFilter("f", create(EventFilterSchema, { runIds: ["a", "b"], kinds: [EventKind.RUN_FAILED, EventKind.RUN_STARTED] }));
    const c = parseEventFilter("f", create(EventFilterSchema, { runIds: ["a"] }));
    expect(fingerprint(a)).toBe(fingerprint(b));
    expect(fingerprint(a)).not.toBe(fingerprint(c));
  });

  it("refuse more than 100 entries in a list and unknown kinds", () => {
    expect(refusal(() => parseEventFilter("filter", create(EventFilterSchema, { runIds: Array.from({ length: 101 }, (_, i) => `r${i}`) }))).details.field).toBe("filter.run_ids");
    expect(refusal(() => parseEventFilter("filter", create(EventFilterSchema, { kinds: [999 as EventKind] }))).details.field).toBe("filter.kinds[0]");
  });
});

describe("subscribe requests", () => {
  it("need a scope", () => {
    expect(refusal(() => parseSubscribe(create(SubscribeRequestSchema, {}))).details.field).toBe("scope");
  });

  it("accept a cursor of their own scope and refuse another scope's with CURSOR_SCOPE_MISMATCH", () => {
    const own = parseSubscribe(create(SubscribeRequestSchema, { scope: { case: "runId", value: "r1" }, after: cursor({ kind: "run", runId: "r1" }, 42) }));
    expect(own.after).toBe(42);
    const error = refusal(() => parseSubscribe(create(SubscribeRequestSchema, { scope: { case: "runId", value: "r1" }, after: cursor({ kind: "run", runId: "r2" }, 42) })));
    expect([error.code, error.details.reason, error.details.field]).toEqual(["invalid_argument", ErrorReason.CURSOR_SCOPE_MISMATCH, "after.scope"]);
    const unscoped = refusal(() => parseSubscribe(create(SubscribeRequestSchema, { scope: { case: "all", value: {} }, after: create(EventCursorSchema, { eventSeq: 1n }) })));
    expect(unscoped.details.reason).toBe(ErrorReason.CURSOR_SCOPE_MISMATCH);
  });

  it("default to a queue of 1024 with a reserve of 16, lagging rather than dropping (BACKPRESSURE_CALLER)", () => {
    expect(parseQueueConfig(undefined)).toEqual({ capacity: 1024, terminalReserve: 16, policy: SubscriberOverflowPolicy.BACKPRESSURE_CALLER });
    expect(parseQueueConfig({ capacity: 8, terminalReserve: 0, overflow: 0 } as never)).toMatchObject({ capacity: 8, terminalReserve: 2 });
  });

  it("refuse a capacity above 100000 and a reserve that leaves no room", () => {
    expect(refusal(() => parseQueueConfig({ capacity: 100_001, terminalReserve: 0, overflow: 0 } as never)).details.field).toBe("queue.capacity");
    expect(refusal(() => parseQueueConfig({ capacity: 10, terminalReserve: 10, overflow: 0 } as never)).details.field).toBe("queue.terminal_reserve");
  });
});
