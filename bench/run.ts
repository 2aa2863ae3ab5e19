/**
 * `npm run bench`: starts the server under test as a child process, drives
 * load at it from this process, samples the server's CPU and memory from
 * /proc, stops the server, prints the figures and saves them as JSON in
 * bench/results/. See bench/README.md.
 *
 *   npm run bench                                   # baselines, mailbox and events
 *   npm run bench -- --scenario mailbox --batch 500 --claim-limit 100
 *   npm run bench -- --scenario events --subscribers 100 --event-rate 1000
 *   npm run bench -- --scenario matrix             # the README's comparison table
 *   npm run bench -- --server-url http://127.0.0.1:50051 --server-pid 1234
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import type { ClientProtocol } from "../src/client/index.js";
import { type EchoReport, startEchoLoad } from "./echo-load.js";
import { type EventsOptions, type EventsReport, startEventsLoad } from "./events-load.js";
import { type Load, sleep } from "./load.js";
import { round } from "./samples.js";
import { type MailboxOptions, type MailboxReport, startMailboxLoad } from "./mailbox-load.js";
import { UsageSampler, waitForQuiet } from "./proc-stats.js";
import { printProfile, type ProfileSummary, summarizeProfile } from "./profile.js";
import { mailroomServer, repoRoot, type ServerChild, spawnServer } from "./server.js";
import { describeLongPoll, runLongPoll } from "./long-poll.js";
import { describeSlowSubscriber, runSlowSubscriber } from "./slow-subscriber.js";

/** The mailbox options the command line sets as they are (see the options below). */
type MailboxFlags = Pick<MailboxOptions, "producers" | "workers" | "threads" | "batch" | "claimLimit" | "ackMode" | "waitMs">;
/** The events options the command line sets as they are. */
type EventsFlags = Pick<EventsOptions, "subscribers" | "publishers" | "maxLag" | "queueCapacity" | "framesPerMessage">;

interface CliOptions extends MailboxFlags, EventsFlags {
  scenario: "all" | "mailbox" | "events" | "echo" | "health" | "matrix" | "slow-subscriber" | "long-poll";
  duration: number;
  warmup: number;
  maxBacklog?: number;
  concurrency: number;
  eventRate: number;
  publishConcurrency: number;
  protocol: ClientProtocol;
  store: string;
  serverArg: string[];
  serverUrl?: string;
  serverRoot?: string;
  serverPid?: number;
  cpuProf?: string | true;
  quiet: number;
  quietTimeout: number;
  out?: string;
  save: boolean;
  events: number;
  terminalEvery: number;
  slowReadMs: number;
  slowCapacity: number;
  rounds: number;
  slowBaseline: boolean;
  maxRssOverhead: number;
  drainTimeout: number;
}

/** One measured configuration. */
type RunSpec =
  | { name: string; kind: "echo"; target: "bare" | "mailroom"; protocol: ClientProtocol; concurrency: number }
  | { name: string; kind: "mailbox"; mailbox: Omit<MailboxOptions, "url" | "tag"> }
  | { name: string; kind: "events"; events: Omit<EventsOptions, "url" | "tag"> };

/** A load and what it reports, tagged by kind so the figures keep their type. */
type Running =
  | { kind: "echo"; load: Load<EchoReport> }
  | { kind: "mailbox"; load: Load<MailboxReport> }
  | { kind: "events"; load: Load<EventsReport> };

type Outcome =
  | { kind: "echo"; result: EchoReport }
  | { kind: "mailbox"; result: MailboxReport }
  | { kind: "events"; result: EventsReport };

type RunResult = Outcome & {
  name: string;
  config: Record<string, unknown>;
  seconds: number;
  server: ReturnType<UsageSampler["stop"]>["server"];
  client: ReturnType<UsageSampler["stop"]>["client"];
  machine: ReturnType<UsageSampler["stop"]>["machine"];
  /** How the machine looked before the run started (see --quiet). */
  beforeRun?: Awaited<ReturnType<typeof waitForQuiet>>;
  profile?: ProfileSummary;
};

