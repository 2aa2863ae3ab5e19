/**
 * The client commands of the `mailroom` CLI against the real server, as an
 * operator runs them: human-readable lines by default, proto3 JSON with
 * --json, one exit code per class of error, colour only on a terminal, and
 * the token never printed.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { repoRoot, useServerProcess } from "../support/server-process.js";
import { e2eCliEnv, testClients } from "../support/e2e-auth.js";

const run = promisify(execFile);
const cliEntry = ["--import", "tsx", "src/cli.ts"];
const TOKEN = "cli-s3cret-t0ken";
let unique = 0;
const fresh = (what: string) => `cli-${what}-${process.pid}-${++unique}`;

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  const environment = { ...process.env, NO_COLOR: undefined, MAILROOM_TOKEN: undefined, MAILROOM_URL: undefined, ...e2eCliEnv(), ...env };
  return run(process.execPath, [...cliEntry, ...args], { cwd: repoRoot, env: environment as NodeJS.ProcessEnv, timeout: 25_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({ code: typeof error.code === "number" ? error.code : -1, stdout: error.stdout ?? "", stderr: error.stderr ?? "" }),
  );
}

/** Runs a command that must succeed; returns its stdout lines. */
async function ok(args: string[], env: Record<string, string | undefined> = {}): Promise<string[]> {
  const result = await cli(args, env);
  expect(result.code, result.stderr).toBe(0);
  return result.stdout.trim() === "" ? [] : result.stdout.trim().split("\n");
}

/** The fields of a human-readable line: `key=value` pairs, plus the leading words. */
function parseLine(line: string): { words: string[]; fields: Record<string, string> } {
  const words: string[] = [];
  const fields: Record<string, string> = {};
  for (const part of line.split(" ")) {
    const at = part.indexOf("=");
    if (at > 0) fields[part.slice(0, at)] = part.slice(at + 1);
    else words.push(part);
  }
  return { words, fields };
}

