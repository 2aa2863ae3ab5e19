/**
 * One measured run: start the system under test (Mailroom's server, the bare
 * echo server, or a peer: redis-server for BullMQ, nats-server for NATS) as
 * a child process, start the load in this process, warm up, open the window
 * (scrape Mailroom's /metrics, sample /proc), close it, stop everything, and
 * turn the counts into costs: store operations and server CPU per job, per
 * event, per call.
 */
import { mkdirSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClientProtocol } from "../src/client/index.js";
import { type EchoReport, startEchoLoad } from "./echo-load.js";
import { type EventsOptions, type EventsReport, startEventsLoad } from "./events-load.js";
import type { JobsReport } from "./jobs.js";
import { type Load, sleep } from "./load.js";
import { type MailboxOptions, prefillMailbox, startMailboxLoad } from "./mailbox-load.js";
import { startNatsFanoutLoad } from "./nats-fanout.js";
import { startBullmqLoad, startJetStreamLoad } from "./peer-jobs.js";
import { peerBinary, type PeerServer, startPeer } from "./peers.js";
import { UsageSampler, type waitForQuiet } from "./proc-stats.js";
import { type ProfileSummary, summarizeProfile } from "./profile.js";
import { round } from "./samples.js";
import { perUnit, scrape, type Scrape, storeOpsDelta, type StoreOpsDelta } from "./scrape.js";
import { mailroomServer, spawnServer } from "./server.js";

export type System = "mailroom" | "bare" | "bullmq" | "jetstream" | "nats-core";

export const SYSTEM_NAMES: Record<System, string> = {
  mailroom: "Mailroom",
  bare: "bare connect-node",
  bullmq: "BullMQ",
  jetstream: "NATS JetStream",
  "nats-core": "NATS core",
};

/** Which peer server a system runs on. */
const PEER_SERVER = { bullmq: "redis", jetstream: "nats", "nats-core": "nats" } as const;

interface SpecBase {
  name: string;
  system: System;
  /** The figure a run belongs to (e.g. "batch"), so runs of one figure are compared. */
  figure?: string;
  /** The interleaving round (0, 1, ...), so ratios pair runs taken minutes apart at most. */
  round?: number;
}

export type EchoSpec = SpecBase & { kind: "echo"; echo: { protocol: ClientProtocol; concurrency: number; rpc: "health" | "enqueue"; threads: number } };
export type MailboxSpec = SpecBase & {
  kind: "mailbox";
  mailbox: Omit<MailboxOptions, "url" | "tag">;
  /** Dispatches enqueued before the load starts, on the first `threads` of the load's threads (default all of them). */
  prefill?: { count: number; threads?: number };
};
export type EventsSpec = SpecBase & { kind: "events"; events: Omit<EventsOptions, "url" | "tag"> };
export type RunSpec = EchoSpec | MailboxSpec | EventsSpec;

type Running =
  | { kind: "echo"; load: Load<EchoReport> }
  | { kind: "mailbox"; load: Load<JobsReport> }
  | { kind: "events"; load: Load<EventsReport> };

export type Outcome =
  | { kind: "echo"; result: EchoReport }
  | { kind: "mailbox"; result: JobsReport }
  | { kind: "events"; result: EventsReport };

/** Store operations and server CPU per unit of work in the window. */
export interface Costs {
  /** Per acked job (mailbox), per published event (events), per call (echo); undefined when not Mailroom or not exported. */
  storeOps?: { unit: string; total: number; byOperation: Record<string, number> };
  /** Per acked job (mailbox), per delivered frame (events), per call (echo). */
  serverCpuUs?: { unit: string; value: number };
  /** The raw store operations of the window. */
  storeOpsWindow?: StoreOpsDelta;
}

