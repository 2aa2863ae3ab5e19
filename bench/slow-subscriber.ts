/**
 * The slow-subscriber scenario: the Events issue's overflow check, through
 * the real server in its own process.
 *
 *   "A subscriber reading one frame a second, capacity 100, DROP_PROGRESS,
 *   100,000 events published: the server's memory stays bounded, terminal
 *   events all arrive, notices report the gaps, and re-subscribing from
 *   repair_from delivers what was dropped."
 *
 * One phase ("with subscriber"):
 * 1. One Subscribe stream (run scope, START_LATEST, queue capacity
 *    `capacity`, DROP_PROGRESS, 1 s heartbeats) that takes one frame off the
 *    stream every `slowReadMs` while publishing lasts.
 * 2. `concurrency` closed Publish loops over `publishers` connections publish
 *    `events` events to that run as fast as the server answers: every
 *    `terminalEvery`-th a terminal kind (RUN_COMPLETED; Publish accepts run
 *    kinds), the others MODEL_STREAM_DELTA (progress).
 * 3. Meanwhile the server's RSS is sampled from /proc (every 250 ms) and its
 *    heap from its own GET /metrics (prom-client's
 *    mailroom_nodejs_heap_size_used_bytes, every second).
 * 4. Once every Publish is answered the subscriber reads flat out until a
 *    HEARTBEAT frame at or past the last published position (a heartbeat is
 *    only sent once the server's queue for it is empty, and carries any
 *    notice still pending), then counts what it received against what was
 *    published, by journal position.
 * 5. Repair: a new Subscribe (same scope, BACKPRESSURE_CALLER) after a
 *    notice's repair_from, read up to its gap_end: every event the first
 *    stream missed must come back. Notices' ranges overlap a lot (a terminal
 *    event that finds the queue full drops the oldest queued progress event,
 *    so a gap can start far back), so overlapping ranges are merged first and
 *    each merged range is read once, from the smallest repair_from in it.
 *
 * The memory backend keeps every event in the server's process, so its RSS
 * grows with the journal whatever the subscriber does. A second phase
 * ("without subscriber") publishes the same load to a fresh server with no
 * subscriber; the difference of the two peaks is what the slow subscriber
 * cost the server.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  type EventCursor,
  type EventFrame,
  EventFrameKind,
  EventKind,
  EventOverflowReason,
  SubscriberOverflowPolicy,
} from "../gen/mailroom/v1/event_pb.js";
import { StartPosition, type SubscribeResponse } from "../gen/mailroom/v1/event_service_pb.js";
import type { ClientProtocol } from "../src/client/index.js";
import { connect, ErrorCounts, isAbort, loadAbortController, sleep } from "./load.js";
import { statusKiB, UsageSampler, type ProcessUsage } from "./proc-stats.js";
import { type LatencySummary, round, Samples } from "./samples.js";
import { mailroomServer, type ServerChild, spawnServer } from "./server.js";

export interface SlowSubscriberOptions {
  protocol: ClientProtocol;
  /** Events to publish in each phase. */
  events: number;
  /** Every this-many-th event is terminal (RUN_COMPLETED); the rest progress (MODEL_STREAM_DELTA). */
  terminalEvery: number;
  /** While publishing, the subscriber takes one frame off its stream every this many ms. */
  slowReadMs: number;
  /** The subscriber's SubscriberQueueConfig.capacity. */
  capacity: number;
  /** Connections the Publish calls are spread over. */
  publishers: number;
  /** Closed Publish loops (calls in flight). */
  concurrency: number;
  /** Also run the same publish load with no subscriber, on a fresh server. */
  baseline: boolean;
  /** "Memory stays bounded" passes when the subscriber phase's peak RSS exceeds the baseline's by at most this. */
  maxRssOverheadMiB: number;
  /** After publishing, how long the subscriber may take to drain, and each repair stream to reach its gap's end. */
  drainTimeoutMs: number;
  store: string;
  serverArg: string[];
  serverRoot?: string;
}

