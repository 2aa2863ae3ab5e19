/**
 * The auth file (`--auth-file`): who may call, in which namespace, with which
 * roles, and each namespace's limits. Parsing is strict: a typo must not
 * silently grant or drop access, so every problem refuses the whole file
 * with a message naming the entry (`principals[1] ("billing-admin").roles[0]`).
 *
 *   {
 *     "principals": [{"name": "billing-workers", "token_sha256": "<64 hex>", "namespace": "billing", "roles": ["worker"]}],
 *     "jwt": {"jwks_file": "keys.json", "issuer": "https://idp.example", "audience": "mailroom",
 *             "namespace_claim": "mailroom_namespace", "roles_claim": "mailroom_roles", "clock_skew_seconds": 30},
 *     "limits": {"billing": {"max_open_streams": 100, "max_queued_dispatches": 100000, "requests_per_second": 500},
 *                "*": {"requests_per_second": 100}}
 *   }
 */
import { isNamespace, NAMESPACE_RULE } from "./namespaces.js";
import { isRole, type Role, ROLES } from "./roles.js";

export interface PrincipalEntry {
  name: string;
  /** Lower-case hex SHA-256 of the bearer token. */
  tokenSha256: string;
  namespace: string;
  roles: ReadonlySet<Role>;
}

export interface JwtSettings {
  /** As written in the file: relative paths are relative to the auth file's folder. */
  jwksFile: string;
  issuer: string;
  audience: string;
  namespaceClaim: string;
  rolesClaim: string;
  clockSkewSeconds: number;
}

export interface NamespaceLimits {
  maxOpenStreams?: number;
  maxQueuedDispatches?: number;
  requestsPerSecond?: number;
}

/** The key of `limits` that applies to every namespace without an entry of its own. */
export const ANY_NAMESPACE = "*";

export interface AuthFile {
  principals: PrincipalEntry[];
  jwt?: JwtSettings;
  /** By namespace, and `*` for the others. */
  limits: ReadonlyMap<string, NamespaceLimits>;
}

export const DEFAULT_CLOCK_SKEW_SECONDS = 30;
const MAX_CLOCK_SKEW_SECONDS = 300;
const MAX_NAME_LENGTH = 128;
const MAX_LIMIT = 1_000_000_000;

/** A problem with the auth file; the message names the entry and says what is wrong. */
export class AuthFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AuthFileError";
  }
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function object(path: string, value: unknown, allowed: readonly string[]): Json {
  if (!isObject(value)) throw new AuthFileError(`${path}: must be a JSON object`);
  const unknown = Object.keys(value).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) throw new AuthFileError(`${path}: unknown field ${JSON.stringify(unknown[0])}; the fields are ${allowed.join(", ")}`);
  return value;
}

function text(path: string, value: unknown): string {
  if (typeof value !== "string" || value.trim() === "") throw new AuthFileError(`${path}: must be a non-empty string`);
  return value;
}

function integer(path: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new AuthFileError(`${path}: must be an integer from ${min} to ${max}`);
  }
  return value;
}

function namespace(path: string, value: unknown): string {
  if (!isNamespace(value)) throw new AuthFileError(`${path}: must be a namespace: ${NAMESPACE_RULE} (got ${JSON.stringify(value)})`);
  return value;
}

function principal(index: number, value: unknown): PrincipalEntry {
  const at = `principals[${index}]`;
  const entry = object(at, value, ["name", "token_sha256", "namespace", "roles"]);
  const name = text(`${at}.name`, entry.name);
  if (name.length > MAX_NAME_LENGTH || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new AuthFileError(`${at}.name: at most ${MAX_NAME_LENGTH} characters, no control characters`);
  }
  const named = `${at} (${JSON.stringify(name)})`;
  const hash = entry.token_sha256;
  if (typeof hash !== "string" || !/^[0-9a-fA-F]{64}$/.test(hash)) {
    throw new AuthFileError(`${named}.token_sha256: must be the SHA-256 of the bearer token as 64 hex digits (e.g. \`printf %s "$TOKEN" | sha256sum\`)`);
  }
  if (!Array.isArray(entry.roles) || entry.roles.length === 0) {
    throw new AuthFileError(`${named}.roles: must be a non-empty array of roles (${ROLES.join(", ")})`);
  }
  const roles = entry.roles.map((role: unknown, i) => {
    if (!isRole(role)) throw new AuthFileError(`${named}.roles[${i}]: unknown role ${JSON.stringify(role)}; the roles are ${ROLES.join(", ")}`);
    return role;
  });
  return { name, tokenSha256: hash.toLowerCase(), namespace: namespace(`${named}.namespace`, entry.namespace), roles: new Set(roles) };
}

