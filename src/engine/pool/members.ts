/**
 * A pool's members (seed: join_run, leave_run, members), one document each,
 * so nothing grows in the pool's own document however many runs join (a
 * pool document holding every member passes MongoDB's 16 MiB limit well
 * below the member limit).
 *
 * The member limit holds across server instances without a counter: each
 * member holds one of the pool's MAX_MEMBERS places, and a unique index
 * allows each place once. A member that left keeps its place until its
 * leave record is journaled, then its document goes.
 *
 * The first join marks the pool created: exactly one join flips `created`
 * (an update conditional on it), with AGENT_POOL_CREATED in the pool's
 * outbox; every join journals what the pool's outbox holds before its own
 * record, so the creation always comes first.
 */
import { create } from "@bufbuild/protobuf";
import { DestinationKind } from "../../../gen/mailroom/v1/common_pb.js";
import { AgentPoolCreatedSchema } from "../../../gen/mailroom/v1/pool_pb.js";
import type { Clock } from "../../domain/clock.js";
import { EntityKind, ErrorReason, MailroomError, failedPrecondition } from "../../domain/errors.js";
import { EventKind } from "../../domain/events/kinds.js";
import { MAX_MEMBERS, type Member } from "../../domain/pool/pool.js";
import { type Collection, DuplicateKeyError, type Store } from "../../store/port.js";
import type { NamespaceJournal } from "../journal/journal.js";
import type { PendingEvent } from "../journal/records.js";
import { type NamespaceOutbox, initialOutbox, withEvents } from "../outbox.js";
import { recordEvent } from "./journaling.js";
import { MEMBER_INDEXES, type MemberDoc, memberDocId, memberFromDoc, memberToDoc, memberToProto, POOL_MEMBERS, POOLS, type PoolDoc, type StoredMember } from "./records.js";

const CONTENDED_ATTEMPTS = 16;
/** Random places tried before the taken ones are read to find a free one. */
const RANDOM_PLACES = 4;

export class PoolMembers {
  readonly members: Collection<MemberDoc>;
  private readonly pools: Collection<PoolDoc>;

  constructor(
    store: Store,
    private readonly journal: NamespaceJournal,
    private readonly outbox: NamespaceOutbox,
    private readonly clock: Clock,
    /** The pool, or NOT_FOUND. */
    private readonly pool: (poolId: string) => Promise<PoolDoc>,
  ) {
    this.members = store.collection<MemberDoc>(POOL_MEMBERS);
    this.pools = store.collection<PoolDoc>(POOLS);
  }

  async init(): Promise<void> {
    await this.members.createIndexes(MEMBER_INDEXES);
    await this.outbox.register(POOL_MEMBERS);
  }

  /** The pool's members, by run id. */
  async list(poolId: string): Promise<Member[]> {
    const docs = await this.members.find({ pool_id: poolId, left: { $exists: false } }, { sort: { run_id: 1 }, limit: MAX_MEMBERS });
    return docs.map(memberFromDoc);
  }

  /** The member a run is, or FAILED_PRECONDITION RUN_NOT_MEMBER. */
  async member(poolId: string, runId: string): Promise<Member> {
    const doc = await this.members.findOne({ _id: memberDocId(poolId, runId), left: { $exists: false } });
    if (!doc) throw notMember(poolId, runId);
    return memberFromDoc(doc);
  }

