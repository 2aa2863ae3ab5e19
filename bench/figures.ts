/**
 * The performance issue's figures (issue 10): which runs each scenario makes,
 * interleaved with the peers round after round (Mailroom, BullMQ, JetStream,
 * Mailroom, BullMQ, ...), and the verdict lines that hold the results to the
 * issue's targets. Ratios pair runs of the same round, taken a minute or two
 * apart at most, and the verdict takes their median: on a shared 2-core
 * machine rates drift between minutes, ratios and counts much less.
 */
import type { ClientProtocol } from "../src/client/index.js";
import type { EventsOptions, SubscriberClient } from "./events-load.js";
import type { MailboxOptions } from "./mailbox-load.js";
import { isSkipped, type RunResult, type RunSpec, type SkippedRun, type System, SYSTEM_NAMES } from "./runs.js";
import { round } from "./samples.js";

/** What the run builders read from the command line. */
export interface SpecDefaults extends Pick<MailboxOptions, "protocol" | "producers" | "workers" | "threads" | "batch" | "claimLimit" | "ackMode" | "waitMs"> {
  maxBacklog?: number;
  subscribers: number;
  publishers: number;
  eventRate: number;
  publishConcurrency: number;
  maxLag: number;
  queueCapacity: number;
  framesPerMessage: number;
  subscriberClient: SubscriberClient;
  concurrency: number;
  repeat: number;
  backlog: number;
  backlogThreads: number;
  peers: boolean;
}

type Placement = Pick<RunSpec, "figure" | "round">;

export function mailboxSpec(name: string, o: SpecDefaults, overrides: Partial<MailboxOptions> = {}, system: System = "mailroom", placement: Placement = {}): RunSpec {
  const batch = overrides.batch ?? o.batch;
  const producers = overrides.producers ?? o.producers;
  const workers = overrides.workers ?? o.workers;
  const claimLimit = overrides.claimLimit ?? o.claimLimit;
  return {
    name,
    system,
    ...placement,
    kind: "mailbox",
    mailbox: {
      protocol: o.protocol,
      producers,
      workers,
      threads: o.threads,
      batch,
      claimLimit,
      ackMode: o.ackMode,
      waitMs: o.waitMs,
      leaseMs: 60_000,
      // Two claims' worth for every worker, so none waits for work, and room for every producer's batch.
      maxBacklog: o.maxBacklog ?? Math.max(2 * workers * claimLimit, batch * producers),
      ...overrides,
    },
  };
}

export function eventsSpec(mode: EventsOptions["mode"], o: SpecDefaults, system: System = "mailroom", placement: Placement = {}, subscriberClient = o.subscriberClient): RunSpec {
  const subscribers = mode === "max" ? 1 : o.subscribers;
  const what = mode === "max" ? "max frames/s, 1 subscriber" : `${subscribers} subs x ${o.eventRate}/s`;
  const client = subscriberClient === "lean" ? " (lean subscribers)" : "";
  return {
    name: system === "mailroom" ? `events ${what}${client}` : `${SYSTEM_NAMES[system]} ${what}`,
    system,
    ...placement,
    kind: "events",
    events: {
      protocol: o.protocol,
      mode,
      subscribers,
      rate: o.eventRate,
      publishers: o.publishers,
      concurrency: o.publishConcurrency,
      maxLag: o.maxLag,
      queueCapacity: o.queueCapacity,
      framesPerMessage: o.framesPerMessage,
      subscriberClient,
    },
  };
}

export function echoSpec(system: "bare" | "mailroom", concurrency: number, protocol: ClientProtocol, rpc: "health" | "enqueue" = "health", placement: Placement = {}): RunSpec {
  const what = system === "bare" ? "bare connect-node echo" : rpc === "enqueue" ? "mailroom unary Enqueue" : "mailroom Health.Check";
  return { name: `${what} c=${concurrency} ${protocol}`, system, ...placement, kind: "echo", echo: { protocol, concurrency, rpc, threads: 1000 } };
}

/** The issue's unary mailbox path: one Enqueue, one Ack per dispatch, `concurrency` producers and workers. */
export function unaryOverrides(concurrency: number): Partial<MailboxOptions> {
  return { batch: 1, ackMode: "single", producers: concurrency, workers: concurrency };
}

const BATCH_PATH: Partial<MailboxOptions> = { batch: 100, claimLimit: 50, ackMode: "batch" };

