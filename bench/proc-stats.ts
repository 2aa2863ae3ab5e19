/**
 * CPU and memory of a process, from Linux's /proc, sampled during a run:
 * `/proc/<pid>/stat` (utime + stime, in clock ticks), `/proc/<pid>/status`
 * (VmRSS, VmHWM) and `/proc/stat` (every CPU's busy time, so the report can
 * say how much CPU *other* processes on the machine took meanwhile).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { round } from "./samples.js";

function clockTicksPerSecond(): number {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
}

const TICKS = clockTicksPerSecond();

/** utime + stime of a process, in seconds. */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) may contain spaces: count fields after its ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of the whole line are 12 and 13 after the name.
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

export function statusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) : 0;
}

/** Busy seconds summed over every CPU of the machine (everything but idle and iowait). */
function machineBusySeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const [user, nice, system, _idle, _iowait, irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / TICKS;
}

export interface ProcessUsage {
  /** Average CPU over the window, in percent of one core (200 = two cores busy). */
  cpuPercent: number;
  /** CPU seconds (user + system, every thread) the process used in the window. */
  cpuSeconds: number;
  /** Highest one-interval CPU reading, percent of one core. */
  cpuPercentPeak: number;
  rssMiBStart: number;
  rssMiBEnd: number;
  rssMiBPeak: number;
}

export interface MachineUsage {
  cores: number;
  /** CPU the whole machine was busy with over the window, percent of one core. */
  busyPercent: number;
  /** Of that, what neither the server nor the load generator used (other work on the machine: noise). */
  otherPercent: number;
  loadAverage1m: number;
}

interface Tick {
  at: number;
  serverCpu: number;
  machineBusy: number;
}

/** Samples the server every `intervalMs` from `start()` to `stop()`. */
export class UsageSampler {
  private timer: NodeJS.Timeout | undefined;
  private first: Tick | undefined;
  private last: Tick | undefined;
  private peakCpu = 0;
  private rssStart = 0;
  private rssPeak = 0;
  private clientCpuStart = process.cpuUsage();

  constructor(
    /** The server's pid; undefined when it runs elsewhere (then only the machine is sampled). */
    private readonly serverPid: number | undefined,
    private readonly intervalMs = 250,
  ) {}

  start(): void {
    this.first = this.last = this.tick();
    this.rssStart = this.rss();
    this.rssPeak = this.rssStart;
    this.clientCpuStart = process.cpuUsage();
    this.timer = setInterval(() => {
      const now = this.tick();
      const previous = this.last!;
      const seconds = (now.at - previous.at) / 1000;
      if (seconds > 0) this.peakCpu = Math.max(this.peakCpu, ((now.serverCpu - previous.serverCpu) / seconds) * 100);
      this.rssPeak = Math.max(this.rssPeak, this.rss());
      this.last = now;
    }, this.intervalMs);
    this.timer.unref();
  }

  stop(): { server: ProcessUsage | undefined; client: { cpuPercent: number }; machine: MachineUsage } {
    clearInterval(this.timer);
    const end = this.tick();
    const start = this.first!;
    const seconds = (end.at - start.at) / 1000;
    const clientUsage = process.cpuUsage(this.clientCpuStart);
    const clientCpu = (clientUsage.user + clientUsage.system) / 1e6;
    const serverCpu = end.serverCpu - start.serverCpu;
    const busy = end.machineBusy - start.machineBusy;
    const rssEnd = this.rss();
    const percent = (cpuSeconds: number) => round((cpuSeconds / seconds) * 100, 1);
    return {
      server: this.serverPid === undefined ? undefined : {
        cpuPercent: percent(serverCpu),
        cpuSeconds: round(serverCpu, 3),
        cpuPercentPeak: round(this.peakCpu, 1),
        rssMiBStart: mib(this.rssStart),
        rssMiBEnd: mib(rssEnd),
        rssMiBPeak: mib(Math.max(this.rssPeak, rssEnd)),
      },
      client: { cpuPercent: percent(clientCpu) },
      machine: {
        cores: cpus().length,
        busyPercent: percent(busy),
        otherPercent: percent(Math.max(0, busy - serverCpu - clientCpu)),
        loadAverage1m: round(Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]), 2),
      },
    };
  }

  private tick(): Tick {
    return { at: performance.now(), serverCpu: this.serverPid === undefined ? 0 : processCpuSeconds(this.serverPid), machineBusy: machineBusySeconds() };
  }

  private rss(): number {
    return this.serverPid === undefined ? 0 : statusKiB(this.serverPid, "VmRSS");
  }
}

function mib(kib: number): number {
  return round(kib / 1024, 1);
}

/**
 * Waits until the machine is nearly idle (busy below `maxBusyPercent` of one
 * core over one second), at most `timeoutMs`: other work on a small machine
 * (a test suite, a build) would be measured as ours. Returns what it saw.
 */
export async function waitForQuiet(maxBusyPercent: number, timeoutMs: number): Promise<{ waitedSeconds: number; busyPercent: number; quiet: boolean }> {
  const started = performance.now();
  for (;;) {
    const before = machineBusySeconds();
    const at = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const busyPercent = round(((machineBusySeconds() - before) / ((performance.now() - at) / 1000)) * 100, 1);
    const waitedSeconds = round((performance.now() - started) / 1000, 1);
    if (busyPercent <= maxBusyPercent) return { waitedSeconds, busyPercent, quiet: true };
    if (performance.now() - started >= timeoutMs) return { waitedSeconds, busyPercent, quiet: false };
  }
}
