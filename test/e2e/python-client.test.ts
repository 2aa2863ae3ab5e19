/**
 * A Python service's view of the contract: grpcio calling the real server
 * through the generated Python client (clients/python/gen, made from proto/
 * by clients/generate.sh; CI checks it is up to date). Nothing from gen/ or
 * src/. clients/python/example.py has its own test (polyglot-examples).
 *
 * test/e2e/python/check_mailroom.py runs one scenario per test and prints what
 * it saw as JSON lines (messages in the proto3 JSON mapping with proto field
 * names, zero values included); the assertions are here.
 *
 * Needs Debian's python3-grpcio and python3-protobuf for /usr/bin/python3;
 * without them the suite is skipped and one line says why.
 */
import { execFile, execFileSync } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { repoRoot, useServerProcess } from "../support/server-process.js";
import { e2eCliEnv } from "../support/e2e-auth.js";

const python = "/usr/bin/python3";
const script = join(repoRoot, "test/e2e/python/check_mailroom.py");
const install = "apt-get install python3-grpcio python3-protobuf";

/** Why the suite cannot run here, or undefined when it can. */
function pythonGrpcMissing(): string | undefined {
  try {
    execFileSync(python, ["-c", "import grpc; from google.protobuf import json_format"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    return undefined;
  } catch (error) {
    const { code, stderr } = error as { code?: string; stderr?: Buffer };
    if (code === "ENOENT") return `${python} does not exist`;
    const lastLine = String(stderr ?? "").trim().split("\n").pop();
    return `${python} cannot import grpcio and protobuf (${lastLine})`;
  }
}

const missing = pythonGrpcMissing();
if (missing) console.log(`Python grpcio client suite SKIPPED: ${missing}; to run it, install Debian's packages: ${install}`);

interface Step {
  step: string;
  [observed: string]: unknown;
}

interface Scenario {
  code: number | null;
  steps: Step[];
  /** stdout and stderr, for failure messages. */
  output: string;
}

const runFile = promisify(execFile);

describe.skipIf(missing !== undefined)("the generated Python grpcio client (clients/python/gen)", () => {
  const server = useServerProcess();

  async function run(scenario: string): Promise<Scenario> {
    // -B: no __pycache__ left in the work tree.
    const args = ["-B", script, "--url", server().url, scenario];
    // The script's calls have 10-second deadlines; this timeout only guards against a hung interpreter.
    const result = await runFile(python, args, { cwd: repoRoot, env: { ...process.env, ...e2eCliEnv() }, timeout: 25_000 }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code?: number | null; stdout?: string; stderr?: string }) => ({
        code: typeof error.code === "number" ? error.code : null,
        stdout: error.stdout ?? "",
        stderr: error.stderr ?? "",
      }),
    );
    const steps = result.stdout
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as Step);
    return { code: result.code, steps, output: `stdout:\n${result.stdout}\nstderr:\n${result.stderr}` };
  }

  /** Runs a scenario that must complete, and returns its steps by name (the last of each name wins). */
  async function completed(scenario: string): Promise<{ steps: Step[]; step: (name: string) => Step }> {
    const { code, steps, output } = await run(scenario);
    expect(code, output).toBe(0);
    expect(steps.at(-1), output).toEqual({ step: "done", scenario });
    return {
      steps,
      step: (name) => {
        const found = steps.findLast((s) => s.step === name);
        if (!found) throw new Error(`no step ${name}\n${output}`);
        return found;
      },
    };
  }

  it("Enqueue, Claim with a lease and Ack carry every field of the dispatch there and back", async () => {
    const { step } = await completed("mailbox");
    const threadId = step("mailbox.enqueue").thread_id;

    const enqueued = step("mailbox.enqueue").response as { dispatch: Record<string, unknown>; deduplicated: boolean };
    expect(enqueued.deduplicated).toBe(false);
    const dispatch = enqueued.dispatch;
    expect(dispatch).toMatchObject({
      thread_id: threadId,
      run_id: "py-run-1",
      agent_id: "py-agent",
      priority: 200,
      dedupe_key: "py-dedupe-1",
      max_attempts: 3,
      status: "RUN_DISPATCH_STATUS_QUEUED",
      attempt_count: 0,
      claim_token: "",
      claimed_by: "",
      payload: { data: Buffer.from('{"task":"summarise"}').toString("base64"), media_type: "application/json" },
    });
    expect(dispatch.dispatch_id).toMatch(/^.+$/);
    expect(dispatch).not.toHaveProperty("lease_until");
    expect(dispatch).not.toHaveProperty("completed_at");

    const claimed = (step("mailbox.claim").response as { dispatches: Array<Record<string, unknown>> }).dispatches;
    expect(claimed).toHaveLength(1);
    const claim = claimed[0] ?? {};
    expect(claim).toMatchObject({
      dispatch_id: dispatch.dispatch_id,
      thread_id: threadId,
      payload: dispatch.payload,
      status: "RUN_DISPATCH_STATUS_CLAIMED",
      attempt_count: 1,
      claimed_by: "py-worker",
    });
    expect(claim.claim_token).toMatch(/^.+$/);
    // The 30-second lease runs from the claim (the dispatch's updated_at).
    const leaseMs = Date.parse(String(claim.lease_until)) - Date.parse(String(claim.updated_at));
    expect(leaseMs).toBeGreaterThanOrEqual(29_000);
    expect(leaseMs).toBeLessThanOrEqual(31_000);

    const acked = (step("mailbox.ack").response as { dispatch: Record<string, unknown> }).dispatch;
    expect(acked).toMatchObject({
      dispatch_id: dispatch.dispatch_id,
      status: "RUN_DISPATCH_STATUS_ACKED",
      claim_token: "", // only the claiming response carries it
      attempt_count: 1,
      payload: dispatch.payload,
    });
    expect(Date.parse(String(acked.completed_at))).toBeGreaterThanOrEqual(Date.parse(String(claim.updated_at)));
    expect(acked).not.toHaveProperty("lease_until");
    // Repeating a successful Ack with the same token returns the dispatch unchanged.
    expect(step("mailbox.ack-again").response).toEqual(step("mailbox.ack").response);
  });

  it("an Enqueue with an empty thread_id is INVALID_ARGUMENT with a mailroom.v1.ErrorDetail in grpc-status-details-bin", async () => {
    const { step } = await completed("invalid-argument");
    const refused = step("mailbox.enqueue-empty-thread");
    expect(refused, "the call succeeded").toHaveProperty("error");
    const error = refused.error as { message: string };
    expect(error.message).toMatch(/thread_id/);
    expect(error).toEqual({
      code: "INVALID_ARGUMENT",
      message: error.message,
      // The trailer's google.rpc.Status repeats the code and message and holds the detail as an Any.
      status: {
        code: 3,
        message: error.message,
        details: [{ type_url: "type.googleapis.com/mailroom.v1.ErrorDetail", bytes: expect.any(Number) }],
      },
      error_details: [{ reason: "ERROR_REASON_INVALID_FIELD", field: "dispatch.thread_id", metadata: {} }],
    });
  });

  it("WatchDispatchSignals sends a heartbeat first, then a signal for a dispatch enqueued after it", async () => {
    const { steps, step } = await completed("watch");
    expect(steps.map((s) => s.step)).toEqual(["watch.first-frame", "watch.enqueue", "watch.next-frame", "done"]);
    expect(step("watch.first-frame")).toMatchObject({ frame: "heartbeat", response: { heartbeat: { sent_at: expect.any(String) } } });
    const { thread_id, dispatch_id } = step("watch.enqueue");
    expect(step("watch.next-frame")).toEqual({
      step: "watch.next-frame",
      frame: "signal",
      response: { signal: { thread_id, dispatch_id, reason: "DISPATCH_SIGNAL_REASON_ENQUEUED" } },
    });
  });
});
