/**
 * Reads the server's own counters from `GET /metrics` (Prometheus text):
 * `mailroom_store_operations_total{collection,operation}` (every call through
 * the storage port: a round trip each on MongoDB) and the journal position.
 * Counts are the stable figures on a noisy machine: a run takes a scrape
 * when its window opens and one when it closes, and divides the difference
 * by the jobs acked or events published in between.
 */
import { round } from "./samples.js";

const STORE_OPS = /^mailroom_store_operations_total\{collection="([^"]*)",operation="([^"]*)"\} (\S+)$/;

export interface Scrape {
  /** "collection.operation" -> calls so far; undefined when the server does not export the metric (an older commit). */
  storeOps: Map<string, number> | undefined;
  journalPosition: number | undefined;
  heapUsedBytes: number | undefined;
}

export async function scrape(url: string): Promise<Scrape> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const storeOps = new Map<string, number>();
  let journalPosition: number | undefined;
  let heapUsedBytes: number | undefined;
  for (const line of text.split("\n")) {
    const match = STORE_OPS.exec(line);
    if (match) storeOps.set(`${match[1]}.${match[2]}`, Number(match[3]));
    else if (line.startsWith("mailroom_journal_position ")) journalPosition = Number(line.split(" ")[1]);
    else if (line.startsWith("mailroom_nodejs_heap_size_used_bytes ")) heapUsedBytes = Number(line.split(" ")[1]);
  }
  return { storeOps: text.includes("mailroom_store_operations_total") ? storeOps : undefined, journalPosition, heapUsedBytes };
}

export interface StoreOpsDelta {
  /** Store operations between the two scrapes. */
  total: number;
  /** The non-zero ones by "collection.operation", most first. */
  byOperation: Record<string, number>;
}

export function storeOpsDelta(before: Scrape, after: Scrape): StoreOpsDelta | undefined {
  if (!before.storeOps || !after.storeOps) return undefined;
  const entries: Array<[string, number]> = [];
  let total = 0;
  for (const [key, value] of after.storeOps) {
    const delta = value - (before.storeOps.get(key) ?? 0);
    if (delta <= 0) continue;
    entries.push([key, delta]);
    total += delta;
  }
  entries.sort((a, b) => b[1] - a[1]);
  return { total, byOperation: Object.fromEntries(entries) };
}

/** The delta per unit (job, event, dispatch), rounded; the breakdown keeps the operations worth 0.05 a unit or more. */
export function perUnit(delta: StoreOpsDelta | undefined, units: number): { total: number; byOperation: Record<string, number> } | undefined {
  if (!delta || units <= 0) return undefined;
  const byOperation: Record<string, number> = {};
  for (const [key, value] of Object.entries(delta.byOperation)) {
    const per = value / units;
    if (per >= 0.05) byOperation[key] = round(per, 2);
  }
  return { total: round(delta.total / units, 2), byOperation };
}

/** "14.1 (dispatches.findOneAndUpdate 3, ...)": the top few of a per-unit breakdown. */
export function describePerUnit(per: ReturnType<typeof perUnit>, top = 4): string {
  if (!per) return "n/a (the server exports no mailroom_store_operations_total)";
  const parts = Object.entries(per.byOperation).slice(0, top).map(([key, value]) => `${key} ${value}`);
  return `${per.total}${parts.length > 0 ? ` (${parts.join(", ")}${Object.keys(per.byOperation).length > top ? ", ..." : ""})` : ""}`;
}
