/**
 * EventService answers sized before anything is journaled (see
 * domain/answer-size.ts): a published event is only journaled when every
 * frame that can carry it (a Subscribe frame with an overflow notice, a
 * ListEvents page of one) fits within `--max-message-bytes`, so every
 * journaled event stays deliverable; ListEvents pages take only what fits.
 */
import { create } from "@bufbuild/protobuf";
import {
  type AgentEvent,
  AgentEventSchema,
  type EventCursor,
  EventCursorSchema,
  type EventFrame,
  EventFrameKind,
  EventFrameSchema,
  EventOverflowReason,
  JournalCursorSchema,
  SubscriberOverflowPolicy,
} from "../../gen/mailroom/v1/event_pb.js";
import { ListEventsResponseSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { AnswerLimit, countThatFit, type WireFormat } from "../domain/answer-size.js";
import { byteLength, MAX_ID_BYTES } from "../domain/validate.js";

const WIDEST_SEQ = BigInt(Number.MAX_SAFE_INTEGER);
const ENTRY_FRAMING = 8;

/** A listing's own cursor at its widest (a scope holds at most one id). */
const WIDEST_CURSOR: EventCursor = create(EventCursorSchema, { scope: { scope: { case: "runId", value: '"'.repeat(MAX_ID_BYTES) } }, eventSeq: WIDEST_SEQ });

/** What the server adds to a published event's envelope when it journals it (event_seq, journal_cursor, recorded_at), at most, in either encoding. */
const JOURNALED_FIELDS = 128;

export class EventAnswers {
  private readonly limit: AnswerLimit;
  /** What a frame of its own adds to an event, by the byte length of the scope id in its cursors (see overheadFor). */
  private readonly overheads = new Map<number, number>();

  constructor(maxMessageBytes: number) {
    this.limit = new AnswerLimit(maxMessageBytes);
  }

  /**
   * Refuses an event (as Publish completed it) that could not be delivered
   * in a frame of its own: a ListEvents page of one, whose cursors are scoped
   * to its run or agent (a filter's scope is a short fingerprint, "all" none)
   * and whose frame carries an overflow notice.
   */
  checkPublish(event: AgentEvent): void {
    const scopeId = Math.max(byteLength(event.envelope?.runId ?? ""), byteLength(event.envelope?.agentId ?? ""));
    const field = event.payload.case === "full" ? "event.full.data" : "event";
    this.limit.require(AgentEventSchema, event, "the event, delivered in a frame of its own", field, JOURNALED_FIELDS + this.overheadFor(scopeId));
  }

  /** The frame and page around an event, at their widest, for cursors whose scope id has this length (computed once per length). */
  private overheadFor(scopeIdLength: number): number {
    let overhead = this.overheads.get(scopeIdLength);
    if (overhead === undefined) {
      const cursor = create(EventCursorSchema, { scope: { scope: { case: "runId", value: '"'.repeat(scopeIdLength) } }, eventSeq: WIDEST_SEQ });
      const frame = create(EventFrameSchema, {
        kind: EventFrameKind.EVENT,
        cursor,
        event: create(AgentEventSchema),
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
      overhead = ENTRY_FRAMING + this.limit.largestSize(ListEventsResponseSchema, create(ListEventsResponseSchema, { frames: [frame], nextCursor: cursor, endOfRange: true }));
      this.overheads.set(scopeIdLength, overhead);
    }
    return overhead;
  }

  /** How many of the frames fit in one ListEvents page in the call's encoding (at least one). */
  framesThatFit(frames: readonly EventFrame[], format: WireFormat): number {
    const room = this.limit.maxBytes - this.limit.sizeIn(ListEventsResponseSchema, create(ListEventsResponseSchema, { nextCursor: WIDEST_CURSOR, endOfRange: true }), format);
    return countThatFit(frames, room, (frame) => this.limit.sizeIn(EventFrameSchema, frame, format) + ENTRY_FRAMING, true);
  }
}
