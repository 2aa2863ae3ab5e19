/**
 * The `memory` scenario: live heap per stored dispatch and per journal event,
 * read after forced full garbage collections in the server (bench/gc-hook.mjs,
 * loaded only by this scenario: SIGUSR2 -> two `gc()` -> one JSON line on
 * stderr with V8's used heap).
 *
 * On a fresh server: heap H0; enqueue `dispatches` dispatches (EnqueueBatch
 * of 500 over `threads` threads, all left QUEUED), let background work
 * settle, heap H1; publish `events` MODEL_STREAM_DELTA events (8-byte
 * payloads, over 100 runs), settle, heap H2.
 *
 * - bytes per stored dispatch = (H1 - H0) / dispatches: what a dispatch costs
 *   with everything the server keeps for it (its journal events included);
 * - journal events per dispatch from the journal position;
 * - bytes per journal event = (H2 - H1) / events;
 * - bytes per dispatch without its events = the first less the events' share.
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { EventKind } from "../gen/mailroom/v1/event_pb.js";
import type { ClientProtocol } from "../src/client/index.js";
import { stampedPayload } from "./jobs.js";
import { connect, sleep } from "./load.js";
import { prefillMailbox } from "./mailbox-load.js";
import { perUnit, type Scrape, scrape, storeOpsDelta } from "./scrape.js";
import { round } from "./samples.js";
import { median, type Verdict } from "./figures.js";
import { mailroomServer, repoRoot, spawnServer } from "./server.js";

export interface HeapReading {
  usedHeapBytes: number;
  totalHeapBytes: number;
  externalBytes: number;
  arrayBuffersBytes: number;
  rssBytes: number;
}

export interface MemoryOptions {
  url: string;
  protocol: ClientProtocol;
  dispatches: number;
  events: number;
  threads: number;
  tag: string;
  /** Forces GC in the server and reads its heap. */
  heap: () => Promise<HeapReading>;
  /** Pause before each reading, so background work (outbox, tail) has settled. */
  settleMs: number;
}

export interface MemoryReport {
  dispatches: number;
  events: number;
  heap: { empty: HeapReading; withDispatches: HeapReading; withEvents: HeapReading };
  bytesPerDispatch: number;
  journalEventsPerDispatch: number | undefined;
  bytesPerEvent: number;
  bytesPerDispatchWithoutEvents: number | undefined;
  rssBytesPerDispatch: number;
  rssBytesPerEvent: number;
  enqueueSeconds: number;
  publishSeconds: number;
  storeOpsPerDispatch: ReturnType<typeof perUnit>;
  storeOpsPerEvent: ReturnType<typeof perUnit>;
}

const PUBLISH_CONCURRENCY = 64;
const PUBLISH_CONNECTIONS = 4;
const RUNS = 100;

async function publishEvents(o: MemoryOptions): Promise<number> {
  const started = performance.now();
  const clients = Array.from({ length: PUBLISH_CONNECTIONS }, () => connect(o.url, o.protocol));
  let next = 0;
  const loop = async (index: number) => {
    const { events } = clients[index % clients.length]!;
    while (next < o.events) {
      const runId = `${o.tag}-run-${next++ % RUNS}`;
      await events.publish({
        event: {
          envelope: { kind: EventKind.MODEL_STREAM_DELTA, runId },
          payload: { case: "full", value: { data: stampedPayload(), mediaType: "application/octet-stream" } },
        },
      });
    }
  };
  try {
    await Promise.all(Array.from({ length: PUBLISH_CONCURRENCY }, (_, i) => loop(i)));
  } finally {
    for (const { close } of clients) close();
  }
  return (performance.now() - started) / 1000;
}

export async function runMemory(o: MemoryOptions): Promise<MemoryReport> {
  const reading = async (): Promise<{ heap: HeapReading; metrics: Scrape }> => {
    await sleep(o.settleMs);
    return { heap: await o.heap(), metrics: await scrape(o.url) };
  };
  const empty = await reading();
  const fill = await prefillMailbox({ url: o.url, protocol: o.protocol, tag: o.tag, threads: o.threads, count: o.dispatches });
  const withDispatches = await reading();
  const publishSeconds = await publishEvents(o);
  const withEvents = await reading();

  const bytesPerDispatch = (withDispatches.heap.usedHeapBytes - empty.heap.usedHeapBytes) / o.dispatches;
  const bytesPerEvent = (withEvents.heap.usedHeapBytes - withDispatches.heap.usedHeapBytes) / o.events;
  const before = empty.metrics.journalPosition;
  const after = withDispatches.metrics.journalPosition;
  const eventsPerDispatch = before === undefined || after === undefined ? undefined : (after - before) / o.dispatches;
  return {
    dispatches: o.dispatches,
    events: o.events,
    heap: { empty: empty.heap, withDispatches: withDispatches.heap, withEvents: withEvents.heap },
    bytesPerDispatch: Math.round(bytesPerDispatch),
    journalEventsPerDispatch: eventsPerDispatch === undefined ? undefined : round(eventsPerDispatch, 2),
    bytesPerEvent: Math.round(bytesPerEvent),
    bytesPerDispatchWithoutEvents: eventsPerDispatch === undefined ? undefined : Math.round(bytesPerDispatch - eventsPerDispatch * bytesPerEvent),
    rssBytesPerDispatch: Math.round((withDispatches.heap.rssBytes - empty.heap.rssBytes) / o.dispatches),
    rssBytesPerEvent: Math.round((withEvents.heap.rssBytes - withDispatches.heap.rssBytes) / o.events),
    enqueueSeconds: fill.seconds,
    publishSeconds: round(publishSeconds, 1),
    storeOpsPerDispatch: perUnit(storeOpsDelta(empty.metrics, withDispatches.metrics), o.dispatches),
    storeOpsPerEvent: perUnit(storeOpsDelta(withDispatches.metrics, withEvents.metrics), o.events),
  };
}