/** One point of the memory series, every SERIES_EVERY_MS. */
interface MemoryPoint {
  seconds: number;
  published: number;
  received: number;
  rssMiB: number;
  heapUsedMiB?: number;
}

export interface PhaseReport {
  name: string;
  subscriber: boolean;
  /** Publish calls answered OK, split by kind. */
  published: number;
  publishedTerminal: number;
  publishedProgress: number;
  publishSeconds: number;
  publishPerSecond: number;
  publishRpcMs: LatencySummary;
  /** From /proc/<pid>/status VmRSS, sampled every 250 ms from the first Publish to the end of the drain. */
  server: ProcessUsage | undefined;
  /** prom-client's heap_size_used of the server, from GET /metrics every second (undefined when unavailable). */
  heapUsedMiBPeak?: number;
  heapUsedMiBEnd?: number;
  series: MemoryPoint[];
  subscription?: SubscriptionReport;
  errors: Record<string, number>;
}

export interface SubscriptionReport {
  /** Frames taken off the stream while publishing (at one per slowReadMs). */
  framesReadWhilePublishing: number;
  /** EVENT frames received in all, split by the kind the journal position was published with. */
  received: number;
  receivedTerminal: number;
  receivedProgress: number;
  /** Received twice, or out of journal order, or at a position this run never published: each should be 0. */
  duplicates: number;
  outOfOrder: number;
  unknownPositions: number;
  /** Published but never received by the slow subscriber. */
  missing: number;
  missingTerminal: number;
  drainSeconds: number;
  /** Whether the drain ended on a heartbeat at or past the last published position (false: timed out). */
  drained: boolean;
  notices: NoticeSummary;
  repair: RepairReport;
  checks: Record<string, { pass: boolean; detail: string }>;
}

interface NoticeSummary {
  count: number;
  /** Sum of the notices' dropped_count. */
  droppedCount: number;
  /** Notices on HEARTBEAT / CAUGHT_UP frames rather than on an event. */
  onNonEventFrames: number;
  /** Notices saying a terminal event was dropped (terminal_preserved = false). */
  terminalNotPreserved: number;
  byReason: Record<string, number>;
  /** Missing positions covered by no notice's [gap_start, gap_end]. */
  missingOutsideGaps: number;
  /** Notices whose repair_from is not before their gap_start. */
  badRepairFrom: number;
  widestGap: number;
  first?: NoticeJson;
  last?: NoticeJson;
}

interface NoticeJson {
  droppedCount: number;
  gapStart: number;
  gapEnd: number;
  repairFrom: number;
  terminalPreserved: boolean;
  reason: string;
}

interface RepairReport {
  /** Subscriptions opened: one per merged range of notices' (repair_from, gap_end]. */
  streams: number;
  /** EVENT frames the repair streams received in all (gaps overlap and include delivered events). */
  framesReceived: number;
  /** Missing events delivered by some repair stream, and those never delivered. */
  recovered: number;
  recoveredTerminal: number;
  notRecovered: number;
  seconds: number;
  timedOut: number;
}

interface Notice {
  droppedCount: number;
  gapStart: number;
  gapEnd: number;
  repairFrom: number;
  repairCursor: EventCursor;
  terminalPreserved: boolean;
  reason: EventOverflowReason;
}

const PAYLOAD = new Uint8Array(8);
const HEARTBEAT = durationFromMs(1000);
const SERIES_EVERY_MS = 5000;
/** Per-position flags. */
const PUBLISHED_PROGRESS = 1;
const PUBLISHED_TERMINAL = 2;

function seqOf(frame: EventFrame): number {
  return Number(frame.cursor?.eventSeq ?? 0n);
}

