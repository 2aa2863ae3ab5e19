/**
 * End-to-end suites with authentication on: with MAILROOM_TEST_AUTH=1 every
 * server the suites start (process or in-process) gets an auth file of one
 * principal holding every role in namespace `default`, and every client the
 * suites make sends its bearer token (the helpers below, for generated
 * clients, hand-made requests, the CLI and grpc-js). `npm run test:auth-on`
 * runs every end-to-end suite so; a test of running without credentials
 * says so (`withoutAuth`). Without the variable nothing changes.
 */
import * as grpc from "@grpc/grpc-js";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMailroomClients, type MailroomClientOptions, type MailroomClients } from "../../src/client/index.js";
import { ROLES } from "../../src/domain/auth/roles.js";

function createAuth(): { token: string; path: string } {
  const token = randomBytes(24).toString("base64url");
  const path = join(mkdtempSync(join(tmpdir(), "mailroom-e2e-auth-")), "auth.json");
  const principal = { name: "e2e", token_sha256: createHash("sha256").update(token).digest("hex"), namespace: "default", roles: ROLES };
  writeFileSync(path, JSON.stringify({ principals: [principal] }));
  return { token, path };
}

/** Set when the suites run with authentication on. */
export const e2eAuth = process.env.MAILROOM_TEST_AUTH === "1" ? createAuth() : undefined;

/** Flags giving a server the suites' auth file, unless the test chose its own authentication. */
export function e2eAuthArgs(args: readonly string[], env: Record<string, string | undefined>): string[] {
  if (!e2eAuth || args.includes("--auth-token") || args.includes("--auth-file") || env.MAILROOM_AUTH_TOKEN !== undefined) return [];
  return ["--auth-file", e2eAuth.path];
}

/** createMailroomClients, sending the suites' token when authentication is on. */
export function testClients(options: MailroomClientOptions): MailroomClients {
  return createMailroomClients({ token: e2eAuth?.token, ...options });
}

/** Options for a @grpc/grpc-js client: an interceptor sending the suites' token when authentication is on. */
export function grpcJsClientOptions(): grpc.ClientOptions {
  if (!e2eAuth) return {};
  const authorization = `Bearer ${e2eAuth.token}`;
  return {
    interceptors: [
      (options, nextCall) =>
        new grpc.InterceptingCall(nextCall(options), {
          start: (metadata, listener, next) => {
            metadata.set("authorization", authorization);
            next(metadata, listener);
          },
        }),
    ],
  };
}

/** Headers of a hand-made request (fetch, raw HTTP/2, curl): the suites' bearer token when authentication is on. */
export function e2eAuthHeaders(): Record<string, string> {
  return e2eAuth ? { authorization: `Bearer ${e2eAuth.token}` } : {};
}

/** The same as header lines (`name: value`), for curl-like tools; none when `given` already has an authorization line. */
export function e2eAuthHeaderLines(given: readonly string[] = []): string[] {
  if (given.some((line) => /^authorization:/i.test(line))) return [];
  return Object.entries(e2eAuthHeaders()).map(([name, value]) => `${name}: ${value}`);
}

/** Environment of a `mailroom` client command: MAILROOM_TOKEN when authentication is on. */
export function e2eCliEnv(): Record<string, string> {
  return e2eAuth ? { MAILROOM_TOKEN: e2eAuth.token } : {};
}

/** Metadata of a @grpc/grpc-js call: the suites' bearer token when authentication is on. */
export function e2eGrpcMetadata(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (e2eAuth) metadata.set("authorization", `Bearer ${e2eAuth.token}`);
  return metadata;
}
