/**
 * `npm run bench`: starts the system under test as a child process (Mailroom's
 * server; for comparisons also redis-server for BullMQ and nats-server for
 * NATS, when installed), drives load at it from this process, samples its CPU
 * and memory from /proc and Mailroom's store operations from /metrics, stops
 * it, prints the figures and verdicts and saves them as JSON in
 * bench/results/. See bench/README.md.
 *
 *   npm run bench                                   # baselines, mailbox and events
 *   npm run bench -- --scenario figures             # every figure of the performance issue, with verdicts
 *   npm run bench -- --scenario jobs --repeat 3     # Mailroom / BullMQ / JetStream, interleaved
 *   npm run bench -- --scenario mailbox --batch 500 --claim-limit 100
 *   npm run bench -- --server-url http://127.0.0.1:50051 --server-pid 1234
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  backlogRuns,
  backlogVerdicts,
  echoSpec,
  eventsSpec,
  fanoutRuns,
  fanoutVerdicts,
  jobsRuns,
  jobsVerdicts,
  mailboxSpec,
  type SpecDefaults,
  unaryOverrides,
  unaryRuns,
  unaryVerdicts,
  type Verdict,
  verdictLine,
} from "./figures.js";
import { describeLongPoll, runLongPoll } from "./long-poll.js";
import { describeMemory, type MemoryReport, memoryVerdicts, runMemoryScenario } from "./memory.js";
import { waitForQuiet } from "./proc-stats.js";
import { printProfile } from "./profile.js";
import { describeRun, tables } from "./report.js";
import { isSkipped, measure, type RunResult, type RunSpec, type SkippedRun } from "./runs.js";
import { mailroomServer, repoRoot, spawnServer } from "./server.js";
import { describeSlowSubscriber, runSlowSubscriber } from "./slow-subscriber.js";
import { describeWaiters, runWaiters, type WaitersReport } from "./waiters.js";

const SCENARIOS = [
  "all", "mailbox", "events", "echo", "health", "matrix", "slow-subscriber", "long-poll",
  "jobs", "fanout", "unary", "backlog", "waiters", "memory", "figures",
] as const;
type Scenario = (typeof SCENARIOS)[number];

/** The scenarios `figures` runs, one after another, each saving its own JSON. */
const FIGURES: Scenario[] = ["jobs", "fanout", "unary", "backlog", "waiters", "memory"];

interface CliOptions extends SpecDefaults {
  scenario: Scenario;
  duration: number;
  warmup: number;
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
  waiters: number;
  waiterConnections: number;
  wakeBatch: number;
  memoryDispatches: number;
  memoryEvents: number;
}

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

