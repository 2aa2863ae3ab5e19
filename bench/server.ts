/**
 * The server under load, as its own child process: `mailroom serve` (as an
 * operator starts it) or the bare connect-node echo server of the baseline.
 * Both log a JSON line naming `address` and `port` once they listen.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("..", import.meta.url));

export interface ServerChild {
  url: string;
  pid: number;
  /** SIGTERM, then resolves with the exit code once the process has exited. */
  stop(): Promise<number | null>;
  /** The next line the process writes to stderr from now on that `matches` (rejects after `timeoutMs`). */
  nextStderrLine(matches: (line: string) => boolean, timeoutMs: number): Promise<string>;
}

export interface SpawnOptions {
  /** The script and its arguments, e.g. ["src/cli.ts", "serve", "--store", "memory"]. */
  script: string[];
  /** Write a V8 CPU profile into this directory when the server exits. */
  cpuProfileDir?: string;
  /** How long to wait for the listening line. */
  startTimeoutMs?: number;
  /** The checkout to run it from (default this one), e.g. another commit to compare with. */
  cwd?: string;
  /** Node flags before the script, e.g. ["--expose-gc", "--import", "<file>"]. */
  nodeArgs?: string[];
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export function mailroomServer(store: string, extraArgs: string[]): string[] {
  return ["src/cli.ts", "serve", "--port", "0", "--store", store, ...extraArgs];
}

export async function spawnServer(options: SpawnOptions): Promise<ServerChild> {
  const profile = options.cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`] : [];
  const child = spawn(process.execPath, [...profile, ...(options.nodeArgs ?? []), "--import", "tsx", ...options.script], {
    cwd: options.cwd ?? repoRoot,
    // Never wait for a mongod download when the store is `auto`.
    env: { ...process.env, MONGOMS_MAX_RETRIES: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => {
    live.delete(child);
    resolve(code);
  }));
  let output = "";
  const stderrListeners = new Set<(line: string) => void>();
  let stderrPartial = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    if (output.length < 1_000_000) output += chunk;
    const lines = (stderrPartial + chunk).split("\n");
    stderrPartial = lines.pop() ?? "";
    for (const line of lines) for (const listener of stderrListeners) listener(line);
  });
  const listening = new Promise<{ address: string }>((resolve, reject) => {
    let partial = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      if (output.length < 1_000_000) output += chunk;
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        const parsed = parseJson(line);
        if (typeof parsed?.address === "string" && typeof parsed.port === "number") resolve({ address: parsed.address });
      }
    });
    void exited.then((code) => reject(new Error(`server exited (code ${code}) before listening:\n${output}`)));
    setTimeout(() => reject(new Error(`server did not listen within ${options.startTimeoutMs ?? 30_000} ms:\n${output}`)), options.startTimeoutMs ?? 30_000).unref();
  });
  try {
    const { address } = await listening;
    return {
      url: address,
      pid: child.pid!,
      stop: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        return exited;
      },
      nextStderrLine: (matches, timeoutMs) =>
        new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => {
            stderrListeners.delete(listener);
            reject(new Error(`no matching line on the server's stderr within ${timeoutMs} ms`));
          }, timeoutMs);
          const listener = (line: string) => {
            if (!matches(line)) return;
            clearTimeout(timer);
            stderrListeners.delete(listener);
            resolve(line);
          };
          stderrListeners.add(listener);
        }),
    };
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
}

function parseJson(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
