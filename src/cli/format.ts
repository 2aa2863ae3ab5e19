/**
 * One human-readable line per record: the id first, the status or kind
 * (coloured on a terminal), then `key=value` for what is set.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type RunDispatch, RunDispatchStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import { type EventEnvelope, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import type { AgentPoolMember, AgentPoolSnapshot } from "../../gen/mailroom/v1/pool_pb.js";
import type { Paint } from "./output.js";

export function time(timestamp: Timestamp | undefined): string {
  return timestamp ? timestampDate(timestamp).toISOString() : "";
}

/** `key=value` for each value that is set (non-empty), separated by spaces. */
function fields(pairs: Array<[string, string | number | bigint | undefined]>): string {
  return pairs
    .filter(([, value]) => value !== undefined && value !== "")
    .map(([key, value]) => `${key}=${String(value)}`)
    .join(" ");
}

export function statusName(status: RunDispatchStatus): string {
  return RunDispatchStatus[status] ?? String(status);
}

function paintStatus(paint: Paint, status: RunDispatchStatus): string {
  const name = statusName(status);
  switch (status) {
    case RunDispatchStatus.QUEUED:
      return paint.cyan(name);
    case RunDispatchStatus.CLAIMED:
      return paint.yellow(name);
    case RunDispatchStatus.ACKED:
      return paint.green(name);
    case RunDispatchStatus.DEAD_LETTER:
      return paint.red(name);
    default:
      return paint.dim(name);
  }
}

export function dispatchLine(paint: Paint, dispatch: RunDispatch): string {
  const claimed = dispatch.status === RunDispatchStatus.CLAIMED;
  return [
    paint.bold(dispatch.dispatchId),
    paintStatus(paint, dispatch.status),
    fields([
      ["thread", dispatch.threadId],
      ["run", dispatch.runId],
      ["agent", dispatch.agentId],
      ["priority", dispatch.priority],
      ["attempts", `${dispatch.attemptCount}/${dispatch.maxAttempts}`],
      ["epoch", dispatch.dispatchEpoch],
      ["claimed_by", claimed ? dispatch.claimedBy : undefined],
      ["claim_token", claimed ? dispatch.claimToken : undefined],
      ["lease_until", claimed ? time(dispatch.leaseUntil) : undefined],
      ["last_error", dispatch.lastError && JSON.stringify(dispatch.lastError)],
    ]),
  ].join(" ");
}

export function kindName(envelope: EventEnvelope): string {
  if (envelope.kind === EventKind.CUSTOM && envelope.customKind) return `CUSTOM:${envelope.customKind}`;
  return EventKind[envelope.kind] ?? String(envelope.kind);
}

function paintKind(paint: Paint, envelope: EventEnvelope): string {
  const name = kindName(envelope);
  if (/(ACKED|COMPLETED|RESPONDED|DELIVERED|TRIGGERED)$/.test(name)) return paint.green(name);
  if (/(FAILED|DEAD_LETTERED|EXPIRED|TIMED_OUT)$/.test(name)) return paint.red(name);
  if (/(CANCELLED|SUPERSEDED|INTERRUPTED|NACKED)$/.test(name)) return paint.yellow(name);
  return paint.cyan(name);
}

/** A state as an event records it, without its enum's prefix: RUN_DISPATCH_STATUS_QUEUED -> QUEUED. */
function shortState(state: string): string {
  return state.replace(/^[A-Z_]*_STATUS_/, "") || "-";
}

export function eventLine(paint: Paint, envelope: EventEnvelope): string {
  const transition = envelope.stateBefore || envelope.stateAfter ? `${shortState(envelope.stateBefore)}->${shortState(envelope.stateAfter)}` : undefined;
  return [
    paint.dim(time(envelope.recordedAt)),
    paint.bold(`#${envelope.eventSeq}`),
    paintKind(paint, envelope),
    fields([
      ["thread", envelope.threadId],
      ["dispatch", envelope.dispatchId],
      ["run", envelope.runId],
      ["agent", envelope.agentId],
      ["pool", envelope.poolId],
      ["message", envelope.messageId],
      ["state", transition],
    ]),
  ]
    .filter((part) => part !== "")
    .join(" ");
}

export function memberLine(paint: Paint, member: AgentPoolMember): string {
  return `${paint.dim("member")} ${paint.bold(member.runId)} ${fields([
    ["agent", member.agentId],
    ["topics", member.topics.join(",")],
    ["policies", member.policyRefs.map((ref) => ref.id).join(",")],
  ])}`.trimEnd();
}

export function poolLines(paint: Paint, snapshot: AgentPoolSnapshot): string[] {
  const head = [
    paint.bold(snapshot.poolId),
    snapshot.created ? paint.green("created") : paint.cyan("open"),
    fields([
      ["members", snapshot.members.length],
      ["topics", snapshot.topics.join(",")],
      ["messages", `${snapshot.messages.length}${snapshot.messagesTruncated ? "+" : ""}`],
      ["wakes", `${snapshot.wakes.length}${snapshot.wakesTruncated ? "+" : ""}`],
      ["cursor", snapshot.cursor],
    ]),
  ].join(" ");
  return [head, ...snapshot.members.map((member) => memberLine(paint, member))];
}
