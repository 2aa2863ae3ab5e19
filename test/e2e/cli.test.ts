/**
 * `mailroom serve` as an operator meets it: what it says when it starts,
 * loudly when data is not durable, and one clear line and exit code 1 when it
 * cannot start.
 */
import { describe, expect, it } from "vitest";
import { type CompletedRun, type LogLine, runCliToExit, serverBackends, startServerProcess, useServerProcess } from "../support/server-process.js";

const isListening = (line: LogLine) => typeof line.address === "string" && typeof line.port === "number";

/** Start-up failed the way an operator can act on: exit 1, one line, no stack trace, never listening. */
function expectOneLineFailure(run: CompletedRun, message: RegExp): void {
  expect(run.code).toBe(1);
  const said = [...run.stderr.trim().split("\n"), ...run.logs.map((line) => line.msg)].filter((line) => line !== "");
  expect(said).toHaveLength(1);
  expect(said[0]).toMatch(message);
  expect(run.stdout + run.stderr).not.toMatch(/^\s+at /m);
  expect(run.logs.some(isListening)).toBe(false);
}

describe.each(serverBackends())("the start-up line on the $name backend", (backend) => {
  const server = useServerProcess({ backend });

  it.skipIf(!backend.available)("is one info line naming the address, the backend, durability and where the data lives", () => {
    const { logs, url, port } = server();
    const started = logs.filter((line) => line.level === "info" && isListening(line));
    expect(started).toHaveLength(1);
    const line = started[0];
    expect(line).toMatchObject({
      address: url,
      port,
      backend: backend.name,
      durable: backend.name === "mongo",
      durability: expect.any(String),
      location: expect.any(String),
    });
    expect(line?.msg).toContain(url);
    expect(line?.msg).toContain(backend.name);
  });

  it.skipIf(!backend.available)("carries no fallback warning when the backend was chosen explicitly", () => {
    expect(server().logs.filter((line) => line.level === "warn")).toEqual([]);
  });
});

describe("when no MongoDB can be had and --store is auto", () => {
  const server = useServerProcess({
    backend: { name: "memory", available: true, args: ["--store", "auto"], env: {} },
    // No MONGODB_URI, and a mongod that does not exist: fails at once, also on machines with network.
    env: { MONGODB_URI: undefined, MONGOMS_SYSTEM_BINARY: "/nonexistent/mongod" },
  });

  it("falls back to the memory backend and says so in the start-up line", () => {
    expect(server().logs.find(isListening)).toMatchObject({ backend: "memory", durable: false });
  });

  it("warns loudly that data is not durable, is lost on exit, and why", () => {
    const warnings = server().logs.filter((line) => line.level === "warn");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.msg).toMatch(/NOT DURABLE/);
    expect(warnings[0]?.msg).toMatch(/LOST when it exits/);
    expect(warnings[0]?.msg).toContain("/nonexistent/mongod");
    expect(warnings[0]).toMatchObject({ durable: false, reason: expect.stringContaining("MONGODB_URI is not set") });
  });
});

describe("start-up failures: one line, exit code 1", () => {
  it.each([
    [["--port", "70000"], {}, /--port.*70000.*must be an integer from 0 to 65535/],
    [[], { MAILROOM_PORT: "70000" }, /--port.*MAILROOM_PORT.*must be an integer/],
    [["--store", "nope"], {}, /--store.*nope.*auto, mongo, memory/],
    [["--tls-cert", "cert.pem"], {}, /--tls-cert needs --tls-key/],
    [[], { MAILROOM_TLS_KEY: "key.pem" }, /--tls-key needs --tls-cert/],
    [["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], {}, /cannot read --tls-cert file .*ENOENT/],
  ])("refuses %j %j naming the option", async (args, env, message) => {
    expectOneLineFailure(await runCliToExit({ args, env }), message);
  });

  describe("a port already in use", () => {
    const first = useServerProcess();

    it("names the port and how to choose another", async () => {
      const { port } = first();
      expectOneLineFailure(await runCliToExit({ args: ["--port", String(port)] }), new RegExp(`${port}.*already in use`));
    });
  });

  it("exits when MONGODB_URI is given but MongoDB does not answer (after the driver's 10 s server selection)", { timeout: 30_000 }, async () => {
    const run = await runCliToExit({ args: ["--store", "mongo"], env: { MONGODB_URI: "mongodb://127.0.0.1:1/" } });
    expectOneLineFailure(run, /cannot start: cannot connect to MongoDB/);
  });
});

describe("bin/mailroom.js (what `npx mailroom serve` runs)", () => {
  it("starts the server without a build step", async () => {
    const server = await startServerProcess({ entry: ["bin/mailroom.js"] });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await server.stop()).toEqual({ code: 0, signal: null });
  });
});
