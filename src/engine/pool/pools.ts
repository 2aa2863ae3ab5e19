/**
 * Pools (seed: open_pool, snapshot, the pool store's watch): opening, the
 * snapshot, the kept history's readers, and the start of a deletion. Members
 * are in members.ts, the rest of a deletion in deletion.ts.
 */
import { create } from "@bufbuild/protobuf";
import { type AgentPoolSnapshot, AgentPoolSnapshotSchema } from "../../../gen/mailroom/v1/pool_pb.js";
import type { Clock } from "../../domain/clock.js";
import { EntityKind, ErrorReason, MailroomError, failedPrecondition, notFound } from "../../domain/errors.js";
import { EventFamily, EventKind } from "../../domain/events/kinds.js";
import { poolEvent } from "../../domain/pool/events.js";
import type { Member, PoolConfig } from "../../domain/pool/pool.js";
import { sameConfig } from "../../domain/pool/pool.js";
import { type Collection, DuplicateKeyError, type Store } from "../../store/port.js";
import { checkCursorNotAhead } from "../events/events.js";
import type { NamespaceJournal } from "../journal/journal.js";
import { pendingEvent } from "../journal/records.js";
import { type NamespaceOutbox, initialOutbox, withEvents } from "../outbox.js";
import type { PoolHistoryView } from "./history.js";
import { recordEvent } from "./journaling.js";
import { PoolMembers } from "./members.js";
import { PoolRecordStream } from "./record-stream.js";
import {
  configFromDoc,
  configToDoc,
  configToProto,
  incarnationOf,
  type MessageDoc,
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

/** Most REGISTERED wake conditions a snapshot lists (the oldest). */
const SNAPSHOT_WAKES = 1000;

/** One namespace's pools (its store is the namespace's view). */
export class Pools {
  readonly pools: Collection<PoolDoc>;
  readonly members: PoolMembers;
  private readonly messages: Collection<MessageDoc>;
  private readonly wakes: Collection<WakeDoc>;

  constructor(
    store: Store,
    private readonly journal: NamespaceJournal,
    private readonly outbox: NamespaceOutbox,
    private readonly clock: Clock,
    readonly history: PoolHistoryView,
  ) {
    this.pools = store.collection<PoolDoc>(POOLS);
    this.messages = store.collection<MessageDoc>(POOL_MESSAGES);
    this.wakes = store.collection<WakeDoc>(POOL_WAKES);
    this.members = new PoolMembers(store, journal, outbox, clock, (poolId) => this.get(poolId));
  }

  /** Registers with the outbox and creates the members' namespace-first indexes (every namespace's). */
  async init(): Promise<void> {
    await this.outbox.register(POOLS);
    await this.members.init();
  }

  /** The pool; NOT_FOUND when there is none (or it is being deleted). */
  async get(poolId: string): Promise<PoolDoc> {
    const pool = await this.pools.findOne({ _id: poolId });
    if (!pool || pool.deleting !== undefined) throw notFound(EntityKind.AGENT_POOL, poolId, "open it with OpenPool first");
    if ((pool.members?.length ?? 0) > 0) await this.members.adopt(pool);
    return pool;
  }

  /** Opens a pool, or re-opens it with the same config; another config is refused. */
  async open(poolId: string, config: PoolConfig): Promise<{ pool: PoolDoc; opened: boolean }> {
    const now = this.clock.now();
    const opened = recordEvent(
      { kind: EventKind.AGENT_POOL_OPENED, poolId, runId: "", agentId: "", subject: { kind: EntityKind.AGENT_POOL, id: poolId }, policyRefs: config.policyRefs, summary: "agent pool opened", now },
      { case: "opened", value: configToProto(configToDoc(config)) },
    );
    const doc: PoolDoc = {
      _id: poolId,
      incarnation: opened.event_id,
      config: configToDoc(config),
      created: false,
      created_at: now,
      updated_at: now,
      ...initialOutbox([opened], now),
    };
    try {
      await this.pools.insertOne(doc);
      await this.outbox.flush(POOLS, [doc]);
      return { pool: doc, opened: true };
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
    }
    const existing = await this.pools.findOne({ _id: poolId });
    if (existing?.deleting !== undefined) {
      throw new MailroomError("unavailable", `agent pool ${JSON.stringify(poolId)} is being deleted; retry once it is gone`, { reason: ErrorReason.STORE_UNAVAILABLE });
    }
    if (!sameConfig(configFromDoc((await this.get(poolId)).config), config)) {
      throw failedPrecondition(ErrorReason.POOL_CONFIG_CONFLICT, `agent pool ${JSON.stringify(poolId)} exists with another config; a pool's config is fixed once opened`, {
        entity: { kind: EntityKind.AGENT_POOL, id: poolId },
      });
    }
    return { pool: await this.get(poolId), opened: false };
  }

  /** Adds a run (or updates its topics and policies); the first join creates the pool. */
  join(poolId: string, member: Member): Promise<{ member: Member; poolCreated: boolean; seq: number }> {
    return this.members.join(poolId, member);
  }

  /** Removes a run; a non-member is refused. */
  leave(poolId: string, runId: string): Promise<{ member: Member; seq: number }> {
    return this.members.leave(poolId, runId);
  }

  /**
   * Marks the pool deleted (AGENT_POOL_DELETED journaled): from then on it is
   * NOT_FOUND to every call. Returns the marked pool (also when a deletion
   * that stopped half-way is asked again); NOT_FOUND when there is none.
   */
  async markDeleted(poolId: string): Promise<PoolDoc> {
    const now = this.clock.now();
    const event = pendingEvent(poolEvent({ kind: EventKind.AGENT_POOL_DELETED, poolId, runId: "", agentId: "", subject: { kind: EntityKind.AGENT_POOL, id: poolId }, summary: "agent pool deleted", now }), now);
    const marked = await this.pools.findOneAndUpdate({ _id: poolId, deleting: { $exists: false } }, withEvents<PoolDoc>({ $set: { deleting: now, updated_at: now } }, [event], now));
    const pool = marked ?? (await this.pools.findOne({ _id: poolId }));
    if (!pool) throw notFound(EntityKind.AGENT_POOL, poolId);
    await this.members.journalPending(pool, EventKind.AGENT_POOL_DELETED);
    return pool;
  }

  /** Position of the pool's latest record, and the latest kept record's number (0 when none). */
  async cursor(poolId: string, incarnation: string): Promise<{ cursor: number; sequence: number }> {
    // The journal has a record before the history keeps it; the history has it after retention deleted it from the journal.
    const [journaled, kept] = await Promise.all([
      this.journal.latestOfPool(poolId, EventFamily.AGENT_POOL),
      this.history.last(incarnation),
    ]);
    return { cursor: Math.max(journaled?._id ?? 0, kept?.journal_seq ?? 0), sequence: kept?.seq ?? 0 };
  }

  /**
   * A reader of the pool's kept records (WatchPool, or a run's inbox) after a
   * journal position or a record number; NOT_FOUND for an unknown pool,
   * OUT_OF_RANGE (CURSOR_AHEAD) for a position or number not reached yet.
   */
  async records(poolId: string, from: { afterCursor: number; afterSequence: number; recipient?: string }): Promise<PoolRecordStream> {
    const pool = await this.get(poolId);
    const incarnation = incarnationOf(pool);
    if (from.afterCursor > 0) await checkCursorNotAhead(this.journal, from.afterCursor);
    let afterSeq = from.afterSequence;
    if (afterSeq > 0) {
      const latest = (await this.history.last(incarnation))?.seq ?? 0;
      if (afterSeq > latest) {
        throw new MailroomError("out_of_range", `after_sequence ${afterSeq} is beyond agent pool ${JSON.stringify(poolId)}'s latest record (${latest})`, {
          reason: ErrorReason.CURSOR_AHEAD,
          field: "after_sequence",
          metadata: { latest_sequence: String(latest) },
        });
      }
    } else if (from.afterCursor > 0 && from.recipient === undefined) {
      afterSeq = (await this.history.lastAt(poolId, incarnation, from.afterCursor))?.seq ?? 0;
    }
    return new PoolRecordStream(this.history, { poolId, incarnation, recipient: from.recipient, afterSeq, afterCursor: from.afterCursor });
  }

  async snapshot(poolId: string, maxMessages: number): Promise<AgentPoolSnapshot> {
    // The cursor before the state: a change made meanwhile is then in the snapshot or after the cursor
    // (WatchPool after it shows it again), never in neither. A change's record is journaled after it.
    const { cursor, sequence } = await this.cursor(poolId, incarnationOf(await this.get(poolId)));
    const pool = await this.get(poolId);
    const [members, recent, waiting] = await Promise.all([
      this.members.list(poolId),
      this.messages.find({ pool_id: poolId }, { sort: { created_at: -1, "first_receipt.event_id": -1 }, limit: maxMessages + 1 }),
      this.wakes.find({ pool_id: poolId, status: "REGISTERED" }, { sort: { created_at: 1 }, limit: SNAPSHOT_WAKES + 1 }),
    ]);
    const messages = recent.slice(0, maxMessages).reverse();
    const registered = waiting.slice(0, SNAPSHOT_WAKES);
    const positions = await this.journal.positionsOf([...messages.map((m) => m.status_event_id), ...registered.map((w) => w.status_event_id)]);
    return create(AgentPoolSnapshotSchema, {
      poolId,
      created: pool.created,
      members: members.map((m) => memberToProto(memberToDoc(m))),
      topics: [...new Set(members.flatMap((m) => m.topics))].sort(),
      config: configToProto(pool.config),
      messages: messages.map((m) => storedMessageOf(m, positions.get(m.status_event_id))),
      wakes: registered.map((w) => storedWakeOf(w, positions.get(w.status_event_id))),
      cursor: BigInt(cursor),
      sequence: BigInt(sequence),
      messagesTruncated: recent.length > maxMessages,
      wakesTruncated: waiting.length > SNAPSHOT_WAKES,
    });
  }
}