const integer = (min: number, max = Number.MAX_SAFE_INTEGER) => (raw: string): number => {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`);
  return value;
};
const seconds = (raw: string): number => {
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || value > 3600) throw new InvalidArgumentError("must be a number of seconds above 0 and at most 3600");
  return value;
};

function mailboxSpec(name: string, o: CliOptions, overrides: Partial<MailboxOptions> = {}): RunSpec {
  const threads = overrides.threads ?? o.threads;
  const batch = overrides.batch ?? o.batch;
  const producers = overrides.producers ?? o.producers;
  const workers = overrides.workers ?? o.workers;
  const claimLimit = overrides.claimLimit ?? o.claimLimit;
  return {
    name,
    kind: "mailbox",
    mailbox: {
      protocol: o.protocol,
      producers,
      workers,
      threads,
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

function eventsSpec(mode: EventsOptions["mode"], o: CliOptions): RunSpec {
  const subscribers = mode === "max" ? 1 : o.subscribers;
  return {
    name: mode === "max" ? "events max frames/s, 1 subscriber" : `events ${subscribers} subs x ${o.eventRate}/s`,
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
    },
  };
}

function scenarioRuns(o: CliOptions): RunSpec[] {
  const echo = (target: "bare" | "mailroom", concurrency: number, protocol = o.protocol): RunSpec => ({
    name: `${target === "bare" ? "bare connect-node echo" : "mailroom Health.Check"} c=${concurrency} ${protocol}`,
    kind: "echo",
    target,
    protocol,
    concurrency,
  });
  switch (o.scenario) {
    case "echo":
      return [echo("bare", 1), echo("bare", o.concurrency)];
    case "health":
      return [echo("mailroom", 1), echo("mailroom", o.concurrency)];
    case "mailbox":
      return [mailboxSpec("mailbox", o)];
    case "events":
      return [eventsSpec("fanout", o), eventsSpec("max", o)];
    case "all":
      return [
        echo("bare", 1),
        echo("bare", o.concurrency),
        echo("mailroom", o.concurrency),
        mailboxSpec("mailbox", o),
        eventsSpec("fanout", o),
        eventsSpec("max", o),
      ];
    case "slow-subscriber":
    case "long-poll":
      return []; // not a measured window: see runSlowScenario, runLongPollScenario
    case "matrix": {
      // Each varies one thing from the default (the first mailbox line).
      const m = (name: string, overrides: Partial<MailboxOptions>) => mailboxSpec(name, o, overrides);
      return [
        echo("bare", 1),
        echo("bare", o.concurrency),
        echo("bare", o.concurrency, "connect"),
        echo("mailroom", 1),
        echo("mailroom", o.concurrency),
        m("mailbox default", {}),
        m("enqueue batch 1 (unary Enqueue)", { batch: 1 }),
        m("enqueue batch 1, 16 producers", { batch: 1, producers: 16 }),
        m("enqueue batch 500", { batch: 500 }),
        m("claim limit 1", { claimLimit: 1 }),
        m("claim limit 1, 16 workers", { claimLimit: 1, workers: 16 }),
        m("claim limit 100", { claimLimit: 100 }),
        m("1 worker", { workers: 1 }),
        m("16 workers", { workers: 16 }),
        m("unary Ack per dispatch", { ackMode: "single" }),
        m("10 threads", { threads: 10 }),
        m("100 threads", { threads: 100 }),
        m("protocol connect", { protocol: "connect" }),
        m("protocol grpc-web", { protocol: "grpc-web" }),
      ];
    }
  }
}

function configOf(spec: RunSpec): Record<string, unknown> {
  switch (spec.kind) {
    case "echo":
      return { target: spec.target, protocol: spec.protocol, concurrency: spec.concurrency };
    case "mailbox":
      return { ...spec.mailbox };
    case "events":
      return { ...spec.events };
  }
}

function startLoad(spec: RunSpec, url: string, tag: string): Running {
  switch (spec.kind) {
    case "echo":
      return { kind: "echo", load: startEchoLoad({ url, protocol: spec.protocol, concurrency: spec.concurrency }) };
    case "mailbox":
      return { kind: "mailbox", load: startMailboxLoad({ ...spec.mailbox, url, tag }) };
    case "events":
      return { kind: "events", load: startEventsLoad({ ...spec.events, url, tag }) };
  }
}

function outcome(running: Running, seconds: number): Outcome {
  switch (running.kind) {
    case "echo":
      return { kind: "echo", result: running.load.report(seconds) };
    case "mailbox":
      return { kind: "mailbox", result: running.load.report(seconds) };
    case "events":
      return { kind: "events", result: running.load.report(seconds) };
  }
}

/** Rejects after `ms`: a load that never becomes ready (a stream that never opens) must not hang the run. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function startTarget(spec: RunSpec, o: CliOptions, profileDir: string | undefined): Promise<{ url: string; pid: number | undefined; child?: ServerChild }> {
  const bare = spec.kind === "echo" && spec.target === "bare";
  if (o.serverUrl && !bare) return { url: o.serverUrl, pid: o.serverPid };
  const script = bare ? ["bench/echo-server.ts"] : mailroomServer(o.store, o.serverArg);
  const child = await spawnServer({ script, cpuProfileDir: profileDir, cwd: bare ? undefined : o.serverRoot });
  return { url: child.url, pid: child.pid, child };
}

async function measure(spec: RunSpec, o: CliOptions, runIndex: number): Promise<RunResult> {
  const profileDir = o.cpuProf ? (typeof o.cpuProf === "string" ? o.cpuProf : mkdtempSync(join(tmpdir(), "mailroom-prof-"))) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const before = profileDir ? new Set(readdirSync(profileDir)) : new Set<string>();
  const target = await startTarget(spec, o, profileDir);
  const tag = `bench-${process.pid}-${runIndex}`;
  const running = startLoad(spec, target.url, tag);
  const { load } = running;
  const sampler = new UsageSampler(target.pid);
  let usage: ReturnType<UsageSampler["stop"]>;
  let elapsed: number;
  try {
    if (load.ready) await within(load.ready, 30_000, "the load's start (e.g. every subscription registered)");
    await sleep(o.warmup * 1000);
    sampler.start();
    load.beginMeasuring();
    const started = performance.now();
    await sleep(o.duration * 1000);
    load.endMeasuring();
    elapsed = (performance.now() - started) / 1000;
    usage = sampler.stop();
  } finally {
    await load.stop();
    await target.child?.stop();
  }
  const result: RunResult = {
    ...outcome(running, elapsed),
    name: spec.name,
    config: configOf(spec),
    seconds: Math.round(elapsed * 1000) / 1000,
    server: usage.server,
    client: usage.client,
    machine: usage.machine,
  };
  if (profileDir && target.child) {
    const written = readdirSync(profileDir).filter((f) => f.endsWith(".cpuprofile") && !before.has(f));
    if (written[0]) result.profile = summarizeProfile(join(profileDir, written[0]));
  }
  return result;
}

function usageText(run: RunResult): string {
  return `server CPU ${run.server?.cpuPercent ?? "?"}% RSS ${run.server?.rssMiBEnd ?? "?"} MiB (peak ${run.server?.rssMiBPeak ?? "?"}), ` +
    `client CPU ${run.client.cpuPercent}%, other ${run.machine.otherPercent}%`;
}

function describe(run: RunResult): string {
  const usage = usageText(run);
  switch (run.kind) {
    case "echo": {
      const r = run.result;
      return `${run.name}: ${r.callsPerSecond} calls/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms; ${usage}${errorText(r.errors)}`;
    }
    case "mailbox": {
      const r = run.result;
      return `${run.name}: ${r.jobsPerSecond} jobs/s acked, ${r.enqueuePerSecond} enqueued/s, ${r.rpcsPerSecond} RPCs/s; ` +
        `claim p50 ${r.claimMs.p50} p99 ${r.claimMs.p99} max ${r.claimMs.max} ms (${r.emptyClaims} empty, ${r.meanClaimSize} a claim); ` +
        `e2e p50 ${r.endToEndMs.p50} p99 ${r.endToEndMs.p99} ms; ${usage}${errorText(r.errors)}`;
    }
    case "events": {
      const r = run.result;
      const offered = r.targetPerSecond === undefined ? "" : ` (offered ${r.targetPerSecond}/s)`;
      return `${run.name}: ${r.publishPerSecond} published/s${offered}, ${r.framesPerSecond} frames/s received ` +
        `(${r.framesPerSecondPerSubscriber} per subscriber); publish -> receive p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} max ${r.latencyMs.max} ms; ` +
        `Publish RPC p50 ${r.publishRpcMs.p50} p99 ${r.publishRpcMs.p99} ms; undelivered ${r.undelivered} after ${r.drainMs} ms drain, ` +
        `${r.framesPerMessage} frames a message, server CPU ${cpuPerFrame(run)} us a frame; ` +
        `${r.overflowNotices} overflow notices; ${usage}${errorText(r.errors)}`;
    }
  }
}

/** Server CPU time per delivered EVENT frame, in microseconds: a count-based figure, stable on a shared machine. */
function cpuPerFrame(run: RunResult & { kind: "events" }): number | string {
  const cpu = run.server?.cpuPercent;
  if (cpu === undefined || run.result.framesPerSecond === 0) return "?";
  return round((cpu / 100) * 1e6 / run.result.framesPerSecond, 1);
}

function errorText(errors: Record<string, number>): string {
  const entries = Object.entries(errors);
  return entries.length === 0 ? "" : `; ERRORS ${entries.map(([k, v]) => `${k} x${v}`).join(", ")}`;
}

/** Markdown tables of the runs, one per kind (their figures differ), as bench/README.md shows them. */
function tables(runs: RunResult[]): string {
  const usageHeader = "server CPU % | server RSS MiB (peak) | client CPU % | other CPU %";
  const usageAlign = "---: | ---: | ---: | ---:";
  const usage = (run: RunResult) => `${run.server?.cpuPercent ?? "?"} | ${run.server?.rssMiBEnd ?? "?"} (${run.server?.rssMiBPeak ?? "?"}) | ${run.client.cpuPercent} | ${run.machine.otherPercent}`;
  const echo: string[] = [];
  const mailbox: string[] = [];
  const events: string[] = [];
  for (const run of runs) {
    switch (run.kind) {
      case "echo": {
        const r = run.result;
        echo.push(`| ${run.name} | **${r.callsPerSecond}** | ${r.latencyMs.p50} / ${r.latencyMs.p99} | ${usage(run)} |`);
        break;
      }
      case "mailbox": {
        const r = run.result;
        mailbox.push(`| ${run.name} | **${r.jobsPerSecond}** | ${r.enqueuePerSecond} | ${r.rpcsPerSecond} | ${r.claimMs.p50} / ${r.claimMs.p99} / ${r.claimMs.max} | ${r.endToEndMs.p50} / ${r.endToEndMs.p99} | ${usage(run)} |`);
        break;
      }
      case "events": {
        const r = run.result;
        events.push(`| ${run.name} | ${r.publishPerSecond} | **${r.framesPerSecondPerSubscriber}** | ${r.framesPerSecond} | **${r.latencyMs.p50} / ${r.latencyMs.p99}** / ${r.latencyMs.max} | ${r.undelivered} | ${usage(run)} |`);
        break;
      }
    }
  }
  const out: string[] = [];
  if (echo.length > 0) out.push(["| run | calls/s | call p50 / p99 ms | " + usageHeader + " |", "| --- | ---: | --- | " + usageAlign + " |", ...echo].join("\n"));
  if (mailbox.length > 0) {
    out.push([
      "| run | jobs/s (acked) | enqueued/s | RPCs/s | claim p50 / p99 / max ms | e2e p50 / p99 ms | " + usageHeader + " |",
      "| --- | ---: | ---: | ---: | --- | --- | " + usageAlign + " |",
      ...mailbox,
    ].join("\n"));
  }
  if (events.length > 0) {
    out.push([
      "| run | published/s | frames/s per subscriber | frames/s total | publish -> receive p50 / p99 / max ms | undelivered | " + usageHeader + " |",
      "| --- | ---: | ---: | ---: | --- | ---: | " + usageAlign + " |",
      ...events,
    ].join("\n"));
  }
  return out.join("\n\n");
}

function gitCommit(): string {
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: repoRoot, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { cwd: repoRoot, encoding: "utf8" }).trim() !== "";
    return dirty ? `${commit} (src/ modified)` : commit;
  } catch {
    return "unknown";
  }
}

function machineInfo() {
  return { cores: cpus().length, cpu: cpus()[0]?.model ?? "unknown", memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform} ${process.arch}` };
}

