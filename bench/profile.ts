/**
 * Reads a V8 CPU profile (`node --cpu-prof`) and names where the time went:
 * the functions with the most self time, the functions with the most total
 * (inclusive) time, and self time by area (a package in node_modules, a
 * folder of src/, or Node's internals). Idle and GC are reported apart.
 *
 *   node --import tsx bench/profile.ts path/to/file.cpuprofile [top]
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { round } from "./samples.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface CostLine {
  fn: string;
  ms: number;
  /** Percent of busy time (everything but idle). */
  percent: number;
}

export interface ProfileSummary {
  file: string;
  wallMs: number;
  busyMs: number;
  idleMs: number;
  gcMs: number;
  self: CostLine[];
  inclusive: CostLine[];
  byArea: CostLine[];
}

const root = new URL("..", import.meta.url).href;

function where(url: string, line: number): string {
  if (url === "") return "";
  const short = url.startsWith(root) ? url.slice(root.length) : url.replace(/^file:\/\//, "");
  return `${short}:${line + 1}`;
}

function area(url: string): string {
  if (url === "") return "(native/V8)";
  if (url.startsWith("node:")) return "node internals";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  const local = url.startsWith(root) ? url.slice(root.length) : url;
  const folder = /^(src\/[^/]+|gen|bench)\//.exec(local);
  return folder ? folder[1]! : local;
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));

  const key = (node: ProfileNode) => {
    const { functionName, url, lineNumber } = node.callFrame;
    return `${functionName || "(anonymous)"} ${where(url, lineNumber)}`.trim();
  };
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const areas = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  let total = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    total += us;
    const name = node.callFrame.functionName;
    if (name === "(idle)") {
      idle += us;
      continue;
    }
    if (name === "(garbage collector)") gc += us;
    self.set(key(node), (self.get(key(node)) ?? 0) + us);
    areas.set(area(node.callFrame.url), (areas.get(area(node.callFrame.url)) ?? 0) + us);
    // Every distinct function on the stack gets the sample once (recursion counted once).
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = key(byId.get(at)!);
      if (k === "(root)" || seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + us);
    }
  }
  const busy = total - idle;
  const lines = (costs: Map<string, number>, count: number): CostLine[] =>
    [...costs]
      .sort((a, b) => b[1] - a[1])
      .slice(0, count)
      .map(([fn, us]) => ({ fn, ms: round(us / 1000, 1), percent: round((us / busy) * 100, 1) }));
  return {
    file,
    wallMs: round((profile.endTime - profile.startTime) / 1000, 0),
    busyMs: round(busy / 1000, 0),
    idleMs: round(idle / 1000, 0),
    gcMs: round(gc / 1000, 0),
    self: lines(self, top),
    inclusive: lines(inclusive, top),
    byArea: lines(areas, top),
  };
}

export function printProfile(summary: ProfileSummary): void {
  console.log(`profile ${summary.file}: wall ${summary.wallMs} ms, busy ${summary.busyMs} ms, idle ${summary.idleMs} ms, GC ${summary.gcMs} ms`);
  const table = (title: string, lines: CostLine[]) => {
    console.log(`  ${title}`);
    for (const line of lines) console.log(`    ${String(line.percent).padStart(5)}%  ${String(line.ms).padStart(9)} ms  ${line.fn}`);
  };
  table("self time by area (% of busy)", summary.byArea);
  table("self time by function", summary.self);
  table("total (inclusive) time by function", summary.inclusive);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error("usage: node --import tsx bench/profile.ts <file.cpuprofile> [top]");
    process.exit(2);
  }
  printProfile(summarizeProfile(file, top ? Number(top) : 25));
}