function jwt(value: unknown): JwtSettings {
  const entry = object("jwt", value, ["jwks_file", "issuer", "audience", "namespace_claim", "roles_claim", "clock_skew_seconds"]);
  return {
    jwksFile: text("jwt.jwks_file", entry.jwks_file),
    issuer: text("jwt.issuer", entry.issuer),
    audience: text("jwt.audience", entry.audience),
    namespaceClaim: text("jwt.namespace_claim", entry.namespace_claim),
    rolesClaim: text("jwt.roles_claim", entry.roles_claim),
    clockSkewSeconds: entry.clock_skew_seconds === undefined ? DEFAULT_CLOCK_SKEW_SECONDS : integer("jwt.clock_skew_seconds", entry.clock_skew_seconds, 0, MAX_CLOCK_SKEW_SECONDS),
  };
}

function limits(value: unknown): Map<string, NamespaceLimits> {
  const out = new Map<string, NamespaceLimits>();
  if (value === undefined) return out;
  if (!isObject(value)) throw new AuthFileError("limits: must be a JSON object of namespace -> limits");
  for (const [key, raw] of Object.entries(value)) {
    const at = `limits[${JSON.stringify(key)}]`;
    if (key !== ANY_NAMESPACE) namespace(at, key);
    const entry = object(at, raw, ["max_open_streams", "max_queued_dispatches", "requests_per_second"]);
    const optional = (field: string) => (entry[field] === undefined ? undefined : integer(`${at}.${field}`, entry[field], 1, MAX_LIMIT));
    out.set(key, {
      maxOpenStreams: optional("max_open_streams"),
      maxQueuedDispatches: optional("max_queued_dispatches"),
      requestsPerSecond: optional("requests_per_second"),
    });
  }
  return out;
}

/** @throws AuthFileError naming the first entry that is wrong. */
export function parseAuthFile(content: string): AuthFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(content);
  } catch (error) {
    throw new AuthFileError(`not valid JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  const file = object("the auth file", parsed, ["principals", "jwt", "limits"]);
  if (!Array.isArray(file.principals)) throw new AuthFileError(`principals: must be an array (it may be empty)`);
  const principals = file.principals.map((entry: unknown, i) => principal(i, entry));
  const byHash = new Map<string, number>();
  const byName = new Map<string, number>();
  principals.forEach((entry, i) => {
    const sameHash = byHash.get(entry.tokenSha256);
    if (sameHash !== undefined) throw new AuthFileError(`principals[${i}] (${JSON.stringify(entry.name)}).token_sha256: the same token as principals[${sameHash}]; each token names one principal`);
    const sameName = byName.get(entry.name);
    if (sameName !== undefined) throw new AuthFileError(`principals[${i}].name: ${JSON.stringify(entry.name)} is also the name of principals[${sameName}]`);
    byHash.set(entry.tokenSha256, i);
    byName.set(entry.name, i);
  });
  return { principals, jwt: file.jwt === undefined ? undefined : jwt(file.jwt), limits: limits(file.limits) };
}

/** The limits that apply to a namespace: its own entry, else `*`'s, else none. */
export function limitsOf(file: Pick<AuthFile, "limits">, namespace: string): NamespaceLimits {
  return file.limits.get(namespace) ?? file.limits.get(ANY_NAMESPACE) ?? {};
}
