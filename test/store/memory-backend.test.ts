/**
 * Rules of the memory backend itself (beyond the shared conformance suite):
 * indexes keep lookups from scanning, planning never changes results, and the
 * emulated change stream forgets old changes like an oplog does.
 */
import fc from "fast-check";
import { Query } from "mingo";
import { compare, resolve } from "mingo/util";
import { describe, expect, it } from "vitest";
import { MemoryStore } from "../../src/store/memory/store.js";
import { approxBytes } from "../../src/store/memory/budget.js";
import { ChangeStreamHistoryLostError, type Doc, StoreError, StoreFullError } from "../../src/store/port.js";

interface Job extends Doc {
  _id: string;
  thread: string;
  status: string;
  priority: number;
  created: number;
  tags?: string[];
}

async function jobs(count: number) {
  const store = new MemoryStore();
  const collection = store.collection<Job>("jobs");
  await collection.createIndexes([{ key: { thread: 1, status: 1, priority: -1, created: 1 } }, { key: { created: 1 } }]);
  const docs: Job[] = [];
  for (let i = 0; i < count; i++) {
    docs.push({ _id: `j${i}`, thread: `t${i % 100}`, status: i % 10 === 0 ? "claimed" : "queued", priority: i % 7, created: i });
  }
  await collection.insertMany(docs);
  return { store, collection, docs };
}

