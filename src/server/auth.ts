/**
 * Bearer-token authentication. It runs as Connect's request gate rather than
 * as an interceptor: the gate sees the headers before the body is read, so an
 * unauthenticated caller cannot make the server receive and parse a large
 * message first.
 */
import { Code, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { createHash, timingSafeEqual } from "node:crypto";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { errorWithDetail } from "./errors.js";

/**
 * Whether the call carried the bearer token (every call does when no token is
 * configured): the streams open to anyone (Health.Watch) have a smaller cap
 * for callers without it.
 */
export const AUTHENTICATED = createContextKey(false, { description: "caller presented the bearer token" });

/** Load balancers and orchestrators probe health without credentials. */
const open = new Set([Health.typeName]);

/** Whether an `authorization` header carries the token (constant-time whatever the length). */
export function bearerTokenMatches(token: string): (authorization: string | undefined) => boolean {
  const expected = digest(`Bearer ${token}`);
  return (authorization) => timingSafeEqual(digest(authorization ?? ""), expected);
}

export function bearerTokenGate(token: string): (context: HandlerContext) => void {
  const matches = bearerTokenMatches(token);
  return (context) => {
    if (matches(context.requestHeader.get("authorization") ?? undefined)) {
      context.values.set(AUTHENTICATED, true);
    } else if (!open.has(context.service.typeName)) {
      throw errorWithDetail(Code.Unauthenticated, "missing or wrong bearer token: send the header `authorization: Bearer <token>`", {
        reason: ErrorReason.UNAUTHENTICATED,
      });
    }
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
