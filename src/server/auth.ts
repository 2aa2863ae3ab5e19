/**
 * Who a bearer token is. Three ways to run:
 *
 * - `--auth-file`: principals by the SHA-256 of their token, optionally JWTs
 *   verified against a JWKS, and per-namespace limits; re-read by `reload()`
 *   (SIGHUP), which keeps the previous principals when the new file is bad;
 * - `--auth-token`: that one token is admin of namespace `default`;
 * - neither: every caller is admin of namespace `default` (the configuration
 *   allows this on loopback only, unless `--insecure-no-auth`).
 *
 * Tokens are compared by their SHA-256 only: the server never holds a token
 * of the file, and a lookup's timing depends on the hash, not on the token.
 */
import { Code } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { type AuthFile, AuthFileError, limitsOf, type NamespaceLimits, parseAuthFile } from "../domain/auth/auth-file.js";
import { DEFAULT_NAMESPACE } from "../domain/auth/namespaces.js";
import type { Principal } from "../domain/auth/principal.js";
import { ROLES } from "../domain/auth/roles.js";
import { errorWithDetail } from "./errors.js";
import { checkKeySet, JwtVerifier, looksLikeJwt } from "./jwt.js";
import { StartupError } from "./startup-error.js";

export type AuthSource = { kind: "none" } | { kind: "token"; token: string } | { kind: "file"; path: string };

export function authSourceOf(config: { authToken?: string; authFile?: string }): AuthSource {
  if (config.authFile !== undefined) return { kind: "file", path: config.authFile };
  if (config.authToken !== undefined) return { kind: "token", token: config.authToken };
  return { kind: "none" };
}

/** Metric label of callers without credentials (no namespace can be named so: namespaces start with a letter or digit). */
export const NO_NAMESPACE_LABEL = "_none";
/** Metric label of namespaces that are not configured (JWT namespaces beyond the auth file's). */
export const OTHER_NAMESPACE_LABEL = "_other";

interface Directory {
  byHash: ReadonlyMap<string, Principal>;
  jwt?: JwtVerifier;
  limits: AuthFile["limits"];
  /** Namespaces the configuration names: they may be metric labels. */
  namespaces: ReadonlySet<string>;
}

const OPEN: Principal = { name: "anonymous", namespace: DEFAULT_NAMESPACE, roles: new Set(ROLES) };

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function directoryOfToken(token: string): Directory {
  const principal: Principal = { name: "auth-token", namespace: DEFAULT_NAMESPACE, roles: new Set(["admin"]) };
  return { byHash: new Map([[sha256Hex(token), principal]]), limits: new Map(), namespaces: new Set([DEFAULT_NAMESPACE]) };
}

/** Reads and checks the auth file and its JWKS. @throws StartupError naming the file and the entry. */
async function readDirectory(path: string): Promise<Directory> {
  const problem = (message: string) => new StartupError(`--auth-file ${JSON.stringify(path)}: ${message}`);
  const content = await readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
    throw problem(`cannot read it (${error.code ?? error.message})`);
  });
  let file: AuthFile;
  try {
    file = parseAuthFile(content);
  } catch (error) {
    if (error instanceof AuthFileError) throw problem(error.message);
    throw error;
  }
  const byHash = new Map(file.principals.map((entry) => [entry.tokenSha256, { name: entry.name, namespace: entry.namespace, roles: entry.roles }]));
  const namespaces = new Set([DEFAULT_NAMESPACE, ...file.principals.map((p) => p.namespace), ...[...file.limits.keys()].filter((key) => key !== "*")]);
  let jwt: JwtVerifier | undefined;
  if (file.jwt) {
    const jwksPath = resolve(dirname(path), file.jwt.jwksFile);
    const where = `jwt.jwks_file ${JSON.stringify(jwksPath)}`;
    const jwksText = await readFile(jwksPath, "utf8").catch((error: NodeJS.ErrnoException) => {
      throw problem(`${where}: cannot read it (${error.code ?? error.message})`);
    });
    try {
      jwt = new JwtVerifier(file.jwt, checkKeySet(JSON.parse(jwksText)));
    } catch (error) {
      throw problem(`${where}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return { byHash, jwt, limits: file.limits, namespaces };
}

function unauthenticated(message: string) {
  return errorWithDetail(Code.Unauthenticated, message, { reason: ErrorReason.UNAUTHENTICATED });
}

/** The token of an `authorization: Bearer <token>` header (the scheme in any case, as RFC 9110 says). */
function bearerToken(authorization: string | null | undefined): string | undefined {
  const match = /^bearer +([\x21-\x7e]+) *$/i.exec(authorization ?? "");
  return match?.[1];
}

export class Authenticator {
  private constructor(
    readonly source: AuthSource,
    private directory: Directory,
  ) {}

  /** @throws StartupError when the auth file or its JWKS is unreadable or wrong. */
  static async start(source: AuthSource): Promise<Authenticator> {
    switch (source.kind) {
      case "none":
        return new Authenticator(source, { byHash: new Map(), limits: new Map(), namespaces: new Set([DEFAULT_NAMESPACE]) });
      case "token":
        return new Authenticator(source, directoryOfToken(source.token));
      case "file":
        return new Authenticator(source, await readDirectory(source.path));
    }
  }

  /** Whether calls need credentials at all. */
  get required(): boolean {
    return this.source.kind !== "none";
  }

  /** How many principals the file names (for the reload log line). */
  get principalCount(): number {
    return this.directory.byHash.size;
  }

  /**
   * Re-reads the auth file. On any problem the previous principals stay in
   * force and the error is thrown for the caller to report.
   * @throws StartupError naming the entry.
   */
  async reload(): Promise<void> {
    if (this.source.kind !== "file") return;
    this.directory = await readDirectory(this.source.path);
  }

  /** The principal of an `authorization` header. @throws ConnectError UNAUTHENTICATED with a reason. */
  async authenticate(authorization: string | null | undefined): Promise<Principal> {
    if (this.source.kind === "none") return OPEN;
    const token = bearerToken(authorization);
    if (token === undefined) throw unauthenticated("missing or malformed bearer token: send the header `authorization: Bearer <token>`");
    const { byHash, jwt } = this.directory;
    const known = byHash.get(sha256Hex(token));
    if (known) return known;
    if (jwt && looksLikeJwt(token)) return jwt.verify(token);
    throw unauthenticated("unknown bearer token");
  }

  /** The principal of a call that needs no credentials: undefined when it sent none that verify. */
  async identify(authorization: string | null | undefined): Promise<Principal | undefined> {
    return this.authenticate(authorization).catch(() => undefined);
  }

  get verifiesJwts(): boolean {
    return this.directory.jwt !== undefined;
  }

  limitsOf(namespace: string): NamespaceLimits {
    return limitsOf(this.directory, namespace);
  }

  /** A bounded metric label for a caller's namespace. */
  namespaceLabel(principal: Principal | undefined): string {
    if (!principal) return NO_NAMESPACE_LABEL;
    return this.directory.namespaces.has(principal.namespace) ? principal.namespace : OTHER_NAMESPACE_LABEL;
  }
}
