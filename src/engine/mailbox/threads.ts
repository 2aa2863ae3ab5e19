/**
 * Threads: each thread's epoch (authoritative) and its readiness hint (see
 * records.ts). The hint's rule: it may claim a thread has work it does not
 * have (a claim attempt then finds nothing and recomputes it), but it must
 * never hide claimable work.
 *
 * - Every change that can add work lowers the head with `$min` once the work
 *   exists (an enqueue also before inserting it, which is when it counts the
 *   work in `queued`), and bumps `version`.
 * - Anything that raises the head (a claim taking the head, a recomputation)
 *   is conditional on the `version` it read, so it never overwrites a change
 *   it did not see.
 * - A claim moves the head to the thread's next dispatch when it records the
 *   claim, so releasing the claim later (an ack) is one write and no read.
 *
 * Batches of threads are written with one bulk write and read back with one
 * find: the cost of a batch does not grow with the threads it touches.
 */
import type { Clock } from "../../domain/clock.js";
import { type BulkUpdate, type Collection, DuplicateKeyError, type Store } from "../../store/port.js";
import type { Logger } from "../logger.js";
import type { PendingEvent } from "../journal/records.js";
import { withEvents } from "../outbox.js";
import { CLAIM_ORDER, DISPATCHES, type DispatchDoc, EPOCH_CLAIM_ORDER, rankOf, THREAD_INDEXES, THREADS, type ThreadDoc } from "./records.js";

/** Rank of a thread with nothing queued: after every real rank. */
export const IDLE_RANK = "~";

export interface Readiness {
  rank: string;
  availableAt: number;
}

/** Work about to be (or just) inserted into a thread. */
export interface Enlistment {
  threadId: string;
  /** How many dispatches (counted in `queued` before they are inserted). */
  count: number;
  /** The best of them, and the earliest time one is available. */
  best: Readiness;
}

/** A claim just taken: the thread as the claimer read it, and the claimed dispatch. */
export interface TakenClaim {
  thread: ThreadDoc;
  dispatch: DispatchDoc;
}

/** A claim that ended; with `requeued`, the dispatch went back to the queue. */
export interface EndedClaim {
  threadId: string;
  dispatchId: string;
  requeued?: DispatchDoc;
  /**
   * Set when the claim may end before its claimer recorded it on the thread
   * (a cancel, a lease reclaim): the claim's token, remembered on the thread
   * so that the late record does not mark the thread busy.
   */
  endedToken?: string;
}

const RECOMPUTE_ATTEMPTS = 5;
/** Claims remembered as ended before they were recorded (see ThreadDoc.ended). */
const ENDED_KEPT = 8;

export class Threads {
  readonly threads: Collection<ThreadDoc>;
  private readonly dispatches: Collection<DispatchDoc>;

  constructor(
    store: Store,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    this.threads = store.collection<ThreadDoc>(THREADS);
    this.dispatches = store.collection<DispatchDoc>(DISPATCHES);
  }

  async init(): Promise<void> {
    await this.threads.createIndexes(THREAD_INDEXES);
  }

  get(threadId: string): Promise<ThreadDoc | null> {
    return this.threads.findOne({ _id: threadId });
  }

  async epoch(threadId: string): Promise<number> {
    return (await this.get(threadId))?.epoch ?? 0;
  }

  /**
   * Lowers the threads' hints to cover work being enqueued; returns each
   * thread as it is now (its current epoch). `before` the insert it also
   * creates the thread and counts the work; after it, it lowers the hint once
   * more (a recomputation may have raised it between the two).
   */
  async enlist(entries: Enlistment[], phase: "before" | "after"): Promise<Map<string, ThreadDoc>> {
    const now = this.clock.now();
    const updateOf = (entry: Enlistment) => ({
      $min: { head_rank: entry.best.rank, ready_at: entry.best.availableAt },
      $inc: phase === "before" ? { version: 1, queued: entry.count } : { version: 1 },
      $set: { updated_at: now },
      ...(phase === "before" ? { $setOnInsert: { epoch: 0, created_at: now } } : {}),
    });
    if (entries.length === 1) {
      const entry = entries[0]!;
      const thread = await this.upsertOne(entry.threadId, updateOf(entry));
      return new Map([[thread._id, thread]]);
    }
    const operations = entries.map((entry) => ({ updateOne: { filter: { _id: entry.threadId }, update: updateOf(entry), upsert: true } }));
    for (let attempt = 0; ; attempt++) {
      const result = await this.threads.bulkWrite(operations as BulkUpdate<ThreadDoc>[]);
      // Two first-ever upserts of a thread can race on MongoDB: the losers update.
      const lost = result.duplicates.map((d) => operations[d.position]!);
      if (lost.length > 0 && attempt < 3) {
        operations.splice(0, operations.length, ...lost);
        continue;
      }
      if (lost.length > 0) throw new DuplicateKeyError(THREADS, "_id_");
      break;
    }
    const threads = await this.threads.find({ _id: { $in: entries.map((e) => e.threadId) } }, { readOwnWrites: true });
    return new Map(threads.map((t) => [t._id, t]));
  }

