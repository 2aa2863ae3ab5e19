/**
 * How pools are stored, and how stored pools become the contract's records.
 *
 * `pools`: one document per pool: its configuration and whether a run has
 * joined (nothing in it grows with use).
 * `pool_members`: one document per member run; each holds one of the pool's
 * MAX_MEMBERS places (a unique index), which is what bounds a pool's members.
 * `pool_messages`: one document per message, its latest status and receipt
 * (unique per pool by message id and by idempotency key).
 * `pool_wakes`: one document per wake condition and its registration.
 * Every change is also a journal event carrying the pool record.
 * `pool_records`: a pool's history, kept for the pool's life: each such
 * event's record, numbered densely per pool in journal order (PoolHistory
 * derives it from the journal). WatchPool and inboxes are read from it.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EntityKind } from "../../../gen/mailroom/v1/common_pb.js";
import { EventFilterSchema, JournalCursorSchema } from "../../../gen/mailroom/v1/event_pb.js";
import {
  type AgentPoolConfig,
  AgentPoolConfigSchema,
  type AgentPoolMember,
  AgentPoolMemberSchema,
  type AgentPoolRecord,
  AgentPoolRecordSchema,
  type MessageReceipt,
  MessageReceiptSchema,
  type RunMessage,
  RunMessageSchema,
  type StoredMessage,
  StoredMessageSchema,
  type StoredWake,
  StoredWakeSchema,
  type WakeCondition,
  WakeConditionSchema,
  type WakeRegistration,
  WakeRegistrationSchema,
} from "../../../gen/mailroom/v1/pool_pb.js";
import { fingerprint, fromPlainFilter, type PlainFilter } from "../../domain/events/filter.js";
import { type MessageStatusName, STATUS_PROTO } from "../../domain/pool/messages.js";
import type { Member, PoolConfig } from "../../domain/pool/pool.js";
import { WAKE_STATUS_PROTO, type WakeStatusName } from "../../domain/pool/wakes.js";
import type { Doc, IndexSpec } from "../../store/port.js";
import type { OutboxFields } from "../outbox.js";

export const POOLS = "pools";
export const POOL_MESSAGES = "pool_messages";
export const POOL_WAKES = "pool_wakes";
export const POOL_RECORDS = "pool_records";
export const POOL_MEMBERS = "pool_members";

export interface StoredMember {
  run_id: string;
  agent_id: string;
  policy_refs: string[];
  topics: string[];
}

export interface StoredConfig {
  required_policy_refs: string[];
  include_sender_in_pool_broadcast: boolean;
  envelope_only: boolean;
  policy_refs: string[];
}

export interface PoolDoc extends Doc, OutboxFields {
  _id: string;
  /**
   * Names this life of the pool (the event id of its AGENT_POOL_OPENED): its
   * history is kept under it, so a pool deleted and opened again starts a
   * new one. Absent on pools opened before histories were kept: their id.
   */
  incarnation?: string;
  /** Set (when) DeletePool began; the pool is gone for every call from then on. */
  deleting?: number;
  config: StoredConfig;
  created: boolean;
  /** Pools opened before members had documents of their own kept them here (moved out on first read). */
  members?: StoredMember[];
  created_at: number;
  updated_at: number;
}

export interface MemberDoc extends Doc, OutboxFields, StoredMember {
  /** `${pool_id}\u0000${run_id}` */
  _id: string;
  pool_id: string;
  /** Which of the pool's MAX_MEMBERS places it holds (unique in the pool). */
  slot: number;
  /** Set once it left: the document goes once its leave record is journaled. */
  left?: true;
  /** Changes only by updates conditional on it. */
  version: number;
  joined_at: number;
  updated_at: number;
}

export const MEMBER_INDEXES: IndexSpec[] = [
  { key: { pool_id: 1, slot: 1 }, name: "member_slot_per_pool", unique: true },
  { key: { pool_id: 1, run_id: 1 }, name: "members_by_run" },
];

export const memberDocId = (poolId: string, runId: string) => `${poolId}\u0000${runId}`;

export interface MessageDoc extends Doc, OutboxFields {
  _id: string;
  pool_id: string;
  message_id: string;
  idempotency_key: string;
  from_run_id: string;
  from_agent_id: string;
  /** The RunMessage as sent (ids filled in), protobuf. */
  message: Uint8Array;
  reply_to?: string;
  status: MessageStatusName;
  delivered_to: string[];
  response_count: number;
  /** The replies counted in response_count (so a retried reply is counted once). */
  counted_replies?: string[];
  expected_responses?: number;
  /** When a response contract times out (while DELIVERED). */
  deadline_at?: number;
  /** What Send answered first, for idempotent repeats (the event id stands for its journal position). */
  first_receipt: { status: MessageStatusName; delivered_to: string[]; event_id: string };
  /** The event recording the latest status. */
  status_event_id: string;
  created_at: number;
  updated_at: number;
}

