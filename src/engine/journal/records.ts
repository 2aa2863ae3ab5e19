/**
 * How journal events are stored: one document per journal position (`_id` is
 * the event_seq), the event itself as protobuf bytes, and beside it the fields
 * queries and filters need. A position whose writer never completed is filled
 * with a tombstone so readers never wait for it (or skip past it) again.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type AgentEvent, AgentEventSchema, JournalCursorSchema } from "../../../gen/mailroom/v1/event_pb.js";
import type { PlainFilter } from "../../domain/events/filter.js";
import { isProgressKind, isTerminalKind } from "../../domain/events/kinds.js";
import type { Doc } from "../../store/port.js";

export const EVENTS = "events";
export const COUNTERS = "counters";

/** The fields of an event that filters and queries use, stored beside it. */
export interface EventFields {
  event_id: string;
  recorded_ms: number;
  kind: number;
  custom_kind?: string;
  family: number;
  run_id?: string;
  agent_id?: string;
  thread_id?: string;
  dispatch_id?: string;
  pool_id?: string;
  tags?: string[];
  terminal: boolean;
  progress: boolean;
  /**
   * Set by the mailbox on events whose transition made a dispatch claimable
   * (now, or at `at`): the signal it implies (a DispatchSignalReason).
   * Internal: not part of the contract's envelope.
   */
  claimable?: { reason: number; at: number };
  /** Pool events: the pool record (AgentPoolRecord, protobuf, without its cursor) for WatchPool. Internal. */
  record?: Uint8Array;
  /** RUN_MESSAGE_DELIVERED: the runs the message reached (their inboxes). Internal. */
  recipients?: string[];
  /** A deadline the event's entity now carries (response or wake timeout). Internal. */
  due_at?: number;
  /** WAKE_CONDITION_REGISTERED: what the wake matchers need, in journal order. Internal. */
  wake?: { filter: PlainFilter; after_seq: number };
  /** The server instance that journaled it (its own change feed leaves it out: it has it already). Internal. */
  writer?: string;
}

/** The internal fields a producer may attach to an event it journals. */
export type EventExtras = Partial<Pick<EventFields, "claimable" | "record" | "recipients" | "due_at" | "wake">>;

/** An event ready to be journaled (in an outbox, or about to be appended). */
export interface PendingEvent extends EventFields {
  /** The AgentEvent, protobuf-encoded, without event_seq and journal_cursor. */
  event: Uint8Array;
}

export interface EventDoc extends Doc, PendingEvent {
  _id: number;
  /**
   * The namespace whose event it is (the journal is one sequence for all of
   * them; every read of a namespace's events names it). Absent only on
   * events written before namespaces, until the start-up backfill: those are
   * the default namespace's.
   */
  ns?: string;
}

export interface TombstoneDoc extends Doc {
  _id: number;
  tombstone: true;
}

export type JournalDoc = EventDoc | TombstoneDoc;

export function isTombstone(doc: JournalDoc): doc is TombstoneDoc {
  return "tombstone" in doc && doc.tombstone === true;
}

const nonEmpty = (value: string): string | undefined => (value === "" ? undefined : value);

/** Encodes an event (whose envelope already has event_id, kind, family, recorded_at) for the journal. */
export function pendingEvent(event: AgentEvent, recordedMs: number, extras: EventExtras = {}): PendingEvent {
  const envelope = event.envelope;
  if (!envelope) throw new Error("an event needs an envelope");
  const fields: EventFields = {
    event_id: envelope.eventId,
    recorded_ms: recordedMs,
    kind: envelope.kind,
    family: envelope.family,
    terminal: isTerminalKind(envelope.kind),
    progress: isProgressKind(envelope.kind),
  };
  const optional: Array<[keyof EventFields, string | undefined]> = [
    ["custom_kind", nonEmpty(envelope.customKind)],
    ["run_id", nonEmpty(envelope.runId)],
    ["agent_id", nonEmpty(envelope.agentId)],
    ["thread_id", nonEmpty(envelope.threadId)],
    ["dispatch_id", nonEmpty(envelope.dispatchId)],
    ["pool_id", nonEmpty(envelope.poolId)],
  ];
  for (const [key, value] of optional) if (value !== undefined) (fields as unknown as Record<string, unknown>)[key] = value;
  if (envelope.tags.length > 0) fields.tags = [...envelope.tags];
  return { ...fields, ...extras, event: toBinary(AgentEventSchema, event) };
}

/** The event of a journal document, with its position filled in. */
export function eventOf(doc: EventDoc): AgentEvent {
  const event = fromBinary(AgentEventSchema, doc.event);
  if (event.envelope) {
    event.envelope.eventSeq = BigInt(doc._id);
    event.envelope.journalCursor = create(JournalCursorSchema, { eventSeq: BigInt(doc._id) });
  }
  return event;
}
