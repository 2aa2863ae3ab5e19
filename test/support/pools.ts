/**
 * Helpers for PoolService end-to-end tests: pools and members set up in one
 * call, messages in the words of the contract, and the pool's two record
 * streams (WatchPool, a run's inbox) read a frame at a time or up to the
 * point where they have caught up.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { onTestFinished, expect } from "vitest";
import type { AgentPoolConfigSchema, AgentPoolRecord, MessageReceipt, RunMessageSchema, RunMessage, WakeConditionSchema, WakeCondition, WakeRegistration } from "../../gen/mailroom/v1/pool_pb.js";
import type { AwaitWakeResponse, InboxMessage, PoolService, ReceiveMessagesResponse, WatchPoolResponse } from "../../gen/mailroom/v1/pool_service_pb.js";
import { Frames, ms, uid } from "./mailbox.js";

export type Pools = Client<typeof PoolService>;
export type ConfigInit = Exclude<MessageInitShape<typeof AgentPoolConfigSchema>, { $typeName: string }>;
export type MessageInit = Exclude<MessageInitShape<typeof RunMessageSchema>, RunMessage>;
export type AddressInit = NonNullable<MessageInit["to"]>;
export type ConditionInit = Exclude<MessageInitShape<typeof WakeConditionSchema>, WakeCondition>;

export interface MemberSpec {
  runId: string;
  agentId?: string;
  topics?: string[];
  policies?: string[];
}

/** A member of a pool: its run and agent ids, and the position of its join record. */
export interface Run {
  runId: string;
  agentId: string;
  cursor: bigint;
}

/** Opens a new pool (unique id) and returns its id. */
export async function newPool(pools: Pools, config?: ConfigInit, prefix = "pool"): Promise<string> {
  const poolId = uid(prefix);
  const opened = await pools.openPool({ poolId, config });
  expect(opened.opened).toBe(true);
  return poolId;
}

export async function join(pools: Pools, poolId: string, spec: MemberSpec): Promise<Run> {
  const agentId = spec.agentId ?? `agent-of-${spec.runId}`;
  const response = await pools.joinRun({
    poolId,
    member: { runId: spec.runId, agentId, topics: spec.topics ?? [], policyRefs: (spec.policies ?? []).map((id) => ({ id })) },
  });
  return { runId: spec.runId, agentId, cursor: response.cursor };
}

/** A new pool with members (unique run ids from the given names), by name. */
export async function poolWith<Name extends string>(
  pools: Pools,
  members: Record<Name, Omit<MemberSpec, "runId">>,
  config?: ConfigInit,
): Promise<{ poolId: string; runs: Record<Name, Run> }> {
  const poolId = await newPool(pools, config);
  const runs = {} as Record<Name, Run>;
  for (const [name, spec] of Object.entries(members) as Array<[Name, Omit<MemberSpec, "runId">]>) {
    runs[name] = await join(pools, poolId, { ...spec, runId: uid(name) });
  }
  return { poolId, runs };
}

export const policies = (...ids: string[]) => ids.map((id) => ({ id }));

export async function send(pools: Pools, poolId: string, message: MessageInit): Promise<{ receipt: MessageReceipt; deduplicated: boolean }> {
  const response = await pools.send({ poolId, message });
  return { receipt: response.receipt!, deduplicated: response.deduplicated };
}

export const toRun = (runId: string) => ({ target: { case: "runId" as const, value: runId } });
export const toAgent = (agentId: string) => ({ target: { case: "agentId" as const, value: agentId } });
export const toTopic = (topicId: string) => ({ target: { case: "topicId" as const, value: topicId } });
export const toPool = (poolId: string) => ({ target: { case: "poolId" as const, value: poolId } });

export const body = (text: string) => ({ data: new TextEncoder().encode(text), mediaType: "text/plain" });

// ---- WatchPool --------------------------------------------------------------

export const recordOf = (frame: WatchPoolResponse): AgentPoolRecord | undefined => (frame.frame.case === "record" ? frame.frame.value : undefined);

/** WatchPool after a cursor, closed when the test ends. */
export function watchPool(pools: Pools, poolId: string, afterCursor = 0n): Frames<WatchPoolResponse> {
  const frames = new Frames((signal) => pools.watchPool({ poolId, afterCursor }, { signal }));
  onTestFinished(() => frames.close());
  return frames;
}

/**
 * Every record of the pool after `afterCursor` that was there when the
 * watch began: read until the caught-up heartbeat, then the watch closes.
 */
