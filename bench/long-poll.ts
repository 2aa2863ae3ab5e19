/**
 * The long-poll scenario: how soon a waiting Claim returns once work is
 * enqueued (the Mailbox issue: "long-poll Claim returns within 100 ms of an
 * enqueue"), through the real server in its own process.
 *
 * Each round: a worker opens a long-poll Claim (`wait` 5 s) on a fresh
 * thread; once the server holds it (a short pause), a producer on its own
 * connection enqueues one dispatch there. The figure is the time from the
 * Enqueue response to the Claim response, both by this process's clock (it
 * can be slightly negative: the claim may be answered before the enqueue's
 * response arrives). Rounds run one at a time, so the server is otherwise
 * idle: this measures the wake-up path, not throughput.
 */
import type { ClientProtocol } from "../src/client/index.js";
import { connect, sleep } from "./load.js";
import { type LatencySummary, round, Samples } from "./samples.js";

export interface LongPollOptions {
  url: string;
  protocol: ClientProtocol;
  rounds: number;
  /** How long the Claim is left waiting before the enqueue. */
  holdMs: number;
}

export interface LongPollReport {
  rounds: number;
  /** Enqueue answered -> Claim answered, ms. */
  wakeMs: LatencySummary & { min: number };
  /** Rounds whose Claim came back empty (it never woke): must be 0. */
  empty: number;
}

export async function runLongPoll(o: LongPollOptions): Promise<LongPollReport> {
  const worker = connect(o.url, o.protocol);
  const producer = connect(o.url, o.protocol);
  const tag = Math.random().toString(36).slice(2, 8);
  const wakes = new Samples();
  let min = Infinity;
  let empty = 0;
  try {
    for (let i = 0; i < o.rounds; i++) {
      const threadId = `long-poll-${tag}-${i}`;
      const claimed = worker.mailbox
        .claim({ threadId, consumerId: "bench-worker", lease: { seconds: 30n }, limit: 1, wait: { seconds: 5n } })
        .then((reply) => ({ at: performance.now(), count: reply.dispatches.length }));
      await sleep(o.holdMs);
      await producer.mailbox.enqueue({ dispatch: { threadId, runId: `run-${i}` } });
      const enqueuedAt = performance.now();
      const claim = await claimed;
      if (claim.count === 0) empty++;
      else {
        wakes.add(claim.at - enqueuedAt);
        min = Math.min(min, claim.at - enqueuedAt);
      }
    }
  } finally {
    worker.close();
    producer.close();
  }
  return { rounds: o.rounds, empty, wakeMs: { ...wakes.summary(), min: round(min) } };
}

export function describeLongPoll(r: LongPollReport): string {
  const w = r.wakeMs;
  return `long-poll: ${r.rounds} rounds; Enqueue answered -> waiting Claim answered: p50 ${w.p50} ms, p99 ${w.p99} ms, max ${w.max} ms (min ${w.min} ms); empty claims ${r.empty}`;
}
