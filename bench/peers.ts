/**
 * The peers Mailroom is compared with, each run by the bench itself as a
 * child process on a free loopback port, fresh for every run (so its CPU can
 * be read from /proc like the Mailroom server's and no state carries over):
 *
 * - redis-server (Debian's `redis-server` package), for BullMQ: no
 *   persistence (`--save ""`, no AOF), as Mailroom's memory backend keeps
 *   nothing on disk either.
 * - nats-server (Debian's `nats-server` package) with JetStream enabled, for
 *   NATS core and JetStream; streams are created with memory storage, for the
 *   same reason.
 *
 * When a binary is missing the peer's runs are skipped and the bench says so.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type PeerServerKind = "redis" | "nats";

export interface PeerServer {
  kind: PeerServerKind;
  host: string;
  port: number;
  pid: number;
  /** e.g. "redis-server 7.0.15" */
  version: string;
  stop(): Promise<void>;
}

const BINARIES: Record<PeerServerKind, { binary: string; install: string }> = {
  redis: { binary: "redis-server", install: "apt-get install -y redis-server" },
  nats: { binary: "nats-server", install: "apt-get install -y nats-server" },
};

/** Where the peer's binary is, or why it cannot run. */
export function peerBinary(kind: PeerServerKind): { path: string } | { missing: string } {
  const { binary, install } = BINARIES[kind];
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/bin", "/usr/sbin", "/usr/local/bin"])) {
    const path = join(dir, binary);
    if (existsSync(path)) return { path };
  }
  return { missing: `${binary} is not installed (${install})` };
}

/** A free loopback TCP port (the peers take a port on their command line). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export async function startPeer(kind: PeerServerKind): Promise<PeerServer> {
  const found = peerBinary(kind);
  if ("missing" in found) throw new Error(found.missing);
  const version = execFileSync(found.path, ["--version"], { encoding: "utf8" }).trim().split("\n")[0]!;
  const host = "127.0.0.1";
  const port = await freePort();
  const dataDir = kind === "nats" ? mkdtempSync(join(tmpdir(), "bench-nats-")) : undefined;
  const args = kind === "redis"
    ? ["--port", String(port), "--bind", host, "--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"]
    : ["-a", host, "-p", String(port), "-js", "-sd", dataDir!];
  // Rather than parse each one's "ready" line (redis at warning level prints none), wait until the port answers.
  const child = spawn(found.path, args, { stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  let output = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => {
    live.delete(child);
    resolve();
  }));
  try {
    await waitForPort(host, port, child, () => output);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return {
    kind,
    host,
    port,
    pid: child.pid!,
    version,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function waitForPort(host: string, port: number, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = performance.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`peer exited (code ${child.exitCode}) before listening:\n${output()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    if (performance.now() > deadline) throw new Error(`peer did not listen on ${host}:${port} within 15 s:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
