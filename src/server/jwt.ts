/**
 * Bearer tokens that are JWTs, verified with `jose` against the auth file's
 * JWKS: signature (asymmetric algorithms only), issuer, audience, exp (which
 * must be present) and nbf with the configured clock skew. The claims then
 * name the principal. Every failure is UNAUTHENTICATED with a reason, never
 * INTERNAL.
 */
import { Code, type ConnectError } from "@connectrpc/connect";
import { createLocalJWKSet, errors, type JSONWebKeySet, jwtVerify, type JWTVerifyGetKey } from "jose";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import type { JwtSettings } from "../domain/auth/auth-file.js";
import { type Principal, principalFromClaims } from "../domain/auth/principal.js";
import { errorWithDetail } from "./errors.js";

/** Asymmetric only: a shared-secret key in a published key set would let anyone who can read it mint tokens. */
const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];

/**
 * Verified tokens are remembered (a signature check costs ~0.2 ms, more than
 * the rest of a call's admission) for at most this long and never past their
 * exp; a reload starts afresh, with a new verifier.
 */
const REMEMBER_MS = 60_000;
const REMEMBERED_TOKENS = 1024;

/** Three base64url parts: what a compact JWS looks like. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

export function looksLikeJwt(token: string): boolean {
  return COMPACT_JWS.test(token);
}

/** Checks a JWKS for use as a verification key set; the message says what is wrong. */
export function checkKeySet(value: unknown): JSONWebKeySet {
  if (typeof value !== "object" || value === null || !Array.isArray((value as { keys?: unknown }).keys)) {
    throw new Error('must be a JSON Web Key Set: {"keys": [...]}');
  }
  const keys = (value as { keys: unknown[] }).keys;
  if (keys.length === 0) throw new Error("holds no keys");
  keys.forEach((key, i) => {
    if (typeof key !== "object" || key === null || typeof (key as { kty?: unknown }).kty !== "string") throw new Error(`keys[${i}] is not a JSON Web Key (no kty)`);
    const { kty } = key as { kty: string };
    if (kty === "oct") throw new Error(`keys[${i}] is a symmetric (oct) key; give public keys only`);
    if ("d" in key) throw new Error(`keys[${i}] is a private key (it has "d"); give public keys only`);
  });
  return value as JSONWebKeySet;
}

export class JwtVerifier {
  private readonly keys: JWTVerifyGetKey;
  private readonly verified = new Map<string, { principal: Principal; until: number }>();

  constructor(
    private readonly settings: JwtSettings,
    keySet: JSONWebKeySet,
  ) {
    this.keys = createLocalJWKSet(keySet);
  }

  /** @throws ConnectError UNAUTHENTICATED with reason TOKEN_INVALID, TOKEN_EXPIRED or TOKEN_CLAIM_INVALID. */
  async verify(token: string): Promise<Principal> {
    const now = Date.now();
    const known = this.verified.get(token);
    if (known && known.until > now) return known.principal;
    this.verified.delete(token);
    let claims: Record<string, unknown>;
    try {
      ({ payload: claims } = await jwtVerify(token, this.keys, {
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        clockTolerance: this.settings.clockSkewSeconds,
        requiredClaims: ["exp"],
        algorithms: ALGORITHMS,
      }));
    } catch (error) {
      throw refusal(error);
    }
    const outcome = principalFromClaims(claims, this.settings);
    if ("problem" in outcome) throw claimRefusal(outcome.claim, outcome.problem);
    this.remember(token, outcome.principal, Math.min(now + REMEMBER_MS, Number(claims.exp) * 1000));
    return outcome.principal;
  }

  private remember(token: string, principal: Principal, until: number): void {
    if (this.verified.size >= REMEMBERED_TOKENS) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, { principal, until });
  }
}

function claimRefusal(claim: string, problem: string): ConnectError {
  return errorWithDetail(Code.Unauthenticated, `bearer token refused: ${problem}`, { reason: ErrorReason.TOKEN_CLAIM_INVALID, metadata: { claim } });
}

function refusal(error: unknown): ConnectError {
  if (error instanceof errors.JWTExpired) {
    return errorWithDetail(Code.Unauthenticated, "bearer token refused: the JWT has expired; get a fresh one", { reason: ErrorReason.TOKEN_EXPIRED, metadata: { claim: "exp" } });
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "nbf") {
      return errorWithDetail(Code.Unauthenticated, "bearer token refused: the JWT is not valid yet (nbf)", { reason: ErrorReason.TOKEN_EXPIRED, metadata: { claim: "nbf" } });
    }
    return claimRefusal(error.claim, `the JWT's ${JSON.stringify(error.claim)} claim is wrong (${error.reason})`);
  }
  // Malformed, badly signed, no matching key, an algorithm not allowed: the token proves nothing.
  const why = error instanceof errors.JOSEError ? error.code : "unreadable";
  return errorWithDetail(Code.Unauthenticated, "bearer token refused: the JWT does not verify against the server's keys", {
    reason: ErrorReason.TOKEN_INVALID,
    metadata: { cause: why },
  });
}