describe("the mailroom client commands", () => {
  const server = useServerProcess();
  const url = () => ["--url", server().url];

  describe("enqueue, claim, ack", () => {
    it("enqueue prints the QUEUED dispatch, claim prints it CLAIMED with its claim token, ack prints it ACKED", async () => {
      const thread = fresh("thread");
      const [enqueued] = await ok(["enqueue", ...url(), "--thread", thread, "--run", "run-a", "--priority", "200"]);
      const queued = parseLine(enqueued ?? "");
      const dispatchId = queued.words[0] ?? "";
      expect(queued.words[1]).toBe("QUEUED");
      expect(queued.fields).toMatchObject({ thread, run: "run-a", priority: "200", attempts: "0/5" });

      const claimedLines = await ok(["claim", ...url(), "--thread", thread, "--consumer", "op-1", "--lease", "45s"]);
      expect(claimedLines).toHaveLength(1);
      const claimed = parseLine(claimedLines[0] ?? "");
      expect(claimed.words).toEqual([dispatchId, "CLAIMED"]);
      expect(claimed.fields).toMatchObject({ claimed_by: "op-1", attempts: "1/5", claim_token: expect.stringMatching(/.+/) });

      const [acked] = await ok(["ack", ...url(), dispatchId, claimed.fields.claim_token ?? ""]);
      expect(parseLine(acked ?? "").words).toEqual([dispatchId, "ACKED"]);
    });

    it("--json prints proto3 JSON, one object a line, that a script can feed to the next command", async () => {
      const thread = fresh("thread");
      const enqueued = JSON.parse((await ok(["enqueue", ...url(), "--json", "--thread", thread, "--payload", '{"task":1}']))[0] ?? "");
      expect(enqueued).toMatchObject({ dispatch: { threadId: thread, status: "RUN_DISPATCH_STATUS_QUEUED", payload: { mediaType: "application/json" } } });
      const claimed = JSON.parse((await ok(["claim", ...url(), "--json", "--thread", thread]))[0] ?? "");
      const acked = JSON.parse((await ok(["ack", ...url(), "--json", claimed.dispatchId, claimed.claimToken]))[0] ?? "");
      expect(acked).toMatchObject({ dispatchId: enqueued.dispatch.dispatchId, status: "RUN_DISPATCH_STATUS_ACKED" });
    });

    it("claim with nothing to claim prints nothing on stdout, says so on stderr, and exits 0", async () => {
      const result = await cli(["claim", ...url(), "--thread", fresh("empty")]);
      expect(result).toMatchObject({ code: 0, stdout: "" });
      expect(result.stderr).toMatch(/no claimable dispatch/);
    });

    it.each(["connect", "grpc-web"])("works over --protocol %s too", async (protocol) => {
      const [line] = await ok(["enqueue", ...url(), "--protocol", protocol, "--thread", fresh("thread")]);
      expect(parseLine(line ?? "").words[1]).toBe("QUEUED");
    });
  });

  describe("inspecting", () => {
    it("get shows one dispatch; list shows a thread's dispatches filtered by status", async () => {
      const thread = fresh("thread");
      const first = parseLine((await ok(["enqueue", ...url(), "--thread", thread]))[0] ?? "").words[0] ?? "";
      const second = parseLine((await ok(["enqueue", ...url(), "--thread", thread]))[0] ?? "").words[0] ?? "";
      await ok(["cancel", ...url(), second]);
      expect(parseLine((await ok(["get", ...url(), first]))[0] ?? "").words).toEqual([first, "QUEUED"]);
      expect((await ok(["list", ...url(), "--thread", thread])).map((line) => parseLine(line).words)).toEqual([
        [first, "QUEUED"],
        [second, "CANCELLED"],
      ]);
      expect((await ok(["list", ...url(), "--thread", thread, "--status", "cancelled"])).map((line) => parseLine(line).words[0])).toEqual([second]);
    });

    it("count prints every status asked for, zeros included, and the total", async () => {
      const thread = fresh("thread");
      await ok(["enqueue", ...url(), "--thread", thread]);
      expect(await ok(["count", ...url(), "--thread", thread, "--status", "queued,claimed"])).toEqual(["QUEUED 1", "CLAIMED 0", "total 1"]);
      expect(await ok(["count", ...url(), "--thread", thread])).toEqual(["QUEUED 1", "CLAIMED 0", "ACKED 0", "CANCELLED 0", "SUPERSEDED 0", "DEAD_LETTER 0", "total 1"]);
    });

    it("pool shows a pool's state and members; members lists them", async () => {
      const poolId = fresh("pool");
      const clients = testClients({ baseUrl: server().url, protocol: "grpc" });
      try {
        await clients.pools.openPool({ poolId });
        await clients.pools.joinRun({ poolId, member: { runId: "writer-1", agentId: "writer", topics: ["drafts"] } });
      } finally {
        clients.close();
      }
      const [head, member] = await ok(["pool", ...url(), poolId]);
      expect(parseLine(head ?? "")).toMatchObject({ words: [poolId, "created"], fields: { members: "1", topics: "drafts" } });
      expect(parseLine(member ?? "")).toMatchObject({ words: ["member", "writer-1"], fields: { agent: "writer", topics: "drafts" } });
      expect(await ok(["members", ...url(), poolId])).toEqual([member]);
    });
  });

  describe("cancel and interrupt", () => {
    it("cancel cancels a queued dispatch; cancelling it again prints it unchanged and says so", async () => {
      const dispatchId = parseLine((await ok(["enqueue", ...url(), "--thread", fresh("thread")]))[0] ?? "").words[0] ?? "";
      expect(parseLine((await ok(["cancel", ...url(), dispatchId, "--reason", "not needed"]))[0] ?? "").words.slice(0, 2)).toEqual([dispatchId, "CANCELLED"]);
      const again = await cli(["cancel", ...url(), dispatchId]);
      expect(again.code).toBe(0);
      expect(again.stderr).toMatch(/already terminal: unchanged/);
    });

    it("interrupt bumps the thread's epoch and supersedes its queued dispatches", async () => {
      const thread = fresh("thread");
      const dispatchId = parseLine((await ok(["enqueue", ...url(), "--thread", thread]))[0] ?? "").words[0] ?? "";
      const lines = await ok(["interrupt", ...url(), thread, "--detailed"]);
      expect(lines[0]).toBe(`thread ${thread} interrupted: epoch=1 superseded=1`);
      expect(parseLine(lines[1] ?? "").words.slice(0, 3)).toEqual(["superseded", dispatchId, "SUPERSEDED"]);
    });
  });

  describe("tail", () => {
    it("shows the enqueue, claim and ack of a dispatch live, one line each, in order", async () => {
      const thread = fresh("thread");
      const tail = startTail([...url(), "--thread", thread, "--limit", "3"]);
      await tail.caughtUp;
      const dispatchId = parseLine((await ok(["enqueue", ...url(), "--thread", thread]))[0] ?? "").words[0] ?? "";
      const claimed = parseLine((await ok(["claim", ...url(), "--thread", thread]))[0] ?? "");
      await ok(["ack", ...url(), dispatchId, claimed.fields.claim_token ?? ""]);
      const { code, stdout, stderr } = await tail.done;
      expect(code, stderr).toBe(0);
      const lines = stdout.trim().split("\n").map(parseLine);
      expect(lines.map((line) => line.words[2])).toEqual(["DISPATCH_ENQUEUED", "DISPATCH_CLAIMED", "DISPATCH_ACKED"]);
      expect(lines.map((line) => line.fields.state)).toEqual(["-->QUEUED", "QUEUED->CLAIMED", "CLAIMED->ACKED"]);
      for (const line of lines) {
        expect(line.fields).toMatchObject({ thread, dispatch: dispatchId });
        expect(line.words[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/);
        expect(line.words[1]).toMatch(/^#\d+$/);
      }
    });

    it("resumes after the cursor it printed when it stopped: only later events", async () => {
      const thread = fresh("thread");
      await ok(["enqueue", ...url(), "--thread", thread]);
      const first = await cli(["tail", ...url(), "--thread", thread, "--until-caught-up"]);
      expect(first.stdout.trim().split("\n")).toHaveLength(1);
      const token = /resume with: --after (\S+)/.exec(first.stderr)?.[1] ?? "";
      expect(token).not.toBe("");
      await ok(["enqueue", ...url(), "--thread", thread, "--run", "the-second"]);
      const resumed = await ok(["tail", ...url(), "--thread", thread, "--until-caught-up", "--after", token]);
      expect(resumed.map((line) => parseLine(line).fields.run)).toEqual(["the-second"]);
    });

    it("--json prints one frame a line with its cursor, the caught-up frame too; --kind filters", async () => {
      const thread = fresh("thread");
      const dispatchId = parseLine((await ok(["enqueue", ...url(), "--thread", thread]))[0] ?? "").words[0] ?? "";
      await ok(["claim", ...url(), "--thread", thread]);
      const frames = (await ok(["tail", ...url(), "--json", "--thread", thread, "--kind", "dispatch_claimed", "--until-caught-up"])).map((line) => JSON.parse(line));
      expect(frames).toEqual([
        expect.objectContaining({
          kind: "EVENT_FRAME_KIND_EVENT",
          cursor: expect.objectContaining({ eventSeq: expect.any(String) }),
          event: expect.objectContaining({ envelope: expect.objectContaining({ kind: "EVENT_KIND_DISPATCH_CLAIMED", dispatchId }) }),
        }),
        expect.objectContaining({ kind: "EVENT_FRAME_KIND_CAUGHT_UP" }),
      ]);
    });
  });

  describe("exit codes, one per class of error, and one line on stderr", () => {
    it.each([
      ["NOT_FOUND", ["get", "no-such-dispatch"], 4, /^error: NOT_FOUND: .*no-such-dispatch.*\(reason ENTITY_NOT_FOUND\)$/],
      ["INVALID_ARGUMENT", ["enqueue", "--thread", ""], 3, /^error: INVALID_ARGUMENT: dispatch\.thread_id: is required \(reason INVALID_FIELD, field dispatch\.thread_id\)$/],
      ["a bad option value (nothing sent)", ["count", "--status", "bogus"], 2, /unknown status "bogus"/],
      ["an unknown option", ["get", "x", "--bogus"], 2, /unknown option '--bogus'/],
    ])("%s exits %d", async (_case, args, code, message) => {
      const result = await cli([...(args as string[]), ...url()]);
      expect(result.code).toBe(code);
      expect(result.stdout).toBe("");
      expect(result.stderr.trim().split("\n")[0]).toMatch(message as RegExp);
    });

    it("FAILED_PRECONDITION (a wrong claim token) exits 5", async () => {
      const thread = fresh("thread");
      await ok(["enqueue", ...url(), "--thread", thread]);
      const claimed = parseLine((await ok(["claim", ...url(), "--thread", thread]))[0] ?? "");
      const result = await cli(["ack", ...url(), claimed.words[0] ?? "", "ct_wrong"]);
      expect(result.code).toBe(5);
      expect(result.stderr).toMatch(/^error: FAILED_PRECONDITION: .*\(reason CLAIM_TOKEN_MISMATCH\)/);
    });

    it("UNAVAILABLE (nothing listening) exits 7 and asks whether a server listens there", async () => {
      const result = await cli(["get", "x", "--url", "http://127.0.0.1:1"]);
      expect(result.code).toBe(7);
      expect(result.stderr).toMatch(/^error: UNAVAILABLE: /);
      expect(result.stderr).toMatch(/is a Mailroom server listening/);
    });

    it("--json errors are one JSON object on stderr", async () => {
      const result = await cli(["get", "no-such-dispatch", "--json", ...url()]);
      expect(result.code).toBe(4);
      expect(JSON.parse(result.stderr)).toEqual({ error: { code: "NOT_FOUND", message: expect.stringContaining("no-such-dispatch"), reason: "ENTITY_NOT_FOUND" } });
    });
  });

  describe("colour", () => {
    it("is off when stdout and stderr are not a terminal", async () => {
      const enqueued = await cli(["enqueue", ...url(), "--thread", fresh("thread")]);
      const failed = await cli(["get", "nope", ...url()]);
      expect(enqueued.stdout + failed.stderr).not.toContain("\u001b[");
    });

    it.skipIf(!scriptAvailable())("is on in a terminal, and NO_COLOR turns it off", async () => {
      const command = `${process.execPath} ${cliEntry.join(" ")} enqueue --url ${server().url} --thread ${fresh("thread")}`;
      const inTerminal = await run("script", ["-qec", command, "/dev/null"], { cwd: repoRoot, env: { ...process.env, ...e2eCliEnv(), NO_COLOR: "" } });
      expect(inTerminal.stdout).toContain("\u001b[36mQUEUED\u001b[39m");
      const noColour = await run("script", ["-qec", command, "/dev/null"], { cwd: repoRoot, env: { ...process.env, ...e2eCliEnv(), NO_COLOR: "1" } });
      expect(noColour.stdout).toMatch(/ QUEUED /);
      expect(noColour.stdout).not.toContain("\u001b[");
    });
  });
});

describe("the client commands with a server that requires a token", () => {
  const server = useServerProcess({ env: { MAILROOM_AUTH_TOKEN: TOKEN } });

  it("refuse without the token: UNAUTHENTICATED, exit 6", async () => {
    const result = await cli(["count", "--url", server().url]);
    expect(result.code).toBe(6);
    expect(result.stderr).toMatch(/^error: UNAUTHENTICATED: /);
  });

  it("work with --token or MAILROOM_TOKEN, and never print the token (not even in errors or help)", async () => {
    const outputs = [
      await cli(["count", "--url", server().url, "--token", TOKEN]),
      await cli(["count", "--url", server().url], { MAILROOM_TOKEN: TOKEN }),
      await cli(["get", "nope", "--url", server().url], { MAILROOM_TOKEN: TOKEN }),
      await cli(["count", "--help"], { MAILROOM_TOKEN: TOKEN }),
    ];
    expect(outputs.map((output) => output.code)).toEqual([0, 0, 4, 0]);
    for (const output of outputs) expect(output.stdout + output.stderr).not.toContain(TOKEN);
  });
});

/** util-linux's `script` runs a command in a pseudo-terminal. */
function scriptAvailable(): boolean {
  return spawnSync("script", ["--version"], { stdio: "ignore" }).status === 0;
}

/** `mailroom tail` in the background: resolves `caughtUp` when it says so, `done` when it exits. */
function startTail(args: string[]): { caughtUp: Promise<void>; done: Promise<CliRun> } {
  const child: ChildProcess = spawn(process.execPath, [...cliEntry, "tail", ...args], { cwd: repoRoot, env: { ...process.env, ...e2eCliEnv() }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let onCaughtUp: () => void = () => undefined;
  const caughtUp = new Promise<void>((resolve) => (onCaughtUp = resolve));
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
    if (stderr.includes("caught up")) onCaughtUp();
  });
  const done = new Promise<CliRun>((resolve) => child.once("exit", (code) => resolve({ code: code ?? -1, stdout, stderr })));
  void done.then(({ stderr: said }) => {
    if (!said.includes("caught up")) onCaughtUp();
  });
  return { caughtUp, done };
}
