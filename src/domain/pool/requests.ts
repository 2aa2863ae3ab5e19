/**
 * Checking PoolService requests that are not a message, member, config or
 * wake condition (those have their own modules).
 */
import type { Duration } from "@bufbuild/protobuf/wkt";
import { invalidField } from "../errors.js";
import { heartbeatInterval, pageSize, requireId } from "../validate.js";

export const DEFAULT_SNAPSHOT_MESSAGES = 100;
export const MAX_SNAPSHOT_MESSAGES = 1000;

export function parsePoolId(poolId: string): string {
  return requireId("pool_id", poolId);
}

export function parseMaxMessages(value: number): number {
  return pageSize("max_messages", value, DEFAULT_SNAPSHOT_MESSAGES, MAX_SNAPSHOT_MESSAGES);
}

export interface PoolStreamCommand {
  poolId: string;
  /** After this journal position (0 = from the first record). */
  afterCursor: number;
  /** After this record number (0 = not given). */
  afterSequence: number;
  heartbeatMs: number;
}

function position(field: string, value: bigint): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw invalidField(field, "is out of range");
  return n;
}

export function parsePoolStream(request: { poolId: string; afterCursor: bigint; afterSequence?: bigint; heartbeatInterval?: Duration }): PoolStreamCommand {
  const afterCursor = position("after_cursor", request.afterCursor);
  const afterSequence = position("after_sequence", request.afterSequence ?? 0n);
  if (afterCursor > 0 && afterSequence > 0) throw invalidField("after_sequence", "give after_cursor or after_sequence, not both");
  return { poolId: parsePoolId(request.poolId), afterCursor, afterSequence, heartbeatMs: heartbeatInterval("heartbeat_interval", request.heartbeatInterval) };
}
