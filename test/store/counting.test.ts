/**
 * The counting wrapper behind `mailroom_store_operations_total`: every call
 * through the storage port counts once under its collection and operation,
 * and is otherwise passed through unchanged, on every backend.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CountingStore, STORE_WIDE, StoreOperationCounts } from "../../src/store/counting.js";
import { type Collection, type Doc, DuplicateKeyError, type Store } from "../../src/store/port.js";
import { storeBackends } from "../support/stores.js";

interface Item extends Doc {
  _id: string;
  n: number;
}

function snapshot(counts: StoreOperationCounts): Map<string, number> {
  const out = new Map<string, number>();
  counts.forEach((collection, operation, count) => out.set(`${collection}.${operation}`, count));
  return out;
}

describe.each(storeBackends())("store operation counts on the $name backend", (backend) => {
  let inner: Store;
  beforeAll(async () => {
    if (backend.available) inner = await backend.open();
  });
  afterAll(async () => {
    if (backend.available) await backend.dispose(inner);
  });

  describe.skipIf(!backend.available)("every port call", () => {
    it("counts once under its collection and operation, and answers as the backend does", async () => {
      const counts = new StoreOperationCounts();
      const store = new CountingStore(inner, counts);
      const items = store.collection<Item>("counted_items");
      await items.createIndexes([{ key: { n: 1 }, unique: true }]);
      await items.insertOne({ _id: "a", n: 1 });
      await expect(items.insertOne({ _id: "b", n: 1 })).rejects.toBeInstanceOf(DuplicateKeyError);
      expect((await items.insertMany([{ _id: "c", n: 3 }, { _id: "d", n: 4 }])).insertedCount).toBe(2);
      expect(await items.findOne({ _id: "a" })).toEqual({ _id: "a", n: 1 });
      expect(await items.find({}, { sort: { n: 1 } })).toHaveLength(3);
      expect(await items.findOneAndUpdate({ _id: "a" }, { $set: { n: 2 } })).toEqual({ _id: "a", n: 2 });
      expect((await items.updateOne({ _id: "c" }, { $set: { n: 5 } })).modifiedCount).toBe(1);
      expect((await items.updateMany({}, { $inc: { n: 10 } })).modifiedCount).toBe(3);
      expect(await items.countDocuments({})).toBe(3);
      expect(await items.deleteOne({ _id: "c" })).toBe(1);
      expect(await items.deleteMany({})).toBe(2);
      await store.ping();

      const after = snapshot(counts);
      const called = ["createIndexes", "insertOne", "insertMany", "findOne", "find", "findOneAndUpdate", "updateOne", "updateMany", "countDocuments", "deleteOne", "deleteMany"];
      for (const operation of called) {
        expect(after.get(`counted_items.${operation}`), operation).toBe(operation === "insertOne" ? 2 : 1);
      }
      expect(after.get(`${STORE_WIDE}.ping`)).toBe(1);
    });

    it("counts a change stream once, when it is opened, however many changes it delivers", async () => {
      const counts = new StoreOperationCounts();
      const store = new CountingStore(inner, counts);
      const stream = await store.watch({ collections: ["watched_items"] });
      const changes = stream[Symbol.asyncIterator]();
      const watched = store.collection<Item>("watched_items");
      await watched.insertMany([{ _id: "x", n: 1 }, { _id: "y", n: 2 }]);
      await changes.next();
      await changes.next();
      await stream.close();
      const after = snapshot(counts);
      expect(after.get(`${STORE_WIDE}.watch`)).toBe(1);
      expect(after.get("watched_items.insertMany")).toBe(1);
    });

    it("shares one set of counters between every handle on a collection", async () => {
      const counts = new StoreOperationCounts();
      const store = new CountingStore(inner, counts);
      await store.collection<Item>("shared_items").countDocuments({});
      await store.collection<Item>("shared_items").countDocuments({});
      expect(snapshot(counts).get("shared_items.countDocuments")).toBe(2);
      expect(snapshot(counts).get("shared_items.find")).toBe(0);
    });
  });
});

describe("an operation the wrapper was not written for", () => {
  it("is forwarded and counted under its own name, from its first call", async () => {
    class FutureCollection {
      readonly name = "future_items";
      async countDocuments(): Promise<number> {
        return 7;
      }
      async bulkErase(ids: string[], options?: { ordered?: boolean }): Promise<string> {
        return `${ids.join(",")} ${options?.ordered ? "ordered" : "unordered"}`;
      }
    }
    const future = new FutureCollection();
    const inner = { collection: () => future as unknown as Collection<Doc> } as unknown as Store;
    const counts = new StoreOperationCounts();
    const items = new CountingStore(inner, counts).collection<Doc>("future_items") as unknown as FutureCollection;
    expect(snapshot(counts).has("future_items.bulkErase")).toBe(false);
    expect(await items.bulkErase(["a", "b"], { ordered: true })).toBe("a,b ordered");
    expect(await items.countDocuments()).toBe(7);
    expect(items.name).toBe("future_items");
    expect(snapshot(counts).get("future_items.bulkErase")).toBe(1);
    expect(snapshot(counts).get("future_items.countDocuments")).toBe(1);
  });
});