  /** Adds a run (or updates its topics and policies); the first join creates the pool. */
  async join(poolId: string, member: Member): Promise<{ member: Member; poolCreated: boolean; seq: number }> {
    let pool = await this.pool(poolId);
    const poolCreated = !pool.created && (await this.markCreated(pool, member));
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      // The pool's creation is journaled before this join's record (by whichever join gets there first).
      pool = await this.pool(poolId);
      await this.journalPending(pool, EventKind.AGENT_POOL_CREATED);
      const now = this.clock.now();
      const joined = recordEvent(
        { ...facts(pool, member.runId, member.agentId, now), kind: EventKind.AGENT_POOL_RUN_JOINED, summary: "agent pool membership updated" },
        { case: "memberJoined", value: memberToProto(memberToDoc(member)) },
      );
      const id = memberDocId(poolId, member.runId);
      const existing = await this.members.findOne({ _id: id });
      const updated = existing
        ? await this.members.findOneAndUpdate(
          { _id: id, version: existing.version },
          withEvents<MemberDoc>({ $set: { ...memberToDoc(member), updated_at: now }, $unset: { left: "" }, $inc: { version: 1 } }, [joined], now),
        )
        : await this.place(poolId, member, [joined], now);
      if (!updated) continue;
      const positions = await this.outbox.flush(POOL_MEMBERS, [updated]);
      return { member, poolCreated, seq: positions.get(joined.event_id) ?? 0 };
    }
    throw contended(poolId);
  }

  /** Removes a run; a non-member is refused. */
  async leave(poolId: string, runId: string): Promise<{ member: Member; seq: number }> {
    const pool = await this.pool(poolId);
    const id = memberDocId(poolId, runId);
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const leaving = await this.members.findOne({ _id: id, left: { $exists: false } });
      if (!leaving) throw notMember(poolId, runId);
      const now = this.clock.now();
      const left = recordEvent(
        { ...facts(pool, runId, leaving.agent_id, now), kind: EventKind.AGENT_POOL_RUN_LEFT, summary: "agent pool membership updated" },
        { case: "memberLeft", value: memberToProto(leaving) },
      );
      const updated = await this.members.findOneAndUpdate({ _id: id, version: leaving.version }, withEvents<MemberDoc>({ $set: { left: true, updated_at: now }, $inc: { version: 1 } }, [left], now));
      if (!updated) continue;
      const positions = await this.outbox.flush(POOL_MEMBERS, [updated]);
      // Its place is free once the record is journaled (unless it joined again meanwhile).
      await this.members.deleteOne({ _id: id, version: updated.version, left: true });
      return { member: memberFromDoc(leaving), seq: positions.get(left.event_id) ?? 0 };
    }
    throw contended(poolId);
  }

  /** Moves the members a pool document of an earlier version held into documents of their own. */
  async adopt(pool: PoolDoc): Promise<void> {
    const now = this.clock.now();
    for (const member of pool.members ?? []) {
      if (await this.members.findOne({ _id: memberDocId(pool._id, member.run_id) })) continue;
      await this.place(pool._id, memberFromDoc(member), [], now);
    }
    await this.pools.updateOne({ _id: pool._id, members: { $exists: true } }, { $unset: { members: "" } });
  }

  /** Journals the pool's outbox entries of a kind that are not journaled yet (others may be there, not yet cleared). */
  async journalPending(pool: PoolDoc, kind: EventKind): Promise<void> {
    const entries = (pool.outbox ?? []).filter((entry) => entry.kind === kind);
    if (entries.length === 0) return;
    const journaled = await this.journal.positionsOf(entries.map((entry) => entry.event_id));
    const pending = entries.filter((entry) => !journaled.has(entry.event_id));
    if (pending.length > 0) await this.outbox.flush(POOLS, [{ _id: pool._id, outbox: pending }]);
  }

  /**
   * Flips `created` with the creation record in the pool's outbox; true for
   * the one join that did. Its record is journaled by the join's loop.
   */
  private async markCreated(pool: PoolDoc, member: Member): Promise<boolean> {
    const now = this.clock.now();
    const created = recordEvent(
      { ...facts(pool, member.runId, member.agentId, now), kind: EventKind.AGENT_POOL_CREATED, summary: "agent pool created" },
      { case: "created", value: create(AgentPoolCreatedSchema, { runId: member.runId }) },
    );
    const flipped = await this.pools.findOneAndUpdate(
      { _id: pool._id, created: false, deleting: { $exists: false } },
      withEvents<PoolDoc>({ $set: { created: true, updated_at: now } }, [created], now),
    );
    return flipped !== null;
  }

  /**
   * Inserts a new member into a free place: a few random ones first, then
   * one read from the taken ones. Null when the run's document appeared
   * meanwhile (a concurrent join of the same run: the caller tries again).
   * @throws MailroomError RESOURCE_EXHAUSTED when every place is taken.
   */
  private async place(poolId: string, member: Member, events: PendingEvent[], now: number): Promise<MemberDoc | null> {
    for (let attempt = 0; attempt < RANDOM_PLACES + 2; attempt++) {
      const slot = attempt < RANDOM_PLACES ? Math.floor(Math.random() * MAX_MEMBERS) : await this.freePlace(poolId);
      const doc: MemberDoc = { _id: memberDocId(poolId, member.runId), pool_id: poolId, ...memberToDoc(member), slot, version: 0, joined_at: now, updated_at: now };
      if (events.length > 0) Object.assign(doc, initialOutbox(events, now));
      try {
        await this.members.insertOne(doc);
        return doc;
      } catch (error) {
        if (!(error instanceof DuplicateKeyError)) throw error;
        if (error.index === "_id_") return null;
      }
    }
    throw contended(poolId);
  }

  private async freePlace(poolId: string): Promise<number> {
    let taken = await this.members.find({ pool_id: poolId }, { sort: { slot: 1 }, limit: MAX_MEMBERS });
    if (taken.length >= MAX_MEMBERS) {
      // Members that left and whose leave record is journaled may still hold a place (their process stopped in between).
      await this.members.deleteMany({ pool_id: poolId, left: true, outbox_at: { $exists: false } });
      taken = await this.members.find({ pool_id: poolId }, { sort: { slot: 1 }, limit: MAX_MEMBERS });
    }
    const used = new Set(taken.map((doc) => doc.slot));
    for (let slot = 0; slot < MAX_MEMBERS; slot++) if (!used.has(slot)) return slot;
    throw new MailroomError("resource_exhausted", `agent pool ${JSON.stringify(poolId)} has ${MAX_MEMBERS} members, its limit`, { reason: ErrorReason.LIMIT_EXCEEDED, metadata: { limit: "members per pool" } });
  }
}

function facts(pool: PoolDoc, runId: string, agentId: string, now: number) {
  return { poolId: pool._id, runId, agentId, subject: { kind: EntityKind.RUN, id: runId }, destination: { kind: DestinationKind.RUN, id: runId }, policyRefs: pool.config.policy_refs, now };
}

export function notMember(poolId: string, runId: string): MailroomError {
  return failedPrecondition(ErrorReason.RUN_NOT_MEMBER, `run ${JSON.stringify(runId)} is not a member of agent pool ${JSON.stringify(poolId)}; JoinRun first`, {
    entity: { kind: EntityKind.RUN, id: runId },
  });
}

/** Throws FAILED_PRECONDITION RUN_NOT_MEMBER (for `?? notMemberError(...)`). */
export function notMemberError(poolId: string, runId: string): never {
  throw notMember(poolId, runId);
}

export function contended(poolId: string): MailroomError {
  return new MailroomError("unavailable", `agent pool ${JSON.stringify(poolId)} kept changing under this call; retry`, { reason: ErrorReason.STORE_UNAVAILABLE });
}

export type { StoredMember };
