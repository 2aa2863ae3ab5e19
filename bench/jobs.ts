/**
 * What every enqueue -> claim -> ack load shares, whichever queue it drives
 * (Mailroom's MailboxService, BullMQ on redis-server, NATS JetStream): the
 * producer loops with their backlog gate, the enqueue-time stamp each job
 * carries, and the figures of the measuring window. A transport supplies how
 * to enqueue a batch and runs its own consumers, telling the harness what it
 * claimed and acked.
 *
 * Producers pause while `maxBacklog` jobs are enqueued and not yet acked, so
 * the queue stays bounded and end-to-end latency measures the system rather
 * than an ever-growing queue.
 */
import { ErrorCounts, isAbort, loadAbortController, MeasuringWindow, perSecond } from "./load.js";
import { type LatencySummary, round, Samples } from "./samples.js";

export interface JobsReport {
  /** Jobs acked in the window, and per second: the headline figure. */
  completed: number;
  jobsPerSecond: number;
  enqueued: number;
  enqueuePerSecond: number;
  /** Calls made in the window: enqueue (one per batch), claim (fetches; 0 where the queue pushes), ack. */
  rpcs: { enqueue: number; claim: number; ack: number; total: number };
  rpcsPerSecond: number;
  /** Every claim call, from call to response (includes long-poll waits when no work was there). */
  claimMs: LatencySummary;
  /** Only the claim calls that returned work. */
  claimNonEmptyMs: LatencySummary;
  emptyClaims: number;
  /** Mean jobs returned by a non-empty claim. */
  meanClaimSize: number;
  enqueueRpcMs: LatencySummary;
  ackRpcMs: LatencySummary;
  /** Per job: from just before its enqueue call was sent to the ack that completed it. */
  endToEndMs: LatencySummary;
  /** Enqueued and not yet acked when the window ended. */
  backlogAtEnd: number;
  errors: Record<string, number>;
}

export const STAMP_BYTES = 8;

/** A payload carrying the time it was made (float64 ms since the epoch), for end-to-end latency. */
export function stampedPayload(): Uint8Array {
  const data = new Uint8Array(STAMP_BYTES);
  new DataView(data.buffer).setFloat64(0, wallMs(), true);
  return data;
}

/** The time a stamped payload was made; undefined for anything else. */
export function stampOf(data: Uint8Array | undefined): number | undefined {
  if (!data || data.byteLength < STAMP_BYTES) return undefined;
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getFloat64(0, true);
}

export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

export interface JobsHarnessOptions {
  /** Jobs per enqueue call. */
  batch: number;
  /** Producers pause while this many jobs are enqueued and not acked. */
  maxBacklog: number;
}

export class JobsHarness {
  readonly abort = loadAbortController();
  readonly signal = this.abort.signal;
  readonly errors = new ErrorCounts();
  readonly measuring = new MeasuringWindow();
  private readonly samples = { claim: new Samples(), claimNonEmpty: new Samples(), enqueue: new Samples(), ack: new Samples(), e2e: new Samples() };
  private readonly window = { enqueued: 0, acked: 0, enqueueRpcs: 0, claimRpcs: 0, ackRpcs: 0, emptyClaims: 0, claimedInNonEmpty: 0, nonEmptyClaims: 0 };
  // Whole-run totals, for the backlog gate.
  private enqueuedTotal = 0;
  private ackedTotal = 0;
  private backlogWaiters: Array<() => void> = [];

  constructor(private readonly options: JobsHarnessOptions) {
    this.signal.addEventListener("abort", () => this.backlogFreed(), { once: true });
  }

  /**
   * One producer: enqueues `batch` stamped payloads a call until stopped.
   * `enqueue` resolves with how many the queue accepted.
   */
  async produce(what: string, enqueue: (payloads: Uint8Array[]) => Promise<number>): Promise<void> {
    const { signal } = this;
    while (!signal.aborted) {
      if (this.enqueuedTotal - this.ackedTotal >= this.options.maxBacklog) {
        await new Promise<void>((resolve) => this.backlogWaiters.push(resolve));
        continue;
      }
      const payloads = Array.from({ length: this.options.batch }, stampedPayload);
      this.enqueuedTotal += payloads.length; // counted before the call, so producers do not overshoot together
      const started = performance.now();
      let accepted: number;
      try {
        accepted = await enqueue(payloads);
      } catch (error) {
        this.enqueuedTotal -= payloads.length;
        if (isAbort(error, signal) || signal.aborted) break;
        this.errors.record(what, error);
        continue;
      }
      this.enqueuedTotal -= payloads.length - accepted;
      if (this.measuring.open) {
        this.samples.enqueue.add(performance.now() - started);
        this.window.enqueueRpcs++;
        this.window.enqueued += accepted;
      }
    }
  }

  /** A claim call returned `count` jobs after `ms`. */
  claimed(ms: number, count: number): void {
    if (!this.measuring.open) return;
    this.window.claimRpcs++;
    this.samples.claim.add(ms);
    if (count === 0) {
      this.window.emptyClaims++;
      return;
    }
    this.samples.claimNonEmpty.add(ms);
    this.window.nonEmptyClaims++;
    this.window.claimedInNonEmpty += count;
  }

  /**
   * Jobs were acked: `count` of them, whose payload stamps are `stamps`
   * (undefined entries skipped), with `ackCalls` calls taking `ackMs` in all
   * (omit both where the queue acks without a call of ours).
   */
  acked(count: number, stamps: Iterable<number | undefined>, ackCalls = 0, ackMs?: number): void {
    this.ackedTotal += count;
    this.backlogFreed();
    if (!this.measuring.open) return;
    if (ackMs !== undefined) this.samples.ack.add(ackMs);
    this.window.ackRpcs += ackCalls;
    this.window.acked += count;
    const now = wallMs();
    for (const at of stamps) if (at !== undefined) this.samples.e2e.add(now - at);
  }

  report(seconds: number): JobsReport {
    const { window, samples } = this;
    const rpcs = { enqueue: window.enqueueRpcs, claim: window.claimRpcs, ack: window.ackRpcs, total: window.enqueueRpcs + window.claimRpcs + window.ackRpcs };
    return {
      completed: window.acked,
      jobsPerSecond: perSecond(window.acked, seconds),
      enqueued: window.enqueued,
      enqueuePerSecond: perSecond(window.enqueued, seconds),
      rpcs,
      rpcsPerSecond: perSecond(rpcs.total, seconds),
      claimMs: samples.claim.summary(),
      claimNonEmptyMs: samples.claimNonEmpty.summary(),
      emptyClaims: window.emptyClaims,
      meanClaimSize: window.nonEmptyClaims === 0 ? 0 : round(window.claimedInNonEmpty / window.nonEmptyClaims, 1),
      enqueueRpcMs: samples.enqueue.summary(),
      ackRpcMs: samples.ack.summary(),
      endToEndMs: samples.e2e.summary(),
      backlogAtEnd: this.enqueuedTotal - this.ackedTotal,
      errors: this.errors.toJSON(),
    };
  }

  private backlogFreed(): void {
    const waiters = this.backlogWaiters;
    this.backlogWaiters = [];
    for (const wake of waiters) wake();
  }
}
