/**
 * Threads: each thread's epoch (authoritative) and its readiness hint (see
 * records.ts). The hint's rule: it may claim a thread has work it does not
 * have (a claim attempt then finds nothing and recomputes it), but it must
 * never hide claimable work. Every change that can add work lowers it with
 * `$min` once the work exists (an enqueue also before inserting it), and
 * bumps `version`; recomputations are conditional on `version`, so one that
 * read the thread before such a change never overwrites it, and one that read
 * it after sees the work.
 */
import type { Clock } from "../../domain/clock.js";
import { type Collection, DuplicateKeyError, type Store } from "../../store/port.js";
import type { Logger } from "../logger.js";
import type { PendingEvent } from "../journal/records.js";
import { withEvents } from "../outbox.js";
import { CLAIM_ORDER, DISPATCHES, type DispatchDoc, rankOf, THREAD_INDEXES, THREADS, type ThreadDoc } from "./records.js";

/** Rank of a thread with nothing queued: after every real rank. */
export const IDLE_RANK = "~";

export interface Readiness {
  rank: string;
  availableAt: number;
}

const RECOMPUTE_ATTEMPTS = 5;

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
   * Before dispatches are inserted: creates the thread if needed and lowers
   * its hint to cover them. Returns the thread (with its current epoch).
   */
  async enlist(threadId: string, entries: Readiness[]): Promise<ThreadDoc> {
    const now = this.clock.now();
    const best = entries.reduce((a, b) => (b.rank < a ? b.rank : a), IDLE_RANK);
    const earliest = Math.min(...entries.map((e) => e.availableAt));
    return this.upsert(threadId, {
      $min: { head_rank: best, ready_at: earliest },
      $inc: { version: 1 },
      $set: { updated_at: now },
      $setOnInsert: { epoch: 0, created_at: now },
    });
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
          $set: { head_rank: IDLE_RANK, updated_at: now },
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

  /** Records the thread's claim and recomputes its hint (the claimed dispatch left the queue). */
  async claimed(thread: ThreadDoc, dispatch: DispatchDoc): Promise<void> {
    const claim = { claimed: dispatch._id, claim_lease_until: dispatch.lease_until, updated_at: this.clock.now() };
    const hint = await this.computeHint(thread);
    const result = await this.threads.updateOne({ _id: thread._id, version: thread.version }, { $set: { ...claim, ...hint.set }, ...(hint.unset ? { $unset: hint.unset } : {}) });
    if (result.matchedCount !== 1) {
      await this.threads.updateOne({ _id: thread._id }, { $set: claim });
      await this.recompute(thread._id);
    }
    // The claim may have ended (acked, cancelled, reclaimed) before this hint
    // was written: its release then found no hint to clear, and the thread
    // would look busy, its queued work hidden, until the repair sweep (after
    // the lease). So look again, and release it if it is over.
    const current = await this.dispatches.findOne({ _id: dispatch._id });
    if (current?.status !== "CLAIMED" || current.claim_token !== dispatch.claim_token) {
      await this.released(thread._id, dispatch._id, current?.status === "QUEUED" ? current : undefined);
    }
  }

  /** The thread's claim ended; when the dispatch went back to the queue, the hint covers it again. */
  async released(threadId: string, dispatchId: string, requeued?: DispatchDoc): Promise<void> {
    const now = this.clock.now();
    await this.threads.updateOne(
      { _id: threadId, claimed: dispatchId },
      {
        $unset: { claimed: "", claim_lease_until: "" },
        $set: { updated_at: now },
        ...(requeued ? { $min: { head_rank: rankOf(requeued), ready_at: requeued.available_at }, $inc: { version: 1 } } : {}),
      },
    );
  }

  /** Makes the hint exact again (after queued work left without a claim, or a claim attempt found nothing). */
  async recompute(threadId: string): Promise<void> {
    for (let attempt = 0; attempt < RECOMPUTE_ATTEMPTS; attempt++) {
      const thread = await this.get(threadId);
      if (!thread) return;
      const hint = await this.computeHint(thread);
      const result = await this.threads.updateOne({ _id: threadId, version: thread.version }, { $set: hint.set, ...(hint.unset ? { $unset: hint.unset } : {}) });
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
   * Corrects claim hints left behind by a process that died between finishing
   * a claim and releasing its thread: after the claim's lease (plus grace) the
   * dispatch itself says whether the thread is still claimed.
   */
  async repairClaims(graceMs: number, limit: number): Promise<number> {
    const now = this.clock.now();
    const stale = await this.threads.find({ claim_lease_until: { $lt: now - graceMs } }, { sort: { claim_lease_until: 1 }, limit });
    let repaired = 0;
    for (const thread of stale) {
      const holder = thread.claimed ? await this.dispatches.findOne({ _id: thread.claimed }) : null;
      if (holder && holder.status === "CLAIMED" && holder.thread_id === thread._id) {
        // Still claimed (extended, or awaiting the lease sweeper): refresh the hint.
        await this.threads.updateOne({ _id: thread._id, claimed: holder._id }, { $set: { claim_lease_until: Math.max(holder.lease_until ?? now, now) } });
        continue;
      }
      await this.threads.updateOne({ _id: thread._id, claimed: thread.claimed }, { $unset: { claimed: "", claim_lease_until: "" }, $inc: { version: 1 } });
      await this.recompute(thread._id);
      repaired++;
    }
    if (repaired > 0) this.log.info({ threads: repaired }, "released thread claims whose dispatch was no longer claimed");
    return repaired;
  }

  private async computeHint(thread: ThreadDoc): Promise<{ set: Record<string, unknown>; unset?: Record<string, ""> }> {
    const queued = { thread_id: thread._id, status: "QUEUED" as const, epoch: thread.epoch };
    const [head, earliest] = await Promise.all([
      this.dispatches.findOne(queued, { sort: CLAIM_ORDER }),
      this.dispatches.findOne(queued, { sort: { available_at: 1 } }),
    ]);
    if (!head || !earliest) return { set: { head_rank: IDLE_RANK }, unset: { ready_at: "" } };
    return { set: { head_rank: rankOf(head), ready_at: earliest.available_at } };
  }

  private async upsert(threadId: string, update: object): Promise<ThreadDoc> {
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
