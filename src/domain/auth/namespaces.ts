/**
 * Namespaces: one team's share of a Mailroom. The namespace of a call comes
 * from its credential, never from the request.
 */

/** The namespace of `--auth-token`'s principal and of callers when authentication is off. */
export const DEFAULT_NAMESPACE = "default";

/** 1 to 63 letters, digits, `.`, `_` or `-`, starting with a letter or digit: safe in ids, logs and metric labels. */
const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export const NAMESPACE_RULE = "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit";

export function isNamespace(value: unknown): value is string {
  return typeof value === "string" && NAMESPACE.test(value);
}