function save(o: CliOptions, body: Record<string, unknown>): void {
  const generatedAt = new Date().toISOString();
  const report = {
    generatedAt,
    command: `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim(),
    commit: gitCommit(),
    machine: machineInfo(),
    options: o,
    ...body,
  };
  const file = o.out ?? join(repoRoot, "bench", "results", `${o.scenario}-${generatedAt.replace(/[:.]/g, "-")}.json`);
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nsaved ${file}`);
}

/** slow-subscriber: the Events issue's overflow check, with and without the subscriber (see slow-subscriber.ts). */
async function runSlowScenario(o: CliOptions): Promise<void> {
  if (o.serverUrl) throw new Error("--scenario slow-subscriber starts its own servers (one per phase, to compare their memory); --server-url is not supported");
  console.log(`bench: slow-subscriber, ${o.events} events a phase, ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}`);
  const beforePhases: Array<Awaited<ReturnType<typeof waitForQuiet>>> = [];
  const report = await runSlowSubscriber(
    {
      protocol: o.protocol,
      events: o.events,
      terminalEvery: o.terminalEvery,
      slowReadMs: o.slowReadMs,
      capacity: o.slowCapacity,
      publishers: o.publishers,
      concurrency: o.publishConcurrency,
      baseline: o.slowBaseline,
      maxRssOverheadMiB: o.maxRssOverhead,
      drainTimeoutMs: o.drainTimeout * 1000,
      store: o.store,
      serverArg: o.serverArg,
      ...(o.serverRoot ? { serverRoot: o.serverRoot } : {}),
    },
    async () => {
      if (o.quiet === 0) return;
      const quiet = await waitForQuiet(o.quiet, o.quietTimeout * 1000);
      if (!quiet.quiet) console.log(`bench: the machine is still busy (${quiet.busyPercent}% of a core) after ${quiet.waitedSeconds} s; measuring anyway`);
      beforePhases.push(quiet);
    },
    (line) => console.log(line),
  );
  console.log(`\n${describeSlowSubscriber(report)}`);
  if (o.save) save(o, { beforePhases, slowSubscriber: report });
}

