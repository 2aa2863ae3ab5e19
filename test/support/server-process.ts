/**
 * Runs the real server as a child process (`node --import tsx src/cli.ts
 * serve`), exactly as an operator would, and reads its JSON log.
 *
 * End-to-end suites run once per backend:
 *
 *   describe.each(serverBackends())("... on the $name backend", (backend) => {
 *     const server = useServerProcess({ backend });
 *     describe.skipIf(!backend.available)("...", () => {
 *       it("...", async () => { ... server().url ... });
 *     });
 *   });
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, inject } from "vitest";
import { e2eAuthArgs } from "./e2e-auth.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export interface ServerBackend {
  name: "memory" | "mongo";
  /** False when no MongoDB could be had (the global setup said why); skip the suite then. */
  available: boolean;
  /** Flags that put a server on this backend. */
  args: string[];
  /** Environment for such a server. */
  env: Record<string, string>;
}

/** One database per test file (vitest evaluates this module once per file). */
const database = `mailroom_e2e_${randomUUID().slice(0, 8)}`;

export function serverBackends(): ServerBackend[] {
  const uri = inject("mongodbUri");
  return [
    { name: "memory", available: true, args: ["--store", "memory"], env: {} },
    {
      name: "mongo",
      available: uri !== "",
      args: ["--store", "mongo", "--mongodb-database", database],
      env: uri === "" ? {} : { MONGODB_URI: uri },
    },
  ];
}

export const memoryBackend: ServerBackend = { name: "memory", available: true, args: ["--store", "memory"], env: {} };

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServerProcess {
  /** e.g. `http://127.0.0.1:41234` (`https` with TLS), from the start-up log line. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** Every JSON log line so far, in order. */
  readonly logs: readonly LogLine[];
  /** Everything written to stderr so far. */
  stderr(): string;
  /** The first log line (already written or still to come) that matches. */
  waitForLog(matches: (line: LogLine) => boolean, description: string): Promise<LogLine>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exit>;
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then waits for the exit (idempotent). */
  stop(): Promise<Exit>;
}

export interface StartOptions {
  backend?: ServerBackend;
  /** More flags for `serve`; `--port 0` is added unless they or `env` choose a port. */
  args?: string[];
  /** More environment; undefined removes a variable the test process has. */
  env?: Record<string, string | undefined>;
  /** What runs `serve`: `node --import tsx src/cli.ts` unless given, e.g. ["bin/mailroom.js"]. */
  entry?: string[];
  /**
   * Serve without credentials even when the suites run with authentication
   * on (MAILROOM_TEST_AUTH=1): for tests of running without them.
   */
  withoutAuth?: boolean;
}

const children = new Set<ChildProcess>();
// A failed test must not leave servers running behind it.
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

function spawnCli(options: StartOptions): ChildProcess {
  const backend = options.backend ?? memoryBackend;
  const env: Record<string, string | undefined> = {
    ...process.env,
    // Never wait for a mongod download: fail in milliseconds and fall back.
    MONGOMS_MAX_RETRIES: "0",
    ...backend.env,
    ...options.env,
  };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  const entry = options.entry ?? ["--import", "tsx", "src/cli.ts"];
  // A free port unless the test chooses one (by flag or by environment).
  const port = options.args?.includes("--port") || options.env?.MAILROOM_PORT !== undefined ? [] : ["--port", "0"];
  const auth = options.withoutAuth ? [] : e2eAuthArgs(options.args ?? [], options.env ?? {});
  const child = spawn(process.execPath, [...entry, "serve", ...port, ...auth, ...backend.args, ...(options.args ?? [])], {
    cwd: repoRoot,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Starts a server and resolves once its start-up log line names the port. */
export async function startServerProcess(options: StartOptions = {}): Promise<ServerProcess> {
  const child = spawnCli(options);
  const output = collect(child);
  const listening = await Promise.race([
    output.waitForLog(isListeningLine, "the listening line"),
    output.exited.then((exit) => {
      throw new Error(`server exited (${describeExit(exit)}) before listening.\nstdout:\n${output.stdout()}\nstderr:\n${output.stderr()}`);
    }),
  ]);
  let stopping: Promise<Exit> | undefined;
  return {
    url: String(listening.address),
    port: Number(listening.port),
    pid: child.pid ?? -1,
    logs: output.logs,
    stderr: output.stderr,
    waitForLog: output.waitForLog,
    exited: output.exited,
    kill: (signal) => child.kill(signal),
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      stopping ??= output.exited;
      return stopping;
    },
  };
}

/**
 * A server for the enclosing suite: started before its tests (unless the
 * backend is unavailable), stopped after them. Call the returned function
 * inside a test to get it.
 */
export function useServerProcess(options: StartOptions = {}): () => ServerProcess {
  let server: ServerProcess | undefined;
  beforeAll(async () => {
    if (options.backend?.available ?? true) server = await startServerProcess(options);
  });
  afterAll(async () => {
    await server?.stop();
  });
  return () => {
    if (!server) throw new Error(`no server: the ${options.backend?.name ?? "memory"} backend is unavailable (skip the suite with describe.skipIf)`);
    return server;
  };
}

export interface CompletedRun extends Exit {
  logs: LogLine[];
  stdout: string;
  stderr: string;
}

/**
 * Runs `serve` expecting it to exit by itself (a start-up failure). Should it
 * start listening instead, it is stopped, so the test fails without leaving
 * a server behind.
 */
export async function runCliToExit(options: StartOptions = {}): Promise<CompletedRun> {
  const child = spawnCli(options);
  const output = collect(child);
  output.waitForLog(isListeningLine, "the listening line").then(
    () => child.kill("SIGTERM"),
    () => undefined,
  );
  const exit = await output.exited;
  return { ...exit, logs: [...output.logs], stdout: output.stdout(), stderr: output.stderr() };
}

function collect(child: ChildProcess) {
  const logs: LogLine[] = [];
  const waiters: Array<{ matches: (line: LogLine) => boolean; resolve: (line: LogLine) => void }> = [];
  let stdout = "";
  let stderr = "";
  let partial = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
    const lines = (partial + chunk).split("\n");
    partial = lines.pop() ?? "";
    for (const text of lines) {
      const line = parseLogLine(text);
      if (!line) continue;
      logs.push(line);
      for (const waiter of waiters.filter((w) => w.matches(line))) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<Exit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const waitForLog = (matches: (line: LogLine) => boolean, description: string): Promise<LogLine> => {
    const found = logs.find(matches);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      waiters.push({ matches, resolve });
      void exited.then((exit) => reject(new Error(`server exited (${describeExit(exit)}) without logging ${description}.\nstdout:\n${stdout}\nstderr:\n${stderr}`)));
    });
  };
  return { logs, waitForLog, exited, stdout: () => stdout, stderr: () => stderr };
}

function isListeningLine(line: LogLine): boolean {
  return typeof line.port === "number" && typeof line.address === "string";
}

function parseLogLine(text: string): LogLine | undefined {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && "level" in value && "msg" in value) return value as LogLine;
  } catch {
    // Not JSON: not a log line (the caller still has it in stdout).
  }
  return undefined;
}

function describeExit(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}