/** Reads GET /metrics' mailroom_nodejs_heap_size_used_bytes, in MiB; undefined if it is not there. */
async function heapUsedMiB(url: string): Promise<number | undefined> {
  try {
    const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) });
    if (!response.ok) return undefined;
    const match = /^mailroom_nodejs_heap_size_used_bytes (\d+(?:\.\d+)?(?:e\+?\d+)?)$/m.exec(await response.text());
    return match ? round(Number(match[1]) / 2 ** 20, 1) : undefined;
  } catch {
    return undefined;
  }
}

/** A promise and its resolver, for waking a sleeping loop. */
function signalled(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((resolve) => (fire = resolve));
  return { promise, fire };
}

function noticeOf(frame: EventFrame): Notice | undefined {
  const o = frame.overflow;
  if (!o) return undefined;
  return {
    droppedCount: Number(o.droppedCount),
    gapStart: Number(o.gapStart?.eventSeq ?? 0n),
    gapEnd: Number(o.gapEnd?.eventSeq ?? 0n),
    repairFrom: Number(o.repairFrom?.eventSeq ?? 0n),
    repairCursor: o.repairFrom!,
    terminalPreserved: o.terminalPreserved,
    reason: o.reason,
  };
}

function noticeJson(n: Notice | undefined): NoticeJson | undefined {
  return n && {
    droppedCount: n.droppedCount,
    gapStart: n.gapStart,
    gapEnd: n.gapEnd,
    repairFrom: n.repairFrom,
    terminalPreserved: n.terminalPreserved,
    reason: EventOverflowReason[n.reason] ?? String(n.reason),
  };
}

