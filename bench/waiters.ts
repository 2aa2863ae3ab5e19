/**
 * The `waiters` scenario (the thundering herd): `waiters` long-poll Claims
 * (limit 1, any thread, `wait` up to 60 s) wait at once, each its own
 * HTTP/2 stream, spread over `connections` connections; once the server
 * holds them, one EnqueueBatch of `dispatches` dispatches on fresh threads
 * (one each, so every one is claimable at once) arrives.
 *
 * Verdicts: every dispatch is claimed exactly once (by the Claim responses,
 * nothing assumed), and the server stays responsive meanwhile: Health.Check
 * called back to back from a separate connection, p99 from the enqueue until
 * the last dispatch is claimed (at least `minWindowMs`) at most 100 ms.
 * Also reported: how long the claims took, Health.Check while the waiters
 * were only waiting, and the store operations spent per dispatch (health
 * pings left out), by operation: what the wake-ups cost.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { NewDispatchSchema } from "../gen/mailroom/v1/mailbox_service_pb.js";
import type { ClientProtocol } from "../src/client/index.js";
import { stampedPayload } from "./jobs.js";
import { connect, isAbort, loadAbortController, sleep } from "./load.js";
import { perUnit, scrape, storeOpsDelta } from "./scrape.js";
import { type LatencySummary, round, Samples } from "./samples.js";

export interface WaitersOptions {
  url: string;
  protocol: ClientProtocol;
  waiters: number;
  connections: number;
  dispatches: number;
  /** Each Claim's long-poll wait (at most 60 s). */
  waitMs: number;
  /** How long the waiters wait before the enqueue, so the server holds every one. */
  holdMs: number;
  /** Shortest window Health.Check is measured over after the enqueue. */
  minWindowMs: number;
  tag: string;
}

export interface WaitersReport {
  waiters: number;
  dispatches: number;
  /** Claims that returned a dispatch; distinct dispatches among them; enqueued ones claimed more than once; never. */
  claimsWithWork: number;
  claimedDistinct: number;
  claimedTwice: number;
  neverClaimed: number;
  /** Claims that came back empty before the run ended them (woken for nothing, or their wait ran out). */
  emptyClaims: number;
  claimErrors: number;
  healthErrors: number;
  /** EnqueueBatch answered; last dispatch claimed (ms after the enqueue was sent). */
  enqueueMs: number;
  allClaimedMs: number | undefined;
  healthWhileWaitingMs: LatencySummary;
  healthDuringWakeMs: LatencySummary;
  storeOpsPerDispatch: ReturnType<typeof perUnit>;
  verdicts: { claimedOnce: boolean; healthP99Ok: boolean };
}

export const HEALTH_P99_TARGET_MS = 100;

