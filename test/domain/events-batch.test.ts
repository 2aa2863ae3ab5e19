/**
 * PublishBatch's checks (seed: publish_all): every entry as Publish checks
 * one, refusals naming the entry, 1 to 500 entries with distinct ids.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AgentEventSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { MailroomError } from "../../src/domain/errors.js";
import { MAX_PUBLISH_BATCH, parsePublishBatch } from "../../src/domain/events/batch.js";

const event = (fields: Record<string, unknown> = {}) => create(AgentEventSchema, { envelope: { runId: "run-1", kind: EventKind.RUN_STARTED, ...fields } });

function refusal(action: () => unknown): MailroomError {
  try {
    action();
  } catch (error) {
    if (error instanceof MailroomError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

describe("a batch of events to publish", () => {
  it("holds 1 to 500 events, each completed as Publish completes one", () => {
    const batch = parsePublishBatch([event(), event({ eventId: "mine" })], 1_000);
    expect(batch.map((e) => e.envelope?.eventId !== "")).toEqual([true, true]);
    expect(batch[1]?.envelope?.eventId).toBe("mine");
    expect(refusal(() => parsePublishBatch([], 0)).details.field).toBe("events");
    expect(refusal(() => parsePublishBatch(Array.from({ length: MAX_PUBLISH_BATCH + 1 }, () => event()), 0)).details.field).toBe("events");
  });

  it("names the entry a refusal is about, in the field and the message", () => {
    const error = refusal(() => parsePublishBatch([event(), event(), event({ kind: EventKind.DISPATCH_ACKED })], 0));
    expect([error.code, error.details.field]).toEqual(["invalid_argument", "events[2].envelope.kind"]);
    expect(error.message.startsWith("events[2].envelope.kind: ")).toBe(true);
    expect(refusal(() => parsePublishBatch([event(), event({ runId: "" })], 0)).details.field).toBe("events[1].envelope.run_id");
  });

  it("refuses an event id used twice in the batch", () => {
    const error = refusal(() => parsePublishBatch([event({ eventId: "a" }), event({ eventId: "b" }), event({ eventId: "a" })], 0));
    expect(error.details.field).toBe("events[2].envelope.event_id");
  });
});
