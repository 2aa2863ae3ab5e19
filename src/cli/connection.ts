/**
 * What every client command shares: where the server is (`--url`), how to
 * talk to it (`--protocol`), the bearer token (`--token` or MAILROOM_TOKEN,
 * never printed), `--json`, and the exit code each class of error gets.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, InvalidArgumentError, Option } from "commander";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { type ClientProtocol, createMailroomClients, type MailroomClients } from "../client/index.js";
import { type Output, terminalOutput } from "./output.js";

/**
 * Exit codes of the client commands, one per class of error (README, "The
 * command line"). Usage errors are found before anything is sent.
 */
export const ExitCode = {
  ok: 0,
  /** A server bug or an unexpected failure (INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED). */
  failed: 1,
  /** A bad command line: unknown command or option, a malformed value. Nothing was sent. */
  usage: 2,
  /** The server refused the input (INVALID_ARGUMENT, OUT_OF_RANGE). */
  invalid: 3,
  /** An unknown id (NOT_FOUND). */
  notFound: 4,
  /** The state refused the call (FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED): a stale claim token, an expired lease... */
  refused: 5,
  /** A missing or wrong token (UNAUTHENTICATED, PERMISSION_DENIED). */
  unauthenticated: 6,
  /** The server could not be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELED): retry. */
  unavailable: 7,
  /** A limit was hit (RESOURCE_EXHAUSTED). */
  exhausted: 8,
} as const;

export function exitCodeFor(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return ExitCode.invalid;
    case Code.NotFound:
      return ExitCode.notFound;
    case Code.FailedPrecondition:
    case Code.AlreadyExists:
    case Code.Aborted:
      return ExitCode.refused;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return ExitCode.unauthenticated;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return ExitCode.unavailable;
    case Code.ResourceExhausted:
      return ExitCode.exhausted;
    default:
      return ExitCode.failed;
  }
}

export interface ConnectionOptions {
  url: string;
  token?: string;
  protocol: ClientProtocol;
  json: boolean;
}

const protocols: readonly ClientProtocol[] = ["grpc", "grpc-web", "connect"];

/** Adds --url, --token, --protocol and --json to a client command. */
export function withConnectionOptions(command: Command): Command {
  return command
    .addOption(new Option("--url <url>", "the server's base URL").env("MAILROOM_URL").default("http://127.0.0.1:50051"))
    .addOption(
      new Option("--token <token>", "bearer token for a server run with --auth-token; prefer the environment variable (command lines are visible to other users)").env(
        "MAILROOM_TOKEN",
      ),
    )
    .addOption(new Option("--protocol <protocol>", "wire protocol").choices(protocols).default("grpc"))
    .option("--json", "one JSON object a line (proto3 JSON), for scripts", false)
    .exitOverride((error) => process.exit(error.exitCode === 0 ? ExitCode.ok : ExitCode.usage));
}

/**
 * Runs a command's action with clients for its connection options, and
 * turns a failure into one line on stderr and the exit code of its class.
 */
export async function withClients(options: ConnectionOptions, action: (clients: MailroomClients, out: Output) => Promise<void>): Promise<void> {
  const out = terminalOutput(options.json);
  const clients = createMailroomClients({ baseUrl: options.url, protocol: options.protocol, token: options.token || undefined });
  try {
    await action(clients, out);
  } catch (error) {
    process.exitCode = reportError(error, out);
  } finally {
    clients.close();
  }
}

function reportError(error: unknown, out: Output): number {
  const connectError = ConnectError.from(error);
  const detail = connectError.findDetails(ErrorDetailSchema)[0];
  const reason = detail && detail.reason !== ErrorReason.UNSPECIFIED ? ErrorReason[detail.reason] : undefined;
  if (out.json) {
    out.error(JSON.stringify({ error: { code: codeName(connectError.code), message: connectError.rawMessage, reason, field: detail?.field || undefined } }));
  } else {
    const more = [reason && `reason ${reason}`, detail?.field && `field ${detail.field}`].filter(Boolean).join(", ");
    out.error(`${out.errorPaint.red("error")}: ${codeName(connectError.code)}: ${connectError.rawMessage}${more ? ` (${more})` : ""}`);
    // Without a Mailroom detail, UNAVAILABLE came from the connection, not from a server.
    if (connectError.code === Code.Unavailable && !detail) out.error("is a Mailroom server listening at the --url given?");
  }
  return exitCodeFor(connectError.code);
}

/** The gRPC name of a code, e.g. FAILED_PRECONDITION. */
export function codeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Parses "30s", "1.5s", "500ms", "5m", "1h" into a google.protobuf.Duration. */
export function parseDuration(text: string): { seconds: bigint; nanos: number } {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!match) throw new InvalidArgumentError("expected a duration such as 500ms, 30s, 5m or 1h");
  const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as "ms" | "s" | "m" | "h"];
  const ms = Math.round(Number(match[1]) * unitMs);
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

/** Parses a non-negative integer option. */
export function parseCount(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError("expected a whole number");
  return Number(text);
}

/** Parses a comma-separated list (repeatable: values accumulate). */
export function parseList(text: string, previous: string[] = []): string[] {
  return [...previous, ...text.split(",").map((item) => item.trim()).filter((item) => item !== "")];
}

/** A parser of comma-separated enum names (repeatable), e.g. `--status queued,claimed`. */
export function parseEnumList<E extends Record<string, string | number>>(enumeration: E, what: string): (text: string, previous?: Array<E[keyof E]>) => Array<E[keyof E]> {
  return (text, previous = []) => [...previous, ...parseList(text).map((name) => enumValue(enumeration, what, name))];
}

/** An enum value from its short name, any case ("queued" for RUN_DISPATCH_STATUS_QUEUED). */
function enumValue<E extends Record<string, string | number>>(enumeration: E, what: string, name: string): E[keyof E] {
  const value = enumeration[name.toUpperCase().replace(/-/g, "_") as keyof E];
  if (typeof value !== "number" || value === 0) {
    const names = Object.keys(enumeration).filter((key) => Number.isNaN(Number(key)) && enumeration[key] !== 0);
    throw new InvalidArgumentError(`unknown ${what} ${JSON.stringify(name)}; one of ${names.map((n) => n.toLowerCase()).join(", ")}`);
  }
  return value;
}
