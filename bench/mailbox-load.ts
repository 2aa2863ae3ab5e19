/**
 * The mailbox scenario: enqueue -> claim -> ack through the real server.
 *
 * - `producers` loops, each on its own connection, enqueue `batch` dispatches
 *   per RPC (EnqueueBatch; the unary Enqueue when batch is 1), spread round
 *   robin over `threads` threads. Each dispatch carries its enqueue time in
 *   its payload (8 bytes), which is how the worker measures end-to-end
 *   latency. Producers pause while `maxBacklog` dispatches are enqueued and
 *   not yet acked (see jobs.ts).
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
import { type JobsReport, JobsHarness, stampedPayload, stampOf } from "./jobs.js";
import { abortLoops, connect, isAbort, type Load } from "./load.js";

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

export type MailboxReport = JobsReport;

/** The most AckBatch and EnqueueBatch take in one call (the server's batch limit). */
const MAX_BATCH = 500;

/** Dispatches of `payloads`, spread round robin over `threads` threads named after `tag`, from `first` on. */
export function newDispatches(tag: string, threads: number, first: number, payloads: Uint8Array[]): NewDispatch[] {
  return payloads.map((data, i) =>
    create(NewDispatchSchema, {
      threadId: `${tag}-${(first + i) % threads}`,
      payload: { data, mediaType: "application/octet-stream" },
    }),
  );
}

/** Enqueues through the unary Enqueue (one dispatch) or EnqueueBatch; resolves with how many were accepted. */
export async function enqueueDispatches(
  mailbox: MailroomClients["mailbox"],
  dispatches: NewDispatch[],
  signal: AbortSignal,
  onEntryError: (message: string) => void,
): Promise<number> {
  if (dispatches.length === 1) {
    await mailbox.enqueue({ dispatch: dispatches[0] }, { signal });
    return 1;
  }
  const response = await mailbox.enqueueBatch({ dispatches }, { signal });
  let accepted = 0;
  for (const result of response.results) {
    if (result.error) onEntryError(result.error.message);
    else accepted++;
  }
  return accepted;
}

export function startMailboxLoad(options: MailboxOptions): Load<MailboxReport> {
  const harness = new JobsHarness(options);
  const { signal, errors } = harness;
  let nextThread = 0;
  const lease = durationFromMs(options.leaseMs);
  const wait = durationFromMs(options.waitMs);
  const entryError = (where: string) => (message: string) => errors.record(where, new Error(message));

  const producer = async () => {
    const { mailbox, close } = connect(options.url, options.protocol);
    try {
      await harness.produce(options.batch === 1 ? "Enqueue" : "EnqueueBatch", (payloads) => {
        const dispatches = newDispatches(options.tag, options.threads, nextThread, payloads);
        nextThread += payloads.length;
        return enqueueDispatches(mailbox, dispatches, signal, entryError("EnqueueBatch entry"));
      });
    } finally {
      close();
    }
  };

  const ack = async (mailbox: MailroomClients["mailbox"], claimed: RunDispatch[]): Promise<{ acked: number; calls: number }> => {
    const claims = claimed.map((d) => ({ dispatchId: d.dispatchId, claimToken: d.claimToken }));
    if (options.ackMode === "single") {
      const results = await Promise.allSettled(claims.map((claim) => mailbox.ack(claim, { signal })));
      const failed = results.filter((r) => r.status === "rejected");
      for (const failure of failed) if (!isAbort(failure.reason, signal)) errors.record("Ack", failure.reason);
      return { acked: claims.length - failed.length, calls: claims.length };
    }
    let acked = 0;
    let calls = 0;
    for (let i = 0; i < claims.length; i += MAX_BATCH) {
      const response = await mailbox.ackBatch({ claims: claims.slice(i, i + MAX_BATCH) }, { signal });
      calls++;
      for (const result of response.results) {
        if (result.error) errors.record("AckBatch entry", new Error(result.error.message));
        else acked++;
      }
    }
    return { acked, calls };
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
        harness.claimed(performance.now() - started, claimed.length);
        if (claimed.length === 0) continue;
        const ackStarted = performance.now();
        try {
          const { acked, calls } = await ack(mailbox, claimed);
          harness.acked(acked, claimed.map((d) => stampOf(d.payload?.data)), calls, performance.now() - ackStarted);
        } catch (error) {
          if (isAbort(error, signal)) break;
          errors.record(options.ackMode === "single" ? "Ack" : "AckBatch", error);
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
    beginMeasuring: harness.measuring.beginMeasuring,
    endMeasuring: harness.measuring.endMeasuring,
    stop: () => abortLoops(harness.abort, loops),
    report: (seconds) => harness.report(seconds),
  };
}

/**
 * Enqueues `count` dispatches (EnqueueBatch of up to 500, over `connections`
 * connections) on the threads a mailbox load with the same `tag` and
 * `threads` uses, before that load starts: the backlog of the `backlog`
 * scenario. Resolves with how long it took.
 */
export async function prefillMailbox(o: { url: string; protocol: ClientProtocol; tag: string; threads: number; count: number; connections?: number }): Promise<{ enqueued: number; seconds: number }> {
  const started = performance.now();
  const signal = new AbortController().signal;
  let next = 0;
  let enqueued = 0;
  const fill = async () => {
    const { mailbox, close } = connect(o.url, o.protocol);
    try {
      while (next < o.count) {
        const size = Math.min(MAX_BATCH, o.count - next);
        const first = next;
        next += size;
        const dispatches = newDispatches(o.tag, o.threads, first, Array.from({ length: size }, stampedPayload));
        const accepted = await enqueueDispatches(mailbox, dispatches, signal, (message) => {
          throw new Error(`prefill: an EnqueueBatch entry failed: ${message}`);
        });
        enqueued += accepted; // not `+= await`: that would read `enqueued` before the other connections' batches land
      }
    } finally {
      close();
    }
  };
  await Promise.all(Array.from({ length: o.connections ?? 4 }, fill));
  return { enqueued, seconds: Math.round(performance.now() - started) / 1000 };
}
