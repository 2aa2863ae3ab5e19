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
import { progressSummary, withPayloadAccess } from "../domain/events/payload.js";
import { cursor, type Scope } from "../domain/events/scope.js";
import type { OverflowNotice } from "../domain/events/subscriber-queue.js";
import type { SubscriptionFrame } from "../engine/events/subscription.js";
import { type EventDoc, eventOf } from "../engine/journal/records.js";
import { type WireFormat, wireFormatOf } from "./streams.js";

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

/** Field 3 (`event`) of EventFrame, tag excluded, as protobuf-es keeps an unknown field: length prefix and bytes. */
function encodedEventField(doc: EventDoc, access: PayloadAccessMode): Uint8Array {
  return new BinaryWriter().bytes(toBinary(AgentEventSchema, withPayloadAccess(recordedEvent(doc), access))).finish();
}

/**
 * Whole EVENT frames, already encoded, by journal document and then by scope
 * and payload access: a live event goes to every subscriber, and subscribers
 * of one scope (a run's watchers, the `all` tails) get the very same frame,
 * so encoding it is done once for all of them (see frameField).
 */
const encodedFrames = new WeakMap<EventDoc, Map<string, Uint8Array>>();

function scopeKey(scope: Scope): string {
  switch (scope.kind) {
    case "all":
      return "all";
    case "run":
      return `run:${scope.runId}`;
    case "agent":
      return `agent:${scope.agentId}`;
    case "filter":
      return `filter:${scope.fingerprint}`;
  }
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
 * the event itself. (Subscriptions cache whole frames: frameField.)
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

/**
 * A subscription frame as a response field carries it (tag excluded; length
 * prefix and encoded EventFrame, as protobuf-es keeps an unknown field). A
 * plain EVENT frame is encoded once per document, scope and payload access;
 * frames with a notice or a summary, and CAUGHT_UP and heartbeats, each time.
 */
export function frameField(frame: SubscriptionFrame, scope: Scope, access: PayloadAccessMode): Uint8Array {
  if (frame.kind !== "event" || frame.delivery.notice !== undefined || frame.delivery.summarized !== undefined) {
    return new BinaryWriter().bytes(toBinary(EventFrameSchema, subscriptionFrame(frame, scope, access, "binary"))).finish();
  }
  const doc = frame.delivery.frame.item;
  let byScope = encodedFrames.get(doc);
  if (byScope === undefined) encodedFrames.set(doc, (byScope = new Map()));
  const key = `${access}|${scopeKey(scope)}`;
  let field = byScope.get(key);
  if (field === undefined) {
    field = new BinaryWriter().bytes(toBinary(EventFrameSchema, eventFrame(doc, scope, access, undefined, undefined, "binary"))).finish();
    byScope.set(key, field);
  }
  return field;
}

/** How many bytes a frame may take in a JSON response, to size batches (JSON has no pre-encoded frames): base64 payloads and field names, generously. */
export function jsonFrameBytes(frame: SubscriptionFrame): number {
  return frame.kind === "event" ? 2 * frame.delivery.frame.item.event.byteLength + 512 : 512;
}

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
