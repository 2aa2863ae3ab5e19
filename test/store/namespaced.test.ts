/**
 * NamespacedStore: one namespace's view of a store. Two namespaces with
 * identical ids and identical unique keys never see, change or refuse each
 * other's documents; within one namespace the view behaves as a store of its
 * own (same results, same order, same errors). Runs on every backend.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_NAMESPACE, NamespaceScopeError, NamespacedStore } from "../../src/store/namespaced.js";
import { type ChangeStream, type Collection, type Doc, DuplicateKeyError, type Filter, type IndexSpec, type Store } from "../../src/store/port.js";
import { take } from "../support/change-streams.js";
import { storeBackends } from "../support/stores.js";

interface Item extends Doc {
  _id: string;
  group?: string;
  key?: string;
  n?: number;
}

/** Pairs of namespaces: the default one (unqualified ids) with another, and two whose names are prefixes of each other. */
const PAIRS: [string, string][] = [
  [DEFAULT_NAMESPACE, "alpha"],
  ["a", "ab"],
];

const UNIQUE_KEY: IndexSpec = { key: { key: 1 }, name: "by_key", unique: true, partialFilterExpression: { key: { $exists: true } } };

const ids = (docs: Doc[]) => docs.map((d) => d._id);

describe.each(storeBackends())("NamespacedStore on the $name backend", (backend) => {
  let raw: Store;
  let counter = 0;
  const name = () => `ns${++counter}_${Date.now().toString(36)}`;

  beforeAll(async () => {
    if (backend.available) raw = await backend.open();
  });
  afterAll(async () => {
    if (raw) await backend.dispose(raw);
  });

  /** The same fresh collection seen from both namespaces of a pair, and raw. */
  const views = (pair: [string, string]) => {
    const collection = name();
    const [one, two] = pair.map((ns) => new NamespacedStore(raw, ns).collection<Item>(collection));
    return { one: one!, two: two!, raw: raw.collection<Doc & Record<string, unknown>>(collection) };
  };

  describe.skipIf(!backend.available).each(PAIRS)("namespaces %j and %j", (first, second) => {
    it("hold documents with identical ids and identical unique keys independently", async () => {
      const { one, two } = views([first, second]);
      await one.createIndexes([UNIQUE_KEY]);
      await two.createIndexes([UNIQUE_KEY]);
      await one.insertOne({ _id: "x", key: "k", n: 1 });
      await two.insertOne({ _id: "x", key: "k", n: 2 });
      expect(await one.findOne({ _id: "x" })).toEqual({ _id: "x", key: "k", n: 1 });
      expect(await two.findOne({ _id: "x" })).toEqual({ _id: "x", key: "k", n: 2 });
      expect(await one.find({ key: "k" })).toEqual([{ _id: "x", key: "k", n: 1 }]);
      expect(await two.countDocuments({})).toBe(1);
      expect((await two.insertMany([{ _id: "x" }, { _id: "y", key: "k" }, { _id: "z", key: "z" }])).duplicates).toEqual([
        { position: 0, index: "_id_" },
        { position: 1, index: "by_key" },
      ]);
      expect(await one.countDocuments({})).toBe(1);
    });

    it("refuse a duplicate within one namespace with DuplicateKeyError naming the caller's index", async () => {
      const { one } = views([first, second]);
      await one.createIndexes([UNIQUE_KEY, { key: { group: 1, n: 1 }, unique: true }]);
      await one.insertOne({ _id: "x", key: "k", group: "g", n: 1 });
      const byKey = await one.insertOne({ _id: "y", key: "k" }).catch((e: unknown) => e);
      expect(byKey).toBeInstanceOf(DuplicateKeyError);
      expect((byKey as DuplicateKeyError).index).toBe("by_key");
      const derived = await one.insertOne({ _id: "z", group: "g", n: 1 }).catch((e: unknown) => e);
      expect((derived as DuplicateKeyError).index).toBe("group_1_n_1");
      const byId = await one.insertOne({ _id: "x" }).catch((e: unknown) => e);
      expect((byId as DuplicateKeyError).index).toBe("_id_");
      const upsert = await one.findOneAndUpdate({ _id: "w" }, { $set: { key: "k" } }, { upsert: true }).catch((e: unknown) => e);
      expect((upsert as DuplicateKeyError).index).toBe("by_key");
    });

    it("keep _id ranges, sorts, $in/$nin/$ne and keyset paging within the namespace and in order", async () => {
      const { one, two } = views([first, second]);
      // Pool-style composite ids, ids that prefix each other, and the other namespace's name as an id.
      const mine = ["p", "p\u0000", "p\u0000m1", "p\u0000m1\u0000x", "p\u0000m2", "q", second, `${second}x`];
      for (const id of [...mine].reverse()) await one.insertOne({ _id: id, group: "g" });
      for (const id of [...mine, "o", "p\u0000m0"]) await two.insertOne({ _id: id, group: "g" });
      const sorted = [...mine].sort();
      expect(ids(await one.find({}, { sort: { _id: 1 } }))).toEqual(sorted);
      expect(ids(await one.find({ group: "g" }, { sort: { _id: -1 } }))).toEqual([...sorted].reverse());
      expect(ids(await one.find({ _id: { $gt: "p\u0000", $lt: "p\u0001" } }, { sort: { _id: 1 } }))).toEqual(["p\u0000m1", "p\u0000m1\u0000x", "p\u0000m2"]);
      expect(ids(await one.find({ _id: { $gte: "" } }, { sort: { _id: 1 } }))).toEqual(sorted);
      expect(ids(await one.find({ _id: { $lte: "p\u0000m1" } }, { sort: { _id: 1 } }))).toEqual(sorted.filter((id) => id <= "p\u0000m1"));
      expect(await one.countDocuments({ _id: { $in: ["p", "o", 7, "p\u0000m0", "q"] } } as Filter<Item>)).toBe(2);
      expect(await one.countDocuments({ _id: { $nin: ["p", "q"] } })).toBe(mine.length - 2);
      expect(await one.countDocuments({ _id: { $ne: "p" } })).toBe(mine.length - 1);
      expect(await one.countDocuments({ _id: { $exists: true } })).toBe(mine.length);
      expect(await one.countDocuments({ _id: { $not: { $gt: "p" } } })).toBe(sorted.filter((id) => id <= "p").length);
      expect(await one.countDocuments({ $or: [{ _id: "o" }, { _id: "q" }] })).toBe(1);
      const paged: string[] = [];
      let after: string | undefined;
      for (let page = 0; page < 10; page++) {
        const docs = await one.find(after === undefined ? {} : { _id: { $gt: after } }, { sort: { _id: 1 }, limit: 3 });
        if (docs.length === 0) break;
        paged.push(...ids(docs).map(String));
        after = docs.at(-1)!._id;
      }
      expect(paged).toEqual(sorted);
    });

    it("return documents as written: _id unqualified and no namespace field", async () => {
      const { one, raw: stored } = views([first, second]);
      await one.insertOne({ _id: "x", n: 1 });
      expect(await one.findOneAndUpdate({ _id: "x" }, { $inc: { n: 1 } }, { returnDocument: "before" })).toEqual({ _id: "x", n: 1 });
      expect(await one.findOneAndUpdate({ _id: "x" }, { $inc: { n: 1 } })).toEqual({ _id: "x", n: 3 });
      expect(await one.findOneAndUpdate({ _id: "u" }, { $set: { n: 1 } }, { upsert: true })).toEqual({ _id: "u", n: 1 });
      expect((await one.updateOne({ _id: "v" }, { $set: { n: 1 } }, { upsert: true })).upsertedId).toBe("v");
      const qualified = first === DEFAULT_NAMESPACE ? "x" : `${first}\u0001x`;
      expect(await stored.findOne({ _id: qualified })).toEqual({ _id: qualified, n: 3, ns: first });
      expect((await stored.find({})).every((doc) => doc.ns === first)).toBe(true);
    });

    it("update, upsert and delete only the namespace's documents", async () => {
      const { one, two } = views([first, second]);
      for (const view of [one, two]) await view.insertMany([{ _id: "a", group: "g" }, { _id: "b", group: "g" }]);
      expect(await one.updateMany({ group: "g" }, { $set: { n: 1 } })).toMatchObject({ matchedCount: 2, modifiedCount: 2 });
      expect(await one.findOneAndUpdate({ _id: "c" }, { $set: { n: 5 } }, { upsert: true })).toEqual({ _id: "c", n: 5 });
      expect(await two.findOne({ _id: "c" })).toBeNull();
      expect(await two.countDocuments({ n: { $exists: true } })).toBe(0);
      expect(await one.deleteMany({})).toBe(3);
      expect(ids(await two.find({}, { sort: { _id: 1 } }))).toEqual(["a", "b"]);
      expect(await two.deleteOne({ _id: "c" })).toBe(0);
    });

    it("deliver each namespace only its own changes, unqualified, deletes included", async () => {
      const collection = name();
      const [one, two] = [first, second].map((ns) => new NamespacedStore(raw, ns));
      const streams: ChangeStream<Item>[] = [];
      try {
        for (const view of [one!, two!]) streams.push(await view.watch<Item>({ collections: [collection], match: [{ "documentKey._id": { $ne: "skip" } }] }));
        const [mine, theirs] = streams.map((s) => s[Symbol.asyncIterator]());
        const [a, b] = [one!, two!].map((view) => view.collection<Item>(collection));
        await a!.insertOne({ _id: "x", n: 1 });
        await b!.insertOne({ _id: "x", n: 2 });
        await a!.insertOne({ _id: "skip" });
        await a!.updateOne({ _id: "x" }, { $set: { n: 3 } });
        await b!.deleteOne({ _id: "x" });
        await a!.deleteOne({ _id: "x" });
        const seen = await take(mine!, 3);
        expect(seen.map((c) => [c.operationType, c.documentKey._id])).toEqual([["insert", "x"], ["update", "x"], ["delete", "x"]]);
        expect(seen[0]!.fullDocument).toEqual({ _id: "x", n: 1 });
        expect(seen[1]!.updateDescription!.updatedFields).toEqual({ n: 3 });
        const other = await take(theirs!, 2);
        expect(other.map((c) => [c.operationType, c.documentKey._id, c.fullDocument?.n])).toEqual([["insert", "x", 2], ["delete", "x", undefined]]);
      } finally {
        await Promise.all(streams.map((s) => s.close()));
      }
    });
  });

  describe.skipIf(!backend.available)("what a view refuses rather than pass through unscoped", () => {
    const view = () => new NamespacedStore(raw, "alpha").collection<Item>(name());

    it.each<[string, (c: Collection<Item>) => Promise<unknown>]>([
      ["$where", (c) => c.find({ $where: "true" } as Filter<Item>)],
      ["$expr", (c) => c.countDocuments({ $expr: { $eq: ["$_id", "x"] } } as Filter<Item>)],
      ["a regular expression on _id", (c) => c.find({ _id: { $regex: "^x" } })],
      ["a filter naming ns", (c) => c.find({ ns: "beta" } as Filter<Item>)],
      ["a filter naming ns inside $or", (c) => c.find({ $or: [{ ns: "beta" }] } as Filter<Item>)],
      ["an update setting ns", (c) => c.updateMany({}, { $set: { ns: "beta" } } as object)],
      ["an update renaming a field to ns", (c) => c.updateMany({}, { $rename: { group: "ns" } } as object)],
      ["an update setting _id", (c) => c.updateOne({ _id: "x" }, { $set: { _id: "y" } } as object)],
      ["an update pipeline", (c) => c.updateOne({ _id: "x" }, [{ $set: { n: 1 } }] as object)],
      ["a document carrying ns", (c) => c.insertOne({ _id: "x", ns: "beta" } as Item)],
      ["an _id containing U+0001", (c) => c.insertOne({ _id: "x\u0001y" })],
      ["an upsert without an _id equality", (c) => c.findOneAndUpdate({ group: "g" }, { $set: { n: 1 } }, { upsert: true })],
      ["an index naming ns", (c) => c.createIndexes([{ key: { ns: 1, group: 1 } }])],
    ])("%s", async (_case, call) => {
      await expect(call(view())).rejects.toBeInstanceOf(NamespaceScopeError);
    });

    it("an empty namespace, or one with U+0000 or U+0001", () => {
      for (const ns of ["", "a\u0000b", "a\u0001b"]) expect(() => new NamespacedStore(raw, ns)).toThrow(NamespaceScopeError);
    });

    it("leaves numeric _ids (global journal positions) as they are", async () => {
      const collection = name();
      await new NamespacedStore(raw, "alpha").collection<Doc & { n?: number }>(collection).insertOne({ _id: 1, n: 1 });
      expect(await raw.collection(collection).findOne({ _id: 1 })).toEqual({ _id: 1, n: 1, ns: "alpha" });
      expect(await new NamespacedStore(raw, "beta").collection(collection).findOne({ _id: 1 })).toBeNull();
    });
  });

  /**
   * Random operation sequences on two namespaces sharing one collection,
   * against the same sequences on two collections of their own (two
   * independent stores): every result must be the same.
   */
  describe.skipIf(!backend.available)("against two independent stores", () => {
    const idArb = fc.constantFrom("a", "b", "c", "p\u0000m1", "p\u0000m2", "alpha", "");
    const keyArb = fc.constantFrom("k1", "k2", undefined);
    const op = fc.oneof(
      fc.record({ kind: fc.constant("insert" as const), id: idArb, key: keyArb, n: fc.integer({ min: 0, max: 3 }) }),
      fc.record({ kind: fc.constant("insertMany" as const), docs: fc.array(fc.record({ id: idArb, key: keyArb }), { maxLength: 3 }) }),
      fc.record({ kind: fc.constant("upsert" as const), id: idArb, n: fc.integer({ min: 0, max: 3 }) }),
      fc.record({ kind: fc.constant("inc" as const), lowest: idArb }),
      fc.record({ kind: fc.constant("setKey" as const), id: idArb, key: keyArb }),
      fc.record({ kind: fc.constant("delete" as const), ids: fc.array(idArb, { maxLength: 2 }) }),
      fc.record({ kind: fc.constant("deleteOne" as const), n: fc.integer({ min: 0, max: 3 }) }),
      fc.record({ kind: fc.constant("page" as const), after: idArb, limit: fc.integer({ min: 1, max: 4 }), descending: fc.boolean() }),
      fc.record({ kind: fc.constant("count" as const), ids: fc.array(idArb, { maxLength: 3 }), not: fc.boolean() }),
    );
    type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

    const outcome = async (call: () => Promise<unknown>) => {
      try {
        return { ok: await call() };
      } catch (error) {
        if (error instanceof DuplicateKeyError) return { duplicate: error.index };
        throw error;
      }
    };

    function apply(c: Collection<Item>, o: Op): Promise<unknown> {
      const withKey = (id: string, key: string | undefined, extra: Partial<Item> = {}): Item => (key === undefined ? { _id: id, ...extra } : { _id: id, key, ...extra });
      switch (o.kind) {
        case "insert":
          return outcome(() => c.insertOne(withKey(o.id, o.key, { n: o.n })));
        case "insertMany":
          return outcome(() => c.insertMany(o.docs.map((d) => withKey(d.id, d.key))));
        case "upsert":
          return outcome(() => c.findOneAndUpdate({ _id: o.id }, { $set: { n: o.n } }, { upsert: true }));
        case "inc":
          return outcome(() => c.updateMany({ _id: { $gte: o.lowest } }, { $inc: { n: 1 } }));
        case "setKey":
          return outcome(() => c.findOneAndUpdate({ _id: o.id }, o.key === undefined ? { $unset: { key: "" } } : { $set: { key: o.key } }));
        case "delete":
          return outcome(() => c.deleteMany({ _id: { $in: o.ids } }));
        case "deleteOne":
          return outcome(() => c.deleteOne({ n: o.n }));
        case "page":
          return outcome(() => c.find({ _id: o.descending ? { $lt: o.after } : { $gt: o.after } }, { sort: { _id: o.descending ? -1 : 1 }, limit: o.limit }));
        case "count":
          return outcome(() => c.countDocuments({ _id: o.not ? { $nin: o.ids } : { $in: o.ids } }));
      }
    }

    it("two namespaces behave exactly as two stores of their own", async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.tuple(fc.boolean(), op), { minLength: 1, maxLength: 25 }), async (steps) => {
          const shared = name();
          const [one, two] = ["alpha", DEFAULT_NAMESPACE].map((ns) => new NamespacedStore(raw, ns).collection<Item>(shared));
          const [own1, own2] = [raw.collection<Item>(name()), raw.collection<Item>(name())];
          for (const c of [one!, two!, own1, own2]) await c.createIndexes([UNIQUE_KEY]);
          for (const [second, o] of steps) {
            const [viewed, own] = second ? [two!, own2] : [one!, own1];
            expect(await apply(viewed, o)).toEqual(await apply(own, o));
          }
          for (const [viewed, own] of [[one!, own1], [two!, own2]] as const) {
            expect(await viewed.find({}, { sort: { _id: 1 } })).toEqual(await own.find({}, { sort: { _id: 1 } }));
          }
        }),
        { numRuns: backend.name === "mongo" ? 25 : 60 },
      );
    });
  });
});
