/**
 * Credentials made by the test itself: an auth file of principals (random
 * tokens, stored as their SHA-256), a JWKS of a key pair generated with jose,
 * and JWTs signed with it (or tampered, expired, for another audience...).
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import { onTestFinished } from "vitest";
import { type ClientProtocol, createMailroomClients, type MailroomClients } from "../../src/client/index.js";
import type { Role } from "../../src/domain/auth/roles.js";

export interface PrincipalSpec {
  name: string;
  namespace: string;
  roles: Role[];
}

export const ISSUER = "https://idp.test";
export const AUDIENCE = "mailroom-test";
export const NAMESPACE_CLAIM = "mailroom_namespace";
export const ROLES_CLAIM = "mailroom_roles";

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

export function newToken(): string {
  return randomBytes(24).toString("base64url");
}

type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

export class TeamsFixture {
  /** Bearer token by principal name. */
  readonly tokens = new Map<string, string>();
  readonly path: string;

  private constructor(
    readonly dir: string,
    private readonly signingKey: SigningKey,
    private readonly strangerKey: SigningKey,
  ) {
    this.path = join(dir, "auth.json");
  }

  /** A folder with a JWKS (keys.json) of a fresh ES256 key pair; write the auth file with `write`. */
  static async create(): Promise<TeamsFixture> {
    const dir = mkdtempSync(join(tmpdir(), "mailroom-teams-"));
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const stranger = await generateKeyPair("ES256");
    writeFileSync(join(dir, "keys.json"), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" }] }));
    return new TeamsFixture(dir, privateKey, stranger.privateKey);
  }

  /** The auth file's JSON for these principals (each given a fresh token unless it has one), with the jwt section and limits. */
  file(principals: PrincipalSpec[], extra: { limits?: Record<string, object>; jwt?: boolean } = {}): object {
    return {
      principals: principals.map((p) => {
        if (!this.tokens.has(p.name)) this.tokens.set(p.name, newToken());
        return { name: p.name, token_sha256: sha256Hex(this.tokens.get(p.name)!), namespace: p.namespace, roles: p.roles };
      }),
      ...(extra.jwt === false ? {} : { jwt: { jwks_file: "keys.json", issuer: ISSUER, audience: AUDIENCE, namespace_claim: NAMESPACE_CLAIM, roles_claim: ROLES_CLAIM, clock_skew_seconds: 5 } }),
      ...(extra.limits ? { limits: extra.limits } : {}),
    };
  }

  /** Writes the auth file (JSON of `file()`, or any text) and returns its path. */
  write(content: object | string, name = "auth.json"): string {
    const path = join(this.dir, name);
    writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content, null, 2));
    return path;
  }

  token(name: string): string {
    const token = this.tokens.get(name);
    if (token === undefined) throw new Error(`no principal ${name} in the fixture`);
    return token;
  }

  /** A JWT signed with the JWKS's key: valid for an hour unless the claims say otherwise. */
  async jwt(claims: JWTPayload, options: { issuer?: string; audience?: string; expiresAt?: number; notBefore?: number; stranger?: boolean } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setIssuer(options.issuer ?? ISSUER)
      .setAudience(options.audience ?? AUDIENCE)
      .setIssuedAt(now)
      .setExpirationTime(options.expiresAt ?? now + 3600);
    if (options.notBefore !== undefined) jwt.setNotBefore(options.notBefore);
    return jwt.sign(options.stranger ? this.strangerKey : this.signingKey);
  }
}

/** Clients sending a bearer token, closed when the test ends. */
export function clientsWith(url: string, token: string | undefined, protocol: ClientProtocol = "connect"): MailroomClients {
  const clients = createMailroomClients({ baseUrl: url, protocol, token });
  onTestFinished(() => clients.close());
  return clients;
}