/** One phase on a fresh server: publish the load, with or without the slow subscriber. */
export async function runPhase(o: SlowSubscriberOptions, withSubscriber: boolean, log: (line: string) => void): Promise<PhaseReport> {
  const child: ServerChild = await spawnServer({ script: mailroomServer(o.store, o.serverArg), cwd: o.serverRoot });
  const url = child.url;
  const runId = `slow-subscriber-${process.pid}-${withSubscriber ? "sub" : "nosub"}`;
  const errors = new ErrorCounts();
  const abort = loadAbortController();
  const { signal } = abort;
  // Flags by journal position (index = event_seq); positions are dense from 1 on a fresh server.
  let flags = new Uint8Array(o.events + 1024);
  const flag = (seq: number, value: number) => {
    if (seq >= flags.length) {
      const grown = new Uint8Array(Math.max(seq + 1, flags.length * 2));
      grown.set(flags);
      flags = grown;
    }
    flags[seq]! |= value;
  };
  const received = { count: 0 };
  const rssSampler = new UsageSampler(child.pid);
  const heap = { peak: undefined as number | undefined, end: undefined as number | undefined };
  const series: MemoryPoint[] = [];
  let published = 0;
  let publishedTerminal = 0;
  let lastSeq = 0;
  const publishRpc = new Samples();

  // --- the slow subscriber ---
  let publishingDone = false;
  let wakeReader = signalled();
  const sub = {
    framesReadWhilePublishing: 0,
    duplicates: 0,
    outOfOrder: 0,
    lastSeen: 0,
    notices: [] as Notice[],
    noticesOnNonEvent: 0,
    drained: false,
    drainSeconds: 0,
  };
  // Positions the subscriber received (index = event_seq).
  let got = new Uint8Array(o.events + 1024);
  const markReceived = (seq: number) => {
    if (seq >= got.length) {
      const grown = new Uint8Array(Math.max(seq + 1, got.length * 2));
      grown.set(got);
      got = grown;
    }
    if (got[seq]) sub.duplicates++;
    got[seq] = 1;
  };
  const subscribed = signalled();
  const drainedSignal = signalled();
  let drainStarted = 0;
  const subscriberConn = withSubscriber ? connect(url, o.protocol) : undefined;
  const subscriber = async () => {
    if (!subscriberConn) return;
    try {
      const stream = subscriberConn.events.subscribe(
        {
          scope: { case: "runId", value: runId },
          start: StartPosition.LATEST,
          queue: { capacity: o.capacity, overflow: SubscriberOverflowPolicy.DROP_PROGRESS },
          heartbeatInterval: HEARTBEAT,
        },
        { signal },
      );
      const frames: AsyncIterator<SubscribeResponse> = stream[Symbol.asyncIterator]();
      for (;;) {
        const next = await frames.next();
        if (next.done) break;
        const frame = next.value.frame;
        if (!frame) continue;
        const notice = noticeOf(frame);
        if (notice) {
          sub.notices.push(notice);
          if (frame.kind !== EventFrameKind.EVENT) sub.noticesOnNonEvent++;
        }
        if (frame.kind === EventFrameKind.CAUGHT_UP) {
          subscribed.fire();
          continue;
        }
        if (frame.kind === EventFrameKind.EVENT) {
          const seq = seqOf(frame);
          if (seq <= sub.lastSeen) sub.outOfOrder++;
          sub.lastSeen = Math.max(sub.lastSeen, seq);
          markReceived(seq);
          received.count++;
        } else if (frame.kind === EventFrameKind.HEARTBEAT && publishingDone && seqOf(frame) >= lastSeq) {
          // Only an idle stream gets a heartbeat: everything queued for us has been taken, pending notices included.
          sub.drained = true;
          break;
        }
        if (!publishingDone) {
          sub.framesReadWhilePublishing++;
          await Promise.race([sleep(o.slowReadMs), wakeReader.promise]);
        }
      }
    } catch (error) {
      if (!isAbort(error, signal)) errors.record("Subscribe", error);
    } finally {
      if (drainStarted > 0) sub.drainSeconds = round((performance.now() - drainStarted) / 1000, 1);
      drainedSignal.fire();
    }
  };

  // --- publishing ---
  const publishers = Array.from({ length: o.publishers }, () => connect(url, o.protocol));
  let nextIndex = 0;
  let nextPublisher = 0;
  const publishLoop = async () => {
    for (;;) {
      const index = nextIndex++;
      if (index >= o.events) return;
      const terminal = (index + 1) % o.terminalEvery === 0;
      const client = publishers[nextPublisher++ % publishers.length]!;
      const started = performance.now();
      try {
        const { envelope } = await client.events.publish({
          event: {
            envelope: { kind: terminal ? EventKind.RUN_COMPLETED : EventKind.MODEL_STREAM_DELTA, runId },
            payload: { case: "full", value: { data: PAYLOAD, mediaType: "application/octet-stream" } },
          },
        });
        publishRpc.add(performance.now() - started);
        const seq = Number(envelope?.eventSeq ?? 0n);
        flag(seq, terminal ? PUBLISHED_TERMINAL : PUBLISHED_PROGRESS);
        lastSeq = Math.max(lastSeq, seq);
        published++;
        if (terminal) publishedTerminal++;
      } catch (error) {
        errors.record("Publish", error);
      }
    }
  };

  // --- memory: RSS every 250 ms (UsageSampler), heap and a series point from GET /metrics ---
  let sampling = true;
  const phaseStart = performance.now();
  const memoryLoop = async () => {
    let lastPoint = -Infinity;
    while (sampling) {
      const heapMiB = await heapUsedMiB(url);
      if (heapMiB !== undefined) {
        heap.peak = Math.max(heap.peak ?? 0, heapMiB);
        heap.end = heapMiB;
      }
      const now = performance.now();
      if (now - lastPoint >= SERIES_EVERY_MS) {
        lastPoint = now;
        let rssMiB = 0;
        try {
          rssMiB = round(statusKiB(child.pid, "VmRSS") / 1024, 1);
        } catch {
          // the server is gone; the RSS sampler reports it
        }
        series.push({ seconds: round((now - phaseStart) / 1000, 1), published, received: received.count, rssMiB, ...(heapMiB === undefined ? {} : { heapUsedMiB: heapMiB }) });
      }
      await sleep(1000);
    }
  };

  let usage: ReturnType<UsageSampler["stop"]> | undefined;
  let publishSeconds = 0;
  let report: SubscriptionReport | undefined;
  try {
    const subscribing = subscriber();
    if (withSubscriber) {
      await Promise.race([subscribed.promise, sleep(30_000).then(() => Promise.reject(new Error("the subscription sent no CAUGHT_UP frame within 30 s")))]);
    }
    rssSampler.start();
    const memory = memoryLoop();
    const publishStarted = performance.now();
    let progressTimer: NodeJS.Timeout | undefined = setInterval(() => {
      log(`  ${round((performance.now() - publishStarted) / 1000, 0)} s: ${published} published${withSubscriber ? `, ${received.count} received, ${sub.notices.length} notices` : ""}`);
    }, 15_000);
    await Promise.all(Array.from({ length: o.concurrency }, publishLoop));
    publishSeconds = (performance.now() - publishStarted) / 1000;
    clearInterval(progressTimer);
    progressTimer = undefined;
    log(`  published ${published} in ${round(publishSeconds, 1)} s${withSubscriber ? `; the subscriber read ${sub.framesReadWhilePublishing} frames meanwhile; draining` : ""}`);
    if (withSubscriber) {
      publishingDone = true;
      drainStarted = performance.now();
      wakeReader.fire();
      wakeReader = signalled();
      await Promise.race([drainedSignal.promise, sleep(o.drainTimeoutMs)]);
      if (!sub.drained) {
        sub.drainSeconds = round((performance.now() - drainStarted) / 1000, 1);
        abort.abort();
      }
    }
    sampling = false;
    await memory;
    usage = rssSampler.stop();
    abort.abort();
    await subscribing;
    if (withSubscriber) {
      const repair = await repairGaps(url, o, runId, sub.notices, flags, got, log);
      report = summarize(flags, got, received.count, sub, repair);
    }
  } finally {
    abort.abort();
    subscriberConn?.close();
    for (const { close } of publishers) close();
    await child.stop();
  }
  return {
    name: withSubscriber ? "with slow subscriber" : "without subscriber",
    subscriber: withSubscriber,
    published,
    publishedTerminal,
    publishedProgress: published - publishedTerminal,
    publishSeconds: round(publishSeconds, 1),
    publishPerSecond: publishSeconds > 0 ? Math.round(published / publishSeconds) : 0,
    publishRpcMs: publishRpc.summary(),
    server: usage?.server,
    ...(heap.peak === undefined ? {} : { heapUsedMiBPeak: heap.peak, heapUsedMiBEnd: heap.end }),
    series,
    ...(report ? { subscription: report } : {}),
    errors: errors.toJSON(),
  };
}