function rounds(o: SpecDefaults, build: (placement: (figure: string) => Placement, round: number) => RunSpec[]): RunSpec[] {
  return Array.from({ length: o.repeat }, (_, r) => build((figure) => ({ figure, round: r }), r)).flat();
}

const label = (name: string, r: number) => `${name} [round ${r + 1}]`;

/** jobs: the batch path and the unary path, Mailroom against BullMQ and JetStream. */
export function jobsRuns(o: SpecDefaults): RunSpec[] {
  const peers = (figure: string, overrides: Partial<MailboxOptions>, place: (figure: string) => Placement, r: number, systems: System[]) =>
    o.peers ? systems.map((system) => mailboxSpec(label(`${SYSTEM_NAMES[system]} ${figure} path`, r), o, overrides, system, place(figure))) : [];
  const unary = unaryOverrides(o.concurrency);
  return rounds(o, (place, r) => [
    mailboxSpec(label("Mailroom batch path", r), o, BATCH_PATH, "mailroom", place("batch")),
    ...peers("batch", BATCH_PATH, place, r, ["bullmq", "jetstream"]),
    mailboxSpec(label("Mailroom unary path", r), o, unary, "mailroom", place("unary")),
    ...peers("unary", unary, place, r, ["bullmq"]),
  ]);
}

/**
 * fanout: 100 subscribers x 1,000 events/s, Mailroom against NATS core and
 * JetStream. Mailroom's verdict run has lean subscribers (raw payload bytes,
 * as nats.js gives the NATS runs'); a run with connect-node's client, which
 * limits the load generator before the server, is information.
 */
export function fanoutRuns(o: SpecDefaults): RunSpec[] {
  return rounds(o, (place, r) => [
    ...(["mailroom", ...(o.peers ? (["nats-core", "jetstream"] as const) : [])] as System[]).map((system) => {
      const spec = eventsSpec("fanout", o, system, place("fanout"), "lean");
      return { ...spec, name: label(spec.name, r) };
    }),
    (() => {
      const spec = eventsSpec("fanout", o, "mailroom", place("fanout-connect"), "connect");
      return { ...spec, name: label(`${spec.name} (connect-node subscribers)`, r) };
    })(),
  ]);
}

/** unary: Enqueue against Health.Check, both at `concurrency` callers. */
export function unaryRuns(o: SpecDefaults): RunSpec[] {
  return rounds(o, (place, r) =>
    (["health", "enqueue"] as const).map((rpc) => {
      const spec = echoSpec("mailroom", o.concurrency, o.protocol, rpc, place(rpc));
      return { ...spec, name: label(spec.name, r) };
    }),
  );
}

/** backlog: the batch path on an empty mailbox and with `backlog` dispatches queued on the same threads. */
export function backlogRuns(o: SpecDefaults): RunSpec[] {
  return rounds(o, (place, r) => [
    mailboxSpec(label("Mailroom batch path, empty", r), o, BATCH_PATH, "mailroom", place("empty")),
    {
      ...mailboxSpec(label(`Mailroom batch path, ${o.backlog} queued on ${Math.min(o.backlogThreads, o.threads)} threads`, r), o, BATCH_PATH, "mailroom", place("backlog")),
      prefill: { count: o.backlog, threads: Math.min(o.backlogThreads, o.threads) },
    },
  ]);
}

export interface Verdict {
  figure: string;
  target: string;
  /** PASS / FAIL against the target; INFO for a figure without one; N/A when it could not be measured. */
  verdict: "PASS" | "FAIL" | "INFO" | "N/A";
  /** The median (of rounds) the verdict is taken on. */
  value?: number;
  /** Every round's value. */
  rounds: number[];
  detail: string;
}

type Reading = (run: RunResult) => number | undefined;

const jobsPerSecond: Reading = (run) => (run.kind === "mailbox" ? run.result.jobsPerSecond : undefined);
const callsPerSecond: Reading = (run) => (run.kind === "echo" ? run.result.callsPerSecond : undefined);
const storeOps: Reading = (run) => run.costs.storeOps?.total;
const cpuUs: Reading = (run) => run.costs.serverCpuUs?.value;
const p99: Reading = (run) => (run.kind === "events" ? run.result.latencyMs.p99 : undefined);

export function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

class Figures {
  constructor(private readonly runs: Array<RunResult | SkippedRun>) {}

