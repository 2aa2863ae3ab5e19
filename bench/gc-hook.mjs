/**
 * Bench only: the `memory` scenario starts the server as
 * `node --expose-gc --import bench/gc-hook.mjs --import tsx src/cli.ts serve`.
 * On SIGUSR2 this hook runs two full garbage collections and writes the live
 * heap to stderr as one JSON line, `{"benchHeap":{...}}`. Nothing of it is in
 * `mailroom serve` itself: a production server has no way to be made to
 * collect garbage or report its heap beyond /metrics.
 */
import { getHeapStatistics } from "node:v8";

process.on("SIGUSR2", () => {
  const gc = globalThis.gc;
  if (typeof gc !== "function") {
    process.stderr.write(`${JSON.stringify({ benchHeap: { error: "start node with --expose-gc" } })}\n`);
    return;
  }
  gc();
  gc();
  const heap = getHeapStatistics();
  const memory = process.memoryUsage();
  process.stderr.write(`${JSON.stringify({ benchHeap: { usedHeapBytes: heap.used_heap_size, totalHeapBytes: heap.total_heap_size, externalBytes: memory.external, arrayBuffersBytes: memory.arrayBuffers, rssBytes: memory.rss } })}\n`);
});