/**
 * Notices' (repair_from, gap_end] ranges, overlapping ones merged: each keeps
 * the cursor of the notice with the smallest repair_from.
 */
function repairRanges(notices: Notice[]): Array<{ from: EventCursor; fromSeq: number; until: number }> {
  const sorted = [...notices].sort((a, b) => a.repairFrom - b.repairFrom);
  const ranges: Array<{ from: EventCursor; fromSeq: number; until: number }> = [];
  for (const n of sorted) {
    const last = ranges[ranges.length - 1];
    if (last && n.repairFrom <= last.until) last.until = Math.max(last.until, n.gapEnd);
    else ranges.push({ from: n.repairCursor, fromSeq: n.repairFrom, until: n.gapEnd });
  }
  return ranges;
}

/**
 * A new subscription (same scope, BACKPRESSURE_CALLER: nothing dropped) after
 * the repair_from of each merged range of notices, read until the range's
 * last gap_end; marks what they deliver. Returns which of the slow
 * subscriber's missing events came back.
 */
async function repairGaps(
  url: string,
  o: SlowSubscriberOptions,
  runId: string,
  notices: Notice[],
  published: Uint8Array,
  got: Uint8Array,
  log: (line: string) => void,
): Promise<RepairReport & { recoveredFlags: Uint8Array }> {
  const started = performance.now();
  const recoveredFlags = new Uint8Array(published.length);
  const conn = connect(url, o.protocol);
  let framesReceived = 0;
  let timedOut = 0;
  let streams = 0;
  try {
    const ranges = repairRanges(notices);
    log(`  repair: ${notices.length} notices, ${ranges.length} merged range(s) of (repair_from, gap_end]: ${ranges.slice(0, 5).map((r) => `(${r.fromSeq}, ${r.until}]`).join(", ")}${ranges.length > 5 ? ", ..." : ""}`);
    streams = ranges.length;
    for (const range of ranges) {
      const abort = loadAbortController();
      const timer = setTimeout(() => abort.abort(), o.drainTimeoutMs);
      try {
        const stream = conn.events.subscribe(
          {
            scope: { case: "runId", value: runId },
            after: range.from,
            queue: { overflow: SubscriberOverflowPolicy.BACKPRESSURE_CALLER },
            heartbeatInterval: HEARTBEAT,
          },
          { signal: abort.signal },
        );
        for await (const { frame } of stream) {
          if (!frame) continue;
          const seq = seqOf(frame);
          if (frame.kind === EventFrameKind.EVENT) {
            framesReceived++;
            if (seq < recoveredFlags.length) recoveredFlags[seq] = 1;
          }
          if (seq >= range.until) break;
        }
      } catch (error) {
        if (!isAbort(error, abort.signal)) throw error;
        timedOut++;
      } finally {
        clearTimeout(timer);
        abort.abort();
      }
    }
  } finally {
    conn.close();
  }
  let recovered = 0;
  let recoveredTerminal = 0;
  let notRecovered = 0;
  for (let seq = 1; seq < published.length; seq++) {
    if (!published[seq] || (got[seq] ?? 0)) continue;
    if (recoveredFlags[seq]) {
      recovered++;
      if (published[seq]! & PUBLISHED_TERMINAL) recoveredTerminal++;
    } else {
      notRecovered++;
    }
  }
  return {
    streams,
    framesReceived,
    recovered,
    recoveredTerminal,
    notRecovered,
    seconds: round((performance.now() - started) / 1000, 1),
    timedOut,
    recoveredFlags,
  };
}

