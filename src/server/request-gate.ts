/**
 * Connect's request gate, which sees each call's context before its body is
 * read: bearer-token authentication (when configured) and one correction.
 *
 * The correction: connect-es (2.2) reports a request body whose protobuf bytes
 * do not decode as INTERNAL ("parse binary: ..."), because its binary
 * serialization is shared with the client side and hard-codes that code. A
 * malformed request is the caller's error, INVALID_ARGUMENT, as connect-go and
 * grpc-go report it. Every protocol handler aborts the call's context with the
 * error before it writes the error's code to the wire, so an abort listener
 * can correct the code first. test/e2e/protocol.test.ts pins this for gRPC,
 * gRPC-Web and Connect; if a connect-es upgrade changes the order, it fails.
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { bearerTokenGate } from "./auth.js";

const PARSE_FAILURE = "parse binary:";

function correctParseFailures(context: HandlerContext): void {
  context.signal.addEventListener(
    "abort",
    () => {
      const reason: unknown = context.signal.reason;
      if (reason instanceof ConnectError && reason.code === Code.Internal && reason.rawMessage.startsWith(PARSE_FAILURE)) {
        const mutable = reason as { code: Code; rawMessage: string };
        mutable.code = Code.InvalidArgument;
        mutable.rawMessage = `the request body is not a valid ${context.method.input.typeName} message (${reason.rawMessage})`;
      }
    },
    { once: true },
  );
}

export function requestGate(authToken: string | undefined): (context: HandlerContext) => void {
  const authenticate = authToken === undefined ? undefined : bearerTokenGate(authToken);
  return (context) => {
    correctParseFailures(context);
    authenticate?.(context);
  };
}