  /** Bumps the epoch, forgets the old epoch's work and records the interrupt's event. */
  async interrupt(threadId: string, events: (epochBefore: number) => PendingEvent[]): Promise<ThreadDoc> {
    const now = this.clock.now();
    // The event names the epochs, so read the current one first; the update
    // is conditional on it, and retried if another interrupt got in between.
    for (;;) {
      const current = await this.get(threadId);
      const epoch = current?.epoch ?? 0;
      const update = withEvents<ThreadDoc>(
        {
          $inc: { epoch: 1, version: 1 },
          $set: { head_rank: IDLE_RANK, queued: 0, updated_at: now },
          $unset: { ready_at: "" },
          ...(current ? {} : { $setOnInsert: { created_at: now } }),
        },
        events(epoch),
        now,
      );
      // A thread not seen yet: the upsert may only create it. Had another call
      // created it meanwhile, it would bump an epoch this event does not name.
      const filter = current ? { _id: threadId, epoch } : { _id: threadId, epoch: { $exists: false } };
      try {
        const updated = current
          ? await this.threads.findOneAndUpdate(filter, update)
          : await this.threads.findOneAndUpdate(filter, update, { upsert: true });
        if (updated) return updated;
      } catch (error) {
        if (!(error instanceof DuplicateKeyError)) throw error; // lost an upsert race: read again
      }
    }
  }

  /**
   * Records claims on their threads, and moves each thread's head to its
   * next dispatch: without a read when the claimed one was the last counted,
   * else with one indexed read per thread. Then makes sure no thread is left
   * marked with a claim that ended meanwhile.
   */
  async claimed(claims: TakenClaim[]): Promise<void> {
    if (claims.length === 0) return;
    const now = this.clock.now();
    const nexts = await this.nextHeads(claims.map(({ thread }) => thread));
    const operations: BulkUpdate<ThreadDoc>[] = [];
    claims.forEach(({ thread, dispatch }, i) => {
      const record = { claimed: dispatch._id, claim_lease_until: dispatch.lease_until, updated_at: now };
      const free = { _id: thread._id, claimed: null, ended: { $ne: dispatch.claim_token } };
      const next = nexts[i];
      // Exact: nothing changed the thread since the claimer read it.
      const hint = next
        ? { $set: { ...record, head_rank: rankOf(next), ...(thread.queued !== undefined ? { queued: Math.max(1, thread.queued - 1) } : {}), ...(next.available_at <= now ? { ready_at: next.available_at } : {}) } }
        : { $set: { ...record, head_rank: IDLE_RANK, queued: 0 }, $unset: { ready_at: "" as const } };
      operations.push({ updateOne: { filter: { ...free, version: thread.version }, update: hint } });
      // Otherwise (work was added meanwhile) only the claim: the head stays lower, which hides nothing.
      operations.push({ updateOne: { filter: free, update: { $set: record } } });
    });
    await this.threads.bulkWrite(operations, { ordered: true });
  }

  /**
   * Clears the claims of threads whose claimed dispatch finished or went back
   * to the queue (one bulk write). A requeued dispatch is counted and lowers
   * the head whether or not the claim was recorded. A claim that may end
   * before its claimer recorded it is remembered, so the record does not land.
   */
  async released(ended: EndedClaim[]): Promise<void> {
    if (ended.length === 0) return;
    const now = this.clock.now();
    const operations: BulkUpdate<ThreadDoc>[] = [];
    for (const { threadId, dispatchId, requeued, endedToken } of ended) {
      operations.push({ updateOne: { filter: { _id: threadId, claimed: dispatchId }, update: { $unset: { claimed: "", claim_lease_until: "" }, $set: { updated_at: now } } } });
      if (endedToken) operations.push({ updateOne: { filter: { _id: threadId }, update: { $push: { ended: { $each: [endedToken], $slice: -ENDED_KEPT } } } } });
      if (requeued) {
        operations.push({
          updateOne: {
            filter: { _id: threadId },
            update: { $min: { head_rank: rankOf(requeued), ready_at: requeued.available_at }, $inc: { version: 1, queued: 1 } },
          },
        });
      }
    }
    await this.threads.bulkWrite(operations);
  }