export type RunResult = Outcome & {
  name: string;
  system: System;
  figure?: string;
  round?: number;
  config: Record<string, unknown>;
  seconds: number;
  server: ReturnType<UsageSampler["stop"]>["server"];
  client: ReturnType<UsageSampler["stop"]>["client"];
  machine: ReturnType<UsageSampler["stop"]>["machine"];
  costs: Costs;
  /** The peer server's version (e.g. "Redis server v=7.0.15 ..."). */
  peerVersion?: string;
  /** backlog: what was enqueued before the load started. */
  prefill?: { enqueued: number; seconds: number };
  /** How the machine looked before the run started (see --quiet). */
  beforeRun?: Awaited<ReturnType<typeof waitForQuiet>>;
  profile?: ProfileSummary;
};

/** A run whose system could not be started here (a peer that is not installed). */
export interface SkippedRun {
  name: string;
  system: System;
  figure?: string;
  round?: number;
  skipped: string;
}

export interface MeasureOptions {
  warmup: number;
  duration: number;
  store: string;
  serverArg: string[];
  serverUrl?: string;
  serverPid?: number;
  serverRoot?: string;
  cpuProf?: string | true;
}

interface Target {
  url?: string;
  peer?: PeerServer;
  pid: number | undefined;
  stop?: () => Promise<unknown>;
}

/** Why a run's system cannot run here, or undefined when it can. */
export function unavailable(spec: RunSpec): string | undefined {
  if (spec.system === "mailroom" || spec.system === "bare") return undefined;
  const found = peerBinary(PEER_SERVER[spec.system]);
  return "missing" in found ? `${SYSTEM_NAMES[spec.system]} not run: ${found.missing}` : undefined;
}

async function startTarget(spec: RunSpec, o: MeasureOptions, profileDir: string | undefined): Promise<Target> {
  if (spec.system === "mailroom" && o.serverUrl) return { url: o.serverUrl, pid: o.serverPid };
  if (spec.system === "mailroom" || spec.system === "bare") {
    const bare = spec.system === "bare";
    const script = bare ? ["bench/echo-server.ts"] : mailroomServer(o.store, o.serverArg);
    const child = await spawnServer({ script, cpuProfileDir: profileDir, cwd: bare ? undefined : o.serverRoot });
    return { url: child.url, pid: child.pid, stop: () => child.stop() };
  }
  const peer = await startPeer(PEER_SERVER[spec.system]);
  return { peer, pid: peer.pid, stop: () => peer.stop() };
}

