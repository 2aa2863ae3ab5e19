/**
 * The mongod a server starts for itself when no MONGODB_URI is given (issue
 * 11): with a data directory its files and its port survive a restart, and
 * the store says it is durable; without one the files are temporary and the
 * store says it is not. And a change stream of the mongo backend that loses
 * its connection fails loudly instead of ending as if closed.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { localDurability, MEMBER_RECORD, portIsFree, readMemberRecord, startEphemeralReplicaSet, writeMemberRecord } from "../../src/store/mongo/memory-server.js";
import { MongoStore } from "../../src/store/mongo/store.js";
import { type Doc, StoreUnavailableError } from "../../src/store/port.js";
import { storeBackends } from "../support/stores.js";

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "mailroom-mongod-"));
}

describe("a server-started mongod", () => {
  it("is durable with a data directory (one node: not beyond that disk), and says it is not without one", () => {
    expect(localDurability("/var/lib/mailroom")).toMatchObject({ durable: true, description: expect.stringContaining("/var/lib/mailroom") });
    expect(localDurability(undefined)).toMatchObject({ durable: false, description: expect.stringMatching(/deleted when it stops/) });
  });

  it("records its port beside its files, and reads it back", async () => {
    const dir = await tempDir();
    try {
      expect(await readMemberRecord(dir)).toBeUndefined();
      await writeMemberRecord(dir, { port: 27123 });
      expect(JSON.parse(await readFile(join(dir, MEMBER_RECORD), "utf8"))).toEqual({ port: 27123 });
      expect(await readMemberRecord(dir)).toEqual({ port: 27123 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("tells a port in use from a free one (a restart must bind the port its replica set names)", async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      expect(await portIsFree(port)).toBe(false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(await portIsFree(port)).toBe(true);
  });

  it.skipIf(inject("mongodbUri") === "")("keeps its data in the data directory across a restart", async (context) => {
    const dir = await tempDir();
    try {
      const first = await startEphemeralReplicaSet({ dataDir: dir });
      // MONGODB_URI may name a MongoDB on a machine where no mongod binary can be had.
      if (!first.ok) return context.skip(first.reason);
      expect(first.durability.durable).toBe(true);
      const store = await MongoStore.connect(first.uri, "durability", { onClose: first.stop, durability: first.durability });
      await store.collection<Doc>("kept").insertOne({ _id: "written-before-the-restart" });
      await store.close();

      const second = await startEphemeralReplicaSet({ dataDir: dir });
      expect(second.ok).toBe(true);
      if (!second.ok) return;
      expect(second.uri).toBe(first.uri);
      const again = await MongoStore.connect(second.uri, "durability", { onClose: second.stop });
      try {
        expect(await again.collection<Doc>("kept").findOne({ _id: "written-before-the-restart" })).not.toBeNull();
      } finally {
        await again.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("a mongo backend change stream whose connection is lost", () => {
  const mongo = storeBackends().find((backend) => backend.name === "mongo")!;
  it.skipIf(!mongo.available)("fails with StoreUnavailableError instead of ending as if it had been closed", async () => {
    const store = await mongo.open();
    const stream = await store.watch({ collections: ["things"] });
    const reading = stream[Symbol.asyncIterator]().next();
    // The client goes away under the stream (as when the driver gives up on the deployment).
    await store.close();
    await expect(reading).rejects.toBeInstanceOf(StoreUnavailableError);
    await mongo.dispose(await mongo.reconnect(store));
  });
});
