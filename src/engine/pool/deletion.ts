/**
 * Deleting a pool (DeletePool): the end of a pool's life, and of the history
 * kept for it. The pool is marked first (AGENT_POOL_DELETED journaled; every
 * call then finds no pool, and the history keeps no new record of it); its
 * REGISTERED wake conditions are cancelled (so AwaitWake streams end); then
 * its messages, wake conditions, members and history are removed, a batch
 * at a time, and the pool document last. A deletion whose process stopped
 * half-way is finished by the pool sweep (any instance, in every namespace).
 */
import type { Collection, Doc, Filter } from "../../store/port.js";
import type { PoolHistoryView } from "./history.js";
import type { PoolMessages } from "./messages.js";
import type { Pools } from "./pools.js";
import { incarnationOf, type PoolDoc } from "./records.js";
import type { Wakes } from "./wakes.js";

const BATCH = 500;

/** One namespace's pool deletions. */
export class PoolDeletion {
  constructor(
    private readonly pools: Pools,
    private readonly messages: PoolMessages,
    private readonly wakes: Wakes,
    private readonly history: PoolHistoryView,
  ) {}

  /** Deletes the pool; NOT_FOUND when there is none. Returns how many wake conditions it cancelled. */
  async delete(poolId: string): Promise<{ cancelledWakes: number }> {
    return this.finish(await this.pools.markDeleted(poolId));
  }

  /** Removes what a marked pool still has (the rest of a deletion, or one whose process stopped half-way). */
  async finish(pool: PoolDoc): Promise<{ cancelledWakes: number }> {
    const poolId = pool._id;
    const cancelledWakes = await this.wakes.cancelAll(poolId);
    await removeAll(this.messages.messages, { pool_id: poolId });
    await removeAll(this.wakes.wakes, { pool_id: poolId });
    await removeAll(this.pools.members.members, { pool_id: poolId });
    await removeAll(this.history.records, { incarnation: incarnationOf(pool) });
    await this.pools.pools.deleteOne({ _id: poolId, deleting: pool.deleting! });
    return { cancelledWakes };
  }
}

/** Deletes every matching document, a batch at a time. */
async function removeAll<T extends Doc>(collection: Collection<T>, filter: Filter<T>): Promise<void> {
  for (;;) {
    const batch = await collection.find(filter, { limit: BATCH });
    if (batch.length === 0) return;
    await collection.deleteMany({ _id: { $in: batch.map((doc) => doc._id) } } as Filter<T>);
  }
}
