/**
 * Journal documents and subscription frames, as the contract's EventFrame.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  type AgentEvent,
  AgentEventSchema,
  type EventFrame,
  EventFrameKind,
  EventFrameSchema,
  type EventOverflowNotice,
  EventOverflowNoticeSchema,
  JournalCursorSchema,
  type PayloadAccessMode,
} from "../../gen/mailroom/v1/event_pb.js";
import type { WireFormat } from "../domain/answer-size.js";
import { progressSummary, withPayloadAccess } from "../domain/events/payload.js";
import { cursor, type Scope } from "../domain/events/scope.js";
import type { OverflowNotice } from "../domain/events/subscriber-queue.js";
import type { SubscriptionFrame } from "../engine/events/subscription.js";
import { type EventDoc, eventOf } from "../engine/journal/records.js";

function notice(scope: Scope, given: OverflowNotice | undefined): EventOverflowNotice | undefined {
  if (!given) return undefined;
  return create(EventOverflowNoticeSchema, {
    policy: given.policy,
    droppedCount: BigInt(given.droppedCount),
    gapStart: cursor(scope, given.gapStart),
    gapEnd: cursor(scope, given.gapEnd),
    repairFrom: cursor(scope, given.repairFrom),
    terminalPreserved: given.terminalPreserved,
    reason: given.reason,
  });
}

/**
 * Decoded events by journal document. A live event reaches every subscriber
 * (and the in-memory ring of recent events) as the same document object, so
 * it is decoded once, not once per subscriber. The cached event is shared by
 * every frame made from it: nothing may change it (withPayloadAccess and
 * progressSummary build new events around its envelope; frames are only
 * serialized).
 */
const decoded = new WeakMap<EventDoc, AgentEvent>();

function recordedEvent(doc: EventDoc): AgentEvent {
  let event = decoded.get(doc);
  if (event === undefined) {
    event = eventOf(doc);
    decoded.set(doc, event);
  }
  return event;
}

/**
 * The event of a frame, already encoded, by journal document and payload
 * access: a live event goes to every subscriber, and encoding it is most of
 * the cost of a frame, so binary streams encode it once (see eventFrame).
 */
const encoded = new WeakMap<EventDoc, Map<PayloadAccessMode, Uint8Array>>();

/** Field 3 (`event`) of EventFrame, tag excluded, as protobuf-es keeps an unknown field: length prefix and bytes. */
function encodedEventField(doc: EventDoc, access: PayloadAccessMode): Uint8Array {
  let byAccess = encoded.get(doc);
  if (byAccess === undefined) encoded.set(doc, (byAccess = new Map()));
  let field = byAccess.get(access);
  if (field === undefined) {
    field = new BinaryWriter().bytes(toBinary(AgentEventSchema, withPayloadAccess(recordedEvent(doc), access))).finish();
    byAccess.set(access, field);
  }
  return field;
}

/** How a stream's frames are serialized: the protobuf binary format, or JSON. */
export type { WireFormat };

/** The wire format a call's messages use, from its content type (`application/grpc`, `application/connect+json`, ...). */
export function wireFormatOf(contentType: string | null): WireFormat {
  // Connect matches content types case-insensitively (`application/connect+JSON` is a JSON call).
  return contentType?.toLowerCase().includes("json") ? "json" : "binary";
}

/** The encoding of a call's answers, from its request headers. */
export function formatOf(context: { requestHeader: Headers }): WireFormat {
  return wireFormatOf(context.requestHeader.get("content-type"));
}

/**
 * An EVENT frame for a journal document, its payload as the reader may see it.
 *
 * For binary streams the event travels as the frame's field 3 pre-encoded
 * (an unknown field to protobuf-es, written verbatim): the bytes on the wire
 * are exactly those of a frame with `event` set, since protobuf readers accept
 * fields in any order. JSON streams cannot carry pre-encoded fields and get
 * the event itself.
 */
export function eventFrame(doc: EventDoc, scope: Scope, access: PayloadAccessMode, overflow?: OverflowNotice, summarized?: number, wire: WireFormat = "json"): EventFrame {
  const frame = create(EventFrameSchema, {
    kind: EventFrameKind.EVENT,
    cursor: cursor(scope, doc._id),
    archiveCursor: create(JournalCursorSchema, { eventSeq: BigInt(doc._id) }),
    overflow: notice(scope, overflow),
  });
  if (summarized !== undefined) frame.event = progressSummary(recordedEvent(doc), summarized);
  else if (wire === "json") frame.event = withPayloadAccess(recordedEvent(doc), access);
  else frame.$unknown = [{ no: EVENT_FIELD, wireType: WireType.LengthDelimited, data: encodedEventField(doc, access) }];
  return frame;
}

const EVENT_FIELD = EventFrameSchema.field.event.number;

export function subscriptionFrame(frame: SubscriptionFrame, scope: Scope, access: PayloadAccessMode, wire: WireFormat = "json"): EventFrame {
  if (frame.kind === "event") {
    const { delivery } = frame;
    return eventFrame(delivery.frame.item, scope, access, delivery.notice, delivery.summarized, wire);
  }
  return create(EventFrameSchema, {
    kind: frame.kind === "caught_up" ? EventFrameKind.CAUGHT_UP : EventFrameKind.HEARTBEAT,
    cursor: cursor(scope, frame.position),
    overflow: notice(scope, frame.notice),
  });
}
