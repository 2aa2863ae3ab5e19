/**
 * Event frames on the wire: a binary stream's frame carries its event
 * pre-encoded (a subscription's whole frame, shared by its scope's
 * subscribers), and must decode to exactly the frame a JSON stream gets.
 */
import { create, equals, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import fc from "fast-check";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { AgentEventSchema, EventFrameSchema, EventKind, PayloadAccessMode } from "../../gen/mailroom/v1/event_pb.js";
import { EventOverflowReason, SubscriberOverflowPolicy } from "../../src/domain/events/subscriber-queue.js";
import { withPayloadAccess } from "../../src/domain/events/payload.js";
import { type EventDoc, eventOf, pendingEvent } from "../../src/engine/journal/records.js";
import { accessibleEventBytes, eventFrame, frameField } from "../../src/server/event-frames.js";
import { wireFormatOf } from "../../src/server/streams.js";

function journaled(seq: number): EventDoc {
  const event = create(AgentEventSchema, {
    envelope: { eventId: `e${seq}`, runId: "run-1", kind: EventKind.MODEL_STREAM_DELTA },
    payload: { case: "full", value: { data: new Uint8Array([1, 2, 3]), mediaType: "application/octet-stream" } },
  });
  return { _id: seq, ...pendingEvent(event, 1_000) };
}

const decodedFrom = (frame: ReturnType<typeof eventFrame>) => fromBinary(EventFrameSchema, toBinary(EventFrameSchema, frame));

describe("an EVENT frame of a binary stream", () => {
  const scope = { kind: "run" as const, runId: "run-1" };
  const notice = { policy: SubscriberOverflowPolicy.DROP_PROGRESS, droppedCount: 2, gapStart: 3, gapEnd: 4, repairFrom: 2, terminalPreserved: true, reason: EventOverflowReason.POLICY_DROPPED_PROGRESS };

  it.each([PayloadAccessMode.FULL, PayloadAccessMode.ENVELOPE_ONLY, PayloadAccessMode.REDACTED_SUMMARY])("decodes to the JSON stream's frame (payload access %s)", (access) => {
    const doc = journaled(7);
    const json = eventFrame(doc, scope, access, notice, undefined, "json");
    const binary = eventFrame(doc, scope, access, notice, undefined, "binary");
    expect(binary.event).toBeUndefined();
    expect(toJson(EventFrameSchema, decodedFrom(binary))).toEqual(toJson(EventFrameSchema, decodedFrom(json)));
    expect(decodedFrom(binary).event?.envelope?.eventSeq).toBe(7n);
  });

  it("a subscription's EVENT frame is encoded once per scope and payload access, however many subscribers it reaches, and decodes to the JSON frame", () => {
    const doc = journaled(8);
    const delivered = { kind: "event" as const, delivery: { frame: { seq: 8, terminal: false, progress: true, item: doc } } };
    const first = frameField(delivered, scope, PayloadAccessMode.FULL);
    expect(frameField(delivered, { kind: "run", runId: "run-1" }, PayloadAccessMode.FULL)).toBe(first);
    expect(frameField(delivered, { kind: "all" }, PayloadAccessMode.FULL)).not.toBe(first);
    expect(frameField(delivered, scope, PayloadAccessMode.ENVELOPE_ONLY)).not.toBe(first);
    const reader = new BinaryReader(first);
    const decoded = fromBinary(EventFrameSchema, reader.bytes());
    expect(toJson(EventFrameSchema, decoded)).toEqual(toJson(EventFrameSchema, decodedFrom(eventFrame(doc, scope, PayloadAccessMode.FULL))));
  });

  it("a summary frame carries its own event", () => {
    const frame = eventFrame(journaled(9), scope, PayloadAccessMode.FULL, undefined, 5, "binary");
    expect(frame.event?.payload.case).toBe("redactedSummary");
  });
});

describe("an event as a binary frame carries it, made from the stored bytes without decoding them", () => {
  const text = fc.string({ maxLength: 12 });
  const event = fc.record({
    // Every journaled event has an envelope (pendingEvent refuses one without).
    envelope: fc.record({
      eventId: text,
      runId: text,
      agentId: text,
      kind: fc.constantFrom(EventKind.MODEL_STREAM_DELTA, EventKind.RUN_COMPLETED, EventKind.CUSTOM),
      customKind: text,
      tags: fc.array(text, { maxLength: 3 }),
      // A stored envelope that already names a position: the journal's position wins, as eventOf sets it.
      eventSeq: fc.option(fc.bigInt({ min: 1n, max: 1n << 40n }), { nil: undefined }),
      journalCursor: fc.option(fc.record({ eventSeq: fc.bigInt({ min: 1n, max: 1n << 40n }) }), { nil: undefined }),
    }),
    payload: fc.oneof(
      fc.constant({ case: undefined }),
      fc.record({ case: fc.constant("full" as const), value: fc.record({ data: fc.uint8Array({ maxLength: 40 }), mediaType: text }) }),
      fc.record({ case: fc.constant("redactedSummary" as const), value: text }),
    ),
  });
  const access = fc.constantFrom(PayloadAccessMode.UNSPECIFIED, PayloadAccessMode.FULL, PayloadAccessMode.ENVELOPE_ONLY, PayloadAccessMode.REDACTED_SUMMARY);

  it("decodes to the event eventOf and withPayloadAccess make, for every event, position and payload access", () => {
    fc.assert(
      fc.property(event, fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), access, (init, seq, mode) => {
        const doc: EventDoc = { _id: seq, ...pendingEvent(create(AgentEventSchema, init), 1_000) };
        const expected = withPayloadAccess(eventOf(doc), mode);
        const actual = fromBinary(AgentEventSchema, accessibleEventBytes(doc, mode));
        expect(equals(AgentEventSchema, actual, expected)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});

describe("the wire format of a call", () => {
  it.each([
    ["application/grpc", "binary"],
    ["application/grpc+proto", "binary"],
    ["application/grpc-web-text", "binary"],
    ["application/connect+proto", "binary"],
    ["application/grpc+json", "json"],
    ["application/connect+json", "json"],
    ["application/grpc-web+json", "json"],
    // Connect matches content types case-insensitively: such a call is served as JSON, so its frames must carry the event itself.
    ["application/connect+JSON", "json"],
    ["Application/GRPC-Web+Json; charset=utf-8", "json"],
  ])("%s is %s", (contentType, wire) => {
    expect(wireFormatOf(contentType)).toBe(wire);
  });
});
