/**
 * The mailbox scenario: enqueue -> claim -> ack through the real server.
 *
 * - `producers` loops, each on its own connection, enqueue `batch` dispatches
 *   per RPC (EnqueueBatch; the unary Enqueue when batch is 1), spread round
 *   robin over `threads` threads. Each dispatch carries its enqueue time in
 *   its payload (8 bytes), which is how the worker measures end-to-end
 *   latency. Producers pause while `maxBacklog` dispatches are enqueued and
 *   not yet acked, so the queue stays bounded and end-to-end latency measures
 *   the system rather than an ever-growing queue.
 * - `workers` loops, each on its own connection, Claim up to `claimLimit`
 *   dispatches across threads (long poll `wait`, so an idle worker blocks
 *   instead of spinning) and ack all of them in one AckBatch (or one unary
 *   Ack each, concurrently, with ackMode "single").
 *
 * A thread holds at most one CLAIMED dispatch, so at most `threads`
 * dispatches are in flight between claim and ack at any time.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { RunDispatch } from "../gen/mailroom/v1/dispatch_pb.js";
import { type NewDispatch, NewDispatchSchema } from "../gen/mailroom/v1/mailbox_service_pb.js";
import type { ClientProtocol, MailroomClients } from "../src/client/index.js";
import { abortLoops, connect, ErrorCounts, isAbort, type Load, loadAbortController, MeasuringWindow, perSecond } from "./load.js";
import { type LatencySummary, round, Samples } from "./samples.js";

export interface MailboxOptions {
  url: string;
  protocol: ClientProtocol;
  producers: number;
  workers: number;
  threads: number;
  /** Dispatches per EnqueueBatch (1: the unary Enqueue). */
  batch: number;
  /** Claim's limit: dispatches per Claim, at most one per thread. */
  claimLimit: number;
  /** "batch": one AckBatch per claim; "single": one unary Ack per dispatch. */
  ackMode: "batch" | "single";
  /** Claim's long-poll wait. */
  waitMs: number;
  leaseMs: number;
  /** Producers pause while this many dispatches are enqueued and not acked. */
  maxBacklog: number;
  /** Prefix of this run's thread ids, so runs against a shared server do not mix. */
  tag: string;
}

export interface MailboxReport {
  /** Dispatches acked in the window, and per second: the headline figure. */
  completed: number;
  jobsPerSecond: number;
  enqueued: number;
  enqueuePerSecond: number;
  rpcs: { enqueue: number; claim: number; ack: number; total: number };
  rpcsPerSecond: number;
  /** Every Claim RPC, from call to response (includes long-poll waits when no work was there). */
  claimMs: LatencySummary;
  /** Only the Claim RPCs that returned work. */
  claimNonEmptyMs: LatencySummary;
  emptyClaims: number;
  /** Mean dispatches returned by a non-empty Claim. */
  meanClaimSize: number;
  enqueueRpcMs: LatencySummary;
  ackRpcMs: LatencySummary;
  /** Per job: from just before its EnqueueBatch was sent to the AckBatch response that acked it. */
  endToEndMs: LatencySummary;
  /** Enqueued and not yet acked when the window ended. */
  backlogAtEnd: number;
  errors: Record<string, number>;
}

const PAYLOAD_BYTES = 8;
const MAX_ACK_BATCH = 500;

function stampedPayload(): Uint8Array {
  const data = new Uint8Array(PAYLOAD_BYTES);
  new DataView(data.buffer).setFloat64(0, performance.timeOrigin + performance.now(), true);
  return data;
}

function enqueuedAt(dispatch: RunDispatch): number | undefined {
  const data = dispatch.payload?.data;
  if (!data || data.byteLength < PAYLOAD_BYTES) return undefined;
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getFloat64(0, true);
}