  /** The value `pick` reads from each round's run of `figure` on `system`, by round. */
  byRound(figure: string, system: System, pick: Reading): Map<number, number> {
    const out = new Map<number, number>();
    for (const run of this.runs) {
      if (isSkipped(run) || run.figure !== figure || run.system !== system) continue;
      const value = pick(run);
      if (value !== undefined && Number.isFinite(value)) out.set(run.round ?? 0, value);
    }
    return out;
  }

  /** Why `system` has no runs of `figure`: its skip reason, if it was skipped. */
  whySkipped(figure: string, system: System): string | undefined {
    const skipped = this.runs.find((run): run is SkippedRun => isSkipped(run) && run.figure === figure && run.system === system);
    return skipped?.skipped;
  }

  /** A value against a bound: `value <= bound` ("at most") or `value >= bound` ("at least"). */
  bound(figure: string, target: string, values: Map<number, number>, test: (value: number) => boolean, unit: string): Verdict {
    const rounds = [...values.values()];
    const value = median(rounds);
    if (value === undefined) return { figure, target, verdict: "N/A", rounds, detail: "not measured (see the runs above)" };
    return { figure, target, verdict: test(value) ? "PASS" : "FAIL", value: round(value, 2), rounds: rounds.map((v) => round(v, 2)), detail: `${round(value, 2)} ${unit}${rounds.length > 1 ? ` (rounds: ${rounds.map((v) => round(v, 2)).join(", ")})` : ""}` };
  }

  /** Mailroom's value over the peer's, round by round, against `test` (INFO without one). */
  ratio(figure: string, target: string, a: [string, System], b: [string, System], pick: Reading, test?: (ratio: number) => boolean): Verdict {
    const left = this.byRound(a[0], a[1], pick);
    const right = this.byRound(b[0], b[1], pick);
    const ratios: number[] = [];
    const pairs: string[] = [];
    for (const [r, value] of left) {
      const other = right.get(r);
      if (other === undefined || other === 0) continue;
      ratios.push(value / other);
      pairs.push(`${round(value, 2)} / ${round(other, 2)}`);
    }
    const value = median(ratios);
    if (value === undefined) {
      const why = this.whySkipped(b[0], b[1]) ?? this.whySkipped(a[0], a[1]) ?? "not measured (see the runs above)";
      return { figure, target, verdict: "N/A", rounds: [], detail: why };
    }
    const verdict = test ? (test(value) ? "PASS" : "FAIL") : "INFO";
    return { figure, target, verdict, value: round(value, 4), rounds: ratios.map((v) => round(v, 4)), detail: `${ratioText(value)} (${a[1] === b[1] ? `${a[0]} / ${b[0]}` : `${SYSTEM_NAMES[a[1]]} / ${SYSTEM_NAMES[b[1]]}`}, by round: ${pairs.join("; ")})` };
  }
}

export function jobsVerdicts(runs: Array<RunResult | SkippedRun>): Verdict[] {
  const f = new Figures(runs);
  const mailroom = (figure: string): [string, System] => [figure, "mailroom"];
  return [
    f.ratio("batch path jobs/s, Mailroom / BullMQ", ">= 50 %", mailroom("batch"), ["batch", "bullmq"], jobsPerSecond, (r) => r >= 0.5),
    f.ratio("batch path jobs/s, Mailroom / JetStream", "(none)", mailroom("batch"), ["batch", "jetstream"], jobsPerSecond),
    f.bound("batch path store operations per acked job", "<= 2", f.byRound("batch", "mailroom", storeOps), (v) => v <= 2, "per acked job"),
    f.ratio("batch path server CPU per acked job, Mailroom / redis-server", "(none)", mailroom("batch"), ["batch", "bullmq"], cpuUs),
    f.ratio("batch path server CPU per acked job, Mailroom / nats-server", "(none)", mailroom("batch"), ["batch", "jetstream"], cpuUs),
    f.bound("batch path server CPU per acked job (Mailroom)", "(none)", f.byRound("batch", "mailroom", cpuUs), () => true, "us"),
    f.ratio("unary path jobs/s, Mailroom / BullMQ unary", "(none)", mailroom("unary"), ["unary", "bullmq"], jobsPerSecond),
    f.ratio("unary path jobs/s, Mailroom / BullMQ batch", "(none)", mailroom("unary"), ["batch", "bullmq"], jobsPerSecond),
    f.bound("unary path store operations per acked job", "<= 8", f.byRound("unary", "mailroom", storeOps), (v) => v <= 8, "per acked job"),
  ].map(infoWithoutTarget);
}

