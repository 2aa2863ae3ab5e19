/**
 * The server's configuration: one table of settings from which the typed
 * `ServerConfig`, its defaults, the command-line flags, their environment
 * variables and the README's configuration table are all derived, so none of
 * them can drift from the others.
 *
 * To add a setting: add its field to `ServerConfig` and its entry to
 * `settings` (the compiler insists on both). The flag is the field name in
 * kebab case (`maxMessageBytes` -> `--max-message-bytes`), the environment
 * variable the flag in upper snake case behind `MAILROOM_`.
 */
import { InvalidArgumentError, Option } from "commander";
import { logLevels, type LogLevel } from "./log.js";
import { DEFAULT_STORE_TIMEOUT_MS } from "./store/deadline.js";
import type { StoreChoice } from "./store/select.js";

export interface ServerConfig {
  host: string;
  port: number;
  store: StoreChoice;
  mongodbUri: string | undefined;
  mongodbDatabase: string;
  dataDir: string;
  storeTimeoutMs: number;
  journalHoleTimeoutMs: number | undefined;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  authToken: string | undefined;
  authFile: string | undefined;
  insecureNoAuth: boolean;
  maxUnauthenticatedStreams: number;
  maxMessageBytes: number;
  maxDeadlineMs: number;
  maxConnections: number;
  idleTimeoutMs: number;
  headerTimeoutMs: number;
  requestTimeoutMs: number;
  keepaliveMs: number;
  maxConcurrentStreams: number;
  maxStreams: number;
  streamStallTimeoutMs: number;
  shutdownGraceMs: number;
  logLevel: LogLevel;
  maxLeaseMs: number;
  dispatchRetentionMs: number;
  eventRetentionMs: number;
  memoryStoreMaxBytes: number;
}

/** A value that no setting accepts; the message names the rule it broke. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

interface Setting<T> {
  /** Placeholder for the value in help and README, e.g. "<bytes>". */
  value: string;
  default: T;
  /** How the default reads in help and README when the bare value says too little. */
  defaultText?: string;
  /** What it does; one or two sentences. */
  meaning: string;
  /** Overrides the derived environment variable name. */
  env?: string;
  choices?: readonly string[];
  /** The value of the flag given without one; makes the value optional (a switch, `--flag` or `--flag false`). */
  preset?: string;
  /** Turns the flag's or variable's text into the value; throws ConfigError saying what is wrong. */
  parse: (raw: string) => T;
}

const storeChoices = ["auto", "mongo", "memory"] as const satisfies readonly StoreChoice[];
/** MongoDB's limit for database names (bytes, excluding the terminator). */
const MAX_DATABASE_NAME_BYTES = 63;
/** Connect's ceiling for read and write limits. */
const MAX_MESSAGE_BYTES = 0xffffffff;
const MAX_UINT32 = 0xffffffff;

function integer(min: number, max: number): (raw: string) => number {
  return (raw) => {
    const value = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new ConfigError(`must be an integer from ${min} to ${max}`);
    }
    return value;
  };
}

function oneOf<T extends string>(choices: readonly T[]): (raw: string) => T {
  return (raw) => {
    const found = choices.find((choice) => choice === raw);
    if (found === undefined) throw new ConfigError(`must be one of ${choices.join(", ")}`);
    return found;
  };
}

function nonEmpty(raw: string): string {
  if (raw.trim() === "") throw new ConfigError("must not be empty");
  return raw;
}

/** Empty means "not set": CI systems often export unset secrets as empty strings. */
function optionalText(raw: string): string | undefined {
  return raw.trim() === "" ? undefined : raw;
}