/** long-poll: how soon a waiting Claim returns once work is enqueued (see long-poll.ts). */
async function runLongPollScenario(o: CliOptions): Promise<void> {
  const server = o.serverUrl
    ? undefined
    : await spawnServer({ script: mailroomServer(o.store, o.serverArg), cwd: o.serverRoot });
  try {
    const report = await runLongPoll({ url: o.serverUrl ?? server!.url, protocol: o.protocol, rounds: o.rounds, holdMs: 50 });
    console.log(describeLongPoll(report));
    if (o.save) save(o, { longPoll: report });
  } finally {
    await server?.stop();
  }
}

async function main(o: CliOptions): Promise<void> {
  if (o.scenario === "slow-subscriber") return runSlowScenario(o);
  if (o.scenario === "long-poll") return runLongPollScenario(o);
  const runs = scenarioRuns(o);
  console.log(`bench: ${runs.length} run(s), warm-up ${o.warmup} s + ${o.duration} s each, ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}`);
  const results: RunResult[] = [];
  for (const [i, spec] of runs.entries()) {
    const beforeRun = o.quiet > 0 ? await waitForQuiet(o.quiet, o.quietTimeout * 1000) : undefined;
    if (beforeRun && !beforeRun.quiet) console.log(`bench: the machine is still busy (${beforeRun.busyPercent}% of a core) after ${beforeRun.waitedSeconds} s; measuring anyway`);
    const result = { ...(await measure(spec, o, i)), beforeRun };
    results.push(result);
    console.log(describe(result));
    if (result.profile) printProfile(result.profile);
  }
  console.log(`\n${tables(results)}`);
  if (o.save) save(o, { runs: results });
}

