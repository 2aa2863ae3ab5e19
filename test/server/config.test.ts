/**
 * The configuration: every flag has an environment variable of the same name,
 * both give the same value, and the README documents exactly the generated
 * table.
 */
import { Command, type Option } from "commander";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { defaultServerConfig, renderConfigTable, resolveServerConfig, type ServerConfig, serverConfigFromOptions, serverConfigOptions } from "../../src/config.js";

/** Parses like `mailroom serve` does, with the given command line and environment. */
function parse(argv: string[], env: Record<string, string> = {}): ServerConfig {
  for (const [name, value] of Object.entries(env)) vi.stubEnv(name, value);
  const command = new Command("serve").exitOverride().configureOutput({ writeErr: () => undefined });
  for (const option of serverConfigOptions()) command.addOption(option);
  command.parse(argv, { from: "user" });
  return serverConfigFromOptions(command.opts());
}

function flagOf(option: Option): string {
  return option.long ?? "";
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe("every flag has an environment variable of the same name", () => {
  it("is MAILROOM_ and the flag in upper snake case, except --mongodb-uri which is MONGODB_URI", () => {
    for (const option of serverConfigOptions()) {
      const flag = flagOf(option);
      const expected = flag === "--mongodb-uri" ? "MONGODB_URI" : `MAILROOM_${flag.slice(2).replace(/-/g, "_").toUpperCase()}`;
      expect(option.envVar, flag).toBe(expected);
    }
  });

  it.each([
    ["--port", "6000", { port: 6000 }],
    ["--store", "memory", { store: "memory" }],
    ["--mongodb-uri", "mongodb://db:27017/?replicaSet=rs0", { mongodbUri: "mongodb://db:27017/?replicaSet=rs0" }],
    ["--max-message-bytes", "1024", { maxMessageBytes: 1024 }],
    ["--auth-token", "s3cret", { authToken: "s3cret" }],
    ["--auth-file", "teams.json", { authFile: "teams.json" }],
    ["--insecure-no-auth", "true", { insecureNoAuth: true }],
    ["--log-level", "debug", { logLevel: "debug" }],
  ] as const)("%s %s gives the same config as its environment variable", (flag, value, expected) => {
    const option = serverConfigOptions().find((candidate) => flagOf(candidate) === flag);
    const fromFlag = parse([flag, value]);
    vi.unstubAllEnvs();
    const fromEnv = parse([], { [option?.envVar ?? "?"]: value });
    expect(fromFlag).toMatchObject(expected);
    expect(fromEnv).toEqual(fromFlag);
  });

  it("lets the flag win over the environment variable", () => {
    expect(parse(["--port", "7000"], { MAILROOM_PORT: "8000" }).port).toBe(7000);
  });
});

describe("defaults", () => {
  it("are what DESIGN.md and the issue promise", () => {
    expect(parse([])).toEqual({
      host: "127.0.0.1",
      port: 50051,
      store: "auto",
      mongodbUri: undefined,
      mongodbDatabase: "mailroom",
      dataDir: ".mailroom/mongodb",
      storeTimeoutMs: 10_000,
      journalHoleTimeoutMs: undefined,
      tlsCert: undefined,
      tlsKey: undefined,
      authToken: undefined,
      authFile: undefined,
      insecureNoAuth: false,
      maxUnauthenticatedStreams: 16,
      maxMessageBytes: 4 * 1024 * 1024,
      maxDeadlineMs: 300_000,
      maxConnections: 1000,
      idleTimeoutMs: 120_000,
      headerTimeoutMs: 10_000,
      requestTimeoutMs: 60_000,
      keepaliveMs: 10_000,
      maxConcurrentStreams: 256,
      maxStreams: 10_000,
      streamStallTimeoutMs: 300_000,
      shutdownGraceMs: 4000,
      logLevel: "info",
      maxLeaseMs: 3_600_000,
      dispatchRetentionMs: 7 * 86_400_000,
      eventRetentionMs: 7 * 86_400_000,
      memoryStoreMaxBytes: 512 * 1024 * 1024,
    } satisfies ServerConfig);
    expect(defaultServerConfig()).toEqual(parse([]));
  });

  it("treat an empty MONGODB_URI as unset", () => {
    expect(parse([], { MONGODB_URI: "" }).mongodbUri).toBeUndefined();
  });
});

describe("invalid values are refused with a message naming the option", () => {
  it.each([
    [["--port", "70000"], /--port.*must be an integer from 0 to 65535/],
    [["--port", "12abc"], /--port/],
    [["--store", "nope"], /--store.*auto, mongo, memory/],
    [["--max-message-bytes", "0"], /--max-message-bytes/],
    [["--log-level", "loud"], /--log-level/],
    [["--mongodb-database", "a.b"], /--mongodb-database.*database name/],
    [["--auth-token", "has space"], /--auth-token/],
    [["--max-lease-ms", "0"], /--max-lease-ms/],
    [["--store-timeout-ms", "5"], /--store-timeout-ms.*must be an integer from 10/],
    [["--insecure-no-auth", "maybe"], /--insecure-no-auth.*true or false/],
    [["--memory-store-max-bytes", "1000"], /--memory-store-max-bytes.*must be an integer from 1048576/],
  ])("%j", (argv, message) => {
    expect(() => parse(argv)).toThrow(message);
  });

  it("names the environment variable when the bad value came from it", () => {
    expect(() => parse([], { MAILROOM_SHUTDOWN_GRACE_MS: "-1" })).toThrow(/MAILROOM_SHUTDOWN_GRACE_MS/);
  });

  it("refuses a journal hole timeout at or below the store timeout: a slow write would lose its position again and again", () => {
    expect(() => resolveServerConfig({ storeTimeoutMs: 2000, journalHoleTimeoutMs: 2000 })).toThrow(/--journal-hole-timeout-ms \(2000\) must be above --store-timeout-ms \(2000\)/);
    expect(resolveServerConfig({ storeTimeoutMs: 2000, journalHoleTimeoutMs: 2001 }).journalHoleTimeoutMs).toBe(2001);
  });

  it.each([
    [{ tlsCert: "cert.pem" }, /--tls-cert needs --tls-key/],
    [{ tlsKey: "key.pem" }, /--tls-key needs --tls-cert/],
  ])("refuses only one of --tls-cert and --tls-key: %j", (overrides, message) => {
    expect(() => resolveServerConfig(overrides)).toThrow(message);
  });
});

describe("authentication settings", () => {
  it("--insecure-no-auth alone is a switch, and its variable can say false", () => {
    expect(parse(["--insecure-no-auth"]).insecureNoAuth).toBe(true);
    expect(parse([], { MAILROOM_INSECURE_NO_AUTH: "false" }).insecureNoAuth).toBe(false);
    expect(parse([], { MAILROOM_INSECURE_NO_AUTH: "1" }).insecureNoAuth).toBe(true);
  });

  it.each(["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"])("serves %s (loopback) without authentication", (host) => {
    expect(resolveServerConfig({ host }).host).toBe(host);
  });

  it.each(["0.0.0.0", "::", "10.0.0.5", "mailroom.internal"])("refuses %s (reachable from elsewhere) without authentication or --insecure-no-auth", (host) => {
    expect(() => resolveServerConfig({ host })).toThrow(/reachable from other machines.*--auth-file.*--insecure-no-auth/);
    expect(resolveServerConfig({ host, insecureNoAuth: true }).host).toBe(host);
    expect(resolveServerConfig({ host, authFile: "teams.json" }).host).toBe(host);
    expect(resolveServerConfig({ host, authToken: "t" }).host).toBe(host);
  });

  it.each([
    [{ authToken: "t", authFile: "teams.json" }, /--auth-token and --auth-file: give one/],
    [{ authFile: "teams.json", insecureNoAuth: true }, /--insecure-no-auth contradicts/],
  ])("refuses contradictions: %j", (overrides, message) => {
    expect(() => resolveServerConfig(overrides)).toThrow(message);
  });
});

describe("the README documents exactly the generated configuration table", () => {
  const readme = fileURLToPath(new URL("../../README.md", import.meta.url));
  it("has renderConfigTable() between the config-table markers", () => {
    const text = readFileSync(readme, "utf8");
    const match = /<!-- config-table:start -->\n([\s\S]*?)\n<!-- config-table:end -->/.exec(text);
    expect(match, "README.md needs <!-- config-table:start --> and <!-- config-table:end --> markers").not.toBeNull();
    expect(match?.[1]?.trim()).toBe(renderConfigTable());
  });

  it("lists every flag with its variable and default", () => {
    const table = renderConfigTable();
    for (const option of serverConfigOptions()) {
      expect(table).toContain(`\`${option.flags}\` | \`${option.envVar}\``);
    }
    expect(table).toContain("4194304 (4 MiB)");
  });
});
