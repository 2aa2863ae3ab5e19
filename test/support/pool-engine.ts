/**
 * Helpers for engine-level pool tests: requests in the words of the domain,
 * and a pool's kept history read the way WatchPool reads it.
 */
import { create } from "@bufbuild/protobuf";
import { type AgentEvent, AgentEventSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { RunMessageSchema, WakeConditionSchema } from "../../gen/mailroom/v1/pool_pb.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import { parseMessage } from "../../src/domain/pool/messages.js";
import { parseMember } from "../../src/domain/pool/pool.js";
import { parseWakeCondition } from "../../src/domain/pool/wakes.js";
import type { Engine } from "../../src/engine/engine.js";
import type { RecordDoc } from "../../src/engine/pool/records.js";

export function member(runId: string, fields: { agentId?: string; policies?: string[]; topics?: string[] } = {}) {
  return parseMember("member", {
    $typeName: "mailroom.v1.AgentPoolMember",
    runId,
    agentId: fields.agentId ?? "agent",
    policyRefs: (fields.policies ?? []).map((id) => ({ $typeName: "mailroom.v1.PolicyRef" as const, id })),
    topics: fields.topics ?? [],
  });
}

export function join(engine: Engine, poolId: string, runId: string, fields: Parameters<typeof member>[1] = {}) {
  return engine.pools.join(poolId, member(runId, fields));
}

/** Sends from one member to another run (by run id). */
export function sendTo(engine: Engine, poolId: string, from: string, to: string, fields: Record<string, unknown> = {}) {
  const message = create(RunMessageSchema, { fromRunId: from, to: { target: { case: "runId", value: to } }, ...fields });
  return engine.messages.send(poolId, parseMessage("message", message, poolId, false, engine.clock.now()));
}

export function suspend(engine: Engine, poolId: string, runId: string, fields: Record<string, unknown> = {}) {
  return engine.wakes.suspend(poolId, parseWakeCondition(runId, create(WakeConditionSchema, { runId, ...fields })));
}

export function runEvent(runId: string, kind = EventKind.USAGE_RECORDED, fields: Record<string, unknown> = {}): AgentEvent {
  return create(AgentEventSchema, { envelope: { runId, kind, ...fields }, payload: { case: "redactedSummary", value: `${runId} did something` } });
}

/** Publishes a run's event; its journal position. */
export async function publish(engine: Engine, runId: string, kind?: EventKind, fields: Record<string, unknown> = {}): Promise<number> {
  const { envelope } = await engine.events.publish(parsePublish(runEvent(runId, kind, fields), engine.clock.now()));
  return Number(envelope.eventSeq);
}

/** Resolves once the instance's pool history has kept every record journaled so far (on any instance). */
export async function historyCaughtUp(engine: Engine): Promise<void> {
  const head = await engine.journal.writtenHead();
  await engine.tail.waitFor(head);
  await engine.pools.history.follower.waitFor(head);
}

/** The pool's kept records after a position, as WatchPool reads them up to its caught-up point. */
export async function keptRecords(engine: Engine, poolId: string, from: { afterCursor?: number; afterSequence?: number; recipient?: string } = {}): Promise<RecordDoc[]> {
  const stream = await engine.pools.records(poolId, { afterCursor: from.afterCursor ?? 0, afterSequence: from.afterSequence ?? 0, recipient: from.recipient });
  const abort = new AbortController();
  const records: RecordDoc[] = [];
  try {
    for (;;) {
      const frame = await stream.next(60_000, abort.signal);
      if (!frame || frame.kind !== "record") return records;
      records.push(frame.record);
    }
  } finally {
    stream.close();
  }
}
