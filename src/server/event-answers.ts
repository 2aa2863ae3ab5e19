/**
 * EventService answers sized before anything is journaled (see
 * domain/answer-size.ts): a published event is only journaled when every
 * frame that can carry it (a Subscribe frame with an overflow notice, a
 * ListEvents page of one) fits within `--max-message-bytes`, so every
 * journaled event stays deliverable; ListEvents pages take only what fits.
 */
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type AgentEvent,
  AgentEventSchema,
  type EventCursor,
  EventCursorSchema,
  EventEnvelopeSchema,
  type EventFrame,
  EventFrameKind,
  EventFrameSchema,
  EventOverflowReason,
  JournalCursorSchema,
  SubscriberOverflowPolicy,
} from "../../gen/mailroom/v1/event_pb.js";
import { ListEventsResponseSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { AnswerLimit, countThatFit } from "../domain/answer-size.js";
import { MAX_ID_BYTES } from "../domain/validate.js";

const WIDEST_SEQ = BigInt(Number.MAX_SAFE_INTEGER);
const ENTRY_FRAMING = 8;

/**
 * The widest cursor a reader of this event gets: scoped to its run or agent
 * (a filter's scope is a short fingerprint, "all" none), at the largest position.
 */
function widestCursor(event: AgentEvent): EventCursor {
  const runId = event.envelope?.runId ?? "";
  const agentId = event.envelope?.agentId ?? "";
  const scope = agentId.length > runId.length ? { case: "agentId" as const, value: agentId } : { case: "runId" as const, value: runId };
  return create(EventCursorSchema, { scope: { scope }, eventSeq: WIDEST_SEQ });
}

/** A listing's own cursor at its widest (a scope holds at most one id). */
const WIDEST_CURSOR: EventCursor = create(EventCursorSchema, { scope: { scope: { case: "runId", value: '"'.repeat(MAX_ID_BYTES) } }, eventSeq: WIDEST_SEQ });

export class EventAnswers {
  private readonly limit: AnswerLimit;

  constructor(maxMessageBytes: number) {
    this.limit = new AnswerLimit(maxMessageBytes);
  }

  /** Refuses an event (as Publish completed it) that could not be delivered in a frame of its own. */
  checkPublish(event: AgentEvent): void {
    // As journaled: with the position and time the server assigns at their widest.
    const envelope = event.envelope ? clone(EventEnvelopeSchema, event.envelope) : create(EventEnvelopeSchema);
    envelope.eventSeq = WIDEST_SEQ;
    envelope.journalCursor = create(JournalCursorSchema, { eventSeq: WIDEST_SEQ });
    envelope.recordedAt = timestampFromMs(Date.UTC(9999, 0, 1));
    const journaled = create(AgentEventSchema, { envelope, payload: event.payload });
    const cursor = widestCursor(event);
    const frame = create(EventFrameSchema, {
      kind: EventFrameKind.EVENT,
      cursor,
      event: journaled,
      archiveCursor: create(JournalCursorSchema, { eventSeq: WIDEST_SEQ }),
      overflow: {
        policy: SubscriberOverflowPolicy.SUMMARIZE_AND_CONTINUE,
        droppedCount: WIDEST_SEQ,
        gapStart: cursor,
        gapEnd: cursor,
        repairFrom: cursor,
        terminalPreserved: true,
        reason: EventOverflowReason.POLICY_DROPPED_NON_TERMINAL,
      },
    });
    const field = event.payload.case === "full" ? "event.full.data" : "event";
    this.limit.require(ListEventsResponseSchema, create(ListEventsResponseSchema, { frames: [frame], nextCursor: cursor, endOfRange: true }), "the event, delivered in a frame of its own", field);
  }

  /** How many of the frames fit in one ListEvents page (at least one). */
  framesThatFit(frames: readonly EventFrame[]): number {
    const room = this.limit.maxBytes - this.limit.servedSize(ListEventsResponseSchema, create(ListEventsResponseSchema, { nextCursor: WIDEST_CURSOR, endOfRange: true }));
    return countThatFit(frames, room, (frame) => this.limit.servedSize(EventFrameSchema, frame) + ENTRY_FRAMING, true);
  }
}