export interface WakeDoc extends Doc, OutboxFields {
  _id: string;
  pool_id: string;
  condition_id: string;
  idempotency_key: string;
  run_id: string;
  agent_id: string;
  /** The WakeCondition as registered, protobuf. */
  condition: Uint8Array;
  /** The scoped filter the condition is matched with. */
  filter: PlainFilter;
  /** Events after this journal position can wake it. */
  after_seq: number;
  deadline_at?: number;
  status: WakeStatusName;
  /**
   * False until the registering instance has looked for a matching event
   * already in the journal; live matching waits for it, so the earliest
   * matching event wins.
   */
  scanned: boolean;
  matched_event_id?: string;
  resume_input?: { event_refs: Array<{ kind: number; id: string }>; redacted_summary: string };
  status_event_id: string;
  created_at: number;
  updated_at: number;
}

/** One record of a pool's history (the journal event's record, its journal position and its number in the pool). */
export interface RecordDoc extends Doc {
  /** The id of the event that recorded it. */
  _id: string;
  pool_id: string;
  incarnation: string;
  /** 1, 2, 3, ... within the incarnation, in journal order. */
  seq: number;
  journal_seq: number;
  kind: number;
  /** RUN_MESSAGE_DELIVERED: the runs whose inboxes it is in. */
  recipients?: string[];
  /** AgentPoolRecord, protobuf, without cursor and sequence. */
  record: Uint8Array;
}

export const RECORD_INDEXES: IndexSpec[] = [
  { key: { incarnation: 1, seq: 1 }, name: "record_sequence", unique: true },
  { key: { pool_id: 1, journal_seq: 1 }, name: "records_in_journal_order" },
  { key: { incarnation: 1, recipients: 1, journal_seq: 1 }, name: "inboxes" },
];

export const incarnationOf = (pool: PoolDoc): string => pool.incarnation ?? pool._id;

/*
 * The *_INDEXES lists are a namespace's (created through its view, so each
 * starts with `ns`); the *_SWEEPER_INDEXES lists are store-wide (deadlines,
 * repairs and matchers find their work across every namespace, then act in
 * each document's namespace), kept as they were before namespaces.
 */

export const MESSAGE_INDEXES: IndexSpec[] = [
  { key: { pool_id: 1, message_id: 1 }, name: "message_id_per_pool", unique: true },
  { key: { pool_id: 1, idempotency_key: 1 }, name: "idempotency_key_per_pool", unique: true },
  // Within one millisecond, by the (sortable, monotonic) id of the event that recorded the send.
  { key: { pool_id: 1, created_at: -1, "first_receipt.event_id": -1 }, name: "recent_messages_in_send_order" },
];

export const MESSAGE_SWEEPER_INDEXES: IndexSpec[] = [{ key: { status: 1, deadline_at: 1 }, name: "response_deadlines" }];

export const WAKE_INDEXES: IndexSpec[] = [
  { key: { pool_id: 1, condition_id: 1 }, name: "condition_id_per_pool", unique: true },
  { key: { pool_id: 1, idempotency_key: 1 }, name: "wake_idempotency_key_per_pool", unique: true },
  { key: { pool_id: 1, status: 1, created_at: 1 }, name: "pool_wakes_by_status" },
  { key: { pool_id: 1, created_at: 1, condition_id: 1 }, name: "pool_wakes_in_registration_order" },
];

export const WAKE_SWEEPER_INDEXES: IndexSpec[] = [
  { key: { status: 1, deadline_at: 1 }, name: "wake_deadlines" },
  { key: { status: 1, scanned: 1, created_at: 1 }, name: "unscanned_wakes" },
  // A matcher starting up pages through the registered ones by _id (no blocking sort).
  { key: { status: 1, _id: 1 }, name: "wakes_by_status" },
];

export const POOL_SWEEPER_INDEXES: IndexSpec[] = [{ key: { deleting: 1 }, name: "pools_being_deleted", partialFilterExpression: { deleting: { $exists: true } } }];

export const configToDoc = (c: PoolConfig): StoredConfig => ({
  required_policy_refs: c.requiredPolicyRefs,
  include_sender_in_pool_broadcast: c.includeSenderInPoolBroadcast,
  envelope_only: c.envelopeOnly,
  policy_refs: c.policyRefs,
});

export const configFromDoc = (c: StoredConfig): PoolConfig => ({
  requiredPolicyRefs: c.required_policy_refs,
  includeSenderInPoolBroadcast: c.include_sender_in_pool_broadcast,
  envelopeOnly: c.envelope_only,
  policyRefs: c.policy_refs,
});

