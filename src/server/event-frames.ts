/**
 * Journal documents and subscription frames, as the contract's EventFrame.
 */
import { create } from "@bufbuild/protobuf";
import {
  type AgentEvent,
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

/** An EVENT frame for a journal document, its payload as the reader may see it. */
export function eventFrame(doc: EventDoc, scope: Scope, access: PayloadAccessMode, overflow?: OverflowNotice, summarized?: number): EventFrame {
  const recorded = recordedEvent(doc);
  const event = summarized === undefined ? withPayloadAccess(recorded, access) : progressSummary(recorded, summarized);
  return create(EventFrameSchema, {
    kind: EventFrameKind.EVENT,
    cursor: cursor(scope, doc._id),
    event,
    archiveCursor: create(JournalCursorSchema, { eventSeq: BigInt(doc._id) }),
    overflow: notice(scope, overflow),
  });
}

export function subscriptionFrame(frame: SubscriptionFrame, scope: Scope, access: PayloadAccessMode): EventFrame {
  if (frame.kind === "event") {
    const { delivery } = frame;
    return eventFrame(delivery.frame.item, scope, access, delivery.notice, delivery.summarized);
  }
  return create(EventFrameSchema, {
    kind: frame.kind === "caught_up" ? EventFrameKind.CAUGHT_UP : EventFrameKind.HEARTBEAT,
    cursor: cursor(scope, frame.position),
    overflow: notice(scope, frame.notice),
  });
}
