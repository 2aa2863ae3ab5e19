/**
 * Pools and their members (seed: open_pool, join_run, leave_run, snapshot).
 * A pool document changes only by updates conditional on its version, so
 * concurrent joins on several server instances never lose one another, and
 * exactly one join marks the pool created.
 */
import { create } from "@bufbuild/protobuf";
import { AgentPoolCreatedSchema, type AgentPoolSnapshot, AgentPoolSnapshotSchema } from "../../../gen/mailroom/v1/pool_pb.js";
import type { Clock } from "../../domain/clock.js";
import { DestinationKind } from "../../../gen/mailroom/v1/common_pb.js";
import { EntityKind, ErrorReason, MailroomError, failedPrecondition, notFound } from "../../domain/errors.js";
import { EventFamily, EventKind } from "../../domain/events/kinds.js";
import { MAX_MEMBERS, type Member, type PoolConfig, sameConfig } from "../../domain/pool/pool.js";
import { type Collection, DuplicateKeyError, type Filter, type Store } from "../../store/port.js";
import type { Journal } from "../journal/journal.js";
import type { JournalDoc } from "../journal/records.js";
import { type Outbox, initialOutbox, withEvents } from "../outbox.js";
import { recordEvent } from "./journaling.js";
import {
  configFromDoc,
  configToDoc,
  configToProto,
  type MessageDoc,
  memberFromDoc,
  memberToDoc,
  memberToProto,
  POOL_MESSAGES,
  POOL_WAKES,
  POOLS,
  type PoolDoc,
  storedMessageOf,
  storedWakeOf,
  type WakeDoc,
} from "./records.js";

const CONTENDED_ATTEMPTS = 16;
/** Most REGISTERED wake conditions a snapshot lists (the oldest). */
const SNAPSHOT_WAKES = 1000;

export class Pools {
  readonly pools: Collection<PoolDoc>;

  constructor(
    store: Store,
    private readonly journal: Journal,
    private readonly outbox: Outbox,
    private readonly clock: Clock,
  ) {
    this.pools = store.collection<PoolDoc>(POOLS);
    this.messages = store.collection<MessageDoc>(POOL_MESSAGES);
    this.wakes = store.collection<WakeDoc>(POOL_WAKES);
  }

  private readonly messages: Collection<MessageDoc>;
  private readonly wakes: Collection<WakeDoc>;

  async init(): Promise<void> {
    await this.outbox.register(POOLS);
  }

  async get(poolId: string): Promise<PoolDoc> {
    const pool = await this.pools.findOne({ _id: poolId });
    if (!pool) throw notFound(EntityKind.AGENT_POOL, poolId, "open it with OpenPool first");
    return pool;
  }

  /** Opens a pool, or re-opens it with the same config; another config is refused. */
  async open(poolId: string, config: PoolConfig): Promise<{ pool: PoolDoc; opened: boolean }> {
    const now = this.clock.now();
    const doc: PoolDoc = {
      _id: poolId,
      config: configToDoc(config),
      created: false,
      members: [],
      version: 0,
      created_at: now,
      updated_at: now,
      ...initialOutbox([recordEvent(
        { kind: EventKind.AGENT_POOL_OPENED, poolId, runId: "", agentId: "", subject: { kind: EntityKind.AGENT_POOL, id: poolId }, policyRefs: config.policyRefs, summary: "agent pool opened", now },
        { case: "opened", value: configToProto(configToDoc(config)) },
      )], now),
    };
    try {
      await this.pools.insertOne(doc);
      await this.outbox.flush(POOLS, [doc]);
      return { pool: doc, opened: true };
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
    }
    const existing = await this.get(poolId);
    if (!sameConfig(configFromDoc(existing.config), config)) {
      throw failedPrecondition(ErrorReason.POOL_CONFIG_CONFLICT, `agent pool ${JSON.stringify(poolId)} exists with another config; a pool's config is fixed once opened`, {
        entity: { kind: EntityKind.AGENT_POOL, id: poolId },
      });
    }
    return { pool: existing, opened: false };
  }

