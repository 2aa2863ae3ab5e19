/**
 * Starts a single-node MongoDB replica set with mongodb-memory-server, which
 * downloads `mongod` on first use (or uses MONGOMS_SYSTEM_BINARY). Where that
 * cannot work (no network, no binary) it reports why instead of throwing, so
 * the caller can fall back and say so.
 *
 * With a data directory the node keeps its files there across restarts, and
 * on the same port: a replica set's configuration names its members by host
 * and port, so a node restarted on another port would find itself outside
 * its own set and never become primary. The port is recorded beside the
 * files. Without a data directory the files are temporary, deleted on stop,
 * and the store says it is not durable.
 */
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import type { Durability } from "../port.js";

export type EphemeralReplicaSet =
  | { ok: true; uri: string; stop: () => Promise<void>; durability: Durability }
  | { ok: false; reason: string };

/** Beside the mongod files: what a restart needs to be the same replica set member again. */
export const MEMBER_RECORD = "mailroom-member.json";

interface MemberRecord {
  port: number;
}

export function localDurability(dataDir: string | undefined): Durability {
  return dataDir
    ? {
        durable: true,
        description: `single-node MongoDB replica set started by this server, files kept in ${dataDir}: writes survive restarts, not the loss of that disk`,
      }
    : { durable: false, description: "temporary single-node MongoDB started by this server: its files are deleted when it stops" };
}

export async function readMemberRecord(dataDir: string): Promise<MemberRecord | undefined> {
  let text: string;
  try {
    text = await readFile(join(dataDir, MEMBER_RECORD), "utf8");
  } catch {
    return undefined;
  }
  const port = (JSON.parse(text) as Partial<MemberRecord>).port;
  if (typeof port !== "number" || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`${join(dataDir, MEMBER_RECORD)} does not name a port`);
  }
  return { port };
}

export async function writeMemberRecord(dataDir: string, record: MemberRecord): Promise<void> {
  await writeFile(join(dataDir, MEMBER_RECORD), `${JSON.stringify(record)}\n`);
}

/** Whether nothing listens on 127.0.0.1:port (the port mongod must bind again). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

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
  const { dataDir } = options;
  let record: MemberRecord | undefined;
  let hadFiles = false;
  try {
    if (dataDir) {
      await mkdir(dataDir, { recursive: true });
      record = await readMemberRecord(dataDir);
      hadFiles = (await readdir(dataDir)).length > 0;
      if (record && !(await portIsFree(record.port))) {
        return { ok: false, reason: `port ${record.port}, on which the replica set in ${dataDir} was started, is in use (is another Mailroom using that directory?)` };
      }
    }
  } catch (error) {
    return { ok: false, reason: `cannot use --data-dir ${dataDir}: ${describe(error)}` };
  }
  try {
    const replSet = await mms.MongoMemoryReplSet.create({
      replSet: { count: 1, storageEngine: "wiredTiger" },
      instanceOpts: dataDir ? [{ dbPath: dataDir, ...(record ? { port: record.port } : {}) }] : undefined,
    });
    const port = replSet.servers[0]?.instanceInfo?.port;
    if (dataDir && !record) {
      try {
        if (port === undefined) throw new Error("mongodb-memory-server did not say which port mongod listens on");
        await writeMemberRecord(dataDir, { port });
      } catch (error) {
        // Unrecorded, the next start could not rejoin its own replica set: do not start at all.
        await replSet.stop({ doCleanup: false, force: false }).catch(() => undefined);
        return { ok: false, reason: `cannot record the replica set's port in ${dataDir}: ${describe(error)}` };
      }
    }
    return {
      ok: true,
      uri: replSet.getUri(),
      durability: localDurability(dataDir),
      stop: async () => {
        // Without a data directory the files are temporary: delete them.
        await replSet.stop({ doCleanup: !dataDir, force: false });
      },
    };
  } catch (error) {
    const hint = dataDir && hadFiles && !record
      ? ` (${dataDir} holds files but no ${MEMBER_RECORD}: an older Mailroom started this replica set on a port it did not record; move the directory away to start afresh)`
      : "";
    return { ok: false, reason: `mongod did not start: ${describe(error)}${hint}` };
  }
}

function describe(error: unknown): string {
  // The library's messages span lines ("Download failed for url ..., Details:\n
  // getaddrinfo ENOTFOUND ..."); one line carries both halves.
  const message = error instanceof Error ? error.message : String(error);
  const oneLine = message.replace(/\s+/g, " ").trim();
  return oneLine.length > 300 ? `${oneLine.slice(0, 297)}...` : oneLine;
}