const program = new Command("bench")
  .description("Load generator for Mailroom: the server runs as a child process, the load in this one.")
  .addOption(new Option("--scenario <name>", "what to run").choices(["all", "mailbox", "events", "echo", "health", "matrix", "slow-subscriber", "long-poll"]).default("all"))
  .option("--duration <seconds>", "measured time of each run", seconds, 10)
  .option("--warmup <seconds>", "load before measuring starts, per run", seconds, 3)
  .option("--producers <n>", "mailbox: enqueueing loops, one connection each", integer(0, 256), 2)
  .option("--workers <n>", "mailbox: claim+ack loops, one connection each", integer(1, 256), 4)
  .option("--threads <n>", "mailbox: threads the dispatches are spread over (bounds claims in flight)", integer(1), 1000)
  .option("--batch <n>", "mailbox: dispatches per EnqueueBatch (1 = unary Enqueue)", integer(1, 500), 100)
  .option("--claim-limit <n>", "mailbox: Claim's limit", integer(1, 100), 50)
  .addOption(new Option("--ack-mode <mode>", "mailbox: one AckBatch per claim, or one unary Ack per dispatch").choices(["batch", "single"]).default("batch"))
  .option("--wait-ms <ms>", "mailbox: Claim's long-poll wait", integer(0, 60_000), 1000)
  .option("--max-backlog <n>", "mailbox: producers pause while this many are enqueued and not acked (default max(2 x workers x claim limit, batch x producers))", integer(1))
  .option("--concurrency <n>", "echo/health: calls in flight (one connection each)", integer(1, 256), 16)
  .option("--subscribers <n>", "events: Subscribe streams of the fan-out run, one connection each", integer(1, 1000), 100)
  .option("--event-rate <n>", "events: events published per second in total in the fan-out run", integer(1, 1_000_000), 1000)
  .option("--publishers <n>", "events, slow-subscriber: connections Publish calls are spread over", integer(1, 256), 4)
  .option("--publish-concurrency <n>", "events: Publish calls in flight (max run and slow-subscriber: closed loops; fan-out run: the most in flight)", integer(1, 4096), 64)
  .option("--max-lag <n>", "events, max run: publishers pause while the subscriber is this many events behind", integer(1), 10_000)
  .option("--queue-capacity <n>", "events: each subscriber's queue capacity (0 = the server's default, 1024)", integer(0, 100_000), 0)
  .option("--frames-per-message <n>", "events: each subscriber's max_frames_per_message (0 = one frame a response; above 1, batches when behind)", integer(0, 1000), 0)
  .option("--events <n>", "slow-subscriber: events published in each phase", integer(1, 10_000_000), 100_000)
  .option("--rounds <n>", "long-poll: claims to wake, one at a time", integer(1, 100_000), 200)
  .option("--terminal-every <n>", "slow-subscriber: every n-th event is terminal (RUN_COMPLETED), the rest progress (MODEL_STREAM_DELTA)", integer(1), 100)
  .option("--slow-read-ms <ms>", "slow-subscriber: while publishing, the subscriber takes one frame every this many ms", integer(0, 600_000), 1000)
  .option("--slow-capacity <n>", "slow-subscriber: the subscriber's queue capacity (overflow DROP_PROGRESS)", integer(1, 100_000), 100)
  .option("--no-slow-baseline", "slow-subscriber: skip the second phase (the same publish load with no subscriber, for the memory comparison)")
  .option("--max-rss-overhead <MiB>", "slow-subscriber: 'memory stays bounded' passes when peak RSS with the subscriber exceeds the baseline's by at most this", integer(0), 50)
  .option("--drain-timeout <seconds>", "slow-subscriber: longest drain after publishing, and longest repair subscription", seconds, 120)
  .addOption(new Option("--protocol <protocol>", "client protocol").choices(["grpc", "connect", "grpc-web"]).default("grpc"))
  .option("--store <backend>", "the server's --store", "memory")
  .option("--server-arg <arg...>", "more flags for `mailroom serve`", [])
  .option("--server-url <url>", "drive an already running Mailroom instead of starting one (the bare echo baseline still starts its own)")
  .option("--server-root <dir>", "start Mailroom from this checkout instead (e.g. another commit, to compare before and after)")
  .option("--server-pid <pid>", "with --server-url: the server's pid, to sample its CPU and memory", integer(1))
  .option("--cpu-prof [dir]", "run the server with node --cpu-prof (profiles into dir, default a temp dir) and print its top costs")
  .option("--quiet <percent>", "before each run, wait until the machine's busy CPU is at most this % of one core (0: do not wait)", integer(0, 10_000), 25)
  .option("--quiet-timeout <seconds>", "longest wait for --quiet", seconds, 120)
  .option("--out <file>", "where to save the JSON results (default bench/results/<scenario>-<time>.json)")
  .option("--no-save", "do not save the JSON results");

program.parse();
await main(program.opts<CliOptions>());
// Connections and timers of the clients must not keep the process up.
process.exit(0);