/** The measured runs of a scenario, and the verdicts their results get. */
function scenarioRuns(o: CliOptions): { runs: RunSpec[]; verdicts?: (runs: Array<RunResult | SkippedRun>) => Verdict[] } {
  const echo = (target: "bare" | "mailroom", concurrency: number, protocol = o.protocol) => echoSpec(target, concurrency, protocol);
  switch (o.scenario) {
    case "echo":
      return { runs: [echo("bare", 1), echo("bare", o.concurrency)] };
    case "health":
      return { runs: [echo("mailroom", 1), echo("mailroom", o.concurrency)] };
    case "mailbox":
      return { runs: [mailboxSpec("mailbox", o)] };
    case "events":
      return { runs: [eventsSpec("fanout", o), eventsSpec("max", o)] };
    case "all":
      return {
        runs: [echo("bare", 1), echo("bare", o.concurrency), echo("mailroom", o.concurrency), mailboxSpec("mailbox", o), eventsSpec("fanout", o), eventsSpec("max", o)],
      };
    case "jobs":
      return { runs: jobsRuns(o), verdicts: jobsVerdicts };
    case "fanout":
      return { runs: fanoutRuns(o), verdicts: fanoutVerdicts };
    case "unary":
      return { runs: unaryRuns(o), verdicts: unaryVerdicts };
    case "backlog":
      return { runs: backlogRuns(o), verdicts: backlogVerdicts };
    case "matrix": {
      // Each varies one thing from the default (the first mailbox line).
      const m = (name: string, overrides: Partial<Parameters<typeof mailboxSpec>[2]>) => mailboxSpec(name, o, overrides);
      return {
        runs: [
          echo("bare", 1),
          echo("bare", o.concurrency),
          echo("bare", o.concurrency, "connect"),
          echo("mailroom", 1),
          echo("mailroom", o.concurrency),
          m("mailbox default", {}),
          m("enqueue batch 1 (unary Enqueue)", { batch: 1 }),
          m("enqueue batch 1, 16 producers", { batch: 1, producers: 16 }),
          m("unary path (batch 1, single acks, 16 producers and workers)", unaryOverrides(16)),
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
        ],
      };
    }
    case "slow-subscriber":
    case "long-poll":
    case "waiters":
    case "memory":
    case "figures":
      return { runs: [] }; // not measured windows: see main
  }
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
    ...(o.serverRoot ? { serverRoot: o.serverRoot } : {}),
    machine: machineInfo(),
    options: o,
    ...body,
  };
  const file = o.out ?? join(repoRoot, "bench", "results", `${o.scenario}-${generatedAt.replace(/[:.]/g, "-")}.json`);
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nsaved ${file}`);
}

/** Waits for a quiet machine (see --quiet) and says when it did not get one. */
async function quietBefore(o: CliOptions): Promise<Awaited<ReturnType<typeof waitForQuiet>> | undefined> {
  if (o.quiet === 0) return undefined;
  const quiet = await waitForQuiet(o.quiet, o.quietTimeout * 1000);
  if (!quiet.quiet) console.log(`bench: the machine is still busy (${quiet.busyPercent}% of a core) after ${quiet.waitedSeconds} s; measuring anyway`);
  return quiet;
}

function printVerdicts(verdicts: Verdict[]): void {
  if (verdicts.length === 0) return;
  console.log("");
  for (const verdict of verdicts) console.log(verdictLine(verdict));
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
      const quiet = await quietBefore(o);
      if (quiet) beforePhases.push(quiet);
    },
    (line) => console.log(line),
  );
  console.log(`\n${describeSlowSubscriber(report)}`);
  if (o.save) save(o, { beforePhases, slowSubscriber: report });
}

/** Runs `body` against the server given by --server-url, or a fresh one of this (or --server-root's) checkout. */
async function withServer<T>(o: CliOptions, body: (url: string) => Promise<T>): Promise<T> {
  const server = o.serverUrl ? undefined : await spawnServer({ script: mailroomServer(o.store, o.serverArg), cwd: o.serverRoot });
  try {
    return await body(o.serverUrl ?? server!.url);
  } finally {
    await server?.stop();
  }
}

/** long-poll: how soon a waiting Claim returns once work is enqueued (see long-poll.ts). */
async function runLongPollScenario(o: CliOptions): Promise<void> {
  const report = await withServer(o, (url) => runLongPoll({ url, protocol: o.protocol, rounds: o.rounds, holdMs: 50 }));
  console.log(describeLongPoll(report));
  if (o.save) save(o, { longPoll: report });
}

/** waiters: the thundering herd, on a fresh server each round (see waiters.ts). */
async function runWaitersScenario(o: CliOptions): Promise<void> {
  const reports: Array<WaitersReport & { beforeRun?: Awaited<ReturnType<typeof waitForQuiet>> }> = [];
  for (let r = 0; r < o.repeat; r++) {
    const beforeRun = await quietBefore(o);
    const report = await withServer(o, (url) =>
      runWaiters({ url, protocol: o.protocol, waiters: o.waiters, connections: o.waiterConnections, dispatches: o.wakeBatch, waitMs: 60_000, holdMs: 3000, minWindowMs: 1000, tag: `waiters-${process.pid}-${r}` }),
    );
    console.log(describeWaiters(report));
    reports.push({ ...report, beforeRun });
  }
  const all = (test: (r: (typeof reports)[number]) => boolean) => reports.every(test);
  const verdicts: Verdict[] = [
    { figure: `every one of ${o.wakeBatch} dispatches claimed exactly once by ${o.waiters} waiting Claims`, target: "every round", verdict: all((r) => r.verdicts.claimedOnce) ? "PASS" : "FAIL", rounds: [], detail: reports.map((r) => `${r.claimedDistinct} claimed, ${r.claimedTwice} twice, ${r.neverClaimed} never`).join("; ") },
    {
      figure: "Health.Check p99 while the waiters wake",
      target: "<= 100 ms",
      verdict: all((r) => r.verdicts.healthP99Ok) ? "PASS" : "FAIL",
      rounds: reports.map((r) => r.healthDuringWakeMs.p99),
      detail: reports.map((r) => `${r.healthDuringWakeMs.p99} ms (${r.healthDuringWakeMs.count} calls, last claim after ${r.allClaimedMs ?? "never"} ms)`).join("; "),
    },
    { figure: "store operations per dispatch woken (health pings left out)", target: "(none)", verdict: "INFO", rounds: reports.map((r) => r.storeOpsPerDispatch?.total ?? NaN), detail: reports.map((r) => `${r.storeOpsPerDispatch?.total ?? "n/a"}`).join("; ") },
  ];
  printVerdicts(verdicts);
  if (o.save) save(o, { waiters: reports, verdicts });
}

/** memory: live heap per stored dispatch and per journal event after forced GC (see memory.ts). */
async function runMemory(o: CliOptions): Promise<void> {
  if (o.serverUrl) throw new Error("--scenario memory starts its own server (with a GC hook); --server-url is not supported");
  const reports: Array<MemoryReport & { beforeRun?: Awaited<ReturnType<typeof waitForQuiet>> }> = [];
  for (let r = 0; r < o.repeat; r++) {
    const beforeRun = await quietBefore(o);
    const report = await runMemoryScenario({ ...o, tag: `memory-${process.pid}-${r}` });
    console.log(describeMemory(report));
    reports.push({ ...report, beforeRun });
  }
  const verdicts = memoryVerdicts(reports);
  printVerdicts(verdicts);
  if (o.save) save(o, { memory: reports, verdicts });
}

async function runMeasured(o: CliOptions): Promise<void> {
  const { runs, verdicts } = scenarioRuns(o);
  console.log(`bench: ${o.scenario}, ${runs.length} run(s), warm-up ${o.warmup} s + ${o.duration} s each, ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}`);
  const results: Array<RunResult | SkippedRun> = [];
  for (const [i, spec] of runs.entries()) {
    const beforeRun = await quietBefore(o);
    const result = await measure(spec, o, i);
    if (!isSkipped(result) && beforeRun) result.beforeRun = beforeRun;
    results.push(result);
    console.log(describeRun(result));
    if (!isSkipped(result) && result.profile) printProfile(result.profile);
  }
  const judged = verdicts?.(results) ?? [];
  printVerdicts(judged);
  console.log(`\n${tables(results)}`);
  if (o.save) save(o, { runs: results, ...(verdicts ? { verdicts: judged } : {}) });
}

async function main(o: CliOptions): Promise<void> {
  switch (o.scenario) {
    case "slow-subscriber":
      return runSlowScenario(o);
    case "long-poll":
      return runLongPollScenario(o);
    case "waiters":
      return runWaitersScenario(o);
    case "memory":
      return runMemory(o);
    case "figures":
      if (o.out) throw new Error("--scenario figures saves one file per scenario; --out is not supported");
      for (const scenario of FIGURES) {
        console.log(`\n=== ${scenario} ===`);
        await main({ ...o, scenario });
      }
      return;
    default:
      return runMeasured(o);
  }
}

const program = new Command("bench")
  .description("Load generator for Mailroom: the server (and any peer compared with it) runs as a child process, the load in this one.")
  .addOption(new Option("--scenario <name>", "what to run (see bench/README.md; `figures` = jobs, fanout, unary, backlog, waiters, memory)").choices(SCENARIOS).default("all"))
  .option("--duration <seconds>", "measured time of each run", seconds, 10)
  .option("--warmup <seconds>", "load before measuring starts, per run", seconds, 3)
  .option("--repeat <n>", "jobs, fanout, unary, backlog, waiters, memory: rounds, each running Mailroom and its peers once, interleaved", integer(1, 100), 2)
  .option("--no-peers", "jobs, fanout: run Mailroom only (no BullMQ, no NATS)")
  .option("--producers <n>", "mailbox: enqueueing loops, one connection each", integer(0, 256), 2)
  .option("--workers <n>", "mailbox: claim+ack loops, one connection each", integer(1, 256), 4)
  .option("--threads <n>", "mailbox: threads the dispatches are spread over (bounds claims in flight)", integer(1), 100)
  .option("--batch <n>", "mailbox: dispatches per EnqueueBatch (1 = unary Enqueue)", integer(1, 500), 100)
  .option("--claim-limit <n>", "mailbox: Claim's limit", integer(1, 100), 50)
  .addOption(new Option("--ack-mode <mode>", "mailbox: one AckBatch per claim, or one unary Ack per dispatch").choices(["batch", "single"]).default("batch"))
  .option("--wait-ms <ms>", "mailbox: Claim's long-poll wait", integer(0, 60_000), 1000)
  .option("--max-backlog <n>", "mailbox: producers pause while this many are enqueued and not acked (default max(2 x workers x claim limit, batch x producers))", integer(1))
  .option("--concurrency <n>", "echo/health/unary: calls in flight (one connection each); jobs: producers and workers of the unary path", integer(1, 256), 16)
  .option("--backlog <n>", "backlog: dispatches queued before the load starts", integer(1, 10_000_000), 100_000)
  .option("--backlog-threads <n>", "backlog: the backlog is spread over the first n of the load's --threads threads (100: 1,000 queued a thread)", integer(1), 100)
  .option("--subscribers <n>", "events, fanout: Subscribe streams of the fan-out run, one connection each", integer(1, 1000), 100)
  .option("--event-rate <n>", "events, fanout: events published per second in total in the fan-out run", integer(1, 1_000_000), 1000)
  .option("--publishers <n>", "events, fanout, slow-subscriber: connections publish calls are spread over", integer(1, 256), 4)
  .option("--publish-concurrency <n>", "events: Publish calls in flight (max run and slow-subscriber: closed loops; fan-out run: the most in flight)", integer(1, 4096), 64)
  .option("--max-lag <n>", "events, max run: publishers pause while the subscriber is this many events behind", integer(1), 10_000)
  .option("--queue-capacity <n>", "events: each subscriber's queue capacity (0 = the server's default, 1024)", integer(0, 100_000), 0)
  .option("--frames-per-message <n>", "events, fanout: each Mailroom subscriber's max_frames_per_message (0 = one frame a response; above 1, batches when behind)", integer(0, 1000), 0)
  .addOption(
    new Option("--subscriber-client <client>", "events: how the Mailroom subscribers read their streams: connect-node's client (decodes every frame) or lean (raw HTTP/2, walks only what is measured; see lean-subscriber.ts). fanout runs both")
      .choices(["connect", "lean"])
      .default("connect"),
  )
  .option("--waiters <n>", "waiters: long-poll Claims waiting at once", integer(1, 10_000), 1000)
  .option("--waiter-connections <n>", "waiters: connections the waiting Claims are spread over (each holds at most the server's --max-concurrent-streams, 256 by default)", integer(1, 1000), 8)
  .option("--wake-batch <n>", "waiters: dispatches of the one EnqueueBatch, each on its own thread", integer(1, 500), 100)
  .option("--memory-dispatches <n>", "memory: dispatches stored (all left QUEUED)", integer(1, 10_000_000), 10_000)
  .option("--memory-events <n>", "memory: events published to the journal", integer(1, 10_000_000), 10_000)
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
  .option("--server-url <url>", "drive an already running Mailroom instead of starting one (the bare echo baseline and the peers still start their own)")
  .option("--server-root <dir>", "start Mailroom from this checkout instead (e.g. another commit, to compare before and after)")
  .option("--server-pid <pid>", "with --server-url: the server's pid, to sample its CPU and memory", integer(1))
  .option("--cpu-prof [dir]", "run the server with node --cpu-prof (profiles into dir, default a temp dir) and print its top costs")
  .option("--quiet <percent>", "before each run, wait until the machine's busy CPU is at most this % of one core (0: do not wait)", integer(0, 10_000), 25)
  .option("--quiet-timeout <seconds>", "longest wait for --quiet", seconds, 120)
  .option("--out <file>", "where to save the JSON results (default bench/results/<scenario>-<time>.json)")
  .option("--no-save", "do not save the JSON results")
  .addHelpText("after", "\nPeers: redis-server and nats-server from Debian (apt-get install -y redis-server nats-server); a peer that is not installed is skipped and the bench says so.");

program.parse();
await main(program.opts<CliOptions>());
// Connections and timers of the clients must not keep the process up.
process.exit(0);