export function fanoutVerdicts(runs: Array<RunResult | SkippedRun>): Verdict[] {
  const f = new Figures(runs);
  const events = (run: RunResult) => (run.kind === "events" ? run.result : undefined);
  const share = (run: RunResult) => {
    const r = events(run);
    return r?.targetPerSecond ? (100 * r.publishPerSecond) / r.targetPerSecond : undefined;
  };
  const publishedShare = f.byRound("fanout", "mailroom", share);
  const undelivered = f.byRound("fanout", "mailroom", (run) => events(run)?.undelivered);
  return [
    f.bound("fan-out: published / offered", ">= 95 %", publishedShare, (v) => v >= 95, "%"),
    f.bound("fan-out: events never delivered (summed over subscribers, worst round)", "0", worst(undelivered), (v) => v === 0, "undelivered"),
    f.ratio("fan-out p99 publish -> receive, Mailroom / JetStream", "<= 100 %", ["fanout", "mailroom"], ["fanout", "jetstream"], p99, (r) => r <= 1),
    f.ratio("fan-out p99 publish -> receive, Mailroom / NATS core", "(none)", ["fanout", "mailroom"], ["fanout", "nats-core"], p99),
    f.bound("fan-out server CPU per delivered frame (Mailroom)", "<= 15 us", f.byRound("fanout", "mailroom", cpuUs), (v) => v <= 15, "us"),
    f.ratio("fan-out server CPU per delivered frame, Mailroom / nats-server (JetStream)", "(none)", ["fanout", "mailroom"], ["fanout", "jetstream"], cpuUs),
    f.bound("fan-out store operations per published event", "(none)", f.byRound("fanout", "mailroom", storeOps), () => true, "per event"),
    f.bound("fan-out with connect-node subscribers: published / offered", "(none)", f.byRound("fanout-connect", "mailroom", share), () => true, "%"),
    f.ratio("fan-out with connect-node subscribers: p99, Mailroom / JetStream", "(none)", ["fanout-connect", "mailroom"], ["fanout", "jetstream"], p99),
  ].map(infoWithoutTarget);
}

export function unaryVerdicts(runs: Array<RunResult | SkippedRun>): Verdict[] {
  const f = new Figures(runs);
  return [
    f.ratio("unary Enqueue calls/s / Health.Check calls/s", ">= 80 %", ["enqueue", "mailroom"], ["health", "mailroom"], callsPerSecond, (r) => r >= 0.8),
    f.bound("store operations per Enqueue", "(none)", f.byRound("enqueue", "mailroom", storeOps), () => true, "per call"),
    f.ratio("server CPU per call, Enqueue / Health.Check", "(none)", ["enqueue", "mailroom"], ["health", "mailroom"], cpuUs),
  ].map(infoWithoutTarget);
}

export function backlogVerdicts(runs: Array<RunResult | SkippedRun>): Verdict[] {
  const f = new Figures(runs);
  return [
    f.ratio("jobs/s with the backlog / empty", ">= 80 %", ["backlog", "mailroom"], ["empty", "mailroom"], jobsPerSecond, (r) => r >= 0.8),
    f.ratio("store operations per acked job with the backlog / empty", "<= 120 %", ["backlog", "mailroom"], ["empty", "mailroom"], storeOps, (r) => r <= 1.2),
    f.ratio("server CPU per acked job with the backlog / empty", "(none)", ["backlog", "mailroom"], ["empty", "mailroom"], cpuUs),
  ].map(infoWithoutTarget);
}

/** A ratio as a percentage, or as a multiple once it is 2 or more ("42.1x"). */
function ratioText(ratio: number): string {
  return ratio >= 2 ? `${round(ratio, 1)}x` : `${round(ratio * 100, 1)} %`;
}

function worst(values: Map<number, number>): Map<number, number> {
  return values.size === 0 ? values : new Map([[0, Math.max(...values.values())]]);
}

/** A figure the issue sets no target for is reported, never passed or failed. */
function infoWithoutTarget(verdict: Verdict): Verdict {
  return verdict.target === "(none)" && verdict.verdict !== "N/A" ? { ...verdict, verdict: "INFO" } : verdict;
}

export function verdictLine(v: Verdict): string {
  const target = v.target === "(none)" ? "" : ` (target ${v.target})`;
  return `VERDICT ${v.verdict.padEnd(4)} ${v.figure}${target}: ${v.detail}`;
}
