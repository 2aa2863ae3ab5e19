/**
 * README.md, pasted: every `sh` and `ts` block runs as written, in order,
 * against a fresh server, only the address changed to the test server's
 * (`127.0.0.1:50051` there). A block that must not run here says why in a
 * `<!-- readme-test: not run (why) -->` line before it; a block that follows
 * a stream forever says what ends it: `<!-- readme-test: stream until TEXT -->`
 * (it runs until its output shows TEXT).
 *
 * A block passes when it exits 0 and prints no Connect error, unless its own
 * comments show one (`# {"code":...}`).
 */
import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { goMissing, pythonMissing } from "../support/polyglot.js";
import { repoRoot, useServerProcess } from "../support/server-process.js";

interface Block {
  lang: "sh" | "ts";
  code: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** The readme-test marker before the block, if any. */
  marker: string | undefined;
}

function readmeBlocks(): Block[] {
  const lines = readFileSync(join(repoRoot, "README.md"), "utf8").split("\n");
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(sh|ts)\s*$/.exec(lines[i] ?? "");
    if (!open) continue;
    const indent = open[1]?.length ?? 0;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j] ?? ""); j++) body.push((lines[j] ?? "").slice(indent));
    let k = i - 1;
    while (k >= 0 && (lines[k] ?? "").trim() === "") k--;
    const marker = /^\s*<!-- readme-test: (.*) -->\s*$/.exec(lines[k] ?? "")?.[1];
    blocks.push({ lang: open[2] as "sh" | "ts", code: body.join("\n"), line: i + 1, marker });
    i = j;
  }
  return blocks;
}

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end, or (with `until`) until its stdout shows that text, then stops its process group. */
function runBlock(command: string, args: string[], env: NodeJS.ProcessEnv, until?: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"], detached: until !== undefined });
    let stdout = "";
    let stderr = "";
    let seen = false;
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      if (until !== undefined && !seen && stdout.includes(until)) {
        seen = true;
        process.kill(-(child.pid ?? 0), "SIGTERM");
      }
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.once("close", (code) => resolve({ code: seen ? 0 : code, stdout, stderr }));
  });
}

const blocks = readmeBlocks();
const python = pythonMissing();
const go = goMissing();
const needs = (block: Block): string | undefined =>
  block.code.includes("/usr/bin/python3") ? python : block.code.includes("go-offline.sh") ? go : undefined;
for (const block of blocks) {
  const missing = needs(block);
  if (missing && !block.marker?.startsWith("not run")) console.log(`README block at line ${block.line} SKIPPED: ${missing}`);
}

describe("README.md, pasted block by block", () => {
  // The README's commands are for `npm start` as it comes: on loopback, without credentials.
  const server = useServerProcess({ withoutAuth: true });

  it("has blocks to run, and every block it does not run says why", () => {
    expect(blocks.filter((block) => !block.marker?.startsWith("not run")).length).toBeGreaterThan(5);
    for (const block of blocks.filter((b) => b.marker !== undefined)) expect(block.marker).toMatch(/^(not run \(.+\)|stream until \S+)$/);
  });

  for (const block of blocks.filter((b) => !b.marker?.startsWith("not run"))) {
    const title = `line ${block.line}: ${block.code.split("\n").find((l) => l.trim() !== "" && !l.trim().startsWith("#"))?.trim().slice(0, 70)}`;
    it.skipIf(needs(block) !== undefined)(title, { timeout: 300_000 }, async () => {
      const url = server().url;
      const code = block.code.replaceAll("http://127.0.0.1:50051", url).replaceAll("127.0.0.1:50051", new URL(url).host);
      const env = { ...process.env, MAILROOM_URL: url, PYTHONDONTWRITEBYTECODE: "1", NO_COLOR: "1" };
      const until = /^stream until (\S+)$/.exec(block.marker ?? "")?.[1];
      let outcome: Outcome;
      if (block.lang === "ts") {
        const file = join(repoRoot, `.readme-block-${process.pid}-${block.line}.ts`);
        writeFileSync(file, code);
        try {
          outcome = await runBlock(process.execPath, ["--import", "tsx", file], env);
        } finally {
          rmSync(file, { force: true });
        }
      } else {
        outcome = await runBlock("bash", ["-e", "-o", "pipefail", "-c", code], env, until);
      }
      const said = `stdout:\n${outcome.stdout}\nstderr:\n${outcome.stderr}`;
      expect(outcome.code, said).toBe(0);
      const showsAnError = /^\s*#.*"code":/m.test(block.code);
      if (!showsAnError) expect(outcome.stdout, said).not.toMatch(/"code":\s*"/);
      else expect(outcome.stdout, said).toMatch(/"code":\s*"/);
    });
  }
});