  /** Makes the hint exact again (after queued work left without a claim, or a claim attempt found nothing). */
  async recompute(threadId: string): Promise<void> {
    for (let attempt = 0; attempt < RECOMPUTE_ATTEMPTS; attempt++) {
      const thread = await this.get(threadId);
      if (!thread) return;
      const queued = { thread_id: thread._id, status: "QUEUED" as const, epoch: thread.epoch };
      const [head, earliest, count] = await Promise.all([
        this.dispatches.findOne(queued, { sort: CLAIM_ORDER }),
        this.dispatches.findOne(queued, { sort: { available_at: 1 } }),
        this.dispatches.countDocuments(queued),
      ]);
      const hint = head && earliest
        ? { $set: { head_rank: rankOf(head), ready_at: earliest.available_at, queued: count } }
        : { $set: { head_rank: IDLE_RANK, queued: 0 }, $unset: { ready_at: "" as const } };
      const result = await this.threads.updateOne({ _id: threadId, version: thread.version }, hint);
      if (result.matchedCount === 1) return;
    }
    // Others keep changing the thread; each of their changes lowered the hint, so it hides nothing.
    this.log.debug({ thread_id: threadId }, "thread hint recomputation kept being overtaken; left as is");
  }

  /** Threads whose hint says they have claimable work now, best first. */
  async candidates(now: number, limit: number, exclude: ReadonlySet<string>): Promise<ThreadDoc[]> {
    const found = await this.threads.find(
      { claimed: null, head_rank: { $lt: IDLE_RANK }, ready_at: { $lte: now } },
      { sort: { head_rank: 1, _id: 1 }, limit: limit + exclude.size },
    );
    return found.filter((t) => !exclude.has(t._id)).slice(0, limit);
  }

  /** Threads that may have claimable work, by id, after `after` (for listing). */
  async readyAfter(now: number, after: string | undefined, limit: number): Promise<ThreadDoc[]> {
    return this.threads.find(
      { claimed: null, ...(after ? { _id: { $gt: after } } : {}), head_rank: { $lt: IDLE_RANK }, ready_at: { $lte: now } },
      { sort: { _id: 1 }, limit },
    );
  }

  /**
   * Corrects a claim hint left behind by a process that died between
   * finishing a claim and releasing its thread (the repair sweep finds such
   * threads in every namespace): after the claim's lease (plus grace) the
   * dispatch itself says whether the thread is still claimed. True when the
   * claim was released.
   */
  async repairClaim(thread: ThreadDoc): Promise<boolean> {
    const now = this.clock.now();
    const holder = thread.claimed ? await this.dispatches.findOne({ _id: thread.claimed }) : null;
    if (holder && holder.status === "CLAIMED" && holder.thread_id === thread._id) {
      // Still claimed (extended, or awaiting the lease sweeper): refresh the hint.
      await this.threads.updateOne({ _id: thread._id, claimed: holder._id }, { $set: { claim_lease_until: Math.max(holder.lease_until ?? now, now) } });
      return false;
    }
    await this.threads.updateOne({ _id: thread._id, claimed: thread.claimed }, { $unset: { claimed: "", claim_lease_until: "" }, $inc: { version: 1 } });
    await this.recompute(thread._id);
    return true;
  }

  /**
   * Each thread's best queued dispatch of its epoch (claimable now or not),
   * or null: without a read when it counted none left besides the one just
   * claimed, else with one read for all of them.
   */
  private async nextHeads(threads: ThreadDoc[]): Promise<Array<DispatchDoc | null>> {
    const unknown = threads.filter((t) => t.queued === undefined || t.queued > 1);
    const found = unknown.length === 0 ? [] : await this.dispatches.firstOfEach("thread_id", unknown.map((t) => t._id), { status: "QUEUED" }, EPOCH_CLAIM_ORDER);
    const byThread = new Map(found.map((d) => [d.thread_id, d]));
    return threads.map((thread) => {
      const next = byThread.get(thread._id);
      // Only queued work of an older epoch left: it is being superseded.
      return next && next.epoch === thread.epoch ? next : null;
    });
  }

  private async upsertOne(threadId: string, update: object): Promise<ThreadDoc> {
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this.threads.findOneAndUpdate({ _id: threadId }, update, { upsert: true }))!;
      } catch (error) {
        // Two first-ever upserts of a thread can race on MongoDB; the loser updates.
        if (!(error instanceof DuplicateKeyError) || attempt > 2) throw error;
      }
    }
  }
}
