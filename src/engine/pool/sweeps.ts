/**
 * The pool sweeps' store-wide side: what is due (response deadlines, wake
 * deadlines, registrations whose registrant stopped before scanning, pool
 * deletions whose process stopped) is found across every namespace at once,
 * through store-wide indexes, then acted on in each document's namespace,
 * through that namespace's use cases (conditional updates, as a call makes
 * them). PoolBackground runs them on its timers.
 */
import { ownerOf } from "../../store/namespaced.js";
import type { Collection, Doc, Filter, IndexSpec, Store } from "../../store/port.js";
import type { Logger } from "../logger.js";
import type { Clock } from "../../domain/clock.js";
import type { PoolDeletion } from "./deletion.js";
import type { PoolMessages } from "./messages.js";
import { type MessageDoc, MESSAGE_SWEEPER_INDEXES, POOL_MESSAGES, POOL_SWEEPER_INDEXES, POOL_WAKES, type PoolDoc, POOLS, type WakeDoc, WAKE_SWEEPER_INDEXES } from "./records.js";
import type { Wakes } from "./wakes.js";

/** A namespace's pool use cases, to act on what a sweep found. */
export interface PoolScope {
  messages: PoolMessages;
  wakes: Wakes;
  poolDeletion: PoolDeletion;
}

/** Deadlines fired at once. */
const DUE_BATCH = 500;
/** A registration still unscanned this long after it was made lost its registrant; the repair sweep scans it. */
const UNSCANNED_AFTER_MS = 5_000;
/** A deletion begun this long ago and not finished lost its process. */
const UNFINISHED_AFTER_MS = 30_000;

interface SweepDeps {
  /** The store itself: sweeps read every namespace's documents. */
  store: Store;
  scope: (namespace: string) => PoolScope;
  clock: Clock;
  log: Logger;
}

/** Acts on each document found (at once) in its namespace; returns how many acts succeeded. */
async function inNamespaces<T extends Doc>(found: Doc[], scope: (namespace: string) => PoolScope, act: (scope: PoolScope, doc: T) => Promise<boolean>): Promise<number> {
  const done = await Promise.all(found.map((stored) => {
    const { namespace, doc } = ownerOf<T>(stored);
    return act(scope(namespace), doc);
  }));
  return done.filter(Boolean).length;
}

/** Documents with a deadline while in a waiting status, timed out once it passes (by whichever instance gets there). */
class DueDeadlines<T extends Doc & { deadline_at?: number }> {
  protected readonly docs: Collection<T>;

  constructor(
    protected readonly deps: SweepDeps,
    collection: string,
    private readonly indexes: IndexSpec[],
    /** The status in which the deadline applies. */
    private readonly waiting: string,
    private readonly timeOut: (scope: PoolScope, doc: T) => Promise<boolean>,
    /** What the log line counts, and says. */
    private readonly counted: { field: string; message: string },
  ) {
    this.docs = deps.store.collection<T>(collection);
  }

  async init(): Promise<void> {
    await this.docs.createIndexes(this.indexes);
  }

  /** Times out what is due (exactly once, whichever instance gets there). */
  async timeOutDue(): Promise<number> {
    const due = await this.docs.find({ status: this.waiting, deadline_at: { $lte: this.deps.clock.now() } } as unknown as Filter<T>, { sort: { deadline_at: 1 }, limit: DUE_BATCH });
    const count = await inNamespaces<T>(due, this.deps.scope, this.timeOut);
    if (count > 0) this.deps.log.info({ [this.counted.field]: count }, this.counted.message);
    return count;
  }

  /** The earliest deadline still pending, if any. */
  async nextDeadline(): Promise<number | undefined> {
    return (await this.docs.findOne({ status: this.waiting, deadline_at: { $gt: 0 } } as unknown as Filter<T>, { sort: { deadline_at: 1 } }))?.deadline_at;
  }
}

/** Response contracts whose deadline passed. */
export class ResponseDeadlines extends DueDeadlines<MessageDoc> {
  constructor(deps: SweepDeps) {
    super(deps, POOL_MESSAGES, MESSAGE_SWEEPER_INDEXES, "DELIVERED", (scope, doc) => scope.messages.timeOut(doc), { field: "messages", message: "run message response contracts timed out" });
  }
}

/** Wake registrations whose deadline passed, or whose registrant stopped before scanning. */
export class WakeSweeps extends DueDeadlines<WakeDoc> {
  constructor(deps: SweepDeps) {
    super(deps, POOL_WAKES, WAKE_SWEEPER_INDEXES, "REGISTERED", (scope, doc) => scope.wakes.timeOut(doc), { field: "wake_conditions", message: "wake conditions timed out" });
  }

  /** Finishes registrations whose registrant stopped before scanning the journal for an earlier match. */
  async repairUnscanned(limit = 100): Promise<number> {
    const stale = await this.docs.find({ status: "REGISTERED", scanned: false, created_at: { $lte: this.deps.clock.now() - UNSCANNED_AFTER_MS } }, { sort: { created_at: 1 }, limit });
    for (const stored of stale) {
      const { namespace, doc } = ownerOf<WakeDoc>(stored);
      await this.deps.scope(namespace).wakes.finishScan(doc);
    }
    return stale.length;
  }
}

/** Pool deletions whose process stopped half-way. */
export class UnfinishedDeletions {
  private readonly pools: Collection<PoolDoc>;

  constructor(private readonly deps: SweepDeps) {
    this.pools = deps.store.collection<PoolDoc>(POOLS);
  }

  async init(): Promise<void> {
    await this.pools.createIndexes(POOL_SWEEPER_INDEXES);
  }

  /** Finishes deletions begun before `now` less a grace (their process stopped); returns how many. */
  async resume(now: number, limit = 10): Promise<number> {
    const unfinished = await this.pools.find({ deleting: { $lte: now - UNFINISHED_AFTER_MS } }, { sort: { deleting: 1 }, limit });
    for (const stored of unfinished) {
      const { namespace, doc } = ownerOf<PoolDoc>(stored);
      this.deps.log.info({ pool_id: doc._id, namespace }, "finishing the deletion of an agent pool");
      await this.deps.scope(namespace).poolDeletion.finish(doc);
    }
    return unfinished.length;
  }
}
