/**
 * The engine's cost per job, counted in process (no server, no network):
 * store operations per acked job and CPU microseconds per acked job, for the
 * batch path (EnqueueBatch 100, Claim 50, AckBatch) and the unary path
 * (Enqueue, Claim limit 1, Ack, with 16 concurrent workers), on the memory
 * backend. Counts are exact and repeatable; CPU is per job, so it is stable
 * on a busy machine where wall-clock rates are not.
 *
 * `--path enqueue` counts unary Enqueue alone (16 concurrent callers): what
 * an Enqueue costs beyond the per-call cost every RPC pays.
 *
 *   node --import tsx bench/engine-cost.ts [--jobs 20000] [--backlog 0] [--threads 1000] [--path batch|unary|enqueue|both]
 */
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.js";
import { MemoryStore } from "../src/store/memory/store.js";
import type { Collection, Doc, Store } from "../src/store/port.js";
import type { EnqueueCommand } from "../src/domain/dispatch/commands.js";

const { values } = parseArgs({
  options: {
    jobs: { type: "string", default: "20000" },
    backlog: { type: "string", default: "0" },
    threads: { type: "string", default: "1000" },
    path: { type: "string", default: "both" },
    workers: { type: "string", default: "16" },
  },
});
const JOBS = Number(values.jobs);
const BACKLOG = Number(values.backlog);
const THREADS = Number(values.threads);
const WORKERS = Number(values.workers);

/** Counts every call through the port, by collection and operation. */
function counting(store: Store): { store: Store; counts: Map<string, number>; total(): number; reset(): void } {
  const counts = new Map<string, number>();
  const bump = (key: string) => counts.set(key, (counts.get(key) ?? 0) + 1);
  const wrapped: Store = {
    backend: store.backend,
    durability: store.durability,
    collection<T extends Doc>(name: string): Collection<T> {
      const inner = store.collection<T>(name);
      return new Proxy(inner, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (typeof value !== "function" || prop === "constructor") return value;
          return (...args: unknown[]) => {
            if (prop !== "createIndexes") bump(`${name}.${String(prop)}`);
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
    },
    watch: (options) => store.watch(options),
    ping: () => store.ping(),
    close: () => store.close(),
  };
  return {
    store: wrapped,
    counts,
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    reset: () => counts.clear(),
  };
}

let seq = 0;
function command(): EnqueueCommand {
  const n = seq++;
  return { threadId: `thread-${n % THREADS}`, priority: 128, schedule: undefined, maxAttempts: 5, payload: { data: new Uint8Array(8), mediaType: "application/octet-stream" } };
}

async function fill(engine: Engine, n: number): Promise<void> {
  for (let done = 0; done < n; done += 500) {
    await engine.mailbox.enqueue(Array.from({ length: Math.min(500, n - done) }, command));
  }
}

async function batchPath(engine: Engine, jobs: number): Promise<number> {
  let acked = 0;
  let enqueued = 0;
  while (acked < jobs) {
    if (enqueued - acked < 400 && enqueued < jobs) {
      const outcomes = await engine.mailbox.enqueue(Array.from({ length: 100 }, command));
      enqueued += outcomes.length;
    }
    const claimed = await Promise.all([0, 1].map(() => engine.mailbox.claim({ consumerId: "w", leaseMs: 30_000, limit: 50, waitMs: 0 })));
    const refs = claimed.flat().map((d) => ({ dispatchId: d._id, claimToken: d.claim_token! }));
    if (refs.length === 0) continue;
    const results = await engine.mailbox.ackMany(refs);
    acked += results.filter((r) => !(r instanceof Error)).length;
  }
  return acked;
}

async function unaryPath(engine: Engine, jobs: number): Promise<number> {
  let acked = 0;
  let enqueued = 0;
  const producer = async () => {
    while (enqueued < jobs) {
      if (enqueued - acked >= 2 * WORKERS) {
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      enqueued++;
      await engine.mailbox.enqueue([command()]);
    }
  };
  const worker = async () => {
    while (acked < jobs) {
      const [dispatch] = await engine.mailbox.claim({ consumerId: "w", leaseMs: 30_000, limit: 1, waitMs: 0 });
      if (!dispatch) {
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      await engine.mailbox.ack({ dispatchId: dispatch._id, claimToken: dispatch.claim_token! });
      acked++;
    }
  };
  await Promise.all([...Array.from({ length: WORKERS }, producer), ...Array.from({ length: WORKERS }, worker)]);
  return acked;
}

/** Unary Enqueue alone from WORKERS concurrent callers; "acked" counts the dispatches enqueued. */
async function enqueuePath(engine: Engine, jobs: number): Promise<number> {
  let enqueued = 0;
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (enqueued < jobs) {
        enqueued++;
        await engine.mailbox.enqueue([command()]);
      }
    }),
  );
  return enqueued;
}

async function measure(name: string, run: (engine: Engine, jobs: number) => Promise<number>): Promise<void> {
  const counter = counting(new MemoryStore({ changeLogCapacity: 50_000 }));
  const engine = await Engine.start(counter.store, { background: false });
  if (BACKLOG > 0) await fill(engine, BACKLOG);
  await run(engine, Math.min(2000, JOBS)); // warm-up
  await engine.outbox.drain();
  counter.reset();
  const cpu = process.cpuUsage();
  const started = performance.now();
  const acked = await run(engine, JOBS);
  await engine.outbox.drain();
  const used = process.cpuUsage(cpu);
  const seconds = (performance.now() - started) / 1000;
  const top = [...counter.counts].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, v]) => `${k} ${(v / acked).toFixed(3)}`);
  console.log(
    `${name}: ${acked} jobs, backlog ${BACKLOG}: ${(counter.total() / acked).toFixed(2)} store ops/job, ` +
      `${((used.user + used.system) / acked).toFixed(0)} us CPU/job, ${(acked / seconds).toFixed(0)} jobs/s (in process)`,
  );
  console.log(`  per job: ${top.join(", ")}`);
  await engine.stop();
}

if (values.path === "enqueue") await measure(`enqueue x${WORKERS}`, enqueuePath);
else {
  if (values.path !== "unary") await measure("batch", batchPath);
  if (values.path !== "batch") await measure(`unary x${WORKERS}`, unaryPath);
}
