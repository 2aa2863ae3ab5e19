/**
 * Connect's request gate, which sees each call's context before its body is
 * read. In order: who is calling (UNAUTHENTICATED), may it call this RPC
 * (PERMISSION_DENIED naming the missing role), is its namespace within its
 * request rate and stream limits (RESOURCE_EXHAUSTED); then the principal
 * goes into the context for the handlers. A refused call is never read.
 *
 * Before all that, the call is watched (calls.ts): the one abort listener
 * through which its outcome reaches the call log and the metrics, which also
 * corrects the protocol errors connect-es misreports.
 */
import { Code, type HandlerContext } from "@connectrpc/connect";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import type { Principal } from "../domain/auth/principal.js";
import { METRICS_ROLE, missingRole, type Requirement, requiredRole, type Role } from "../domain/auth/roles.js";
import type { Authenticator } from "./auth.js";
import { watchCall } from "./calls.js";
import { errorWithDetail } from "./errors.js";
import type { NamespaceLimiter } from "./namespace-limits.js";
import { principalKey } from "./principal.js";
import type { StreamCredentials } from "./stream-credentials.js";

const ROLE_REASONS: Record<Role, ErrorReason> = {
  producer: ErrorReason.PRODUCER_ROLE_REQUIRED,
  worker: ErrorReason.WORKER_ROLE_REQUIRED,
  agent: ErrorReason.AGENT_ROLE_REQUIRED,
  observer: ErrorReason.OBSERVER_ROLE_REQUIRED,
  admin: ErrorReason.ADMIN_ROLE_REQUIRED,
};

/** @throws ConnectError PERMISSION_DENIED when the principal lacks the role (its reason names the role). */
export function authorize(principal: Principal, required: Requirement, what: string): void {
  const missing = missingRole(principal.roles, required);
  if (missing === undefined) return;
  const held = principal.roles.size === 0 ? "no roles" : `roles ${[...principal.roles].join(", ")}`;
  throw errorWithDetail(Code.PermissionDenied, `${what} needs the ${missing} role; ${principal.name} has ${held} in namespace ${JSON.stringify(principal.namespace)}`, {
    reason: ROLE_REASONS[missing],
    metadata: { role: missing, procedure: what },
  });
}

export interface GateDeps {
  auth: Authenticator;
  limiter: NamespaceLimiter;
  streams: StreamCredentials;
}

export function requestGate({ auth, limiter, streams }: GateDeps): (context: HandlerContext) => Promise<void> {
  return async (context) => {
    watchCall(context);
    const procedure = `${context.service.typeName}/${context.method.name}`;
    const required = requiredRole(procedure);
    const authorization = context.requestHeader.get("authorization");
    const principal = required === "none" ? await auth.identify(authorization) : await auth.authenticate(authorization);
    if (principal) {
      authorize(principal, required, procedure);
      const limits = auth.limitsOf(principal.namespace);
      if (required !== "none") limiter.takeRequest(principal.namespace, limits.requestsPerSecond);
      if (context.method.methodKind !== "unary") {
        limiter.openStream(principal.namespace, limits.maxOpenStreams, context.signal);
        if (auth.required) streams.track(context, principal);
      }
      context.values.set(principalKey, principal);
    } else if (context.method.methodKind !== "unary") {
      limiter.openStream(undefined, undefined, context.signal);
    }
  };
}

/** `GET /metrics`: 401 without valid credentials, 403 without the observer role. */
export function scrapeAccess(auth: Authenticator): (authorization: string | undefined) => Promise<200 | 401 | 403> {
  return async (authorization) => {
    const principal = await auth.authenticate(authorization).catch(() => undefined);
    if (!principal) return 401;
    return missingRole(principal.roles, METRICS_ROLE) === undefined ? 200 : 403;
  };
}
