/**
 * A pool change's journal event: the seed's envelope (poolEvent), carrying
 * the pool record internally for WatchPool and inboxes.
 */
import { type PoolEventFacts, poolEvent } from "../../domain/pool/events.js";
import { type EventExtras, type PendingEvent, pendingEvent } from "../journal/records.js";
import { type PoolRecordBody, poolRecord } from "./records.js";

export function recordEvent(facts: PoolEventFacts, body: PoolRecordBody, extras: EventExtras = {}): PendingEvent {
  return pendingEvent(poolEvent(facts), facts.now, { ...extras, record: poolRecord(facts.poolId, facts.now, body) });
}
