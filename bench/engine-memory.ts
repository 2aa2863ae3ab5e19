/**
 * Live heap per stored dispatch and per journal event, in process on the
 * memory backend: heap after a forced GC, before and after storing N of them
 * (dispatches enqueued, claimed and acked: what retention keeps most of; and
 * 8-byte-payload events published by a run). Needs --expose-gc.
 *
 *   node --expose-gc --import tsx bench/engine-memory.ts [--count 20000]
 *
 * The same file runs against another checkout's engine for a before/after
 * (copy it there): it uses only Engine.start, mailbox.enqueue/claim/ackMany
 * and events.publish.
 */
import { create } from "@bufbuild/protobuf";
import { parseArgs } from "node:util";
import { AgentEventSchema, EventKind } from "../gen/mailroom/v1/event_pb.js";
import { Engine } from "../src/engine/engine.js";
import { MemoryStore } from "../src/store/memory/store.js";

const { values } = parseArgs({ options: { count: { type: "string", default: "20000" } } });
const COUNT = Number(values.count);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc");

async function settledHeap(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    gc!();
  }
  return process.memoryUsage().heapUsed;
}

async function perDispatch(): Promise<number> {
  const engine = await Engine.start(new MemoryStore(), { background: false });
  const before = await settledHeap();
  for (let done = 0; done < COUNT; done += 100) {
    await engine.mailbox.enqueue(Array.from({ length: 100 }, (_, i) => ({ threadId: `t${(done + i) % 1000}`, priority: 128, maxAttempts: 5, schedule: undefined, payload: { data: new Uint8Array(8), mediaType: "application/octet-stream" } })));
    for (;;) {
      const claimed = await engine.mailbox.claim({ consumerId: "w", leaseMs: 60_000, limit: 100, waitMs: 0 });
      if (claimed.length === 0) break;
      await engine.mailbox.ackMany(claimed.map((d) => ({ dispatchId: d._id, claimToken: d.claim_token! })));
    }
  }
  await engine.outbox.drain();
  const after = await settledHeap();
  await engine.stop();
  // Each dispatch's three events (enqueued, claimed, acked) are in the journal too.
  return (after - before) / COUNT;
}

async function perEvent(): Promise<number> {
  const engine = await Engine.start(new MemoryStore(), { background: false });
  const before = await settledHeap();
  for (let i = 0; i < COUNT; i++) {
    await engine.events.publish(create(AgentEventSchema, {
      envelope: { eventId: `e-${i}`, kind: EventKind.MODEL_STREAM_DELTA, runId: "run-1", recordedAt: { seconds: 1n } },
      payload: { case: "full", value: { data: new Uint8Array(8), mediaType: "application/octet-stream" } },
    }));
  }
  const after = await settledHeap();
  await engine.stop();
  return (after - before) / COUNT;
}

const dispatchBytes = await perDispatch();
const eventBytes = await perEvent();
console.log(`live heap: ${dispatchBytes.toFixed(0)} bytes per acked dispatch (with its 3 journal events), ${eventBytes.toFixed(0)} bytes per published event (${COUNT} each, memory backend)`);
