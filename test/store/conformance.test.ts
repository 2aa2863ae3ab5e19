/**
 * The backend conformance suite: what the engine may rely on from the storage
 * port, asserted identically against every backend. Each assertion is
 * documented MongoDB behaviour, so the memory backend cannot pass by being
 * lenient where MongoDB is strict.
 */
import { BSON } from "mongodb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ChangeStream,
  type Collection,
  type Doc,
  DocumentTooLargeError,
  DuplicateKeyError,
  MAX_DOCUMENT_BYTES,
  type Store,
} from "../../src/store/port.js";
import { take } from "../support/change-streams.js";
import { storeBackends } from "../support/stores.js";

interface Item extends Doc {
  _id: string;
  group?: string;
  status?: string;
  rank?: number;
  n?: number;
  tags?: string[];
  key?: string;
  nested?: { a?: number; b?: string };
  data?: Uint8Array;
  flag?: boolean;
  winner?: number;
}

/** A document of exactly `bytes` bytes of BSON: `_id` and a byte string filling the rest. */
function sized(id: string, bytes: number): Item {
  const overhead = BSON.calculateObjectSize({ _id: id, data: new Uint8Array(0) });
  return { _id: id, data: new Uint8Array(bytes - overhead) };
}

describe.each(storeBackends())("storage port conformance: $name backend", (backend) => {
  let store: Store;
  let counter = 0;
  const fresh = (): Collection<Item> => store.collection<Item>(`c${++counter}_${Date.now().toString(36)}`);

  beforeAll(async () => {
    if (backend.available) store = await backend.open();
  });
  afterAll(async () => {
    if (store) await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("documents", () => {
    it("round-trips strings, numbers, booleans, arrays, nested documents and bytes", async () => {
      const items = fresh();
      const doc: Item = { _id: "a", group: "g", n: 42.5, flag: true, tags: ["x", "y"], nested: { a: 1, b: "two" }, data: new Uint8Array([0, 1, 255]) };
      await items.insertOne(doc);
      const found = await items.findOne({ _id: "a" });
      expect(found).toMatchObject({ _id: "a", group: "g", n: 42.5, flag: true, tags: ["x", "y"], nested: { a: 1, b: "two" } });
      expect(Buffer.from(found!.data!)).toEqual(Buffer.from([0, 1, 255]));
    });

    it("reads bytes back as plain Uint8Arrays of their own, also inside arrays of documents", async () => {
      // Not the driver's Buffers (views into a whole server reply, unequal to a Uint8Array).
      const items = store.collection<Doc & { data?: Uint8Array; box?: Array<{ id: string; bytes: Uint8Array }> }>(`c${++counter}_${Date.now().toString(36)}`);
      await items.insertOne({ _id: "a", data: new Uint8Array([0, 1, 255]), box: [{ id: "e1", bytes: new Uint8Array([7]) }] });
      const isPlain = (bytes: unknown) => Object.getPrototypeOf(bytes) === Uint8Array.prototype;
      const found = (await items.findOne({ _id: "a" }))!;
      const [listed] = await items.find({});
      const updated = (await items.findOneAndUpdate({ _id: "a" }, { $push: { box: { $each: [{ id: "e2", bytes: new Uint8Array([8, 9]) }] } } }))!;
      for (const doc of [found, listed!, updated]) {
        expect(isPlain(doc.data) && isPlain(doc.box![0]!.bytes)).toBe(true);
        expect(doc.data).toEqual(new Uint8Array([0, 1, 255]));
        expect(doc.box![0]).toEqual({ id: "e1", bytes: new Uint8Array([7]) });
      }
      expect(updated.box![1]).toEqual({ id: "e2", bytes: new Uint8Array([8, 9]) });
      expect(isPlain(updated.box![1]!.bytes)).toBe(true);
    });

    it("stores, finds and orders string _ids containing NUL (pool ids are `${pool}\\u0000${id}`)", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { group: 1, key: 1 }, name: "group_key", unique: true }]);
      const ids = ["p\u0000m2", "p", "p\u0000m1", "p\u0000", "p\u0000m1\u0000x"];
      for (const id of ids) await items.insertOne({ _id: id, group: id, key: "k\u0000" });
      expect((await items.findOne({ _id: "p\u0000m1" }))).toEqual({ _id: "p\u0000m1", group: "p\u0000m1", key: "k\u0000" });
      expect(await items.findOne({ _id: "p\u0000m3" })).toBeNull();
      expect(await items.countDocuments({ _id: { $in: ["p\u0000m1", "p\u0000m2", "p\u0000"] } })).toBe(3);
      expect((await items.find({}, { sort: { _id: 1 } })).map((d) => d._id)).toEqual(["p", "p\u0000", "p\u0000m1", "p\u0000m1\u0000x", "p\u0000m2"]);
      expect((await items.find({ _id: { $gt: "p\u0000", $lt: "p\u0001" } }, { sort: { _id: -1 } })).map((d) => d._id)).toEqual(["p\u0000m2", "p\u0000m1\u0000x", "p\u0000m1"]);
      await expect(items.insertOne({ _id: "p\u0000m1" })).rejects.toBeInstanceOf(DuplicateKeyError);
      const duplicate = await items.insertOne({ _id: "other", group: "p\u0000m2", key: "k\u0000" }).catch((e: unknown) => e);
      expect((duplicate as DuplicateKeyError).index).toBe("group_key");
      expect(await items.findOneAndUpdate({ _id: "p\u0000m2" }, { $set: { n: 1 } })).toMatchObject({ _id: "p\u0000m2", n: 1 });
    });

    it("orders strings by their UTF-8 bytes as BSON does: U+FF01 before U+1F600 (JavaScript's < says the opposite)", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { group: 1, key: 1 }, name: "group_key" }]);
      const [fullwidth, emoji, plain] = ["\uFF01", "\u{1F600}", "a"];
      for (const id of [emoji, plain, fullwidth]) await items.insertOne({ _id: id, group: "g", key: id, status: id });
      const ids = (docs: Item[]) => docs.map((d) => d._id);
      // _id index, a secondary index walked by the planner, and an in-memory sort on an unindexed field.
      expect(ids(await items.find({}, { sort: { _id: 1 } }))).toEqual([plain, fullwidth, emoji]);
      expect(ids(await items.find({ group: "g" }, { sort: { key: -1 } }))).toEqual([emoji, fullwidth, plain]);
      expect(ids(await items.find({}, { sort: { status: 1 } }))).toEqual([plain, fullwidth, emoji]);
      // Range conditions, on _id and through an index range.
      expect(ids(await items.find({ _id: { $gt: fullwidth } }))).toEqual([emoji]);
      expect(ids(await items.find({ group: "g", key: { $lt: emoji } }, { sort: { key: 1 } }))).toEqual([plain, fullwidth]);
      expect(ids(await items.find({ $or: [{ status: { $gte: emoji } }] }))).toEqual([emoji]);
      // $min and $max compare the same way.
      await items.updateOne({ _id: plain }, { $set: { key: emoji } });
      expect((await items.findOneAndUpdate({ _id: plain }, { $min: { key: fullwidth } }))!.key).toBe(fullwidth);
      expect((await items.findOneAndUpdate({ _id: plain }, { $max: { key: emoji } }))!.key).toBe(emoji);
    });

    it("returns copies: changing a returned document changes nothing stored", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", nested: { a: 1 } });
      const found = await items.findOne({ _id: "a" });
      found!.nested!.a = 99;
      expect((await items.findOne({ _id: "a" }))!.nested!.a).toBe(1);
    });

    it("does not store undefined fields", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", status: undefined, n: 1 });
      expect(await items.countDocuments({ status: { $exists: true } })).toBe(0);
      expect(await items.countDocuments({ n: 1 })).toBe(1);
    });

    it("refuses a second document with the same _id as a duplicate key", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a" });
      await expect(items.insertOne({ _id: "a" })).rejects.toBeInstanceOf(DuplicateKeyError);
    });
  });

  describe.skipIf(!backend.available)("unique indexes", () => {
    it("refuse a duplicate key with one typed error naming the index, and store nothing", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { group: 1, key: 1 }, name: "group_key", unique: true }]);
      await items.insertOne({ _id: "a", group: "g", key: "k" });
      const error = await items.insertOne({ _id: "b", group: "g", key: "k" }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DuplicateKeyError);
      expect((error as DuplicateKeyError).index).toBe("group_key");
      expect(await items.countDocuments({})).toBe(1);
      await items.insertOne({ _id: "c", group: "h", key: "k" });
      expect(await items.countDocuments({})).toBe(2);
    });

    it("are idempotent to create again", async () => {
      const items = fresh();
      const spec = { key: { group: 1 }, name: "by_group", unique: true } as const;
      await items.createIndexes([spec]);
      await items.createIndexes([spec]);
      await items.insertOne({ _id: "a", group: "g" });
      await expect(items.insertOne({ _id: "b", group: "g" })).rejects.toBeInstanceOf(DuplicateKeyError);
    });

    it("refuse to be created again with another key or options under their name, or under another name", async () => {
      // MongoDB: IndexKeySpecsConflict (86) / IndexOptionsConflict (85). An index whose key changes needs a new name.
      const items = fresh();
      await items.createIndexes([{ key: { group: 1, rank: 1 }, name: "by_group" }, { key: { key: 1 }, name: "by_key", unique: true, partialFilterExpression: { key: { $exists: true } } }]);
      await expect(items.createIndexes([{ key: { group: 1, rank: -1 }, name: "by_group" }])).rejects.toThrow();
      await expect(items.createIndexes([{ key: { group: 1 }, name: "by_group" }])).rejects.toThrow();
      await expect(items.createIndexes([{ key: { group: 1, rank: 1 }, name: "by_group", unique: true }])).rejects.toThrow();
      await expect(items.createIndexes([{ key: { key: 1 }, name: "by_key", unique: true, partialFilterExpression: { key: { $type: "string" } } }])).rejects.toThrow();
      await expect(items.createIndexes([{ key: { group: 1, rank: 1 }, name: "by_group_again" }])).rejects.toThrow();
      // The same specification again is fine.
      await items.createIndexes([{ key: { group: 1, rank: 1 }, name: "by_group" }, { key: { key: 1 }, name: "by_key", unique: true, partialFilterExpression: { key: { $exists: true } } }]);
    });

    it("with a partial filter constrain only the documents the filter selects", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { group: 1 }, name: "one_claimed_per_group", unique: true, partialFilterExpression: { status: "claimed" } }]);
      await items.insertMany([
        { _id: "q1", group: "g", status: "queued" },
        { _id: "q2", group: "g", status: "queued" },
        { _id: "c1", group: "g", status: "claimed" },
      ]);
      await expect(items.insertOne({ _id: "c2", group: "g", status: "claimed" })).rejects.toBeInstanceOf(DuplicateKeyError);
      // An update that would make a second claimed document is refused too, and changes nothing.
      await expect(items.findOneAndUpdate({ _id: "q1", status: "queued" }, { $set: { status: "claimed" } })).rejects.toBeInstanceOf(DuplicateKeyError);
      expect((await items.findOne({ _id: "q1" }))!.status).toBe("queued");
      // Once the claimed one moves on, another may be claimed.
      await items.updateOne({ _id: "c1" }, { $set: { status: "done" } });
      expect((await items.findOneAndUpdate({ _id: "q1", status: "queued" }, { $set: { status: "claimed" } }))!.status).toBe("claimed");
    });

    it("let insertMany insert every document not refused and report the refused positions and index", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { key: 1 }, name: "by_key", unique: true, partialFilterExpression: { key: { $exists: true } } }]);
      await items.insertOne({ _id: "x", key: "taken" });
      const result = await items.insertMany([
        { _id: "a", key: "k1" },
        { _id: "b", key: "taken" },
        { _id: "c", key: "k2" },
        { _id: "d", key: "k1" },
        { _id: "e" },
        { _id: "f" },
      ]);
      expect(result).toEqual({ insertedCount: 4, duplicates: [{ position: 1, index: "by_key" }, { position: 3, index: "by_key" }] });
      expect((await items.find({}, { sort: { _id: 1 } })).map((d) => d._id)).toEqual(["a", "c", "e", "f", "x"]);
    });
  });

  describe.skipIf(!backend.available)("find", () => {
    it("filters with MongoDB's operators, sorts on several fields and pages with skip and limit", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { group: 1, rank: -1, _id: 1 } }]);
      const docs: Item[] = [];
      for (let i = 0; i < 30; i++) {
        docs.push({ _id: `d${String(i).padStart(2, "0")}`, group: i % 3 === 0 ? "a" : "b", rank: i % 5, tags: i % 2 ? ["odd"] : ["even"], nested: { a: i } });
      }
      await items.insertMany(docs);
      const expected = docs
        .filter((d) => d.group === "b" && d.rank! >= 1 && d.rank! <= 3)
        .sort((x, y) => y.rank! - x.rank! || x._id.localeCompare(y._id))
        .map((d) => d._id);
      const all = await items.find({ group: "b", rank: { $gte: 1, $lte: 3 } }, { sort: { rank: -1, _id: 1 } });
      expect(all.map((d) => d._id)).toEqual(expected);
      const page = await items.find({ group: "b", rank: { $gte: 1, $lte: 3 } }, { sort: { rank: -1, _id: 1 }, skip: 2, limit: 3 });
      expect(page.map((d) => d._id)).toEqual(expected.slice(2, 5));
      expect((await items.find({ tags: "odd", "nested.a": { $lt: 10 } }, { sort: { _id: 1 } })).map((d) => d._id)).toEqual(["d01", "d03", "d05", "d07", "d09"]);
      expect(await items.countDocuments({ $or: [{ group: "a" }, { rank: 4 }] })).toBe(docs.filter((d) => d.group === "a" || d.rank === 4).length);
      expect(await items.countDocuments({ _id: { $in: ["d00", "d05", "nope"] } })).toBe(2);
      expect(await items.countDocuments({ status: { $exists: false }, group: { $ne: "a" } })).toBe(20);
      const sortedAscending = await items.find({ group: "a" }, { sort: { rank: 1, _id: -1 } });
      expect(sortedAscending.map((d) => d._id)).toEqual(
        docs.filter((d) => d.group === "a").sort((x, y) => x.rank! - y.rank! || y._id.localeCompare(x._id)).map((d) => d._id),
      );
    });

    it("findOne returns the first document in sort order, or null", async () => {
      const items = fresh();
      await items.insertMany([{ _id: "a", rank: 2 }, { _id: "b", rank: 9 }, { _id: "c", rank: 5 }]);
      expect((await items.findOne({}, { sort: { rank: -1 } }))!._id).toBe("b");
      expect(await items.findOne({ rank: 100 })).toBeNull();
    });
  });

  describe.skipIf(!backend.available)("findOneAndUpdate", () => {
    it("updates only a document matching the whole filter, the first in sort order", async () => {
      const items = fresh();
      await items.insertMany([
        { _id: "a", group: "g", status: "queued", rank: 1 },
        { _id: "b", group: "g", status: "queued", rank: 7 },
        { _id: "c", group: "g", status: "claimed", rank: 9 },
      ]);
      const claimed = await items.findOneAndUpdate({ group: "g", status: "queued" }, { $set: { status: "claimed" }, $inc: { n: 1 } }, { sort: { rank: -1 } });
      expect(claimed).toMatchObject({ _id: "b", status: "claimed", n: 1 });
      expect((await items.findOne({ _id: "a" }))!.status).toBe("queued");
    });

    it("returns null and changes nothing when the filter's condition does not hold", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", status: "acked", key: "t1" });
      expect(await items.findOneAndUpdate({ _id: "a", status: "claimed", key: "t1" }, { $set: { status: "queued" } })).toBeNull();
      expect(await items.findOne({ _id: "a" })).toEqual({ _id: "a", status: "acked", key: "t1" });
    });

    it("returns the document before or after the update as asked", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", n: 1 });
      expect((await items.findOneAndUpdate({ _id: "a" }, { $inc: { n: 1 } }, { returnDocument: "before" }))!.n).toBe(1);
      expect((await items.findOneAndUpdate({ _id: "a" }, { $inc: { n: 1 } }))!.n).toBe(3);
    });

    it("applies $set, $unset, $inc, $min, $max, $push and $pull", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", n: 5, rank: 5, status: "x", tags: ["p", "q"], nested: { a: 1 } });
      const after = await items.findOneAndUpdate({ _id: "a" }, {
        $set: { "nested.b": "new" },
        $unset: { status: "" },
        $inc: { n: -2 },
        $min: { rank: 3 },
        $max: { winner: 4 },
        $push: { tags: "r" },
      });
      expect(after).toEqual({ _id: "a", n: 3, rank: 3, winner: 4, tags: ["p", "q", "r"], nested: { a: 1, b: "new" } });
      const pulled = await items.findOneAndUpdate({ _id: "a" }, { $pull: { tags: "q" } });
      expect(pulled!.tags).toEqual(["p", "r"]);
    });

    it("applies operators to dotted paths, creating missing parents, and treats missing fields as MongoDB does", async () => {
      interface Loose extends Doc {
        nested?: { a?: number; keep?: string; b?: string; zz?: string; none?: string };
        deep?: { x?: { y?: number } };
        counts?: { c?: number };
        lo?: { v?: number };
        hi?: number;
        tags?: string[];
        nothere?: number[];
        missing?: string;
      }
      const items = store.collection<Loose>(`c${++counter}_${Date.now().toString(36)}`);
      await items.insertOne({ _id: "a", nested: { a: 1, keep: "k" }, tags: ["p", "q"] });
      const after = await items.findOneAndUpdate({ _id: "a" }, {
        $set: { "nested.b": "x", "deep.x.y": 1 },
        $inc: { "nested.a": 2, "counts.c": 3 },
        $unset: { "nested.zz": "", missing: "" },
        $min: { "lo.v": 5 },
        $max: { hi: 7 },
        $push: { tags: { $each: ["r", "s"], $slice: -3 } },
        $pull: { nothere: 1 },
      });
      expect(after).toEqual({ _id: "a", nested: { a: 3, keep: "k", b: "x" }, deep: { x: { y: 1 } }, counts: { c: 3 }, lo: { v: 5 }, hi: 7, tags: ["q", "r", "s"] });
      const unset = await items.findOneAndUpdate({ _id: "a" }, { $unset: { "nested.b": "", "deep.x.y": "" }, $min: { "lo.v": 9 }, $max: { hi: 2 } });
      expect(unset).toEqual({ _id: "a", nested: { a: 3, keep: "k" }, deep: { x: {} }, counts: { c: 3 }, lo: { v: 5 }, hi: 7, tags: ["q", "r", "s"] });
      expect(await items.updateOne({ _id: "a" }, { $unset: { "nested.none": "" }, $pull: { tags: "zz" } })).toEqual({ matchedCount: 1, modifiedCount: 0 });
    });

    it("pushes documents with $each onto a missing or existing array and pulls them by a condition", async () => {
      const items = store.collection<Doc & { box?: Array<{ id: string; n: number }>; at?: number }>(`c${++counter}_${Date.now().toString(36)}`);
      await items.insertMany([{ _id: "a" }, { _id: "b" }]);
      await items.updateOne({ _id: "a" }, { $push: { box: { $each: [{ id: "e1", n: 1 }, { id: "e2", n: 2 }] } }, $min: { at: 5 } });
      await items.updateOne({ _id: "a" }, { $push: { box: { $each: [{ id: "e3", n: 3 }] } }, $min: { at: 9 } });
      await items.updateOne({ _id: "b" }, { $push: { box: { $each: [{ id: "e4", n: 4 }] } }, $min: { at: 1 } });
      expect(await items.findOne({ _id: "a" })).toEqual({ _id: "a", box: [{ id: "e1", n: 1 }, { id: "e2", n: 2 }, { id: "e3", n: 3 }], at: 5 });
      const pulled = await items.updateMany({ _id: { $in: ["a", "b"] } }, { $pull: { box: { id: { $in: ["e1", "e3", "e4"] } } } });
      expect(pulled).toEqual({ matchedCount: 2, modifiedCount: 2 });
      expect(await items.updateMany({ _id: { $in: ["a", "b"] }, box: { $size: 0 } }, { $unset: { box: "", at: "" } })).toEqual({ matchedCount: 1, modifiedCount: 1 });
      expect(await items.find({}, { sort: { _id: 1 } })).toEqual([{ _id: "a", box: [{ id: "e2", n: 2 }], at: 5 }, { _id: "b" }]);
    });

    it("refuses an update whose paths conflict, changing nothing", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", n: 1, nested: { a: 1 } });
      await expect(items.updateOne({ _id: "a" }, { $set: { "nested.a": 2 }, $unset: { nested: "" } })).rejects.toThrow();
      await expect(items.updateOne({ _id: "a" }, { $set: { n: 2 }, $inc: { n: 1 } })).rejects.toThrow();
      expect(await items.findOne({ _id: "a" })).toEqual({ _id: "a", n: 1, nested: { a: 1 } });
    });

    it("refuses $setOnInsert on a path another operator of the update writes, upsert or not", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", n: 1 });
      await expect(items.updateOne({ _id: "a" }, { $inc: { n: 1 }, $setOnInsert: { n: 0 } }, { upsert: true })).rejects.toThrow();
      await expect(items.findOneAndUpdate({ _id: "b" }, { $set: { "nested.a": 1 }, $setOnInsert: { nested: {} } }, { upsert: true })).rejects.toThrow();
      await expect(items.updateOne({ _id: "a" }, { $set: { n: 5 }, $setOnInsert: { n: 0 } })).rejects.toThrow();
      expect(await items.find({}, { sort: { _id: 1 } })).toEqual([{ _id: "a", n: 1 }]);
    });

    it("keeps documents independent of each other, of earlier versions and of the caller's values", async () => {
      const items = fresh();
      await items.insertMany([{ _id: "a", nested: { a: 1 }, tags: ["x"] }, { _id: "b", nested: { a: 1 } }]);
      const before = await items.findOneAndUpdate({ _id: "a" }, { $set: { "nested.a": 2 }, $push: { tags: "y" } }, { returnDocument: "before" });
      expect(before).toEqual({ _id: "a", nested: { a: 1 }, tags: ["x"] });
      before!.tags!.push("z");
      const shared = { a: 7 };
      await items.updateMany({}, { $set: { nested: shared } });
      shared.a = 8;
      await items.updateOne({ _id: "b" }, { $inc: { "nested.a": 1 } });
      const bytes = new Uint8Array([1, 2, 3]);
      await items.updateOne({ _id: "a" }, { $set: { data: bytes } });
      bytes[0] = 9;
      const [a, b] = await items.find({}, { sort: { _id: 1 } });
      expect(a).toMatchObject({ nested: { a: 7 }, tags: ["x", "y"] });
      expect(Buffer.from(a!.data!)).toEqual(Buffer.from([1, 2, 3]));
      expect(b).toEqual({ _id: "b", nested: { a: 8 } });
    });

    it("upserts a document from the filter's equality fields, $setOnInsert and the update", async () => {
      const items = fresh();
      const inserted = await items.findOneAndUpdate({ _id: "t", group: "g" }, { $inc: { n: 1 }, $setOnInsert: { status: "new" } }, { upsert: true });
      expect(inserted).toEqual({ _id: "t", group: "g", n: 1, status: "new" });
      const updated = await items.findOneAndUpdate({ _id: "t", group: "g" }, { $inc: { n: 1 }, $setOnInsert: { status: "ignored" } }, { upsert: true });
      expect(updated).toEqual({ _id: "t", group: "g", n: 2, status: "new" });
    });

    it("lets exactly one of many concurrent conditional updates win", async () => {
      const items = fresh();
      await items.insertMany(Array.from({ length: 5 }, (_, i) => ({ _id: `job${i}`, status: "queued" })));
      const attempts = await Promise.all(
        Array.from({ length: 40 }, (_, i) => items.findOneAndUpdate({ _id: `job${i % 5}`, status: "queued" }, { $set: { status: "claimed", winner: i } })),
      );
      const winners = attempts.filter((doc) => doc !== null);
      expect(winners).toHaveLength(5);
      for (const doc of await items.find({})) {
        expect(doc.status).toBe("claimed");
        expect(winners.filter((w) => w!._id === doc._id).map((w) => w!.winner)).toEqual([doc.winner]);
      }
    });
  });

  describe.skipIf(!backend.available)("update, delete and count", () => {
    it("report matched and modified counts (a no-op update matches without modifying)", async () => {
      const items = fresh();
      await items.insertMany([{ _id: "a", group: "g", n: 1 }, { _id: "b", group: "g", n: 2 }, { _id: "c", group: "h", n: 1 }]);
      expect(await items.updateMany({ group: "g" }, { $set: { n: 1 } })).toEqual({ matchedCount: 2, modifiedCount: 1 });
      expect(await items.updateOne({ _id: "c" }, { $set: { n: 1 } })).toEqual({ matchedCount: 1, modifiedCount: 0 });
      expect(await items.updateOne({ _id: "zz" }, { $set: { n: 1 } })).toEqual({ matchedCount: 0, modifiedCount: 0 });
      const upserted = await items.updateOne({ _id: "u" }, { $set: { n: 7 } }, { upsert: true });
      expect(upserted).toEqual({ matchedCount: 0, modifiedCount: 0, upsertedId: "u" });
      expect(await items.countDocuments({ n: 1 })).toBe(3);
    });

    it("match a document once when $in names its _id twice, and test the rest of the filter", async () => {
      const items = fresh();
      await items.insertMany([{ _id: "a", n: 1, group: "g" }, { _id: "b", n: 1, group: "h" }]);
      expect(await items.updateMany({ _id: { $in: ["a", "a", "b"] }, group: "g" }, { $inc: { n: 1 } })).toEqual({ matchedCount: 1, modifiedCount: 1 });
      expect(await items.updateMany({ _id: { $in: ["a", "b", "a"] } }, { $inc: { n: 1 } })).toEqual({ matchedCount: 2, modifiedCount: 2 });
      expect(await items.find({ _id: { $in: ["b", "a", "b"] } }, { sort: { _id: 1 } })).toEqual([{ _id: "a", n: 3, group: "g" }, { _id: "b", n: 2, group: "h" }]);
      expect(await items.countDocuments({ _id: "a", group: "h" })).toBe(0);
    });

    it("delete one or many matching documents and say how many", async () => {
      const items = fresh();
      await items.insertMany([{ _id: "a", group: "g" }, { _id: "b", group: "g" }, { _id: "c", group: "h" }]);
      expect(await items.deleteOne({ group: "g" })).toBe(1);
      expect(await items.deleteMany({ group: { $in: ["g", "h"] } })).toBe(2);
      expect(await items.deleteOne({ group: "g" })).toBe(0);
      expect(await items.countDocuments({})).toBe(0);
    });
  });

  describe.skipIf(!backend.available)("dropIndexes", () => {
    it("drops indexes by name, ignores names that do not exist, and frees the name for another spec", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { key: 1 }, name: "by_key", unique: true }]);
      await items.insertMany([{ _id: "a", key: "k" }]);
      await items.dropIndexes(["by_key", "never_created"]);
      await items.insertOne({ _id: "b", key: "k" }); // no longer unique
      await items.createIndexes([{ key: { key: 1, _id: 1 }, name: "by_key" }]);
      expect(await items.countDocuments({ key: "k" })).toBe(2);
    });
  });

  describe.skipIf(!backend.available)("firstOfEach", () => {
    it("gives, for each value, the first matching document in sort order, at most one per value, none for a value without one", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { group: 1, rank: -1, n: 1 }, name: "group_rank", partialFilterExpression: { status: "open" } }]);
      await items.insertMany([
        { _id: "a1", group: "a", status: "open", rank: 1, n: 1 },
        { _id: "a2", group: "a", status: "open", rank: 3, n: 2 },
        { _id: "a3", group: "a", status: "shut", rank: 9, n: 3 },
        { _id: "b1", group: "b", status: "open", rank: 3, n: 5 },
        { _id: "b2", group: "b", status: "open", rank: 3, n: 4 },
        { _id: "c1", group: "c", status: "shut", rank: 1, n: 1 },
      ]);
      const firsts = await items.firstOfEach("group", ["a", "b", "c", "d", "a"], { status: "open" }, { rank: -1, n: 1 });
      expect(firsts.map((d) => d._id).sort()).toEqual(["a2", "b2"]);
    });
  });

  describe.skipIf(!backend.available)("bulkWrite", () => {
    it("applies every conditional update that matches and counts them, in one call", async () => {
      const items = fresh();
      await items.insertMany([{ _id: "a", n: 1 }, { _id: "b", n: 1 }, { _id: "c", n: 1 }]);
      const result = await items.bulkWrite([
        { updateOne: { filter: { _id: "a", n: 1 }, update: { $set: { n: 2 } } } },
        { updateOne: { filter: { _id: "b", n: 99 }, update: { $set: { n: 2 } } } },
        { updateOne: { filter: { _id: "c", n: 1 }, update: { $set: { n: 1 } } } },
        { updateOne: { filter: { _id: "d" }, update: { $set: { n: 5 } }, upsert: true } },
      ]);
      expect(result).toMatchObject({ matchedCount: 2, modifiedCount: 1, upsertedCount: 1, duplicates: [], attempted: 4 });
      expect((await items.find({}, { sort: { _id: 1 } })).map((d) => [d._id, d.n])).toEqual([["a", 2], ["b", 1], ["c", 1], ["d", 5]]);
    });

    it("unordered: reports each update a unique index refuses by position and index, and applies the rest", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { key: 1 }, name: "key_unique", unique: true, partialFilterExpression: { key: { $exists: true } } }]);
      await items.insertMany([{ _id: "a" }, { _id: "b" }, { _id: "c", key: "taken" }]);
      const result = await items.bulkWrite([
        { updateOne: { filter: { _id: "a" }, update: { $set: { key: "taken" } } } },
        { updateOne: { filter: { _id: "b" }, update: { $set: { key: "free" } } } },
      ]);
      expect(result.duplicates).toEqual([{ position: 0, index: "key_unique" }]);
      expect(result).toMatchObject({ matchedCount: 1, attempted: 2 });
      expect((await items.findOne({ _id: "b" }))?.key).toBe("free");
      expect((await items.findOne({ _id: "a" }))?.key).toBeUndefined();
    });

    it("ordered: applies in order, later ones see earlier ones, and stops at the first refused", async () => {
      const items = fresh();
      await items.createIndexes([{ key: { key: 1 }, name: "key_unique", unique: true, partialFilterExpression: { key: { $exists: true } } }]);
      await items.insertMany([{ _id: "a", n: 1 }, { _id: "b" }, { _id: "c", key: "taken" }]);
      const result = await items.bulkWrite([
        { updateOne: { filter: { _id: "a", n: 1 }, update: { $set: { n: 2 } } } },
        // Sees the first update: matches only because it ran first.
        { updateOne: { filter: { _id: "a", n: 2 }, update: { $set: { n: 3 } } } },
        { updateOne: { filter: { _id: "b" }, update: { $set: { key: "taken" } } } },
        { updateOne: { filter: { _id: "a" }, update: { $set: { n: 4 } } } },
      ], { ordered: true });
      expect(result).toMatchObject({ matchedCount: 2, attempted: 3, duplicates: [{ position: 2, index: "key_unique" }] });
      expect((await items.findOne({ _id: "a" }))?.n).toBe(3);
    });

    it("a read that follows it with readOwnWrites sees every update it applied", async () => {
      const items = fresh();
      await items.insertMany(Array.from({ length: 20 }, (_, i) => ({ _id: `d${i}`, n: 0 })));
      await items.bulkWrite(Array.from({ length: 20 }, (_, i) => ({ updateOne: { filter: { _id: `d${i}`, n: 0 }, update: { $set: { n: i + 1 } } } })));
      const read = await items.find({ _id: { $in: Array.from({ length: 20 }, (_, i) => `d${i}`) } }, { readOwnWrites: true, sort: { n: 1 } });
      expect(read.map((d) => d.n)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    });

    it("refuses an update document without operators before applying any", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", n: 1 });
      await expect(items.bulkWrite([
        { updateOne: { filter: { _id: "a" }, update: { $set: { n: 2 } } } },
        { updateOne: { filter: { _id: "a" }, update: { n: 3 } as never } },
      ])).rejects.toThrow();
      expect((await items.findOne({ _id: "a" }))?.n).toBe(1);
    });
  });

  describe.skipIf(!backend.available)("document size: MongoDB's 16 MiB BSON limit", () => {
    it("refuses to insert a larger document, and stores one just below the limit", async () => {
      const items = fresh();
      expect(BSON.calculateObjectSize(sized("x", MAX_DOCUMENT_BYTES + 1))).toBe(MAX_DOCUMENT_BYTES + 1);
      await expect(items.insertOne(sized("big", MAX_DOCUMENT_BYTES + 1))).rejects.toBeInstanceOf(DocumentTooLargeError);
      await items.insertOne(sized("fits", MAX_DOCUMENT_BYTES - 1024));
      expect((await items.find({})).map((d) => d._id)).toEqual(["fits"]);
    });

    it("refuses a bulk insert holding a larger document whole, inserting none of it", async () => {
      const items = fresh();
      await expect(items.insertMany([{ _id: "small" }, sized("big", MAX_DOCUMENT_BYTES + 1)])).rejects.toBeInstanceOf(DocumentTooLargeError);
      expect(await items.countDocuments({})).toBe(0);
    });

    it("refuses an update or upsert that would leave a larger document, changing nothing", async () => {
      const items = fresh();
      const half = new Uint8Array(MAX_DOCUMENT_BYTES / 2);
      await items.insertOne({ _id: "a", data: half, n: 1 });
      await expect(items.updateOne({ _id: "a" }, { $set: { nested: { b: "x".repeat(MAX_DOCUMENT_BYTES / 2) } } })).rejects.toBeInstanceOf(DocumentTooLargeError);
      await expect(items.findOneAndUpdate({ _id: "a" }, { $set: { tags: ["x".repeat(MAX_DOCUMENT_BYTES / 2)] }, $inc: { n: 1 } })).rejects.toBeInstanceOf(DocumentTooLargeError);
      await expect(items.updateOne({ _id: "b" }, { $set: { data: new Uint8Array(MAX_DOCUMENT_BYTES + 1) } }, { upsert: true })).rejects.toBeInstanceOf(DocumentTooLargeError);
      const [stored] = await items.find({});
      expect({ ...stored, data: stored!.data!.length }).toEqual({ _id: "a", n: 1, data: half.length });
    });
  });

  describe.skipIf(!backend.available)("change streams", () => {
    const streams: ChangeStream[] = [];
    const watch = async (s: Store, options: Parameters<Store["watch"]>[0]) => {
      const stream = await s.watch<Item>(options);
      streams.push(stream);
      return stream;
    };
    afterAll(async () => {
      await Promise.all(streams.map((s) => s.close()));
    });

    it("deliver inserts, updates and deletes in commit order, from the moment watch resolved", async () => {
      const items = fresh();
      await items.insertOne({ _id: "before" });
      const stream = await watch(store, { collections: [items.name] });
      const it = stream[Symbol.asyncIterator]();
      await items.insertOne({ _id: "a", n: 1 });
      await items.updateOne({ _id: "a" }, { $set: { n: 2 } });
      await items.deleteOne({ _id: "a" });
      const changes = await take(it, 3);
      expect(changes.map((c) => [c.operationType, c.collection, c.documentKey._id])).toEqual([
        ["insert", items.name, "a"],
        ["update", items.name, "a"],
        ["delete", items.name, "a"],
      ]);
      expect(changes[0]!.fullDocument).toEqual({ _id: "a", n: 1 });
      expect(changes[1]!.updateDescription!.updatedFields).toEqual({ n: 2 });
    });

    it("filter by collection and by $match on the change document", async () => {
      const items = fresh();
      const others = fresh();
      const stream = await watch(store, { collections: [items.name], match: [{ operationType: "insert", "fullDocument.group": "keep" }] });
      const it = stream[Symbol.asyncIterator]();
      await others.insertOne({ _id: "o", group: "keep" });
      await items.insertOne({ _id: "drop", group: "other" });
      await items.insertOne({ _id: "k1", group: "keep" });
      await items.updateOne({ _id: "k1" }, { $set: { n: 1 } });
      await items.insertOne({ _id: "k2", group: "keep" });
      expect((await take(it, 2)).map((c) => c.documentKey._id)).toEqual(["k1", "k2"]);
    });

    it("deliver bytes in change documents as plain Uint8Arrays", async () => {
      const items = fresh();
      const stream = await watch(store, { collections: [items.name] });
      const it = stream[Symbol.asyncIterator]();
      await items.insertOne({ _id: "a", data: new Uint8Array([1, 2]) });
      await items.updateOne({ _id: "a" }, { $set: { data: new Uint8Array([3]) } });
      const [inserted, updated] = await take(it, 2);
      expect(Object.getPrototypeOf(inserted!.fullDocument!.data)).toBe(Uint8Array.prototype);
      expect(inserted!.fullDocument).toEqual({ _id: "a", data: new Uint8Array([1, 2]) });
      expect(Object.getPrototypeOf(updated!.updateDescription!.updatedFields.data)).toBe(Uint8Array.prototype);
      expect(updated!.updateDescription!.updatedFields).toEqual({ data: new Uint8Array([3]) });
    });

    it("look up the current full document for updates when asked", async () => {
      const items = fresh();
      await items.insertOne({ _id: "a", n: 1, group: "g" });
      const stream = await watch(store, { collections: [items.name], fullDocument: "updateLookup" });
      const it = stream[Symbol.asyncIterator]();
      await items.updateOne({ _id: "a" }, { $set: { n: 2 } });
      const [change] = await take(it, 1);
      expect(change!.operationType).toBe("update");
      expect(change!.fullDocument).toMatchObject({ _id: "a", group: "g" });
    });

    it("resume after a token with nothing lost or repeated, across a reconnect", async () => {
      const items = fresh();
      const first = await watch(store, { collections: [items.name] });
      const it = first[Symbol.asyncIterator]();
      for (let i = 0; i < 5; i++) await items.insertOne({ _id: `e${i}`, n: i });
      const seen = await take(it, 3);
      const token = seen[2]!.token;
      expect(first.resumeToken).toEqual(token);
      await first.close();
      // Written while nobody watches.
      for (let i = 5; i < 8; i++) await items.insertOne({ _id: `e${i}`, n: i });

      const other = await backend.reconnect(store);
      try {
        const resumed = await watch(other, { collections: [items.name], resumeAfter: JSON.parse(JSON.stringify(token)) });
        const rest = await take(resumed[Symbol.asyncIterator](), 5);
        expect([...seen, ...rest].map((c) => c.documentKey._id)).toEqual(["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
        // And it continues live after the backlog.
        await items.insertOne({ _id: "e8" });
        expect((await take(resumed[Symbol.asyncIterator](), 1))[0]!.documentKey._id).toBe("e8");
        await resumed.close();
      } finally {
        if (other !== store) await other.close();
      }
    });

    it("end iteration when closed", async () => {
      const items = fresh();
      const stream = await watch(store, { collections: [items.name] });
      const it = stream[Symbol.asyncIterator]();
      const pending = it.next();
      await stream.close();
      expect((await pending).done).toBe(true);
    });
  });
});
