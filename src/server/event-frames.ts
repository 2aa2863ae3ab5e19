/**
 * Journal documents and subscription frames, as the contract's EventFrame.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  type AgentEvent,
  AgentEventSchema,
  type EventFrame,
  EventFrameKind,
  EventEnvelopeSchema,
  EventFrameSchema,
  type EventOverflowNotice,
  EventOverflowNoticeSchema,
  JournalCursorSchema,
  PayloadAccessMode,
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
  return new BinaryWriter().bytes(accessibleEventBytes(doc, access)).finish();
}

const ENVELOPE = AgentEventSchema.field.envelope.number;
const FULL_PAYLOAD = AgentEventSchema.field.full.number;
const ENVELOPE_SEQ = EventEnvelopeSchema.field.eventSeq.number;
const ENVELOPE_JOURNAL_CURSOR = EventEnvelopeSchema.field.journalCursor.number;
const JOURNAL_CURSOR_SEQ = JournalCursorSchema.field.eventSeq.number;

/**
 * The encoded AgentEvent a reader with this payload access gets for a
 * journal document (what `withPayloadAccess(eventOf(doc), access)` encodes
 * to), made from the stored bytes without decoding them: each top-level
 * field is copied as stored, the envelope with its position (event_seq,
 * journal_cursor) written after its stored fields (a reader takes fields in
 * any order; a field repeated in a message is read as the last one, merged
 * for a message field, as eventOf sets them), and the payload fields the
 * access mode withholds left out. Decoding and re-encoding every live event
 * cost the fan-out ~20 us an event.
 */
export function accessibleEventBytes(doc: EventDoc, access: PayloadAccessMode): Uint8Array {
  const stored = doc.event;
  const reader = new BinaryReader(stored);
  const writer = new BinaryWriter();
  const seq = BigInt(doc._id);
  while (reader.pos < reader.len) {
    const start = reader.pos;
    const [field, wireType] = reader.tag();
    if (field === ENVELOPE && wireType === WireType.LengthDelimited) {
      writer.tag(ENVELOPE, WireType.LengthDelimited).fork().raw(reader.bytes());
      writer.tag(ENVELOPE_SEQ, WireType.Varint).uint64(seq);
      writer.tag(ENVELOPE_JOURNAL_CURSOR, WireType.LengthDelimited).fork().tag(JOURNAL_CURSOR_SEQ, WireType.Varint).uint64(seq).join();
      writer.join();
      continue;
    }
    reader.skip(wireType, field);
    if (withheld(field, access)) continue;
    writer.raw(stored.subarray(start, reader.pos));
  }
  return writer.finish();
}

/** Whether a payload access mode leaves this AgentEvent field out (as withPayloadAccess does). */
function withheld(field: number, access: PayloadAccessMode): boolean {
  switch (access) {
    case PayloadAccessMode.ENVELOPE_ONLY:
      return field !== ENVELOPE;
    case PayloadAccessMode.REDACTED_SUMMARY:
      return field === FULL_PAYLOAD;
    default:
      return false;
  }
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

/** Which shared encoding of an event a subscriber's frames use (a subscription's is the same for its whole life: take it once). */
export function frameKey(scope: Scope, access: PayloadAccessMode): string {
  return `${access}|${scopeKey(scope)}`;
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
export function frameField(frame: SubscriptionFrame, scope: Scope, access: PayloadAccessMode, key = frameKey(scope, access)): Uint8Array {
  if (frame.kind !== "event" || frame.delivery.notice !== undefined || frame.delivery.summarized !== undefined) {
    return new BinaryWriter().bytes(toBinary(EventFrameSchema, subscriptionFrame(frame, scope, access, "binary"))).finish();
  }
  const doc = frame.delivery.frame.item;
  let byScope = encodedFrames.get(doc);
  if (byScope === undefined) encodedFrames.set(doc, (byScope = new Map()));
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
