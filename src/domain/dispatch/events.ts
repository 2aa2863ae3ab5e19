/**
 * The journal event recorded for each dispatch transition.
 */
import { create } from "@bufbuild/protobuf";
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