function summarize(
  published: Uint8Array,
  got: Uint8Array,
  receivedCount: number,
  sub: {
    framesReadWhilePublishing: number;
    duplicates: number;
    outOfOrder: number;
    notices: Notice[];
    noticesOnNonEvent: number;
    drained: boolean;
    drainSeconds: number;
  },
  repair: RepairReport & { recoveredFlags: Uint8Array },
): SubscriptionReport {
  let publishedTerminal = 0;
  let receivedTerminal = 0;
  let receivedProgress = 0;
  let unknownPositions = 0;
  let missing = 0;
  let missingTerminal = 0;
  const missingSeqs: number[] = [];
  for (let seq = 1; seq < Math.max(published.length, got.length); seq++) {
    const p = published[seq] ?? 0;
    const g = got[seq] ?? 0;
    if (p & PUBLISHED_TERMINAL) publishedTerminal++;
    if (g && !p) unknownPositions++;
    if (g && p & PUBLISHED_TERMINAL) receivedTerminal++;
    if (g && p & PUBLISHED_PROGRESS) receivedProgress++;
    if (p && !g) {
      missing++;
      missingSeqs.push(seq);
      if (p & PUBLISHED_TERMINAL) missingTerminal++;
    }
  }
  // Which missing positions some notice's [gap_start, gap_end] covers (sweep over sorted gaps).
  const gaps = sub.notices.map((n) => [n.gapStart, n.gapEnd] as const).sort((a, b) => a[0] - b[0]);
  let missingOutsideGaps = 0;
  let g = 0;
  let reach = -1;
  for (const seq of missingSeqs) {
    while (g < gaps.length && gaps[g]![0] <= seq) reach = Math.max(reach, gaps[g++]![1]);
    if (seq > reach) missingOutsideGaps++;
  }
  const byReason: Record<string, number> = {};
  let droppedCount = 0;
  let widestGap = 0;
  for (const n of sub.notices) {
    droppedCount += n.droppedCount;
    const reason = EventOverflowReason[n.reason] ?? String(n.reason);
    byReason[reason] = (byReason[reason] ?? 0) + 1;
    widestGap = Math.max(widestGap, n.gapEnd - n.gapStart + 1);
  }
  const terminalNotPreserved = sub.notices.filter((n) => !n.terminalPreserved).length;
  const badRepairFrom = sub.notices.filter((n) => !(n.repairFrom < n.gapStart)).length;
  const notices: NoticeSummary = {
    count: sub.notices.length,
    droppedCount,
    onNonEventFrames: sub.noticesOnNonEvent,
    terminalNotPreserved,
    byReason,
    missingOutsideGaps,
    badRepairFrom,
    widestGap,
    ...(sub.notices.length > 0 ? { first: noticeJson(sub.notices[0]), last: noticeJson(sub.notices[sub.notices.length - 1]) } : {}),
  };
  const { recoveredFlags: _flags, ...repairReport } = repair;
  const checks: SubscriptionReport["checks"] = {
    "terminal events all arrive": {
      pass: sub.drained && missingTerminal === 0 && receivedTerminal === publishedTerminal,
      detail: `${receivedTerminal} of ${publishedTerminal} terminal events received (${missingTerminal} missing)`,
    },
    "notices report the gaps": {
      pass: sub.drained && droppedCount === missing && missingOutsideGaps === 0 && badRepairFrom === 0 && (missingTerminal > 0) === (terminalNotPreserved > 0),
      detail: `notices' dropped_count sums to ${droppedCount}; ${missing} published events never arrived; ${missingOutsideGaps} of them outside every notice's gap; ` +
        `${terminalNotPreserved} notices say a terminal event was dropped, ${missingTerminal} terminal events missing`,
    },
    "re-subscribing from repair_from delivers what was dropped": {
      pass: repair.notRecovered === 0 && repair.timedOut === 0,
      detail: `${repair.recovered} of ${missing} missing events delivered again by ${repair.streams} repair subscription(s) from repair_from (${repair.notRecovered} not)`,
    },
    "delivery in order, no duplicates": {
      pass: sub.duplicates === 0 && sub.outOfOrder === 0 && unknownPositions === 0,
      detail: `${sub.duplicates} duplicates, ${sub.outOfOrder} out of order, ${unknownPositions} at unpublished positions`,
    },
  };
  return {
    framesReadWhilePublishing: sub.framesReadWhilePublishing,
    received: receivedCount,
    receivedTerminal,
    receivedProgress,
    duplicates: sub.duplicates,
    outOfOrder: sub.outOfOrder,
    unknownPositions,
    missing,
    missingTerminal,
    drainSeconds: sub.drainSeconds,
    drained: sub.drained,
    notices,
    repair: repairReport,
    checks,
  };
}