/** Asks the server started with gc-hook.mjs for a heap reading after forced GC. */
export async function readHeap(pid: number, nextLine: (matches: (line: string) => boolean, timeoutMs: number) => Promise<string>): Promise<HeapReading> {
  const line = nextLine((l) => l.startsWith('{"benchHeap"'), 120_000);
  process.kill(pid, "SIGUSR2");
  const parsed = JSON.parse(await line) as { benchHeap: HeapReading | { error: string } };
  if ("error" in parsed.benchHeap) throw new Error(`the server's GC hook: ${parsed.benchHeap.error}`);
  return parsed.benchHeap;
}

/**
 * The figures of main's engine at the commit the performance work started
 * from (a9fea65), measured with this scenario's defaults (the mean of the
 * two rounds in bench/results/memory-2026-12-05T13-54-07-033Z.json): the
 * issue asks for both to be at least halved.
 */
export const BEFORE = { commit: "a9fea65", bytesPerDispatch: 10_529, bytesPerEvent: 1_976 };

export interface MemoryScenarioOptions {
  protocol: ClientProtocol;
  store: string;
  serverArg: string[];
  serverRoot?: string;
  memoryDispatches: number;
  memoryEvents: number;
  threads: number;
  tag: string;
}

/** A fresh server with the GC hook, filled and read (see runMemory). */
export async function runMemoryScenario(o: MemoryScenarioOptions): Promise<MemoryReport> {
  const server = await spawnServer({
    script: mailroomServer(o.store, o.serverArg),
    cwd: o.serverRoot,
    nodeArgs: ["--expose-gc", "--import", pathToFileURL(join(repoRoot, "bench", "gc-hook.mjs")).href],
  });
  try {
    return await runMemory({
      url: server.url,
      protocol: o.protocol,
      dispatches: o.memoryDispatches,
      events: o.memoryEvents,
      threads: o.threads,
      tag: o.tag,
      heap: () => readHeap(server.pid, server.nextStderrLine),
      settleMs: 2000,
    });
  } finally {
    await server.stop();
  }
}

export function describeMemory(r: MemoryReport): string {
  const mib = (bytes: number) => `${round(bytes / 2 ** 20, 1)} MiB`;
  return [
    `memory: ${r.dispatches} dispatches stored in ${r.enqueueSeconds} s, ${r.events} events published in ${r.publishSeconds} s; ` +
      `live heap after GC ${mib(r.heap.empty.usedHeapBytes)} -> ${mib(r.heap.withDispatches.usedHeapBytes)} -> ${mib(r.heap.withEvents.usedHeapBytes)}`,
    `  per stored dispatch: ${r.bytesPerDispatch} bytes of heap (with its ${r.journalEventsPerDispatch ?? "?"} journal events; ${r.bytesPerDispatchWithoutEvents ?? "?"} without), ${r.rssBytesPerDispatch} bytes of RSS; ` +
      `store operations per dispatch enqueued: ${r.storeOpsPerDispatch?.total ?? "n/a"}`,
    `  per journal event: ${r.bytesPerEvent} bytes of heap, ${r.rssBytesPerEvent} bytes of RSS; store operations per event published: ${r.storeOpsPerEvent?.total ?? "n/a"}`,
  ].join("\n");
}

export function memoryVerdicts(reports: MemoryReport[]): Verdict[] {
  const verdict = (figure: string, values: number[], before: number): Verdict => {
    const value = Math.round(median(values) ?? NaN);
    if (before <= 0) return { figure, target: "(none)", verdict: "INFO", value, rounds: values, detail: `${value} bytes (no "before" figure recorded)` };
    const target = `<= ${Math.floor(before / 2)} bytes (half of ${before} at ${BEFORE.commit})`;
    return { figure, target, verdict: value <= before / 2 ? "PASS" : "FAIL", value, rounds: values, detail: `${value} bytes, ${round((100 * value) / before, 1)} % of before (rounds: ${values.join(", ")})` };
  };
  return [
    verdict("live heap per stored dispatch (with its journal events)", reports.map((r) => r.bytesPerDispatch), BEFORE.bytesPerDispatch),
    verdict("live heap per journal event", reports.map((r) => r.bytesPerEvent), BEFORE.bytesPerEvent),
  ];
}