async function startLoad(spec: RunSpec, target: Target, tag: string): Promise<Running> {
  const url = target.url ?? "";
  const peer = target.peer;
  switch (spec.kind) {
    case "echo":
      return { kind: "echo", load: startEchoLoad({ url, ...spec.echo, tag }) };
    case "mailbox": {
      if (!peer) return { kind: "mailbox", load: startMailboxLoad({ ...spec.mailbox, url, tag }) };
      const options = { ...spec.mailbox, host: peer.host, port: peer.port, tag };
      return { kind: "mailbox", load: await (spec.system === "bullmq" ? startBullmqLoad(options) : startJetStreamLoad(options)) };
    }
    case "events": {
      if (!peer) return { kind: "events", load: startEventsLoad({ ...spec.events, url, tag }) };
      const flavour = spec.system === "nats-core" ? "core" : "jetstream";
      return { kind: "events", load: await startNatsFanoutLoad({ ...spec.events, host: peer.host, port: peer.port, flavour, tag }) };
    }
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

function configOf(spec: RunSpec): Record<string, unknown> {
  switch (spec.kind) {
    case "echo":
      return { ...spec.echo };
    case "mailbox":
      return { ...spec.mailbox, ...(spec.prefill ? { prefill: spec.prefill } : {}) };
    case "events":
      return { ...spec.events };
  }
}

function costsOf(run: Outcome, serverCpuSeconds: number | undefined, window: StoreOpsDelta | undefined): Costs {
  const { unit, storeUnits, cpuUnit, cpuUnits } = (() => {
    switch (run.kind) {
      case "echo":
        return { unit: "call", storeUnits: run.result.calls, cpuUnit: "call", cpuUnits: run.result.calls };
      case "mailbox":
        return { unit: "acked job", storeUnits: run.result.completed, cpuUnit: "acked job", cpuUnits: run.result.completed };
      case "events":
        return { unit: "published event", storeUnits: run.result.published, cpuUnit: "delivered frame", cpuUnits: run.result.frames };
    }
  })();
  const storeOps = perUnit(window, storeUnits);
  return {
    ...(storeOps ? { storeOps: { unit, ...storeOps } } : {}),
    ...(serverCpuSeconds !== undefined && cpuUnits > 0 ? { serverCpuUs: { unit: cpuUnit, value: round((serverCpuSeconds * 1e6) / cpuUnits, 1) } } : {}),
    ...(window ? { storeOpsWindow: window } : {}),
  };
}

/** Rejects after `ms`: a load that never becomes ready (a stream that never opens) must not hang the run. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function measure(spec: RunSpec, o: MeasureOptions, runIndex: number): Promise<RunResult | SkippedRun> {
  const skipped = unavailable(spec);
  if (skipped) return { name: spec.name, system: spec.system, figure: spec.figure, round: spec.round, skipped };
  const profileDir = o.cpuProf && (spec.system === "mailroom" || spec.system === "bare") ? (typeof o.cpuProf === "string" ? o.cpuProf : mkdtempSync(join(tmpdir(), "mailroom-prof-"))) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const before = profileDir ? new Set(readdirSync(profileDir)) : new Set<string>();
  const target = await startTarget(spec, o, profileDir);
  const tag = `bench-${process.pid}-${runIndex}`;
  let running: Running | undefined;
  let usage: ReturnType<UsageSampler["stop"]>;
  let elapsed: number;
  let prefill: RunResult["prefill"];
  let window: StoreOpsDelta | undefined;
  try {
    if (spec.kind === "mailbox" && spec.prefill && target.url) {
      prefill = await prefillMailbox({ url: target.url, protocol: spec.mailbox.protocol, tag, threads: spec.prefill.threads ?? spec.mailbox.threads, count: spec.prefill.count });
    }
    running = await startLoad(spec, target, tag);
    const { load } = running;
    if (load.ready) await within(load.ready, 30_000, "the load's start (e.g. every subscription registered)");
    await sleep(o.warmup * 1000);
    const sampler = new UsageSampler(target.pid);
    const first: Scrape | undefined = target.url && spec.system === "mailroom" ? await scrape(target.url) : undefined;
    sampler.start();
    load.beginMeasuring();
    const started = performance.now();
    await sleep(o.duration * 1000);
    load.endMeasuring();
    elapsed = (performance.now() - started) / 1000;
    usage = sampler.stop();
    if (first) window = storeOpsDelta(first, await scrape(target.url!));
  } finally {
    await running?.load.stop();
    await target.stop?.();
  }
  const measured = outcome(running, elapsed);
  const result: RunResult = {
    ...measured,
    name: spec.name,
    system: spec.system,
    ...(spec.figure ? { figure: spec.figure } : {}),
    ...(spec.round !== undefined ? { round: spec.round } : {}),
    config: configOf(spec),
    seconds: round(elapsed, 3),
    server: usage.server,
    client: usage.client,
    machine: usage.machine,
    costs: costsOf(measured, usage.server?.cpuSeconds, window),
    ...(target.peer ? { peerVersion: target.peer.version } : {}),
    ...(prefill ? { prefill } : {}),
  };
  if (profileDir && target.stop) {
    const written = readdirSync(profileDir).filter((f) => f.endsWith(".cpuprofile") && !before.has(f));
    if (written[0]) result.profile = summarizeProfile(join(profileDir, written[0]));
  }
  return result;
}

export function isSkipped(run: RunResult | SkippedRun): run is SkippedRun {
  return "skipped" in run;
}
