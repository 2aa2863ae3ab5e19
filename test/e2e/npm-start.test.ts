/**
 * `npm start` as the README says to run it: a signal to the npm process
 * stops the server (npm forwards it; the start script execs node, so no
 * shell sits in between to swallow it), and a token given by environment
 * variable never shows in what npm echoes.
 */
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../support/server-process.js";

const TOKEN = "npm-start-t0ken";

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("npm start", () => {
  it("stops the server when the npm process gets SIGTERM, and echoes no token given by MAILROOM_AUTH_TOKEN", { timeout: 60_000 }, async () => {
    const npm = spawn("npm", ["start"], {
      cwd: repoRoot,
      env: { ...process.env, MAILROOM_PORT: "0", MAILROOM_STORE: "memory", MAILROOM_AUTH_TOKEN: TOKEN },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const exited = new Promise<number | null>((resolve) => npm.once("exit", (code) => resolve(code)));
    const serverPid = await new Promise<number>((resolve, reject) => {
      npm.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        output += chunk;
        const listening = /\{"level":"info"[^\n]*"pid":(\d+)[^\n]*"msg":"mailroom listening/.exec(output);
        if (listening) resolve(Number(listening[1]));
      });
      npm.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
      void exited.then(() => reject(new Error(`npm start exited before listening:\n${output}`)));
    });
    expect(serverPid).not.toBe(npm.pid);

    npm.kill("SIGTERM");
    await exited;
    // npm waits for its child, so the server has exited by now, after a graceful shutdown.
    const orphaned = processExists(serverPid);
    if (orphaned) process.kill(serverPid, "SIGKILL");
    expect(orphaned, `server ${serverPid} still running after npm exited`).toBe(false);
    expect(output).toMatch(/"msg":"server stopped"/);
    expect(output).toMatch(/> exec node --import tsx src\/cli\.ts serve/);
    expect(output).not.toContain(TOKEN);
  });
});
