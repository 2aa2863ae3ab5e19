/**
 * The journal event recorded for each dispatch transition.
 */
import { create } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DestinationKind, EntityKind, PrivacyClass, SourceKind } from "../../../gen/mailroom/v1/common_pb.js";
import {
  type AgentEvent,
  AgentEventSchema,
  ContentCaptureMode,
  EventDeliverySemantics,
  EventFamily,
  EventKind,
} from "../../../gen/mailroom/v1/event_pb.js";
import { newId } from "../ids.js";
import { type DispatchStatus, statusName } from "./state.js";

export interface DispatchFacts {
  dispatchId: string;
  threadId: string;
  runId: string;
  agentId?: string;
}

export interface TransitionFacts {
  kind: EventKind;
  before?: DispatchStatus;
  after: DispatchStatus;
  /** A short human-readable account, e.g. "claimed by worker-1 (attempt 2 of 5)". */
  summary: string;
  now: number;
  /** The event's id; a fresh one when omitted. */
  eventId?: string;
}

const SOURCE = { kind: SourceKind.SERVER, id: "mailroom.mailbox" };
const TAGS = ["feature:mailbox"];

function envelopeBase(kind: EventKind, now: number, eventId = newId()) {
  return {
    schemaVersion: 1,
    eventId,
    kind,
    family: EventFamily.MAILBOX,
    occurredAt: timestampFromMs(now),
    recordedAt: timestampFromMs(now),
    source: SOURCE,
    destination: { kind: DestinationKind.JOURNAL, id: "mailroom.journal" },
    tags: TAGS,
    deliverySemantics: EventDeliverySemantics.JOURNAL_BACKED,
    privacy: PrivacyClass.CONTENT_REFS_ONLY,
    contentCapture: ContentCaptureMode.OFF,
  };
}

export function dispatchEvent(dispatch: DispatchFacts, transition: TransitionFacts): AgentEvent {
  return create(AgentEventSchema, {
    envelope: {
      ...envelopeBase(transition.kind, transition.now, transition.eventId),
      runId: dispatch.runId,
      agentId: dispatch.agentId ?? "",
      threadId: dispatch.threadId,
      dispatchId: dispatch.dispatchId,
      subjectRef: { kind: EntityKind.DISPATCH, id: dispatch.dispatchId },
      relatedRefs: [
        { kind: EntityKind.THREAD, id: dispatch.threadId },
        { kind: EntityKind.RUN, id: dispatch.runId },
      ],
      stateBefore: transition.before ? statusName(transition.before) : "",
      stateAfter: statusName(transition.after),
    },
    payload: { case: "redactedSummary", value: transition.summary },
  });
}

/**
 * The same event as `dispatchEvent`, already encoded: one is journaled for
 * every transition of every dispatch, so it is written field by field with
 * protobuf-es's BinaryWriter instead of being built as a message and encoded
 * by reflection (several times faster). The fields that are the same for
 * every dispatch event are encoded once. `dispatchEvent` stays the
 * definition: test/domain/dispatch-events.test.ts checks that both decode to
 * the same message.
 */
export function encodeDispatchEvent(dispatch: DispatchFacts, transition: TransitionFacts & { eventId: string }): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).fork();
  w.raw(ENVELOPE_HEAD);
  w.tag(2, WireType.LengthDelimited).string(transition.eventId);
  w.tag(5, WireType.Varint).int32(transition.kind);
  timestamp(w, 8, transition.now);
  timestamp(w, 9, transition.now);
  if (dispatch.runId) w.tag(10, WireType.LengthDelimited).string(dispatch.runId);
  if (dispatch.agentId) w.tag(12, WireType.LengthDelimited).string(dispatch.agentId);
  entityRef(w, 21, EntityKind.DISPATCH, dispatch.dispatchId);
  entityRef(w, 22, EntityKind.THREAD, dispatch.threadId);
  entityRef(w, 22, EntityKind.RUN, dispatch.runId);
  w.raw(ENVELOPE_CONSTANTS);
  if (transition.before) w.tag(30, WireType.LengthDelimited).string(statusName(transition.before));
  w.tag(31, WireType.LengthDelimited).string(statusName(transition.after));
  w.raw(ENVELOPE_SETTINGS);
  w.tag(37, WireType.LengthDelimited).string(dispatch.threadId);
  w.tag(38, WireType.LengthDelimited).string(dispatch.dispatchId);
  w.join();
  w.tag(3, WireType.LengthDelimited).string(transition.summary);
  return w.finish();
}

/** A google.protobuf.Timestamp of `ms` (as timestampFromMs makes it). */
function timestamp(w: BinaryWriter, field: number, ms: number): void {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  w.tag(field, WireType.LengthDelimited).fork();
  if (seconds !== 0) w.tag(1, WireType.Varint).int64(seconds);
  if (nanos !== 0) w.tag(2, WireType.Varint).int32(nanos);
  w.join();
}

function entityRef(w: BinaryWriter, field: number, kind: EntityKind, id: string): void {
  w.tag(field, WireType.LengthDelimited).fork();
  w.tag(1, WireType.Varint).int32(kind);
  if (id) w.tag(2, WireType.LengthDelimited).string(id);
  w.join();
}

/** schema_version and family. */
const ENVELOPE_HEAD = new BinaryWriter().tag(1, WireType.Varint).uint32(1).tag(4, WireType.Varint).int32(EventFamily.MAILBOX).finish();

/** tags, source and destination: the same for every dispatch event. */
const ENVELOPE_CONSTANTS = (() => {
  const w = new BinaryWriter();
  for (const tag of TAGS) w.tag(25, WireType.LengthDelimited).string(tag);
  w.tag(26, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int32(SOURCE.kind).tag(2, WireType.LengthDelimited).string(SOURCE.id).join();
  w.tag(27, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int32(DestinationKind.JOURNAL).tag(2, WireType.LengthDelimited).string("mailroom.journal").join();
  return w.finish();
})();

/** delivery semantics, privacy and content capture. */
const ENVELOPE_SETTINGS = new BinaryWriter()
  .tag(32, WireType.Varint).int32(EventDeliverySemantics.JOURNAL_BACKED)
  .tag(33, WireType.Varint).int32(PrivacyClass.CONTENT_REFS_ONLY)
  .tag(34, WireType.Varint).int32(ContentCaptureMode.OFF)
  .finish();

export const DISPATCH_EVENT_TAGS: readonly string[] = TAGS;

export function threadInterruptedEvent(threadId: string, epochBefore: number, epochAfter: number, now: number): AgentEvent {
  return create(AgentEventSchema, {
    envelope: {
      ...envelopeBase(EventKind.THREAD_INTERRUPTED, now),
      threadId,
      subjectRef: { kind: EntityKind.THREAD, id: threadId },
      stateBefore: `epoch ${epochBefore}`,
      stateAfter: `epoch ${epochAfter}`,
    },
    payload: { case: "redactedSummary", value: `thread interrupted: epoch ${epochBefore} -> ${epochAfter}` },
  });
}
