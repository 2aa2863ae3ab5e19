/**
 * Every query the engine issues is answered from an index, without a
 * blocking sort: on MongoDB (its own `explain`: no COLLSCAN, no SORT stage)
 * and on the memory planner, which must pick the same index per shape.
 *
 * The shapes are not a hand-kept list: representative flows of every service
 * run on a recording store, and each distinct shape it saw (collection,
 * operation, filter fields and operators, sort) is checked with the filter
 * the engine really sent. A new query, or a changed one, is checked the day
 * it is written.
 */
import { describe, expect, it } from "vitest";
import { MemoryStore } from "../../src/store/memory/store.js";
import { MongoStore } from "../../src/store/mongo/store.js";
import type { Store } from "../../src/store/port.js";
import { runRepresentativeFlows } from "../support/engine-flows.js";
import { type QueryShape, RecordingStore } from "../support/recording-store.js";
import { storeBackends } from "../support/stores.js";

async function recordedShapes(store: Store): Promise<QueryShape[]> {
  const recording = new RecordingStore(store);
  await runRepresentativeFlows(recording);
  return recording.recorded;
}

function describeShape(shape: QueryShape): string {
  return `${shape.collection}.${shape.operation} ${JSON.stringify(shape.shape)}${shape.sort ? ` sort ${JSON.stringify(shape.sort)}` : ""}`;
}

/**
 * Shapes no index of the engine answers in order today, each with the index
 * it needs. They are reported (issue 11), not fixed here: the indexes belong
 * to the engines that issue the queries. An entry whose shape is no longer
 * issued, or is now answered in order, fails the test: remove it.
 */
const KNOWN_GAPS = new Map<string, string>([
  [
    'dispatches.find {"epoch":{"$lt":"number"},"ns":"string","status":"string","thread_id":"string"} sort {"created_at":1,"_id":1}',
    "Interrupt's detailed list of superseded dispatches, oldest first: {ns: 1, thread_id: 1, status: 1, created_at: 1, _id: 1} would serve it",
  ],
  [
    'live_commands.find {"acked":"boolean","expires_at":{"$gt":"number"},"ns":"string","run_id":{"$in":["string"]},"thread_id":"string"} sort {"sent_at":1,"_id":1}',
    "a channel's unacked commands for its run and for the whole thread: MongoDB merges the two index ranges in order (SORT_MERGE); the memory planner sorts the few it finds",
  ],
  [
    'pool_records.find {"incarnation":"string","journal_seq":{"$gt":"number"},"ns":"string","recipients":"string"} sort {"journal_seq":1}',
    "a run's inbox: recipients is an array (a multikey index on MongoDB); the memory backend walks no multikey index and sorts the pool's records it finds",
  ],
]);

interface MemoryChoice {
  /** The index it walks ("_id_" for an _id lookup). */
  index?: string;
  /** Indexes it rates as good (MongoDB may pick any of them). */
  equallyGood: string[];
  problem?: string;
}

function memoryPlan(store: MemoryStore, shape: QueryShape): MemoryChoice {
  const plan = store.collection(shape.collection).explain(shape.example, { sort: shape.sort });
  const index = plan.index ?? (plan.plan === "id" ? "_id_" : undefined);
  const equallyGood = plan.equallyGood ?? (index ? [index] : []);
  if (plan.plan === "scan") return { equallyGood, problem: "scans the collection" };
  if (plan.blockingSort) return { index, equallyGood, problem: `sorts in memory after ${index}` };
  return { index, equallyGood };
}

/** Known gaps that no longer show: the list must say what is true. */
function staleGaps(shapes: QueryShape[], gapsSeen: Set<string>): string[] {
  const issued = new Set(shapes.map(describeShape));
  return [...KNOWN_GAPS.keys()].filter((key) => !gapsSeen.has(key)).map((key) => `${key}: ${issued.has(key) ? "now answered in order" : "no longer issued"}; remove it from KNOWN_GAPS`);
}

/** Every stage of a MongoDB plan (classic or slot-based explain output), depth first. */
function stages(plan: unknown, out: Array<Record<string, unknown>> = []): Array<Record<string, unknown>> {
  if (Array.isArray(plan)) {
    for (const item of plan) stages(item, out);
  } else if (plan && typeof plan === "object") {
    const node = plan as Record<string, unknown>;
    if (typeof node.stage === "string") out.push(node);
    for (const value of Object.values(node)) stages(value, out);
  }
  return out;
}

describe("the engine's query shapes, recorded from representative flows", () => {
  it("each is answered by the memory planner from an index, in order (no scan, no in-memory sort)", async () => {
    const store = new MemoryStore();
    const shapes = await recordedShapes(store);
    expect(shapes.length).toBeGreaterThan(40);
    const gapsSeen = new Set<string>();
    const problems = shapes.flatMap((shape) => {
      const { problem } = memoryPlan(store, shape);
      if (!problem) return [];
      if (KNOWN_GAPS.has(describeShape(shape)) && problem.startsWith("sorts in memory")) {
        gapsSeen.add(describeShape(shape));
        return [];
      }
      return [`${describeShape(shape)}: ${problem}`];
    });
    expect([...problems, ...staleGaps(shapes, gapsSeen)]).toEqual([]);
  });

  const mongo = storeBackends().find((backend) => backend.name === "mongo")!;
  it.skipIf(!mongo.available)("each is answered by MongoDB without COLLSCAN or a blocking SORT, from the index the memory planner picks", async () => {
    const store = (await mongo.open()) as MongoStore;
    try {
      const shapes = await recordedShapes(store);
      // The memory planner, on indexes built (and data written) by the same flows.
      const twin = new MemoryStore();
      await runRepresentativeFlows(twin);
      const problems: string[] = [];
      for (const shape of shapes) {
        const described = describeShape(shape);
        const winning = stages(await store.explainFind(shape.collection, shape.example, { sort: shape.sort, limit: shape.limit }));
        const names = winning.map((stage) => String(stage.stage));
        if (names.includes("COLLSCAN")) problems.push(`${described}: COLLSCAN`);
        // A known gap may sort, and MongoDB may answer it from another index than the memory planner.
        if (KNOWN_GAPS.has(described)) continue;
        if (names.includes("SORT")) problems.push(`${described}: blocking SORT`);
        const used = winning.map((stage) => (stage.stage === "IDHACK" || String(stage.stage).startsWith("EXPRESS") ? "_id_" : stage.indexName)).filter((name): name is string => typeof name === "string");
        const memory = memoryPlan(twin, shape);
        if (!used.some((name) => memory.equallyGood.includes(name))) {
          problems.push(`${described}: MongoDB uses ${used.join(", ") || "no index"}, the memory planner ${memory.equallyGood.join(" or ")}`);
        }
      }
      expect(problems).toEqual([]);
    } finally {
      await mongo.dispose(store);
    }
  });
});
