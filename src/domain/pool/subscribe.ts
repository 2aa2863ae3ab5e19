/**
 * SubscribePool requests (seed: AgentPool::subscribe): a member's view of
 * the journal, scoped by the pool. Its cursors carry a scope of their own
 * (the pool, the run and the filter), so they are never mistaken for an
 * EventService subscription's, nor for another member's.
 */
import { StartPosition } from "../../../gen/mailroom/v1/event_service_pb.js";
import type { SubscribePoolRequest } from "../../../gen/mailroom/v1/pool_service_pb.js";
import { invalidField } from "../errors.js";
import { type FilterSpec, fingerprint, parseEventFilter } from "../events/filter.js";
import { parseQueueConfig } from "../events/requests.js";
import { cursorPosition, type Scope } from "../events/scope.js";
import type { QueueConfig } from "../events/subscriber-queue.js";
import { heartbeatInterval, requireId } from "../validate.js";
import { parsePoolId } from "./requests.js";

export interface SubscribePoolCommand {
  poolId: string;
  runId: string;
  /** The filter as asked; the engine narrows it to what the pool lets the member see. */
  filter: FilterSpec;
  scope: Scope;
  after?: number;
  start: "earliest" | "latest";
  queue: QueueConfig;
  heartbeatMs: number;
}

/** The cursor scope of one member's SubscribePool with one filter. */
export function poolScope(poolId: string, runId: string, filter: FilterSpec): Scope {
  // `recipients` is never part of a client's filter: this fingerprint cannot equal an EventService filter's.
  const print = fingerprint({ ...filter, recipients: new Set([`${poolId}\u0000${runId}`]) });
  return { kind: "filter", fingerprint: `p1:${print.slice(print.indexOf(":") + 1)}` };
}

export function parseSubscribePool(request: SubscribePoolRequest): SubscribePoolCommand {
  const poolId = parsePoolId(request.poolId);
  const runId = requireId("run_id", request.runId);
  const filter = parseEventFilter("filter", request.filter);
  if (request.start !== StartPosition.UNSPECIFIED && !Object.values(StartPosition).includes(request.start)) throw invalidField("start", "is not a known start position");
  const scope = poolScope(poolId, runId, filter);
  return {
    poolId,
    runId,
    filter,
    scope,
    after: cursorPosition("after", request.after, scope),
    start: request.start === StartPosition.LATEST ? "latest" : "earliest",
    queue: parseQueueConfig(request.queue),
    heartbeatMs: heartbeatInterval("heartbeat_interval", request.heartbeatInterval),
  };
}
