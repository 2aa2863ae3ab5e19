/**
 * Starts a single-node MongoDB replica set with mongodb-memory-server, which
 * downloads `mongod` on first use (or uses MONGOMS_SYSTEM_BINARY). Where that
 * cannot work (no network, no binary) it reports why instead of throwing, so
 * the caller can fall back and say so.
 */
import { mkdir } from "node:fs/promises";

export type EphemeralReplicaSet =
  | { ok: true; uri: string; stop: () => Promise<void> }
  | { ok: false; reason: string };

export async function startEphemeralReplicaSet(options: { dataDir?: string } = {}): Promise<EphemeralReplicaSet> {
  // One download attempt, not the library's three with back-off: on a machine
  // without network this fails in milliseconds instead of seconds.
  process.env.MONGOMS_MAX_RETRIES ??= "1";
  let mms: Pick<typeof import("mongodb-memory-server-core"), "MongoBinary" | "MongoMemoryReplSet">;
  try {
    mms = await import("mongodb-memory-server-core");
  } catch (error) {
    return { ok: false, reason: `mongodb-memory-server-core is not installed (${describe(error)})` };
  }
  try {
    // Resolve (and download if needed) the binary first: this fails quietly,
    // where the replica set's own start prints a stack trace to the console.
    await mms.MongoBinary.getPath();
  } catch (error) {
    return { ok: false, reason: `no mongod binary: ${describe(error)}` };
  }
  try {
    if (options.dataDir) await mkdir(options.dataDir, { recursive: true });
    const replSet = await mms.MongoMemoryReplSet.create({
      replSet: { count: 1, storageEngine: "wiredTiger" },
      instanceOpts: options.dataDir ? [{ dbPath: options.dataDir }] : undefined,
    });
    return {
      ok: true,
      uri: replSet.getUri(),
      stop: async () => {
        await replSet.stop({ doCleanup: !options.dataDir, force: false });
      },
    };
  } catch (error) {
    return { ok: false, reason: `mongod did not start: ${describe(error)}` };
  }
}

function describe(error: unknown): string {
  // The library's messages span lines ("Download failed for url ..., Details:\n
  // getaddrinfo ENOTFOUND ..."); one line carries both halves.
  const message = error instanceof Error ? error.message : String(error);
  const oneLine = message.replace(/\s+/g, " ").trim();
  return oneLine.length > 300 ? `${oneLine.slice(0, 297)}...` : oneLine;
}
