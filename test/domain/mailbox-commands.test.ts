/**
 * Checking MailboxService requests: each bad field is refused with
 * INVALID_ARGUMENT naming it; good requests become commands with defaults.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  ClaimRequestSchema,
  NewDispatchSchema,
} from "../../gen/mailroom/v1/mailbox_service_pb.js";
import {
  DEFAULT_MAILBOX_LIMITS,
  parseAckBatch,
  parseClaim,
  parseEnqueueBatch,
  parseNewDispatch,
  parseRunResult,
  parseStatuses,
} from "../../src/domain/dispatch/commands.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";

const limits = DEFAULT_MAILBOX_LIMITS;
const NOW = Date.UTC(2030, 0, 1);

function refusedField(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(MailroomError);
    const e = error as MailroomError;
    expect(e.code).toBe("invalid_argument");
    expect(e.details.reason).toBe(ErrorReason.INVALID_FIELD);
    expect(e.message.startsWith(`${e.details.field}: `)).toBe(true);
    return e.details.field;
  }
  throw new Error("expected a refusal");
}

describe("enqueue requests", () => {
  it("fill in the defaults: priority 128, 5 attempts, available now", () => {
    const command = parseNewDispatch("dispatch", create(NewDispatchSchema, { threadId: "t1" }), limits, NOW);
    expect(command).toMatchObject({ threadId: "t1", priority: 128, maxAttempts: 5, schedule: undefined });
  });

  it("keep a priority of 0 (proto3 optional presence) and an absolute or relative schedule", () => {
    expect(parseNewDispatch("d", create(NewDispatchSchema, { threadId: "t", priority: 0 }), limits, NOW).priority).toBe(0);
    expect(parseNewDispatch("d", create(NewDispatchSchema, { threadId: "t", schedule: { case: "delay", value: durationFromMs(1500) } }), limits, NOW).schedule).toEqual({ delayMs: 1500 });
    expect(parseNewDispatch("d", create(NewDispatchSchema, { threadId: "t", schedule: { case: "availableAt", value: timestampFromMs(5000) } }), limits, NOW).schedule).toEqual({ at: 5000 });
  });

  it.each([
    ["an empty thread id", { threadId: "" }, "dispatch.thread_id"],
    ["priority 256", { threadId: "t", priority: 256 }, "dispatch.priority"],
    ["max_attempts 0", { threadId: "t", maxAttempts: 0 }, "dispatch.max_attempts"],
    ["a thread id of 257 bytes", { threadId: "x".repeat(257) }, "dispatch.thread_id"],
    ["a control character in an id", { threadId: "t", dedupeKey: "a\nb" }, "dispatch.dedupe_key"],
    // MongoDB stores a lone surrogate as U+FFFD: "t\uD800" and "t\uDBFF" would be one thread there.
    ["a lone surrogate in an id", { threadId: "t\uD800" }, "dispatch.thread_id"],
    ["a lone surrogate in text", { threadId: "t", payload: { data: new Uint8Array(), mediaType: "text/\uDC00" } }, "dispatch.payload.media_type"],
    ["an available_at in year 9999", { threadId: "t", schedule: { case: "availableAt" as const, value: timestampFromMs(Date.UTC(9999, 0, 1)) } }, "dispatch.available_at"],
    ["an available_at more than a year ahead", { threadId: "t", schedule: { case: "availableAt" as const, value: timestampFromMs(NOW + 366 * 86_400_000) } }, "dispatch.available_at"],
    ["an available_at before 1970", { threadId: "t", schedule: { case: "availableAt" as const, value: timestampFromMs(-1000) } }, "dispatch.available_at"],
    ["a negative delay", { threadId: "t", schedule: { case: "delay" as const, value: durationFromMs(-5) } }, "dispatch.delay"],
    ["an oversized payload", { threadId: "t", payload: { data: new Uint8Array(256 * 1024 + 1), mediaType: "application/octet-stream" } }, "dispatch.payload.data"],
  ])("refuse %s, naming the field", (_name, fields, field) => {
    expect(refusedField(() => parseNewDispatch("dispatch", create(NewDispatchSchema, fields), limits, NOW))).toBe(field);
  });

  it("refuse a missing dispatch", () => {
    expect(refusedField(() => parseNewDispatch("dispatch", undefined, limits, NOW))).toBe("dispatch");
  });

  it("validate a whole batch first, naming the entry", () => {
    const batch = [create(NewDispatchSchema, { threadId: "a" }), create(NewDispatchSchema, { threadId: "b", priority: 999 })];
    expect(refusedField(() => parseEnqueueBatch(batch, limits, NOW))).toBe("dispatches[1].priority");
    expect(refusedField(() => parseEnqueueBatch([], limits, NOW))).toBe("dispatches");
    expect(refusedField(() => parseEnqueueBatch(Array.from({ length: 501 }, () => create(NewDispatchSchema, { threadId: "t" })), limits, NOW))).toBe("dispatches");
  });
});

describe("claim requests", () => {
  const valid = { consumerId: "w", lease: durationFromMs(30_000), limit: 10 };

  it("become commands; an empty thread id means any thread", () => {
    expect(parseClaim(create(ClaimRequestSchema, valid), limits)).toEqual({ threadId: undefined, consumerId: "w", leaseMs: 30_000, limit: 10, waitMs: 0 });
  });

  it.each([
    ["lease 0", { lease: durationFromMs(0) }, "lease"],
    ["no lease", { lease: undefined }, "lease"],
    ["a lease above the maximum", { lease: durationFromMs(3_600_001) }, "lease"],
    ["limit 0", { limit: 0 }, "limit"],
    ["limit above the maximum", { limit: 101 }, "limit"],
    ["a wait above 60 s", { wait: durationFromMs(60_001) }, "wait"],
    ["no consumer id", { consumerId: "" }, "consumer_id"],
  ])("refuse %s", (_name, fields, field) => {
    expect(refusedField(() => parseClaim(create(ClaimRequestSchema, { ...valid, ...fields }), limits))).toBe(field);
  });
});

describe("other mailbox requests", () => {
  it("name the entry of a bad ack batch", () => {
    expect(refusedField(() => parseAckBatch([{ dispatchId: "d", claimToken: "" }] as never, limits))).toBe("claims[0].claim_token");
  });

  it("refuse a run result without a run status", () => {
    expect(refusedField(() => parseRunResult({ runStatus: 0 } as never))).toBe("result.run_status");
  });

  it("refuse UNSPECIFIED as a status filter", () => {
    expect(refusedField(() => parseStatuses("statuses", [1, 0]))).toBe("statuses[1]");
  });
});