export async function poolRecords(pools: Pools, poolId: string, afterCursor = 0n): Promise<AgentPoolRecord[]> {
  const frames = new Frames((signal) => pools.watchPool({ poolId, afterCursor }, { signal }));
  try {
    const records: AgentPoolRecord[] = [];
    for (;;) {
      const frame = await frames.next(`records of ${poolId} up to the caught-up heartbeat`);
      if (frame.frame.case === "heartbeat") return records;
      records.push(frame.frame.value!);
    }
  } finally {
    frames.close();
  }
}

/**
 * Every record of the pool up to the one at `cursor`: for records another
 * server instance wrote, which this one may not have caught up with yet.
 */
export async function poolRecordsThrough(pools: Pools, poolId: string, cursor: bigint): Promise<AgentPoolRecord[]> {
  const frames = new Frames((signal) => pools.watchPool({ poolId }, { signal }));
  try {
    return await recordsUntil(frames, (record) => record.cursor >= cursor, `records of ${poolId} through ${cursor}`);
  } finally {
    frames.close();
  }
}

/** Reads WatchPool records until one satisfies `wanted`; returns every record read. */
export async function recordsUntil(frames: Frames<WatchPoolResponse>, wanted: (record: AgentPoolRecord) => boolean, what: string): Promise<AgentPoolRecord[]> {
  const read: AgentPoolRecord[] = [];
  for (;;) {
    const record = await frames.nextMatching(recordOf, `${what} (${read.length} records so far)`);
    read.push(record);
    if (wanted(record)) return read;
  }
}

/** A short description of a record, for comparing record sequences. */
export function describeRecord(record: AgentPoolRecord): string {
  const body = record.record;
  switch (body.case) {
    case "message":
      return `message ${body.value.message?.messageId} ${body.value.receipt?.status}`;
    case "wake":
      return `wake ${body.value.registration?.conditionId} ${body.value.registration?.status}`;
    case "memberJoined":
    case "memberLeft":
      return `${body.case} ${body.value.runId}`;
    case "created":
      return `created by ${body.value.runId}`;
    default:
      return String(body.case);
  }
}

// ---- ReceiveMessages ------------------------------------------------------

export const inboxMessageOf = (frame: ReceiveMessagesResponse): InboxMessage | undefined => (frame.frame.case === "message" ? frame.frame.value : undefined);

/** A run's inbox after a cursor; waits for its first frame (a heartbeat). Closed when the test ends. */
export async function openInbox(pools: Pools, poolId: string, runId: string, afterCursor = 0n): Promise<Frames<ReceiveMessagesResponse>> {
  const frames = new Frames((signal) => pools.receiveMessages({ poolId, runId, afterCursor, heartbeatInterval: ms(60_000) }, { signal }));
  onTestFinished(() => frames.close());
  expect((await frames.next("the inbox's first frame")).frame.case).toBe("heartbeat");
  return frames;
}

export async function inboxMessages(frames: Frames<ReceiveMessagesResponse>, count: number, what: string): Promise<InboxMessage[]> {
  const read: InboxMessage[] = [];
  while (read.length < count) read.push(await frames.nextMatching(inboxMessageOf, `${what}: message ${read.length + 1} of ${count}`));
  return read;
}

// ---- wakes ------------------------------------------------------------------

/** SuspendUntil for `runId` (the condition names the same run). */
export async function suspend(pools: Pools, poolId: string, runId: string, condition: Omit<ConditionInit, "runId">): Promise<{ registration: WakeRegistration; deduplicated: boolean }> {
  const response = await pools.suspendUntil({ poolId, runId, condition: { ...condition, runId } });
  return { registration: response.registration!, deduplicated: response.deduplicated };
}

/** AwaitWake read to its end: every registration frame it sent (heartbeats left out). */
export async function awaitWake(pools: Pools, poolId: string, conditionId: string, timeoutMs = 10_000): Promise<WakeRegistration[]> {
  const frames = new Frames<AwaitWakeResponse>((signal) => pools.awaitWake({ poolId, conditionId }, { signal }));
  const registrations: WakeRegistration[] = [];
  try {
    for (;;) {
      let frame: AwaitWakeResponse;
      try {
        frame = await frames.next(`AwaitWake of ${conditionId}`, timeoutMs);
      } catch (error) {
        if (error instanceof Error && error.message.includes("ended before") && error.message.endsWith("cleanly")) return registrations;
        throw error;
      }
      if (frame.frame.case === "registration") registrations.push(frame.frame.value);
    }
  } finally {
    frames.close();
  }
}

export const seconds = ms;