function databaseName(raw: string): string {
  if (raw === "" || Buffer.byteLength(raw) > MAX_DATABASE_NAME_BYTES || /[/\\. "$*<>:|?\0]/.test(raw)) {
    throw new ConfigError(`must be a MongoDB database name: 1 to ${MAX_DATABASE_NAME_BYTES} bytes without / \\ . " $ * < > : | ? or spaces`);
  }
  return raw;
}

function bearerToken(raw: string): string {
  // It travels as `authorization: Bearer <token>`: visible ASCII, no spaces.
  if (!/^[\x21-\x7e]+$/.test(raw)) {
    throw new ConfigError("must be non-empty printable ASCII without spaces (unset it to turn authentication off)");
  }
  return raw;
}

function bool(raw: string): boolean {
  const value = raw.trim().toLowerCase();
  if (["true", "1", "yes"].includes(value)) return true;
  if (["false", "0", "no", ""].includes(value)) return false;
  throw new ConfigError("must be true or false");
}

/** Addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return bare === "localhost" || bare === "::1" || /^(::ffff:)?127(\.\d{1,3}){3}$/.test(bare);
}

const settings: { [K in keyof ServerConfig]-?: Setting<ServerConfig[K]> } = {
  host: {
    value: "<address>",
    default: "127.0.0.1",
    meaning: "Interface to listen on; `0.0.0.0` or `::` for all interfaces.",
    parse: nonEmpty,
  },
  port: {
    value: "<number>",
    default: 50051,
    meaning: "TCP port serving gRPC, gRPC-Web and Connect over HTTP/2 and HTTP/1.1; 0 picks a free port (the start-up log names it).",
    parse: integer(0, 65535),
  },
  store: {
    value: "<backend>",
    default: "auto",
    choices: storeChoices,
    meaning:
      "`mongo`: MongoDB (MONGODB_URI, else a server-started single-node replica set). `memory`: in-process, NOT durable. " +
      "`auto`: mongo when MongoDB can be had, else memory with a loud warning.",
    parse: oneOf(storeChoices),
  },
  mongodbUri: {
    value: "<uri>",
    env: "MONGODB_URI",
    default: undefined,
    meaning: "Connection string of a MongoDB replica set. Unset: the server starts its own mongod (mongodb-memory-server).",
    parse: optionalText,
  },
  mongodbDatabase: {
    value: "<name>",
    default: "mailroom",
    meaning: "Database holding Mailroom's collections.",
    parse: databaseName,
  },
  dataDir: {
    value: "<path>",
    default: ".mailroom/mongodb",
    meaning:
      "Where a server-started mongod keeps its files, across restarts (unused with MONGODB_URI). " +
      "Durable only as far as this directory's disk is: one node, no replica.",
    parse: nonEmpty,
  },
  storeTimeoutMs: {
    value: "<ms>",
    default: DEFAULT_STORE_TIMEOUT_MS,
    meaning:
      "Longest a single store call may take (MongoDB: maxTimeMS, majority write concern wtimeout, server selection); " +
      "past it the call answers UNAVAILABLE, and background sweeps retry on their next round.",
    parse: integer(10, MAX_UINT32),
  },
  journalHoleTimeoutMs: {
    value: "<ms>",
    default: undefined,
    defaultText: "--store-timeout-ms + 1000",
    meaning:
      "How long a journal position whose write has not landed may hold back later events before it is closed " +
      "(its writer then appends again further on). Must be above --store-timeout-ms.",
    parse: integer(1, MAX_UINT32),
  },
  tlsCert: {
    value: "<path>",
    default: undefined,
    meaning: "PEM certificate chain; with `--tls-key` the port serves TLS (HTTP/2 and HTTP/1.1 by ALPN) instead of cleartext.",
    parse: nonEmpty,
  },
  tlsKey: {
    value: "<path>",
    default: undefined,
    meaning: "PEM private key for `--tls-cert`; give both or neither.",
    parse: nonEmpty,
  },
  authToken: {
    value: "<token>",
    default: undefined,
    meaning:
      "When set, every call except grpc.health.v1.Health needs `authorization: Bearer <token>`; its holder is admin of namespace `default`. " +
      "Prefer the environment variable: command lines are visible to other users.",
    parse: bearerToken,
  },
  authFile: {
    value: "<path>",
    default: undefined,
    meaning:
      "JSON file of principals (bearer tokens as SHA-256 hashes, each with a namespace and roles), optional JWT verification and per-namespace limits; " +
      "see README \"Teams\". Re-read on SIGHUP. Not with `--auth-token`.",
    parse: nonEmpty,
  },
  insecureNoAuth: {
    value: "[bool]",
    preset: "true",
    default: false,
    meaning:
      "Serve callers without credentials (all of them admin of namespace `default`) on a non-loopback `--host`. " +
      "Without it, no `--auth-file`/`--auth-token` means loopback only.",
    parse: bool,
  },
  maxUnauthenticatedStreams: {
    value: "<number>",
    default: 16,
    meaning:
      "With authentication on: server streams (Health.Watch, the only ones open to them) open at once, in all, by callers without valid credentials; " +
      "one more gets RESOURCE_EXHAUSTED (STREAM_LIMIT).",
    parse: integer(0, MAX_UINT32),
  },
  maxMessageBytes: {
    value: "<bytes>",
    default: 4 * 1024 * 1024,
    defaultText: "4194304 (4 MiB)",
    meaning: "Largest request or response message; a larger request gets RESOURCE_EXHAUSTED.",
    parse: integer(1, MAX_MESSAGE_BYTES),
  },
  maxDeadlineMs: {
    value: "<ms>",
    default: 300_000,
    defaultText: "300000 (5 min)",
    meaning: "Longest deadline (timeout) a client may ask for; a longer one gets INVALID_ARGUMENT.",
    parse: integer(1, MAX_UINT32),
  },
  maxConnections: {
    value: "<number>",
    default: 1000,
    meaning:
      "Connections open at once. At the limit a new connection takes the place of the one idle the longest (nothing in flight), " +
      "or is refused when none is idle. Keep it below the process's open-file limit (`ulimit -n`) less what the store needs.",
    parse: integer(1, MAX_UINT32),
  },
  idleTimeoutMs: {
    value: "<ms>",
    default: 120_000,
    defaultText: "120000 (2 min)",
    meaning: "A connection with no call in flight for this long is closed (HTTP/2: GOAWAY; clients reconnect when they next call).",
    parse: integer(1, MAX_UINT32),
  },
  headerTimeoutMs: {
    value: "<ms>",
    default: 10_000,
    meaning:
      "How long a new connection may take to send its first bytes (with TLS: to finish its handshake), " +
      "and an HTTP/1.1 request its headers; the connection is closed past it.",
    parse: integer(1, MAX_UINT32),
  },
  requestTimeoutMs: {
    value: "<ms>",
    default: 60_000,
    meaning: "How long an HTTP/1.1 request may take to arrive whole, body included (408 past it).",
    parse: integer(1, MAX_UINT32),
  },
  keepaliveMs: {
    value: "<ms>",
    default: 10_000,
    meaning:
      "HTTP/2 connections with calls in flight are pinged this often; one whose peer has not answered by the next ping is closed and its streams end. " +
      "HTTP/1.1 connections get TCP keepalive at this interval.",
    parse: integer(1000, MAX_UINT32),
  },
  maxConcurrentStreams: {
    value: "<number>",
    default: 256,
    meaning: "Concurrent calls (HTTP/2 streams) per connection; the HTTP/2 settings announce it and more are refused (REFUSED_STREAM).",
    parse: integer(1, MAX_UINT32),
  },
  maxStreams: {
    value: "<number>",
    default: 10_000,
    meaning: "Server streams (Subscribe, the Watch and Receive calls, OpenLiveChannel, AwaitWake) open at once on this server; one more gets RESOURCE_EXHAUSTED (LIMIT_EXCEEDED).",
    parse: integer(1, MAX_UINT32),
  },
  streamStallTimeoutMs: {
    value: "<ms>",
    default: 300_000,
    defaultText: "300000 (5 min)",
    meaning:
      "A stream whose client takes no data for this long while the server waits to write (the client stopped reading) is ended: " +
      "its HTTP/2 stream reset, an HTTP/1.1 connection closed.",
    parse: integer(1, MAX_UINT32),
  },
  shutdownGraceMs: {
    value: "<ms>",
    default: 4000,
    meaning: "On SIGTERM/SIGINT, how long unary calls in flight may take to finish before connections are cut.",
    parse: integer(0, MAX_UINT32),
  },
  maxLeaseMs: {
    value: "<ms>",
    default: 3_600_000,
    defaultText: "3600000 (1 h)",
    meaning: "Longest lease a Claim or ExtendLease may ask for; a longer one gets INVALID_ARGUMENT.",
    parse: integer(1, MAX_UINT32),
  },
  dispatchRetentionMs: {
    value: "<ms>",
    default: 7 * 86_400_000,
    defaultText: "604800000 (7 days)",
    meaning: "Terminal dispatches (and with them their dedupe keys) are deleted this long after they completed.",
    parse: integer(1, Number.MAX_SAFE_INTEGER),
  },
  eventRetentionMs: {
    value: "<ms>",
    default: 7 * 86_400_000,
    defaultText: "604800000 (7 days)",
    meaning: "Journal events are deleted this long after they were recorded; a cursor older than that gets OUT_OF_RANGE (CURSOR_EXPIRED).",
    parse: integer(1, Number.MAX_SAFE_INTEGER),
  },
  memoryStoreMaxBytes: {
    value: "<bytes>",
    default: 512 * 1024 * 1024,
    defaultText: "536870912 (512 MiB)",
    meaning:
      "Memory backend only: the most its documents may take (approximately, as BSON). New documents stop at 15/16 of it, " +
      "the rest is kept for updates and small records; a write past it gets RESOURCE_EXHAUSTED (LIMIT_EXCEEDED). Its change log keeps at most an eighth of it (up to 64 MiB).",
    parse: integer(1024 * 1024, Number.MAX_SAFE_INTEGER),
  },
  logLevel: {
    value: "<level>",
    default: "info",
    choices: logLevels,
    meaning: "Least severe log level written (JSON lines on stdout): fatal, error, warn, info, debug (one line a call), trace, silent.",
    parse: oneOf(logLevels),
  },
};

type Key = keyof ServerConfig;
const keys = Object.keys(settings) as Key[];

function flagOf(key: Key): string {
  return `--${key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

function envOf(key: Key): string {
  return settings[key].env ?? `MAILROOM_${flagOf(key).slice(2).replace(/-/g, "_").toUpperCase()}`;
}

export function defaultServerConfig(): ServerConfig {
  return Object.fromEntries(keys.map((key) => [key, settings[key].default])) as unknown as ServerConfig;
}

/** Rules between settings, which no single flag's parser can check. */
export function validateServerConfig(config: ServerConfig): ServerConfig {
  if (config.journalHoleTimeoutMs !== undefined && config.journalHoleTimeoutMs <= config.storeTimeoutMs) {
    // Below the bound, a write that is merely slow has its position closed, again and again.
    throw new ConfigError(`--journal-hole-timeout-ms (${config.journalHoleTimeoutMs}) must be above --store-timeout-ms (${config.storeTimeoutMs})`);
  }
  if (config.headerTimeoutMs > config.requestTimeoutMs) {
    throw new ConfigError(`--header-timeout-ms (${config.headerTimeoutMs}) must not exceed --request-timeout-ms (${config.requestTimeoutMs}): the headers are part of the request`);
  }
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) {
    const [given, missing] = config.tlsCert === undefined ? ["--tls-key", "--tls-cert"] : ["--tls-cert", "--tls-key"];
    throw new ConfigError(`${given} needs ${missing} too: give both (TLS) or neither (cleartext)`);
  }
  if (config.authToken !== undefined && config.authFile !== undefined) {
    throw new ConfigError("--auth-token and --auth-file: give one (the file can hold the token's hash as an admin principal of namespace default)");
  }
  const authenticated = config.authToken !== undefined || config.authFile !== undefined;
  if (authenticated && config.insecureNoAuth) throw new ConfigError("--insecure-no-auth contradicts --auth-token/--auth-file: give one or the other");
  if (!authenticated && !config.insecureNoAuth && !isLoopback(config.host)) {
    throw new ConfigError(
      `--host ${config.host} is reachable from other machines and no authentication is configured: give --auth-file (or --auth-token), ` +
        "or --insecure-no-auth to let every caller in as admin of namespace default",
    );
  }
  return config;
}

