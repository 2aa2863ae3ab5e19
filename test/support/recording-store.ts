/**
 * A Store that records the shape of every query the engine issues through it:
 * which collection and operation, which fields the filter names with which
 * operators (values left out), the sort. Run representative engine flows on
 * it and you have every query shape the engine uses today, with an example of
 * each, without a hand-kept list that goes stale as the engine changes.
 */
import { InterceptedStore } from "../../src/store/intercept.js";
import type { FindOptions, SortSpec, Store } from "../../src/store/port.js";

export interface QueryShape {
  collection: string;
  operation: string;
  /** The filter with every value replaced by its type: `{thread_id: "string", available_at: {$lte: "number"}}`. */
  shape: unknown;
  sort?: SortSpec;
  /** One filter the engine really used, to explain. */
  example: Record<string, unknown>;
  /** How many documents the example asked for, if it set a limit. */
  limit?: number;
}

/** Operations that select documents by a filter (the first argument). */
const QUERIES = new Set(["findOne", "find", "findOneAndUpdate", "updateOne", "updateMany", "deleteOne", "deleteMany", "countDocuments"]);

function shapeOf(value: unknown): unknown {
  if (Array.isArray(value)) {
    // `$in: [..]` and `$and: [..]`: the shape of the elements, once each.
    const shapes = new Map(value.map((v) => [JSON.stringify(shapeOf(v)), shapeOf(v)]));
    return [...shapes.values()];
  }
  if (value instanceof Uint8Array) return "bytes";
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) out[key] = shapeOf((value as Record<string, unknown>)[key]);
  return out;
}

export class RecordingStore extends InterceptedStore {
  private readonly shapes = new Map<string, QueryShape>();

  constructor(inner: Store) {
    super(inner, {
      operation: (call) => {
        if (QUERIES.has(call.operation)) this.record(call.collection, call.operation, call.args);
        return call.run();
      },
    });
  }

  /** Every distinct shape recorded, in the order first seen. */
  get recorded(): QueryShape[] {
    return [...this.shapes.values()];
  }

  private record(collection: string, operation: string, args: readonly unknown[]): void {
    const filter = (args[0] ?? {}) as Record<string, unknown>;
    // findOne/find take options second; findOneAndUpdate third.
    const options = (operation === "findOneAndUpdate" ? args[2] : operation === "find" || operation === "findOne" ? args[1] : undefined) as FindOptions | undefined;
    const sort = options?.sort;
    const shape = shapeOf(filter);
    const key = JSON.stringify([collection, operation, shape, sort ?? null]);
    if (this.shapes.has(key)) return;
    const limit = operation === "findOne" || operation === "findOneAndUpdate" || operation === "updateOne" || operation === "deleteOne" ? 1 : options?.limit;
    this.shapes.set(key, { collection, operation, shape, ...(sort ? { sort } : {}), example: filter, ...(limit !== undefined ? { limit } : {}) });
  }
}