describe("memory backend: query planning", () => {
  it("answers an _id lookup by examining one document", async () => {
    const { collection } = await jobs(10_000);
    expect((await collection.findOne({ _id: "j4242" }))!.created).toBe(4242);
    expect(collection.lastQuery).toEqual({ plan: "id", docsExamined: 1 });
  });

  it("answers an equality lookup on an indexed prefix without scanning the collection", async () => {
    const { collection } = await jobs(10_000);
    const found = await collection.find({ thread: "t7", status: "queued" });
    expect(found).toHaveLength(100);
    expect(collection.lastQuery.plan).toBe("index");
    expect(collection.lastQuery.docsExamined).toBe(100);
  });

  it("walks an index in sort order and stops at the limit", async () => {
    const { collection, docs } = await jobs(10_000);
    const first = await collection.findOne({ thread: "t3", status: "queued" }, { sort: { priority: -1, created: 1 } });
    const expected = docs.filter((d) => d.thread === "t3" && d.status === "queued").sort((a, b) => b.priority - a.priority || a.created - b.created)[0];
    expect(first!._id).toBe(expected!._id);
    expect(collection.lastQuery.docsExamined).toBe(1);
  });

  it("prefers an index that yields the sort over one that only adds a range, and stops at the first match", async () => {
    // The mailbox's head-of-thread query: most queued dispatches are available, the best one is wanted.
    const store = new MemoryStore();
    const dispatches = store.collection<Job & { epoch: number; available: number }>("dispatches");
    await dispatches.createIndexes([
      { key: { thread: 1, status: 1, epoch: 1, priority: -1, created: 1, _id: 1 }, name: "claim_order" },
      { key: { thread: 1, status: 1, epoch: 1, available: 1 }, name: "thread_readiness" },
    ]);
    await dispatches.insertMany(Array.from({ length: 2_000 }, (_, i) => ({ _id: `d${String(i).padStart(4, "0")}`, thread: "t", status: "queued", epoch: 0, priority: i % 5, created: i, available: i })));
    const filter = { thread: "t", status: "queued", epoch: 0, available: { $lte: 1_500 } };
    const sort = { priority: -1, created: 1, _id: 1 } as const;
    expect(dispatches.explain(filter, { sort })).toMatchObject({ plan: "index", index: "claim_order", blockingSort: false });
    const head = await dispatches.findOne(filter, { sort });
    expect(head!._id).toBe("d0004");
    expect(dispatches.lastQuery).toEqual({ plan: "index", index: "claim_order", docsExamined: 1 });
    // Without a sort, the range narrows best.
    expect(dispatches.explain(filter)).toMatchObject({ plan: "index", index: "thread_readiness", blockingSort: false });
  });

  it("walks an index that only yields the sort, up to the limit", async () => {
    const store = new MemoryStore();
    const events = store.collection<{ _id: number }>("events");
    await events.insertMany(Array.from({ length: 5_000 }, (_, i) => ({ _id: i + 1 })));
    expect((await events.findOne({}, { sort: { _id: -1 } }))!._id).toBe(5_000);
    expect(events.lastQuery).toEqual({ plan: "index", index: "_id_", docsExamined: 1 });
  });

  it("narrows by a range on the field after the equality prefix", async () => {
    const { collection } = await jobs(10_000);
    const found = await collection.find({ created: { $gte: 500, $lt: 510 } });
    expect(found.map((d) => d.created)).toEqual([500, 501, 502, 503, 504, 505, 506, 507, 508, 509]);
    expect(collection.lastQuery.docsExamined).toBeLessThanOrEqual(11);
  });

  it("walks one range per $in value, and uses a partial index when the filter implies it", async () => {
    const store = new MemoryStore();
    const collection = store.collection<Job & { key?: string }>("jobs");
    await collection.createIndexes([{ key: { key: 1 }, unique: true, partialFilterExpression: { key: { $exists: true } } }]);
    await collection.insertMany(Array.from({ length: 2_000 }, (_, i) => ({ _id: `j${i}`, thread: "t", status: "queued", priority: 0, created: i, ...(i % 2 ? { key: `k${i}` } : {}) })));
    const found = await collection.find({ key: { $in: ["k1", "k999", "k1000", "nope"] } }, { sort: { created: 1 } });
    expect(found.map((d) => d._id)).toEqual(["j1", "j999"]);
    expect(collection.lastQuery).toMatchObject({ plan: "index", docsExamined: 2 });
    // {key: null} does not imply {$exists: true}: the partial index cannot answer it.
    expect(await collection.countDocuments({ key: null } as never)).toBe(1_000);
    expect(collection.lastQuery.plan).toBe("scan");
  });

  it("walks the implicit _id index for _id ranges, and a range after an $in prefix", async () => {
    const store = new MemoryStore();
    const events = store.collection<{ _id: number; run: string }>("events");
    await events.createIndexes([{ key: { run: 1, _id: 1 } }]);
    await events.insertMany(Array.from({ length: 5_000 }, (_, i) => ({ _id: i + 1, run: `r${i % 10}` })));
    const page = await events.find({ _id: { $gt: 4_000, $lte: 4_010 } }, { sort: { _id: 1 }, limit: 5 });
    expect(page.map((d) => d._id)).toEqual([4_001, 4_002, 4_003, 4_004, 4_005]);
    // Bounds are walked inclusively and re-checked: the position 4000 itself is examined too.
    expect(events.lastQuery).toMatchObject({ plan: "index", index: "_id_", docsExamined: 6 });
    const runPage = await events.find({ run: { $in: ["r3"] }, _id: { $gt: 4_900 } }, { sort: { _id: 1 }, limit: 3 });
    expect(runPage.map((d) => d._id)).toEqual([4_904, 4_914, 4_924]);
    expect(events.lastQuery.docsExamined).toBe(3);
  });

  it("bounds a one-sided numeric range to numbers, skipping documents without the field", async () => {
    const { collection } = await jobs(1_000);
    await collection.insertMany(Array.from({ length: 500 }, (_, i) => ({ _id: `nocreated${i}`, thread: "x", status: "queued", priority: 0 }) as unknown as Job));
    expect(await collection.countDocuments({ created: { $lte: 4 } })).toBe(5);
    expect(collection.lastQuery.docsExamined).toBeLessThanOrEqual(6);
  });

  it("never changes results: any filter, sort and limit give what a plain scan gives", async () => {
    const doc = fc.record({
      thread: fc.constantFrom("a", "b", "c"),
      status: fc.constantFrom("queued", "claimed", "acked"),
      priority: fc.integer({ min: 0, max: 4 }),
      created: fc.integer({ min: 0, max: 50 }),
      tags: fc.option(fc.array(fc.constantFrom("x", "y"), { maxLength: 2 }), { nil: undefined }),
    });
    const condition = fc.oneof(
      fc.record({ thread: fc.constantFrom("a", "b", "z") }),
      fc.record({ thread: fc.constantFrom("a", "b"), status: fc.constantFrom("queued", "claimed") }),
      fc.record({ thread: fc.constantFrom("a", "c"), status: fc.constantFrom("queued", "acked"), priority: fc.record({ $gte: fc.integer({ min: 0, max: 4 }) }) }),
      fc.record({ thread: fc.constantFrom("a", "c"), status: fc.record({ $eq: fc.constantFrom("queued", "acked") }), priority: fc.integer({ min: 0, max: 4 }) }),
      fc.record({ created: fc.record({ $gt: fc.integer({ min: 0, max: 50 }), $lte: fc.integer({ min: 0, max: 50 }) }) }),
      fc.record({ tags: fc.constantFrom("x", "y") }),
      fc.record({ status: fc.record({ $in: fc.subarray(["queued", "claimed", "acked"]) }) }),
      fc.record({ thread: fc.record({ $in: fc.subarray(["a", "b", "c"], { minLength: 1 }) }) }),
      fc.record({ thread: fc.constantFrom("a", "b"), status: fc.record({ $in: fc.subarray(["queued", "claimed", "acked"], { minLength: 1 }) }) }),
    );
    const sort = fc.constantFrom<Record<string, 1 | -1> | undefined>(undefined, { priority: -1, created: 1 }, { priority: 1, created: -1 }, { created: 1 }, { created: -1 }, { status: 1, _id: -1 });
    await fc.assert(
      fc.asyncProperty(fc.array(doc, { maxLength: 40 }), condition, sort, fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }), async (raw, filter, order, limit) => {
        const store = new MemoryStore();
        const collection = store.collection<Job>("jobs");
        await collection.createIndexes([
          { key: { thread: 1, status: 1, priority: -1, created: 1 } },
          { key: { created: 1 } },
          { key: { tags: 1 } },
        ]);
        const docs = raw.map((d, i) => ({ _id: `d${String(i).padStart(2, "0")}`, ...d }));
        await collection.insertMany(docs);
        const effectiveSort = { ...(order ?? {}), _id: 1 as const };
        const expected = new Query(filter as Record<string, unknown>)
          .find<Job>(docs)
          .all()
          .sort((x, y) => {
            for (const [field, direction] of Object.entries(effectiveSort)) {
              const c = compare(resolve(x as never, field) ?? null, resolve(y as never, field) ?? null);
              if (c !== 0) return c * direction;
            }
            return 0;
          })
          .slice(0, limit ?? Infinity)
          .map((d) => d._id);
        const actual = (await collection.find(filter, { sort: effectiveSort, limit })).map((d) => d._id);
        expect(actual).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });
});

describe("memory backend: change log retention", () => {
  it("refuses to resume from a position it no longer retains, like a rolled-over oplog", async () => {
    const store = new MemoryStore({ changeLogCapacity: 10 });
    const items = store.collection<Doc>("items");
    const stream = await store.watch();
    const iterator = stream[Symbol.asyncIterator]();
    await items.insertOne({ _id: "first" });
    await iterator.next();
    const token = stream.resumeToken!;
    await stream.close();
    for (let i = 0; i < 30; i++) await items.insertOne({ _id: `later${i}` });
    const resumed = await store.watch({ resumeAfter: token });
    await expect(resumed[Symbol.asyncIterator]().next()).rejects.toBeInstanceOf(ChangeStreamHistoryLostError);
  });

  it("rejects a token it did not issue", async () => {
    const store = new MemoryStore();
    await expect(store.watch({ resumeAfter: { _data: "not-a-token" } })).rejects.toBeInstanceOf(StoreError);
  });
});

describe("memory backend: updates", () => {
  it("refuses replacement documents and pipelines: updates use operators only", async () => {
    const store = new MemoryStore();
    const items = store.collection<Job>("jobs");
    await items.insertOne({ _id: "a", thread: "t", status: "queued", priority: 1, created: 1 });
    await expect(items.updateOne({ _id: "a" }, { status: "x" } as never)).rejects.toBeInstanceOf(StoreError);
    await expect(items.updateOne({ _id: "a" }, [{ $set: { status: "x" } }] as never)).rejects.toBeInstanceOf(StoreError);
    expect((await items.findOne({ _id: "a" }))!.status).toBe("queued");
  });
});

describe("memory backend: bounded by its configured size", () => {
  const doc = (id: string, bytes: number) => ({ _id: id, data: new Uint8Array(bytes) });

  it("refuses a write past the limit with StoreFullError, stores nothing of it, and has room again after a delete", async () => {
    const store = new MemoryStore({ maxBytes: 64 * 1024 });
    const items = store.collection<Doc & { data: Uint8Array }>("items");
    for (let i = 0; i < 5; i++) await items.insertOne(doc(`d${i}`, 10_000));
    await expect(items.insertOne(doc("big", 20_000))).rejects.toBeInstanceOf(StoreFullError);
    expect(await items.findOne({ _id: "big" })).toBeNull();
    await items.deleteOne({ _id: "d0" });
    await items.deleteOne({ _id: "d1" });
    await items.insertOne(doc("big", 20_000));
  });

  it("inserts a batch whole or not at all", async () => {
    const store = new MemoryStore({ maxBytes: 64 * 1024 });
    const items = store.collection<Doc & { data: Uint8Array }>("items");
    await expect(items.insertMany([doc("a", 22_000), doc("b", 22_000), doc("c", 22_000)])).rejects.toBeInstanceOf(StoreFullError);
    expect(await items.countDocuments({})).toBe(0);
  });

  it("keeps the last sixteenth for updates and small documents, not for new large ones", async () => {
    const store = new MemoryStore({ maxBytes: 160_000 });
    const items = store.collection<Doc & { data?: Uint8Array; note?: string }>("items");
    for (let i = 0; i < 7; i++) await items.insertOne(doc(`d${i}`, 20_000));
    // 140 KB held: a new 10 KB document would pass 15/16 of 160 KB; an update of the same size or a small document does not.
    await expect(items.insertOne(doc("large", 10_000))).rejects.toBeInstanceOf(StoreFullError);
    await items.updateOne({ _id: "d0" }, { $set: { note: "x".repeat(10_000) } });
    await items.insertOne({ _id: "small", note: "tombstone-sized" });
    await expect(items.updateOne({ _id: "d1" }, { $set: { note: "x".repeat(20_000) } })).rejects.toBeInstanceOf(StoreFullError);
    expect((await items.findOne({ _id: "d1" }))!.note).toBeUndefined();
  });

  it("accounts every write: what it holds is what its documents take, whatever was inserted, updated and deleted", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom("insert", "update", "unset", "delete"), fc.integer({ min: 0, max: 9 }), fc.string({ maxLength: 50 })), { maxLength: 60 }),
        async (ops) => {
          const store = new MemoryStore();
          const items = store.collection<Doc & { note?: string; tags?: string[] }>("items");
          for (const [op, n, text] of ops) {
            const _id = `k${n}`;
            if (op === "insert") await items.insertOne({ _id, note: text, tags: [text] }).catch(() => undefined);
            if (op === "update") await items.updateOne({ _id }, { $set: { note: text }, $push: { tags: text } });
            if (op === "unset") await items.updateOne({ _id }, { $unset: { note: "" } });
            if (op === "delete") await items.deleteOne({ _id });
          }
          const stored = await items.find({});
          expect(store.usedBytes).toBe(stored.reduce((sum, d) => sum + approxBytes(d), 0));
        },
      ),
      { numRuns: 100 },
    );
  });

  it("keeps its change log within an eighth of the limit: resuming before what it forgot fails as history lost", async () => {
    const store = new MemoryStore({ maxBytes: 8 * 1024 * 1024 });
    const items = store.collection<Doc & { data: Uint8Array }>("items");
    const stream = await store.watch();
    const token = stream.resumeToken!;
    await stream.close();
    // 2 MiB of changes, well under the 50,000-entry bound but past 1 MiB of bytes.
    for (let i = 0; i < 20; i++) {
      await items.insertOne(doc(`d${i}`, 100_000));
      await items.deleteOne({ _id: `d${i}` });
    }
    const resumed = await store.watch({ resumeAfter: token });
    await expect(resumed[Symbol.asyncIterator]().next()).rejects.toBeInstanceOf(ChangeStreamHistoryLostError);
  });
});
