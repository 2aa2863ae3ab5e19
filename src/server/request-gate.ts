/**
 * Connect's request gate, which sees each call's context before its body is
 * read: the call's observation (and the correction of the protocol errors
 * connect-es misreports, see calls.ts), then bearer-token authentication when
 * it is configured.
 */
import type { HandlerContext } from "@connectrpc/connect";
import { AUTHENTICATED, bearerTokenGate } from "./auth.js";
import { watchCall } from "./calls.js";

export function requestGate(authToken: string | undefined): (context: HandlerContext) => void {
  const authenticate = authToken === undefined ? (context: HandlerContext) => context.values.set(AUTHENTICATED, true) : bearerTokenGate(authToken);
  return (context) => {
    watchCall(context);
    authenticate(context);
  };
}
