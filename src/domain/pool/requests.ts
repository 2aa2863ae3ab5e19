/**
 * Checking PoolService requests that are not a message, member, config or
 * wake condition (those have their own modules).
 */
import type { Duration } from "@bufbuild/protobuf/wkt";
import { SubscriberOverflowPolicy } from "../../../gen/mailroom/v1/event_pb.js";
import { invalidField } from "../errors.js";
import type { QueueConfig } from "../events/subscriber-queue.js";
import { heartbeatInterval, pageSize, requireId } from "../validate.js";

export const DEFAULT_SNAPSHOT_MESSAGES = 100;
export const MAX_SNAPSHOT_MESSAGES = 1000;

/**
 * Inbox and WatchPool streams never drop: a reader that falls behind this
 * many frames lags and catches up from the journal (BACKPRESSURE_CALLER).
 */
export const POOL_STREAM_QUEUE: QueueConfig = { capacity: 1024, terminalReserve: 0, policy: SubscriberOverflowPolicy.BACKPRESSURE_CALLER };

export function parsePoolId(poolId: string): string {
  return requireId("pool_id", poolId);
}

export function parseMaxMessages(value: number): number {
  return pageSize("max_messages", value, DEFAULT_SNAPSHOT_MESSAGES, MAX_SNAPSHOT_MESSAGES);
}

export interface PoolStreamCommand {
  poolId: string;
  after: number;
  heartbeatMs: number;
}

export function parsePoolStream(request: { poolId: string; afterCursor: bigint; heartbeatInterval?: Duration }): PoolStreamCommand {
  const after = Number(request.afterCursor);
  if (!Number.isSafeInteger(after)) throw invalidField("after_cursor", "is out of range");
  return { poolId: parsePoolId(request.poolId), after, heartbeatMs: heartbeatInterval("heartbeat_interval", request.heartbeatInterval) };
}
