/**
 * EventService requests, checked: which events (scope and filter), from where
 * (cursor or start position), and how a live subscriber's queue is bounded.
 */
import type { ListEventsRequest, SubscribeRequest } from "../../../gen/mailroom/v1/event_service_pb.js";
import { StartPosition } from "../../../gen/mailroom/v1/event_service_pb.js";
import { type SubscriberQueueConfig, SubscriberOverflowPolicy } from "../../../gen/mailroom/v1/event_pb.js";
import { invalidField } from "../errors.js";
import { heartbeatInterval, intInRange, pageSize, requireId } from "../validate.js";
import { EVERYTHING, type FilterSpec, parseEventFilter } from "./filter.js";
import { cursorPosition, filterScope, type Scope } from "./scope.js";
import type { QueueConfig } from "./subscriber-queue.js";

export interface Selection {
  scope: Scope;
  filter: FilterSpec;
}

export const DEFAULT_QUEUE_CAPACITY = 1024;
export const MAX_QUEUE_CAPACITY = 100_000;
export const MAX_FRAMES_PER_MESSAGE = 1000;
export const DEFAULT_LIST_PAGE = 100;
export const MAX_LIST_PAGE = 1000;

type ScopeOneof = SubscribeRequest["scope"] | ListEventsRequest["scope"];

export function parseSelection(scope: ScopeOneof): Selection {
  switch (scope.case) {
    case "all":
      return { scope: { kind: "all" }, filter: EVERYTHING };
    case "runId": {
      const runId = requireId("run_id", scope.value);
      return { scope: { kind: "run", runId }, filter: { ...EVERYTHING, runIds: new Set([runId]) } };
    }
    case "agentId": {
      const agentId = requireId("agent_id", scope.value);
      return { scope: { kind: "agent", agentId }, filter: { ...EVERYTHING, agentIds: new Set([agentId]) } };
    }
    case "filter": {
      const filter = parseEventFilter("filter", scope.value);
      return { scope: filterScope(filter), filter };
    }
    default:
      throw invalidField("scope", "is required: one of all, run_id, agent_id or filter");
  }
}

export function parseQueueConfig(config: SubscriberQueueConfig | undefined): QueueConfig {
  const capacity = !config || config.capacity === 0 ? DEFAULT_QUEUE_CAPACITY : intInRange("queue.capacity", config.capacity, 1, MAX_QUEUE_CAPACITY);
  const terminalReserve = !config || config.terminalReserve === 0
    ? Math.min(16, Math.floor(capacity / 4))
    : intInRange("queue.terminal_reserve", config.terminalReserve, 0, capacity - 1);
  const policy = !config || config.overflow === SubscriberOverflowPolicy.UNSPECIFIED ? SubscriberOverflowPolicy.BACKPRESSURE_CALLER : config.overflow;
  if (!Object.values(SubscriberOverflowPolicy).includes(policy)) throw invalidField("queue.overflow", `is not a known policy (${policy})`);
  return { capacity, terminalReserve, policy };
}

export interface SubscribeCommand extends Selection {
  /** Resume after this position; undefined = use `start`. */
  after?: number;
  start: "earliest" | "latest";
  queue: QueueConfig;
  heartbeatMs: number;
  /** Frames one response may carry; 1 = single frames in `frame`, above 1 = batches in `frames`. */
  maxFramesPerMessage: number;
}

export function parseSubscribe(request: SubscribeRequest): SubscribeCommand {
  const selection = parseSelection(request.scope);
  if (request.start !== StartPosition.UNSPECIFIED && !Object.values(StartPosition).includes(request.start)) throw invalidField("start", "is not a known start position");
  return {
    ...selection,
    after: cursorPosition("after", request.after, selection.scope),
    start: request.start === StartPosition.LATEST ? "latest" : "earliest",
    queue: parseQueueConfig(request.queue),
    heartbeatMs: heartbeatInterval("heartbeat_interval", request.heartbeatInterval),
    maxFramesPerMessage: Math.max(1, intInRange("max_frames_per_message", request.maxFramesPerMessage, 0, MAX_FRAMES_PER_MESSAGE)),
  };
}

export interface ListCommand extends Selection {
  after?: number;
  /** Inclusive; undefined = the live edge. */
  until?: number;
  pageSize: number;
}

export function parseListEvents(request: ListEventsRequest): ListCommand {
  const selection = parseSelection(request.scope);
  const until = Number(request.untilEventSeq);
  if (!Number.isSafeInteger(until)) throw invalidField("until_event_seq", "is out of range");
  return {
    ...selection,
    after: cursorPosition("after", request.after, selection.scope),
    until: until === 0 ? undefined : until,
    pageSize: pageSize("page_size", request.pageSize, DEFAULT_LIST_PAGE, MAX_LIST_PAGE),
  };
}
