/**
 * Facts about event kinds: which family each belongs to, which are terminal
 * (an entity reached a terminal state), which are progress (high-rate, the
 * first to go when a subscriber overflows) and which only the server records.
 */
import { EventFamily, EventKind } from "../../../gen/mailroom/v1/event_pb.js";

export { EventFamily, EventKind };

const families: ReadonlyArray<[EventFamily, readonly EventKind[]]> = [
  [EventFamily.AGENT_POOL, [
    EventKind.AGENT_POOL_OPENED, EventKind.AGENT_POOL_CREATED, EventKind.AGENT_POOL_RUN_JOINED, EventKind.AGENT_POOL_RUN_LEFT,
    EventKind.RUN_MESSAGE_ACCEPTED, EventKind.RUN_MESSAGE_DELIVERED, EventKind.RUN_MESSAGE_RESPONDED, EventKind.RUN_MESSAGE_FAILED,
    EventKind.RUN_MESSAGE_TIMED_OUT, EventKind.RUN_MESSAGE_EXPIRED, EventKind.RUN_MESSAGE_CANCELLED,
    EventKind.WAKE_CONDITION_REGISTERED, EventKind.WAKE_CONDITION_TRIGGERED, EventKind.WAKE_CONDITION_TIMED_OUT,
    EventKind.WAKE_CONDITION_CANCELLED, EventKind.WAKE_CONDITION_FAILED, EventKind.AGENT_POOL_DELETED,
  ]],
  [EventFamily.MAILBOX, [
    EventKind.DISPATCH_ENQUEUED, EventKind.DISPATCH_CLAIMED, EventKind.DISPATCH_STARTED, EventKind.DISPATCH_RESULT_RECORDED,
    EventKind.DISPATCH_ACKED, EventKind.DISPATCH_NACKED, EventKind.DISPATCH_DEAD_LETTERED, EventKind.DISPATCH_CANCELLED,
    EventKind.DISPATCH_SUPERSEDED, EventKind.DISPATCH_LEASE_EXTENDED, EventKind.DISPATCH_LEASE_EXPIRED, EventKind.THREAD_INTERRUPTED,
  ]],
  [EventFamily.RUN, [EventKind.RUN_STARTED, EventKind.RUN_COMPLETED, EventKind.RUN_FAILED, EventKind.RUN_CANCELLED]],
  [EventFamily.MODEL, [EventKind.MODEL_STREAM_DELTA]],
  [EventFamily.STREAM, [EventKind.STREAM_RULE_REPEAT_STATE_RECORDED]],
  [EventFamily.REALTIME, [EventKind.REALTIME_INPUT_SENT, EventKind.REALTIME_OUTPUT_RECEIVED, EventKind.REALTIME_BACKPRESSURE_APPLIED]],
  [EventFamily.ISOLATION, [EventKind.ISOLATION_PROCESS_IO_CAPTURED, EventKind.ISOLATION_PROCESS_STATS_RECORDED]],
  [EventFamily.USAGE, [EventKind.USAGE_RECORDED, EventKind.COST_ESTIMATED, EventKind.COST_CORRECTED]],
  [EventFamily.CUSTOM, [EventKind.CUSTOM]],
];

const familyByKind = new Map<EventKind, EventFamily>(families.flatMap(([family, kinds]) => kinds.map((kind) => [kind, family] as const)));

const terminalKinds = new Set<EventKind>([
  EventKind.DISPATCH_ACKED, EventKind.DISPATCH_DEAD_LETTERED, EventKind.DISPATCH_CANCELLED, EventKind.DISPATCH_SUPERSEDED,
  EventKind.RUN_COMPLETED, EventKind.RUN_FAILED, EventKind.RUN_CANCELLED,
  EventKind.RUN_MESSAGE_DELIVERED, EventKind.RUN_MESSAGE_RESPONDED, EventKind.RUN_MESSAGE_FAILED,
  EventKind.RUN_MESSAGE_TIMED_OUT, EventKind.RUN_MESSAGE_EXPIRED, EventKind.RUN_MESSAGE_CANCELLED,
  EventKind.WAKE_CONDITION_TRIGGERED, EventKind.WAKE_CONDITION_TIMED_OUT, EventKind.WAKE_CONDITION_CANCELLED, EventKind.WAKE_CONDITION_FAILED,
  EventKind.AGENT_POOL_DELETED,
]);

// The seed's `is_progress_event`.
const progressKinds = new Set<EventKind>([
  EventKind.MODEL_STREAM_DELTA, EventKind.STREAM_RULE_REPEAT_STATE_RECORDED, EventKind.REALTIME_INPUT_SENT,
  EventKind.REALTIME_OUTPUT_RECEIVED, EventKind.REALTIME_BACKPRESSURE_APPLIED, EventKind.ISOLATION_PROCESS_IO_CAPTURED,
  EventKind.ISOLATION_PROCESS_STATS_RECORDED, EventKind.USAGE_RECORDED, EventKind.COST_ESTIMATED, EventKind.COST_CORRECTED,
]);

/** The family of a kind; UNSPECIFIED for UNSPECIFIED or an unknown number. */
export function familyOf(kind: EventKind): EventFamily {
  return familyByKind.get(kind) ?? EventFamily.UNSPECIFIED;
}

export function isKnownKind(kind: EventKind): boolean {
  return familyByKind.has(kind);
}

/** Records an entity reaching a terminal state; overflow policies protect these. */
export function isTerminalKind(kind: EventKind): boolean {
  return terminalKinds.has(kind);
}

/** High-rate progress; DROP_PROGRESS and SUMMARIZE_AND_CONTINUE act on these. */
export function isProgressKind(kind: EventKind): boolean {
  return progressKinds.has(kind);
}

/** Kinds only the server records (mailbox and pool state changes); Publish refuses them. */
export function isServerOwnedKind(kind: EventKind): boolean {
  const family = familyOf(kind);
  return family === EventFamily.AGENT_POOL || family === EventFamily.MAILBOX;
}

/** Every kind with its family, for exhaustive tests and docs. */
export function allKinds(): ReadonlyArray<{ kind: EventKind; family: EventFamily }> {
  return [...familyByKind].map(([kind, family]) => ({ kind, family }));
}
