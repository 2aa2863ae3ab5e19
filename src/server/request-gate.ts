/**
 * Connect's request gate, which sees each call's context before its body is
 * read: bearer-token authentication (when configured) and the correction of
 * decode failures (see decode-errors.ts).
 *
 * Every protocol handler aborts the call's context with the error before it
 * writes the error to the wire, so an abort listener can correct it first.
 * test/e2e/protocol.test.ts and test/e2e/strict-json.test.ts pin this for
 * gRPC, gRPC-Web and Connect; if a connect-es upgrade changes the order, they
 * fail.
 */
import { ConnectError, type HandlerContext } from "@connectrpc/connect";
import { bearerTokenGate } from "./auth.js";
import { decodeFailure } from "./decode-errors.js";

function correctDecodeFailures(context: HandlerContext): void {
  context.signal.addEventListener(
    "abort",
    () => {
      const reason: unknown = context.signal.reason;
      const corrected = decodeFailure(reason, context.method.input);
      if (!corrected || !(reason instanceof ConnectError)) return;
      const mutable = reason as { code: ConnectError["code"]; rawMessage: string; message: string; details: ConnectError["details"] };
      mutable.code = corrected.code;
      mutable.rawMessage = corrected.rawMessage;
      mutable.message = corrected.message;
      mutable.details = corrected.details;
    },
    { once: true },
  );
}

export function requestGate(authToken: string | undefined): (context: HandlerContext) => void {
  const authenticate = authToken === undefined ? undefined : bearerTokenGate(authToken);
  return (context) => {
    correctDecodeFailures(context);
    authenticate?.(context);
  };
}