  /** Adds a run (or updates its topics and policies); the first join creates the pool. */
  async join(poolId: string, member: Member): Promise<{ member: Member; poolCreated: boolean; seq: number }> {
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const pool = await this.get(poolId);
      const members = pool.members.filter((m) => m.run_id !== member.runId).concat(memberToDoc(member)).sort((a, b) => (a.run_id < b.run_id ? -1 : 1));
      if (members.length > MAX_MEMBERS) {
        throw new MailroomError("resource_exhausted", `agent pool ${JSON.stringify(poolId)} has ${MAX_MEMBERS} members, its limit`, { reason: ErrorReason.LIMIT_EXCEEDED, metadata: { limit: "members per pool" } });
      }
      const now = this.clock.now();
      const facts = { poolId, runId: member.runId, agentId: member.agentId, subject: { kind: EntityKind.RUN, id: member.runId }, destination: { kind: DestinationKind.RUN, id: member.runId }, policyRefs: pool.config.policy_refs, now };
      const events = [];
      if (!pool.created) events.push(recordEvent({ ...facts, kind: EventKind.AGENT_POOL_CREATED, summary: "agent pool created" }, { case: "created", value: create(AgentPoolCreatedSchema, { runId: member.runId }) }));
      events.push(recordEvent({ ...facts, kind: EventKind.AGENT_POOL_RUN_JOINED, summary: "agent pool membership updated" }, { case: "memberJoined", value: memberToProto(memberToDoc(member)) }));
      const updated = await this.pools.findOneAndUpdate(
        { _id: poolId, version: pool.version },
        withEvents<PoolDoc>({ $set: { members, created: true, updated_at: now }, $inc: { version: 1 } }, events, now),
      );
      if (!updated) continue;
      const positions = await this.outbox.flush(POOLS, [updated]);
      return { member, poolCreated: !pool.created, seq: positions.get(events[events.length - 1]!.event_id) ?? 0 };
    }
    throw contended(poolId);
  }

  /** Removes a run; a non-member is refused. */
  async leave(poolId: string, runId: string): Promise<{ member: Member; seq: number }> {
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const pool = await this.get(poolId);
      const leaving = pool.members.find((m) => m.run_id === runId);
      if (!leaving) throw notMember(poolId, runId);
      const now = this.clock.now();
      const event = recordEvent(
        { kind: EventKind.AGENT_POOL_RUN_LEFT, poolId, runId, agentId: leaving.agent_id, subject: { kind: EntityKind.RUN, id: runId }, destination: { kind: DestinationKind.RUN, id: runId }, policyRefs: pool.config.policy_refs, summary: "agent pool membership updated", now },
        { case: "memberLeft", value: memberToProto(leaving) },
      );
      const updated = await this.pools.findOneAndUpdate(
        { _id: poolId, version: pool.version },
        withEvents<PoolDoc>({ $set: { members: pool.members.filter((m) => m.run_id !== runId), updated_at: now }, $inc: { version: 1 } }, [event], now),
      );
      if (!updated) continue;
      const positions = await this.outbox.flush(POOLS, [updated]);
      return { member: memberFromDoc(leaving), seq: positions.get(event.event_id) ?? 0 };
    }
    throw contended(poolId);
  }

  /** The member a run is, or FAILED_PRECONDITION RUN_NOT_MEMBER. */
  memberOf(pool: PoolDoc, runId: string): Member {
    const member = pool.members.find((m) => m.run_id === runId);
    if (!member) throw notMember(pool._id, runId);
    return memberFromDoc(member);
  }

  /** Position of the pool's latest record (0 when it has none yet). */
  async cursor(poolId: string): Promise<number> {
    const latest = await this.journal.events.findOne({ pool_id: poolId, family: EventFamily.AGENT_POOL } as Filter<JournalDoc>, { sort: { _id: -1 } });
    return latest?._id ?? 0;
  }

  async snapshot(poolId: string, maxMessages: number): Promise<AgentPoolSnapshot> {
    // The cursor before the state: a change made meanwhile is then in the snapshot or after the cursor
    // (WatchPool after it shows it again), never in neither. A change's record is journaled after it.
    const cursor = await this.cursor(poolId);
    const pool = await this.get(poolId);
    const [recent, waiting] = await Promise.all([
      this.messages.find({ pool_id: poolId }, { sort: { created_at: -1, "first_receipt.event_id": -1 }, limit: maxMessages + 1 }),
      this.wakes.find({ pool_id: poolId, status: "REGISTERED" }, { sort: { created_at: 1 }, limit: SNAPSHOT_WAKES + 1 }),
    ]);
    const messages = recent.slice(0, maxMessages).reverse();
    const registered = waiting.slice(0, SNAPSHOT_WAKES);
    const positions = await this.journal.positionsOf([...messages.map((m) => m.status_event_id), ...registered.map((w) => w.status_event_id)]);
    return create(AgentPoolSnapshotSchema, {
      poolId,
      created: pool.created,
      members: pool.members.map(memberToProto),
      topics: [...new Set(pool.members.flatMap((m) => m.topics))].sort(),
      config: configToProto(pool.config),
      messages: messages.map((m) => storedMessageOf(m, positions.get(m.status_event_id))),
      wakes: registered.map((w) => storedWakeOf(w, positions.get(w.status_event_id))),
      cursor: BigInt(cursor),
      messagesTruncated: recent.length > maxMessages,
      wakesTruncated: waiting.length > SNAPSHOT_WAKES,
    });
  }
}

export function notMember(poolId: string, runId: string): MailroomError {
  return failedPrecondition(ErrorReason.RUN_NOT_MEMBER, `run ${JSON.stringify(runId)} is not a member of agent pool ${JSON.stringify(poolId)}; JoinRun first`, {
    entity: { kind: EntityKind.RUN, id: runId },
  });
}

function contended(poolId: string): MailroomError {
  return new MailroomError("unavailable", `agent pool ${JSON.stringify(poolId)} kept changing under this call; retry`, { reason: ErrorReason.STORE_UNAVAILABLE });
}
