/**
 * The generated Python and Go clients, proven by their example programs
 * (clients/python/example.py, clients/go/example) run as the README says
 * against the real server: subscribe to a run's events, enqueue, claim, ack,
 * see the three events, and decode the ErrorDetail of a refused call. The
 * server requires a token, so the examples' MAILROOM_TOKEN is proven too.
 *
 * Needs Debian's python3-grpcio and python3-protobuf (Python), and golang-go
 * with golang-google-grpc-dev, golang-google-protobuf-dev and
 * golang-github-golang-protobuf-1-5-dev (Go); a missing one skips that suite
 * with one line saying what to install.
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { goMissing, pythonMissing, systemPython } from "../support/polyglot.js";
import { repoRoot, useServerProcess } from "../support/server-process.js";

const runFile = promisify(execFile);
const TOKEN = "examples-t0ken";

/** Whether the `python3` on PATH is another interpreter than /usr/bin/python3, one without grpcio. */
function pathPythonLacksGrpc(): boolean {
  try {
    const probe = "import os, sys, importlib.util; print(os.path.realpath(sys.executable), importlib.util.find_spec('grpc') is not None)";
    const [executable, hasGrpc] = execFileSync("python3", ["-c", probe]).toString().trim().split(" ");
    return executable !== realpathSync(systemPython) && hasGrpc === "False";
  } catch {
    return false;
  }
}

interface Outcome {
  code: number;
  lines: string[];
  output: string;
}

async function runExample(file: string, args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  // The example's calls have 30-second deadlines; this timeout only guards against a hang.
  return runFile(file, args, { cwd: repoRoot, timeout: 60_000, env: { ...process.env, ...env } }).then(
    ({ stdout, stderr }) => ({ code: 0, lines: stdout.trim().split("\n"), output: `${stdout}\n${stderr}` }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({
      code: typeof error.code === "number" ? error.code : -1,
      lines: (error.stdout ?? "").trim().split("\n"),
      output: `${error.stdout ?? ""}\n${error.stderr ?? ""}`,
    }),
  );
}

/** What both examples print, in order, for one dispatch. */
function expectTheWholeStory({ code, lines, output }: Outcome): void {
  expect(code, output).toBe(0);
  const id = /^enqueued dispatch (\S+) on thread /.exec(lines[0] ?? "")?.[1];
  expect(id, output).toBeDefined();
  expect(lines.slice(1), output).toEqual([
    expect.stringMatching(new RegExp(`^claimed dispatch ${id} until \\d{4}-\\d\\d-\\d\\dT`)),
    `acked dispatch ${id}`,
    expect.stringMatching(new RegExp(`^event \\d+ EVENT_KIND_DISPATCH_ENQUEUED dispatch ${id}$`)),
    expect.stringMatching(new RegExp(`^event \\d+ EVENT_KIND_DISPATCH_CLAIMED dispatch ${id}$`)),
    expect.stringMatching(new RegExp(`^event \\d+ EVENT_KIND_DISPATCH_ACKED dispatch ${id}$`)),
    expect.stringMatching(/^refused: (INVALID_ARGUMENT|InvalidArgument) .*thread_id.* reason=ERROR_REASON_INVALID_FIELD field=dispatch\.thread_id$/),
  ]);
}

const python = pythonMissing();
const go = goMissing();
if (python) console.log(`Python client example SKIPPED: ${python}`);
if (go) console.log(`Go client example SKIPPED: ${go}`);

describe("the client examples against a server that requires a token", () => {
  const server = useServerProcess({ env: { MAILROOM_AUTH_TOKEN: TOKEN } });

  describe.skipIf(python !== undefined)("clients/python/example.py (generated grpcio stubs)", () => {
    it("subscribes, enqueues, claims, acks, sees the three events and decodes the ErrorDetail", async () => {
      expectTheWholeStory(await runExample(systemPython, ["-B", "clients/python/example.py", "--url", server().url], { MAILROOM_TOKEN: TOKEN }));
    });

    it.skipIf(!pathPythonLacksGrpc())("re-runs itself with /usr/bin/python3 when started by a python3 that lacks grpcio (e.g. pyenv's)", async () => {
      expectTheWholeStory(await runExample("python3", ["-B", "clients/python/example.py", "--url", server().url], { MAILROOM_TOKEN: TOKEN }));
    });

    it("without the token stops at the first call with UNAUTHENTICATED and exit code 1", async () => {
      const { code, output } = await runExample(systemPython, ["-B", "clients/python/example.py", "--url", server().url], { MAILROOM_TOKEN: "" });
      expect(code, output).toBe(1);
      expect(output).toContain("UNAUTHENTICATED");
    });
  });

  describe.skipIf(go !== undefined)("clients/go/example (protoc-gen-go + protoc-gen-go-grpc, built offline from Debian's packages)", () => {
    let dir = "";
    let binary = "";
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "mailroom-go-"));
      binary = join(dir, "example");
      await runFile(join(repoRoot, "clients/go/go-offline.sh"), ["build", "-o", binary, "mailroom/clients/go/example"], { cwd: repoRoot });
    }, 300_000);
    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("subscribes, enqueues, claims, acks, sees the three events and decodes the ErrorDetail", async () => {
      expectTheWholeStory(await runExample(binary, ["-url", server().url], { MAILROOM_TOKEN: TOKEN }));
    });
  });
});
