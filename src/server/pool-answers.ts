/**
 * PoolService answers sized before anything is stored (see
 * domain/answer-size.ts): a message (Send, Respond) only when the frames that
 * deliver it (a run's inbox, WatchPool) fit with a receipt naming every
 * possible recipient; a join only when the pool's members still fit in
 * ListMembers and a snapshot; a wake condition only when its WatchPool record
 * fits. Snapshots take only the messages and wakes that fit.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type AgentPoolMember,
  type AgentPoolSnapshot,
  AgentPoolSnapshotSchema,
  MessageStatus,
  type RunMessage,
  RunMessageSchema,
  type StoredMessage,
  StoredMessageSchema,
  type StoredWake,
  StoredWakeSchema,
  type WakeCondition,
  WakeRegistrationStatus,
} from "../../gen/mailroom/v1/pool_pb.js";
import { ListMembersResponseSchema, ReceiveMessagesResponseSchema, WatchPoolResponseSchema } from "../../gen/mailroom/v1/pool_service_pb.js";
import { AnswerLimit, countThatFit, type WireFormat } from "../domain/answer-size.js";
import { MAX_MEMBERS } from "../domain/pool/pool.js";
import { MAX_ID_BYTES } from "../domain/validate.js";

const WIDEST_ID = '"'.repeat(MAX_ID_BYTES);
const WIDEST_SEQ = BigInt(Number.MAX_SAFE_INTEGER);
const LATEST = timestampFromMs(Date.UTC(9999, 11, 31, 23, 59, 59, 999));
const ENTRY_FRAMING = 8;

export class PoolAnswers {
  private readonly limit: AnswerLimit;
  /** What the frames delivering a message add to it at most: the receipt naming the most members a pool can have, and the frame. */
  private readonly deliveryOverhead: number;

  constructor(maxMessageBytes: number) {
    this.limit = new AnswerLimit(maxMessageBytes);
    this.deliveryOverhead = 2 * ENTRY_FRAMING + this.messageFrameSize(create(RunMessageSchema), Array.from({ length: MAX_MEMBERS }, () => WIDEST_ID));
  }

  /** Whether the message's frames fit whoever receives it (else call checkMessage with the pool's members). */
  messageAlwaysFits(message: RunMessage): boolean {
    return this.limit.measure(RunMessageSchema, message, this.deliveryOverhead).fits;
  }

  /** Refuses a message whose frames, with a receipt naming every member, would not fit; `field` is the request's ("message", "reply"). */
  checkMessage(message: RunMessage, memberRunIds: readonly string[], field: string): void {
    const size = this.messageFrameSize(message, memberRunIds);
    if (size > this.limit.maxBytes) throw this.limit.exceeded(`the ${field}, delivered with its receipt`, size, message.body ? `${field}.body.data` : field);
  }

  /** Refuses a join after which the pool's members would not fit in ListMembers or a snapshot. */
  checkMembers(members: readonly AgentPoolMember[]): void {
    const topics = [...new Set(members.flatMap((m) => m.topics))];
    this.limit.require(ListMembersResponseSchema, create(ListMembersResponseSchema, { members: [...members] }), "the pool's members (ListMembers)", "member");
    this.limit.require(AgentPoolSnapshotSchema, create(AgentPoolSnapshotSchema, { poolId: WIDEST_ID, created: true, members: [...members], topics, cursor: WIDEST_SEQ }), "the pool's members and topics (GetPool)", "member");
  }

  /** Refuses a wake condition whose WatchPool record would not fit. */
  checkWake(condition: WakeCondition): void {
    const wake = create(StoredWakeSchema, {
      condition,
      registration: { conditionId: WIDEST_ID, runId: WIDEST_ID, status: WakeRegistrationStatus.TRIGGERED, matchedEventId: WIDEST_ID, journalCursor: { eventSeq: WIDEST_SEQ }, deadline: LATEST },
      filterFingerprint: WIDEST_ID,
      matchesNothing: true,
    });
    this.limit.require(WatchPoolResponseSchema, create(WatchPoolResponseSchema, { frame: { case: "record", value: { poolId: WIDEST_ID, cursor: WIDEST_SEQ, recordedAt: LATEST, record: { case: "wake", value: wake } } } }), "the wake condition, as WatchPool records it", "condition");
  }

  /** The snapshot with only the messages, then wakes, that fit in the call's encoding (the `*_truncated` flags say so). */
  fitSnapshot(snapshot: AgentPoolSnapshot, format: WireFormat): AgentPoolSnapshot {
    if (this.limit.sizeIn(AgentPoolSnapshotSchema, snapshot, format) <= this.limit.maxBytes) return snapshot;
    const trimmed = create(AgentPoolSnapshotSchema, { ...snapshot, messages: [], wakes: [], messagesTruncated: true, wakesTruncated: true });
    let room = this.limit.maxBytes - this.limit.sizeIn(AgentPoolSnapshotSchema, trimmed, format);
    const messageSize = (m: StoredMessage) => this.limit.sizeIn(StoredMessageSchema, m, format) + ENTRY_FRAMING;
    const wakeSize = (w: StoredWake) => this.limit.sizeIn(StoredWakeSchema, w, format) + ENTRY_FRAMING;
    // The most recent messages are what a snapshot is for: keep from the newest end.
    const newestFirst = [...snapshot.messages].reverse();
    trimmed.messages = newestFirst.slice(0, countThatFit(newestFirst, room, messageSize)).reverse();
    room -= trimmed.messages.reduce((sum, m) => sum + messageSize(m), 0);
    trimmed.wakes = snapshot.wakes.slice(0, countThatFit(snapshot.wakes, room, wakeSize));
    trimmed.messagesTruncated = snapshot.messagesTruncated || trimmed.messages.length < snapshot.messages.length;
    trimmed.wakesTruncated = snapshot.wakesTruncated || trimmed.wakes.length < snapshot.wakes.length;
    return trimmed;
  }

  private messageFrameSize(message: RunMessage, recipients: readonly string[]): number {
    const receipt = { messageId: message.messageId || WIDEST_ID, status: MessageStatus.RESPONDED, deliveredTo: [...recipients], journalCursor: { eventSeq: WIDEST_SEQ }, responseCount: 1000 };
    const inbox = create(ReceiveMessagesResponseSchema, { frame: { case: "message", value: { cursor: WIDEST_SEQ, message, receipt } } });
    const record = create(WatchPoolResponseSchema, { frame: { case: "record", value: { poolId: WIDEST_ID, cursor: WIDEST_SEQ, recordedAt: LATEST, record: { case: "message", value: { message, receipt } } } } });
    return Math.max(this.limit.largestSize(ReceiveMessagesResponseSchema, inbox), this.limit.largestSize(WatchPoolResponseSchema, record));
  }
}