export function startMailboxLoad(options: MailboxOptions): Load<MailboxReport> {
  const abort = loadAbortController();
  const { signal } = abort;
  const errors = new ErrorCounts();
  const samples = { claim: new Samples(), claimNonEmpty: new Samples(), enqueue: new Samples(), ack: new Samples(), e2e: new Samples() };
  const window = { enqueued: 0, acked: 0, enqueueRpcs: 0, claimRpcs: 0, ackRpcs: 0, emptyClaims: 0, claimedInNonEmpty: 0, nonEmptyClaims: 0 };
  const measuring = new MeasuringWindow();
  // Whole-run totals, for the backlog gate.
  let enqueuedTotal = 0;
  let ackedTotal = 0;
  let nextThread = 0;
  let backlogWaiters: Array<() => void> = [];
  const lease = durationFromMs(options.leaseMs);
  const wait = durationFromMs(options.waitMs);

  const backlogFreed = () => {
    const waiters = backlogWaiters;
    backlogWaiters = [];
    for (const wake of waiters) wake();
  };
  const onStop = () => backlogFreed();
  signal.addEventListener("abort", onStop, { once: true });

  const newDispatch = (): NewDispatch => {
    const thread = nextThread++ % options.threads;
    return create(NewDispatchSchema, {
      threadId: `${options.tag}-${thread}`,
      payload: { data: stampedPayload(), mediaType: "application/octet-stream" },
    });
  };

  const enqueue = async (mailbox: MailroomClients["mailbox"], dispatches: NewDispatch[]): Promise<number> => {
    if (dispatches.length === 1) {
      await mailbox.enqueue({ dispatch: dispatches[0] }, { signal });
      return 1;
    }
    const response = await mailbox.enqueueBatch({ dispatches }, { signal });
    let accepted = 0;
    for (const result of response.results) {
      if (result.error) errors.record("EnqueueBatch entry", new Error(result.error.message));
      else accepted++;
    }
    return accepted;
  };

  const producer = async () => {
    const { mailbox, close } = connect(options.url, options.protocol);
    try {
      while (!signal.aborted) {
        if (enqueuedTotal - ackedTotal >= options.maxBacklog) {
          await new Promise<void>((resolve) => backlogWaiters.push(resolve));
          continue;
        }
        const dispatches = Array.from({ length: options.batch }, newDispatch);
        enqueuedTotal += dispatches.length; // counted before the call, so producers do not overshoot together
        const started = performance.now();
        let accepted: number;
        try {
          accepted = await enqueue(mailbox, dispatches);
        } catch (error) {
          enqueuedTotal -= dispatches.length;
          if (isAbort(error, signal)) break;
          errors.record(options.batch === 1 ? "Enqueue" : "EnqueueBatch", error);
          continue;
        }
        enqueuedTotal -= dispatches.length - accepted;
        if (measuring.open) {
          samples.enqueue.add(performance.now() - started);
          window.enqueueRpcs++;
          window.enqueued += accepted;
        }
      }
    } finally {
      close();
    }
  };

  const ack = async (mailbox: MailroomClients["mailbox"], claimed: RunDispatch[]): Promise<number> => {
    const claims = claimed.map((d) => ({ dispatchId: d.dispatchId, claimToken: d.claimToken }));
    if (options.ackMode === "single") {
      const results = await Promise.allSettled(claims.map((claim) => mailbox.ack(claim, { signal })));
      if (measuring.open) window.ackRpcs += claims.length;
      const failed = results.filter((r) => r.status === "rejected");
      for (const failure of failed) errors.record("Ack", failure.reason);
      return claims.length - failed.length;
    }
    let acked = 0;
    for (let i = 0; i < claims.length; i += MAX_ACK_BATCH) {
      const response = await mailbox.ackBatch({ claims: claims.slice(i, i + MAX_ACK_BATCH) }, { signal });
      if (measuring.open) window.ackRpcs++;
      for (const result of response.results) {
        if (result.error) errors.record("AckBatch entry", new Error(result.error.message));
        else acked++;
      }
    }
    return acked;
  };

  const worker = async (index: number) => {
    const { mailbox, close } = connect(options.url, options.protocol);
    const consumerId = `${options.tag}-worker-${index}`;
    try {
      while (!signal.aborted) {
        const started = performance.now();
        let claimed: RunDispatch[];
        try {
          claimed = (await mailbox.claim({ consumerId, lease, limit: options.claimLimit, wait }, { signal })).dispatches;
        } catch (error) {
          if (isAbort(error, signal)) break;
          errors.record("Claim", error);
          continue;
        }
        const claimMs = performance.now() - started;
        if (measuring.open) {
          window.claimRpcs++;
          samples.claim.add(claimMs);
          if (claimed.length === 0) window.emptyClaims++;
          else {
            samples.claimNonEmpty.add(claimMs);
            window.nonEmptyClaims++;
            window.claimedInNonEmpty += claimed.length;
          }
        }
        if (claimed.length === 0) continue;
        const ackStarted = performance.now();
        let acked: number;
        try {
          acked = await ack(mailbox, claimed);
        } catch (error) {
          if (isAbort(error, signal)) break;
          errors.record(options.ackMode === "single" ? "Ack" : "AckBatch", error);
          continue;
        }
        const done = performance.now();
        ackedTotal += acked;
        backlogFreed();
        if (!measuring.open) continue;
        samples.ack.add(done - ackStarted);
        window.acked += acked;
        const doneAt = performance.timeOrigin + done;
        for (const dispatch of claimed) {
          const at = enqueuedAt(dispatch);
          if (at !== undefined) samples.e2e.add(doneAt - at);
        }
      }
    } finally {
      close();
    }
  };

  const loops = [
    ...Array.from({ length: options.producers }, producer),
    ...Array.from({ length: options.workers }, (_, i) => worker(i)),
  ];

  return {
    beginMeasuring: measuring.beginMeasuring,
    endMeasuring: measuring.endMeasuring,
    stop: () => abortLoops(abort, loops),
    report: (seconds) => {
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
        backlogAtEnd: enqueuedTotal - ackedTotal,
        errors: errors.toJSON(),
      };
    },
  };
}