export interface SlowSubscriberReport {
  phases: PhaseReport[];
  /** Peak RSS with the subscriber minus without (MiB), when both phases ran. */
  rssPeakOverheadMiB?: number;
  heapPeakOverheadMiB?: number;
  checks: Record<string, { pass: boolean; detail: string }>;
}

export async function runSlowSubscriber(o: SlowSubscriberOptions, beforePhase: () => Promise<unknown>, log: (line: string) => void): Promise<SlowSubscriberReport> {
  const phases: PhaseReport[] = [];
  for (const withSubscriber of o.baseline ? [true, false] : [true]) {
    await beforePhase();
    log(`slow-subscriber: ${withSubscriber ? "with the slow subscriber" : "without a subscriber (baseline)"}: publishing ${o.events} events`);
    phases.push(await runPhase(o, withSubscriber, log));
  }
  const withSub = phases.find((p) => p.subscriber)!;
  const without = phases.find((p) => !p.subscriber);
  const checks = { ...withSub.subscription?.checks };
  let rssPeakOverheadMiB: number | undefined;
  let heapPeakOverheadMiB: number | undefined;
  if (without?.server && withSub.server) {
    rssPeakOverheadMiB = round(withSub.server.rssMiBPeak - without.server.rssMiBPeak, 1);
    if (withSub.heapUsedMiBPeak !== undefined && without.heapUsedMiBPeak !== undefined) heapPeakOverheadMiB = round(withSub.heapUsedMiBPeak - without.heapUsedMiBPeak, 1);
    checks["memory stays bounded"] = {
      pass: rssPeakOverheadMiB <= o.maxRssOverheadMiB,
      detail: `peak RSS ${withSub.server.rssMiBPeak} MiB with the subscriber, ${without.server.rssMiBPeak} MiB without: ${rssPeakOverheadMiB} MiB more (limit ${o.maxRssOverheadMiB})` +
        (heapPeakOverheadMiB === undefined ? "" : `; peak heap used ${withSub.heapUsedMiBPeak} vs ${without.heapUsedMiBPeak} MiB`),
    };
  }
  return {
    phases,
    ...(rssPeakOverheadMiB === undefined ? {} : { rssPeakOverheadMiB }),
    ...(heapPeakOverheadMiB === undefined ? {} : { heapPeakOverheadMiB }),
    checks,
  };
}