export const memberToDoc = (m: Member): StoredMember => ({ run_id: m.runId, agent_id: m.agentId, policy_refs: m.policyRefs, topics: m.topics });
export const memberFromDoc = (m: StoredMember): Member => ({ runId: m.run_id, agentId: m.agent_id, policyRefs: m.policy_refs, topics: m.topics });

export function configToProto(c: StoredConfig): AgentPoolConfig {
  return create(AgentPoolConfigSchema, {
    messagePolicy: { requiredPolicyRefs: c.required_policy_refs.map((id) => ({ id })), includeSenderInPoolBroadcast: c.include_sender_in_pool_broadcast },
    wakePolicy: { envelopeOnly: c.envelope_only },
    policyRefs: c.policy_refs.map((id) => ({ id })),
  });
}

export function memberToProto(m: StoredMember): AgentPoolMember {
  return create(AgentPoolMemberSchema, { runId: m.run_id, agentId: m.agent_id, policyRefs: m.policy_refs.map((id) => ({ id })), topics: m.topics });
}

const cursor = (seq: number | undefined) => (seq === undefined ? undefined : create(JournalCursorSchema, { eventSeq: BigInt(seq) }));

export function messageOf(doc: MessageDoc): RunMessage {
  return fromBinary(RunMessageSchema, doc.message);
}

export function receiptOf(doc: MessageDoc, seq: number | undefined, first = false): MessageReceipt {
  const status = first ? doc.first_receipt.status : doc.status;
  return create(MessageReceiptSchema, {
    messageId: doc.message_id,
    status: STATUS_PROTO[status],
    deliveredTo: first ? doc.first_receipt.delivered_to : doc.delivered_to,
    journalCursor: cursor(seq),
    responseCount: first ? 0 : doc.response_count,
  });
}

export function storedMessageOf(doc: MessageDoc, seq: number | undefined): StoredMessage {
  return create(StoredMessageSchema, { message: messageOf(doc), receipt: receiptOf(doc, seq) });
}

export function conditionOf(doc: WakeDoc): WakeCondition {
  return fromBinary(WakeConditionSchema, doc.condition);
}

export function registrationOf(doc: WakeDoc, seq: number | undefined): WakeRegistration {
  return create(WakeRegistrationSchema, {
    conditionId: doc.condition_id,
    runId: doc.run_id,
    status: WAKE_STATUS_PROTO[doc.status],
    matchedEventId: doc.matched_event_id ?? "",
    journalCursor: cursor(seq),
    deadline: doc.deadline_at === undefined ? undefined : timestampFromMs(doc.deadline_at),
    resumeInput: doc.resume_input ? { eventRefs: doc.resume_input.event_refs, redactedSummary: doc.resume_input.redacted_summary } : undefined,
  });
}

export function storedWakeOf(doc: WakeDoc, seq: number | undefined): StoredWake {
  const condition = conditionOf(doc);
  // The registered condition shows the filter it is matched with (scoped).
  const f = doc.filter;
  condition.filter = create(EventFilterSchema, {
    runIds: f.run_ids ?? [], agentIds: f.agent_ids ?? [], families: f.families ?? [], kinds: f.kinds ?? [], customKinds: f.custom_kinds ?? [],
    tags: f.tags ?? [], threadIds: f.thread_ids ?? [], poolIds: f.pool_ids ?? [], payloadAccess: f.payload_access,
  });
  const scoped = fromPlainFilter(doc.filter);
  return create(StoredWakeSchema, {
    condition,
    registration: registrationOf(doc, seq),
    filterFingerprint: fingerprint(scoped),
    matchesNothing: scoped.runIds !== undefined && scoped.runIds.size === 0,
  });
}

export type PoolRecordBody = AgentPoolRecord["record"];

/** A pool record as journaled with its event (the cursor is the event's position, filled in when read). */
export function poolRecord(poolId: string, now: number, body: PoolRecordBody): Uint8Array {
  return toBinary(AgentPoolRecordSchema, create(AgentPoolRecordSchema, { poolId, recordedAt: timestampFromMs(now), record: body }));
}

/** A kept record as WatchPool sends it: its position, its sequence, and the journal cursor of the status it records. */
export function poolRecordOf(doc: RecordDoc): AgentPoolRecord {
  const record = fromBinary(AgentPoolRecordSchema, doc.record);
  record.cursor = BigInt(doc.journal_seq);
  record.sequence = BigInt(doc.seq);
  const at = cursor(doc.journal_seq);
  if (record.record.case === "message" && record.record.value.receipt) record.record.value.receipt.journalCursor = at;
  if (record.record.case === "wake" && record.record.value.registration) record.record.value.registration.journalCursor = at;
  return record;
}

export const subjectOfMessage = (messageId: string) => ({ kind: EntityKind.MESSAGE, id: messageId });
