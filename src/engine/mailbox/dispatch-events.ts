/**
 * The journal events of dispatch transitions, as outbox entries.
 *
 * A transition writes a compact entry (kind, statuses, summary, time) into the
 * dispatch with its conditional update; the event itself is built from the
 * entry and the dispatch when the outbox is flushed. So a transition need not
 * read the dispatch first to know its run and agent (an ack, a bulk claim),
 * and a dispatch carries a few dozen bytes per pending event, not the
 * encoded event.
 */
import { EventFamily, EventKind } from "../../../gen/mailroom/v1/event_pb.js";
import { DISPATCH_EVENT_TAGS, encodeDispatchEvent } from "../../domain/dispatch/events.js";
import { isProgressKind, isTerminalKind } from "../../domain/events/kinds.js";
import type { DispatchStatus } from "../../domain/dispatch/state.js";
import { newId } from "../../domain/ids.js";
import type { Doc } from "../../store/port.js";
import type { PendingEvent } from "../journal/records.js";
import type { CompactEntry } from "../outbox.js";
import type { DispatchDoc } from "./records.js";

export interface DispatchEntrySpec {
  kind: EventKind;
  before?: DispatchStatus;
  after: DispatchStatus;
  summary: string;
  now: number;
  /** The transition made the dispatch claimable (at `at`): the signal it implies (a DispatchSignalReason). */
  claimable?: { reason: number; at: number };
}

export function dispatchEntry(spec: DispatchEntrySpec): CompactEntry {
  const entry: CompactEntry = { event_id: newId(), kind: spec.kind, at: spec.now, after: spec.after, summary: spec.summary };
  if (spec.before) entry.before = spec.before;
  if (spec.claimable) entry.claimable = spec.claimable;
  return entry;
}

/** The outbox materializer of the dispatches collection. */
export function materializeDispatchEvent(doc: Doc, entry: CompactEntry): PendingEvent {
  const dispatch = doc as DispatchDoc;
  const event = encodeDispatchEvent(
    { dispatchId: dispatch._id, threadId: dispatch.thread_id, runId: dispatch.run_id, agentId: dispatch.agent_id },
    {
      kind: entry.kind,
      before: entry.before as DispatchStatus | undefined,
      after: entry.after as DispatchStatus,
      summary: summaryOf(dispatch, entry),
      now: entry.at,
      eventId: entry.event_id,
    },
  );
  // The fields pendingEvent() would read back from the envelope.
  const pending: PendingEvent = {
    event_id: entry.event_id,
    recorded_ms: entry.at,
    kind: entry.kind,
    family: EventFamily.MAILBOX,
    terminal: isTerminalKind(entry.kind),
    progress: isProgressKind(entry.kind),
    run_id: dispatch.run_id,
    thread_id: dispatch.thread_id,
    dispatch_id: dispatch._id,
    tags: [...DISPATCH_EVENT_TAGS],
    event,
  };
  if (dispatch.agent_id) pending.agent_id = dispatch.agent_id;
  if (entry.claimable) pending.claimable = entry.claimable;
  return pending;
}

/**
 * An ack is written without reading the dispatch, so its summary is told
 * here, from the acked dispatch: acked is final, so every flush tells the same.
 */
function summaryOf(dispatch: DispatchDoc, entry: CompactEntry): string {
  if (entry.kind === EventKind.DISPATCH_ACKED && dispatch.status === "ACKED") {
    return `acked by ${dispatch.claimed_by ?? "its worker"} after attempt ${dispatch.attempt_count} of ${dispatch.max_attempts}`;
  }
  return entry.summary;
}

