/**
 * Who is calling: the principal a credential names, and how a verified JWT's
 * claims name one.
 */
import { isNamespace, NAMESPACE_RULE } from "./namespaces.js";
import { isRole, type Role } from "./roles.js";

export interface Principal {
  /** For logs: the auth file's name, `jwt:<sub>`, `auth-token` or `anonymous`. */
  name: string;
  namespace: string;
  roles: ReadonlySet<Role>;
  /** When the credential stops being valid (a JWT's exp, epoch ms); never when absent. */
  expiresAt?: number;
}

/** Whether two principals grant the same: a stream admitted for one may go on under the other. */
export function grantsSame(a: Principal, b: Principal): boolean {
  return a.name === b.name && a.namespace === b.namespace && a.roles.size === b.roles.size && [...a.roles].every((role) => b.roles.has(role));
}

export interface ClaimNames {
  namespaceClaim: string;
  rolesClaim: string;
}

export type ClaimsOutcome = { principal: Principal } | { claim: string; problem: string };

/**
 * The principal of a verified token's claims. The namespace claim must be a
 * namespace; the roles claim an array of strings, of which those that are not
 * Mailroom roles are ignored (an identity provider's token often carries
 * roles for other services too).
 */
export function principalFromClaims(claims: Readonly<Record<string, unknown>>, names: ClaimNames): ClaimsOutcome {
  const namespace = claims[names.namespaceClaim];
  if (namespace === undefined) return { claim: names.namespaceClaim, problem: `the token has no ${JSON.stringify(names.namespaceClaim)} claim (the namespace)` };
  if (!isNamespace(namespace)) return { claim: names.namespaceClaim, problem: `the ${JSON.stringify(names.namespaceClaim)} claim must be a namespace: ${NAMESPACE_RULE}` };
  const roles = claims[names.rolesClaim];
  if (!Array.isArray(roles) || !roles.every((role) => typeof role === "string")) {
    return { claim: names.rolesClaim, problem: `the ${JSON.stringify(names.rolesClaim)} claim must be an array of role names` };
  }
  const subject = typeof claims.sub === "string" && claims.sub !== "" ? claims.sub : "(no sub)";
  const expiresAt = typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  return { principal: { name: `jwt:${subject}`, namespace, roles: new Set(roles.filter(isRole)), ...(expiresAt === undefined ? {} : { expiresAt }) } };
}