export async function runWaiters(o: WaitersOptions): Promise<WaitersReport> {
  const abort = loadAbortController();
  const { signal } = abort;
  const workers = Array.from({ length: o.connections }, () => connect(o.url, o.protocol));
  const health = connect(o.url, o.protocol);
  const producer = connect(o.url, o.protocol);
  const claimedBy = new Map<string, number>();
  let claimsWithWork = 0;
  let emptyClaims = 0;
  let claimErrors = 0;
  let healthErrors = 0;
  let lastClaimAt = 0;
  let wanted = new Set<string>();
  let allClaimed!: () => void;
  const everyoneClaimed = new Promise<void>((resolve) => (allClaimed = resolve));
  const lease = durationFromMs(60_000);
  const wait = durationFromMs(o.waitMs);

  const waiter = async (index: number) => {
    const { mailbox } = workers[index % workers.length]!;
    try {
      const { dispatches } = await mailbox.claim({ consumerId: `${o.tag}-waiter-${index}`, lease, limit: 1, wait }, { signal });
      if (dispatches.length === 0) emptyClaims++;
      else claimsWithWork++;
      for (const d of dispatches) {
        claimedBy.set(d.dispatchId, (claimedBy.get(d.dispatchId) ?? 0) + 1);
        lastClaimAt = performance.now();
      }
      if (wanted.size > 0 && [...wanted].every((id) => claimedBy.has(id))) allClaimed();
    } catch (error) {
      if (!isAbort(error, signal)) claimErrors++;
    }
  };

  let phase: "waiting" | "wake" | "done" = "waiting";
  const healthSamples = { waiting: new Samples(), wake: new Samples() };
  const healthLoop = async () => {
    while (phase !== "done") {
      const started = performance.now();
      const at: "waiting" | "wake" = phase;
      try {
        await health.health.check({}, { signal });
      } catch (error) {
        if (isAbort(error, signal)) return;
        healthErrors++;
        continue;
      }
      healthSamples[at].add(performance.now() - started);
    }
  };

  const waiting = Array.from({ length: o.waiters }, (_, i) => waiter(i));
  const healthDone = healthLoop();
  try {
    await sleep(o.holdMs);
    const before = await scrape(o.url);
    phase = "wake";
    const sent = performance.now();
    const dispatches = Array.from({ length: o.dispatches }, (_, i) =>
      create(NewDispatchSchema, { threadId: `${o.tag}-thread-${i}`, payload: { data: stampedPayload(), mediaType: "application/octet-stream" } }),
    );
    const response = await producer.mailbox.enqueueBatch({ dispatches }, { signal });
    const enqueueMs = performance.now() - sent;
    wanted = new Set(response.results.flatMap((r) => (r.dispatch ? [r.dispatch.dispatchId] : [])));
    if ([...wanted].every((id) => claimedBy.has(id))) allClaimed();
    const claimedInTime = await Promise.race([everyoneClaimed.then(() => true), sleep(o.waitMs + 10_000).then(() => false)]);
    const windowLeft = o.minWindowMs - (performance.now() - sent);
    if (windowLeft > 0) await sleep(windowLeft);
    phase = "done";
    await healthDone;
    const after = await scrape(o.url);
    const delta = storeOpsDelta(before, after);
    if (delta) {
      // Health.Check pings the store on every call: not the wake-ups' cost.
      delta.total -= delta.byOperation["*.ping"] ?? 0;
      delete delta.byOperation["*.ping"];
    }
    const counts = [...wanted].map((id) => claimedBy.get(id) ?? 0);
    const claimedTwice = counts.filter((n) => n > 1).length;
    const neverClaimed = counts.filter((n) => n === 0).length;
    const healthDuringWakeMs = healthSamples.wake.summary();
    return {
      waiters: o.waiters,
      dispatches: wanted.size,
      claimsWithWork,
      claimedDistinct: claimedBy.size,
      claimedTwice,
      neverClaimed,
      emptyClaims,
      claimErrors,
      healthErrors,
      enqueueMs: round(enqueueMs, 1),
      allClaimedMs: claimedInTime ? round(lastClaimAt - sent, 1) : undefined,
      healthWhileWaitingMs: healthSamples.waiting.summary(),
      healthDuringWakeMs,
      storeOpsPerDispatch: perUnit(delta, wanted.size),
      verdicts: {
        claimedOnce: wanted.size === o.dispatches && claimedTwice === 0 && neverClaimed === 0 && claimedBy.size === wanted.size,
        healthP99Ok: healthErrors === 0 && healthDuringWakeMs.count > 0 && healthDuringWakeMs.p99 <= HEALTH_P99_TARGET_MS,
      },
    };
  } finally {
    phase = "done";
    abort.abort();
    await Promise.all(waiting);
    await healthDone;
    for (const clients of [...workers, health, producer]) clients.close();
  }
}

export function describeWaiters(r: WaitersReport): string {
  const h = r.healthDuringWakeMs;
  return [
    `waiters: ${r.waiters} waiting Claims, EnqueueBatch of ${r.dispatches}: ${r.claimedDistinct} claimed, ${r.claimedTwice} twice, ${r.neverClaimed} never, ` +
      `${r.emptyClaims} empty claims, ${r.claimErrors} claim errors; EnqueueBatch answered in ${r.enqueueMs} ms, last claim ${r.allClaimedMs ?? "never"} ms after it was sent`,
    `  Health.Check during the wake: p50 ${h.p50} p99 ${h.p99} max ${h.max} ms over ${h.count} calls, ${r.healthErrors} failed (while only waiting: p99 ${r.healthWhileWaitingMs.p99} ms)`,
    `  store operations per dispatch (health pings left out): ${r.storeOpsPerDispatch ? `${r.storeOpsPerDispatch.total} ${JSON.stringify(r.storeOpsPerDispatch.byOperation)}` : "n/a"}`,
  ].join("\n");
}
