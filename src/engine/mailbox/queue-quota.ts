/**
 * A namespace's limit of QUEUED dispatches (the auth file's
 * `max_queued_dispatches`), checked before each enqueue.
 *
 * The check reads a count of the namespace's queued dispatches (one indexed
 * count) cached for `ttlMs`, plus what this instance has admitted since it
 * was taken; no counter document that every enqueue would update (which would
 * be the one hot document of a namespace, on every instance). So the limit
 * holds on one instance (it only errs toward refusing: dispatches claimed
 * meanwhile still count until the next count), and across instances it may
 * be passed by what the others enqueue within one `ttlMs`.
 *
 * Namespaces without a limit cost nothing: no count is ever taken for them.
 */
import type { Clock } from "../../domain/clock.js";
import { ErrorReason, MailroomError } from "../../domain/errors.js";

export interface QueueQuotaOptions {
  /** The namespace's limit; undefined when it has none (read at every check: it may change with the auth file). */
  limitOf: (namespace: string) => number | undefined;
  /** Counts the namespace's QUEUED dispatches in the store. */
  count: (namespace: string) => Promise<number>;
  clock: Clock;
  /** How long a count is used before it is taken again. */
  ttlMs: number;
}

interface Count {
  queued: number;
  at: number;
  /** Dispatches this instance admitted since the count was taken. */
  admitted: number;
}

/** Counts kept at most (JWTs can bring any number of namespaces); beyond it they are counted afresh. */
const REMEMBERED = 10_000;

export class QueueQuotas {
  private readonly counts = new Map<string, Count>();
  private readonly counting = new Map<string, Promise<Count>>();

  constructor(private readonly options: QueueQuotaOptions) {}

  /** The namespace's quota (what its mailbox checks). */
  in(namespace: string): QueueQuota {
    return { admit: (dispatches) => this.admit(namespace, dispatches) };
  }

  /**
   * Undefined (at once) when the namespace has no limit; else resolves once admitted.
   * @throws MailroomError RESOURCE_EXHAUSTED (QUEUE_LIMIT) when `dispatches` more would pass the namespace's limit.
   */
  admit(namespace: string, dispatches: number): Promise<void> | undefined {
    const limit = this.options.limitOf(namespace);
    return limit === undefined ? undefined : this.admitUnder(namespace, limit, dispatches);
  }

  private async admitUnder(namespace: string, limit: number, dispatches: number): Promise<void> {
    const count = await this.current(namespace);
    if (count.queued + count.admitted + dispatches > limit) {
      const queued = count.queued + count.admitted;
      throw new MailroomError(
        "resource_exhausted",
        `namespace ${JSON.stringify(namespace)} has ${queued} queued dispatches and a limit of ${limit}; ${dispatches === 1 ? "this one does" : `these ${dispatches} do`} not fit, so nothing was enqueued. Retry once workers have claimed some`,
        { reason: ErrorReason.QUEUE_LIMIT, metadata: { namespace, limit: String(limit) } },
      );
    }
    count.admitted += dispatches;
  }

  private current(namespace: string): Promise<Count> {
    const known = this.counts.get(namespace);
    if (known && this.options.clock.now() - known.at < this.options.ttlMs) return Promise.resolve(known);
    // Calls that find the count stale together share one count.
    let pending = this.counting.get(namespace);
    if (!pending) {
      const at = this.options.clock.now();
      pending = this.options
        .count(namespace)
        .then((queued) => {
          if (this.counts.size >= REMEMBERED && !this.counts.has(namespace)) this.counts.clear();
          const count = { queued, at, admitted: 0 };
          this.counts.set(namespace, count);
          return count;
        })
        .finally(() => this.counting.delete(namespace));
      this.counting.set(namespace, pending);
    }
    return pending;
  }
}

/** One namespace's quota. */
export interface QueueQuota {
  /**
   * Undefined when the namespace has no limit (nothing to wait for).
   * @throws MailroomError RESOURCE_EXHAUSTED (QUEUE_LIMIT) when `dispatches` more would pass the limit.
   */
  admit(dispatches: number): Promise<void> | undefined;
}