export function describeSlowSubscriber(report: SlowSubscriberReport): string {
  const lines: string[] = [];
  for (const p of report.phases) {
    lines.push(`${p.name}: ${p.published} published (${p.publishedTerminal} terminal) in ${p.publishSeconds} s = ${p.publishPerSecond}/s, ` +
      `Publish p50 ${p.publishRpcMs.p50} p99 ${p.publishRpcMs.p99} ms; server RSS start ${p.server?.rssMiBStart ?? "?"} end ${p.server?.rssMiBEnd ?? "?"} ` +
      `peak ${p.server?.rssMiBPeak ?? "?"} MiB, heap used peak ${p.heapUsedMiBPeak ?? "?"} end ${p.heapUsedMiBEnd ?? "?"} MiB, server CPU ${p.server?.cpuPercent ?? "?"}%` +
      (Object.keys(p.errors).length > 0 ? `; ERRORS ${JSON.stringify(p.errors)}` : ""));
    const s = p.subscription;
    if (s) {
      lines.push(`  subscriber: read ${s.framesReadWhilePublishing} frames while publishing; received ${s.received} events (${s.receivedTerminal} terminal, ` +
        `${s.receivedProgress} progress); missing ${s.missing} (${s.missingTerminal} terminal); drained ${s.drained} in ${s.drainSeconds} s`);
      lines.push(`  notices: ${s.notices.count}, dropped_count sum ${s.notices.droppedCount}, terminal_preserved=false on ${s.notices.terminalNotPreserved}, ` +
        `reasons ${JSON.stringify(s.notices.byReason)}, widest gap ${s.notices.widestGap} positions, ${s.notices.missingOutsideGaps} missing outside every gap`);
      lines.push(`  repair: ${s.repair.streams} subscription(s) from repair_from (merged ranges), ${s.repair.framesReceived} frames, recovered ${s.repair.recovered} ` +
        `(${s.repair.recoveredTerminal} terminal), not recovered ${s.repair.notRecovered}, ${s.repair.timedOut} timed out, ${s.repair.seconds} s`);
    }
  }
  if (report.rssPeakOverheadMiB !== undefined) lines.push(`peak RSS overhead of the subscriber: ${report.rssPeakOverheadMiB} MiB; heap: ${report.heapPeakOverheadMiB ?? "?"} MiB`);
  for (const [name, check] of Object.entries(report.checks)) lines.push(`${check.pass ? "PASS" : "FAIL"} ${name}: ${check.detail}`);
  return lines.join("\n");
}