/** Defaults, then the given values, validated: for starting a server from code. */
export function resolveServerConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  return validateServerConfig({ ...defaultServerConfig(), ...overrides });
}

/** One commander Option a setting, each readable from its environment variable too. */
export function serverConfigOptions(): Option[] {
  return keys.map((key) => {
    const setting: Setting<unknown> = settings[key];
    const option = new Option(`${flagOf(key)} ${setting.value}`, setting.meaning).env(envOf(key));
    if (setting.preset !== undefined) option.preset(setting.preset);
    if (setting.choices) option.choices(setting.choices);
    else option.argParser((raw: string) => parseOrExplain(setting, raw));
    if (setting.default !== undefined) option.default(setting.default, setting.defaultText);
    return option;
  });
}

/** Builds the config from what commander parsed with `serverConfigOptions()`. */
export function serverConfigFromOptions(parsed: Record<string, unknown>): ServerConfig {
  const config = defaultServerConfig() as unknown as Record<Key, unknown>;
  for (const key of keys) {
    // commander turns a parser's undefined ("not set") into "".
    if (parsed[key] !== undefined && parsed[key] !== "") config[key] = parsed[key];
  }
  return validateServerConfig(config as unknown as ServerConfig);
}

function parseOrExplain(setting: Setting<unknown>, raw: string): unknown {
  try {
    return setting.parse(raw);
  } catch (error) {
    // commander prefixes "option '--x <v>' argument 'raw' is invalid." to this.
    throw new InvalidArgumentError(error instanceof Error ? error.message : String(error));
  }
}

/** The README's configuration table (Markdown), generated from `settings`. */
export function renderConfigTable(): string {
  const cell = (text: string) => text.replace(/\|/g, "\\|");
  const rows = keys.map((key) => {
    const setting: Setting<unknown> = settings[key];
    const fallback = setting.defaultText ?? (setting.default === undefined ? "(unset)" : String(setting.default));
    return `| \`${flagOf(key)} ${setting.value}\` | \`${envOf(key)}\` | ${cell(fallback)} | ${cell(setting.meaning)} |`;
  });
  return ["| Flag | Environment variable | Default | Meaning |", "| --- | --- | --- | --- |", ...rows].join("\n");
}
