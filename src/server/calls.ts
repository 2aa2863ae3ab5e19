/**
 * Every call, observed from start to end with the code its client received,
 * for the call log and the metrics.
 *
 * Interceptors cannot do this: Connect parses a unary request before
 * interceptors run, so a body that does not decode never reaches one, and a
 * stream's interceptor sees a malformed body's error before it is corrected.
 * So the Node adapter opens a CallRecord for each request it routes and ends
 * it when the response is done (finished, or closed before that), and the
 * request gate, which sees every call's context before its body is read,
 * registers the one abort listener through which the call's outcome arrives:
 * each protocol handler aborts the context with the call's error before it
 * writes that error to the wire (and with nothing when the call succeeded).
 */
import { Code, ConnectError, createContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import { codeFromHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import type { Principal } from "../domain/auth/principal.js";
import type { Logger } from "../log.js";
import { decodeFailure } from "./decode-errors.js";
import { isServerFault } from "./errors.js";
import { principalKey } from "./principal.js";

export interface CallStart {
  /** `package.Service/Method`: bounded, never an id. */
  procedure: string;
  /** A server stream (as opposed to a unary call). */
  stream: boolean;
}

export interface CallEnd {
  /** The code the client received, as gRPC names it in lower case ("ok", "not_found"); "canceled" when it received none. */
  code: string;
  /** Undefined when the call succeeded. */
  failure: Code | undefined;
  /** An INTERNAL error that is the server's fault (a bug), not a protocol violation by the client. */
  serverFault: boolean;
  seconds: number;
  /** Who called, when the request gate identified the caller (undefined: no credentials, or refused before). */
  principal: Principal | undefined;
}

/** Told when a call starts; the function it returns is called once, when the call has ended. */
export type CallObserver = (call: CallStart) => (end: CallEnd) => void;

/** The call's record, in the context values of every call the Node adapter routes. */
export const CALL = createContextKey<CallRecord | undefined>(undefined, { description: "mailroom call record" });

export class CallRecord {
  private readonly started = performance.now();
  private readonly ends: Array<(end: CallEnd) => void>;
  /** The call context's values, once the request gate saw the context. */
  private values: ContextValues | undefined;
  /** What the context was aborted with: the call's error, or nothing (an AbortError) when it succeeded. */
  private reason: unknown;
  private ended = false;

  constructor(call: CallStart, observers: readonly CallObserver[]) {
    this.ends = observers.map((observe) => observe(call));
  }

  /** What the call's context was aborted with (see watchCall). */
  settle(reason: unknown): void {
    this.reason = reason;
  }

  /** The request gate saw the call's context: its outcome will arrive through `settle`. */
  watching(values: ContextValues): void {
    this.values = values;
  }

  /**
   * The response is done: `completed` when it was written to the end (the
   * client received the status), `httpStatus` for a request refused before
   * any call context existed (unsupported media type, method not allowed).
   */
  end(completed: boolean, httpStatus: number): void {
    if (this.ended) return;
    this.ended = true;
    const end = outcome(this.values !== undefined, this.reason, completed, httpStatus);
    const seconds = (performance.now() - this.started) / 1000;
    const principal = this.values?.get(principalKey);
    for (const observe of this.ends) observe({ ...end, seconds, principal });
  }
}

function outcome(watched: boolean, reason: unknown, completed: boolean, httpStatus: number): Omit<CallEnd, "seconds" | "principal"> {
  if (!completed) return failed(Code.Canceled, false);
  if (!watched) return httpStatus === 200 ? ok : failed(codeFromHttpStatus(httpStatus), false);
  if (reason instanceof ConnectError) return failed(reason.code, isServerFault(reason));
  if (reason === undefined || (reason instanceof Error && reason.name === "AbortError")) return ok;
  // Connect answers anything else INTERNAL ("internal error").
  return failed(Code.Internal, true);
}

const ok: Omit<CallEnd, "seconds" | "principal"> = { code: "ok", failure: undefined, serverFault: false };

function failed(code: Code, serverFault: boolean): Omit<CallEnd, "seconds" | "principal"> {
  return { code: codeToString(code), failure: code, serverFault };
}

/**
 * Called by the request gate for every call: one abort listener corrects the
 * protocol errors Connect misreports, then hands the outcome to the call's
 * record (when the Node adapter opened one).
 */
export function watchCall(context: HandlerContext): void {
  const record = context.values.get(CALL);
  record?.watching(context.values);
  context.signal.addEventListener(
    "abort",
    () => {
      const reason = correctProtocolError(context.signal.reason, context);
      record?.settle(reason);
    },
    { once: true },
  );
}

const COMPRESSED_WITHOUT_ENCODING = "received compressed envelope, but do not know how to decompress";

/**
 * connect-es (2.2) misreports some client errors, and every protocol handler
 * aborts the call's context with the error before it writes the error to the
 * wire, so an abort listener corrects the error in place first
 * (test/e2e/protocol.test.ts and test/e2e/strict-json.test.ts pin this for
 * every protocol; if a connect-es upgrade changes the order, they fail):
 *
 * - a request body that does not decode: INVALID_ARGUMENT naming the field
 *   where it can (decode-errors.ts);
 * - a message flagged compressed in a request that names no encoding is
 *   INTERNAL with a message that does not say so. INTERNAL is right: grpc-go
 *   ("compressed flag set with identity or empty encoding") and connect-go
 *   ("protocol error: sent compressed message without compression support")
 *   answer it, and gRPC's status code table gives INTERNAL to a message the
 *   server cannot decompress. Only the message is made to say what is wrong.
 */
function correctProtocolError(reason: unknown, context: HandlerContext): unknown {
  if (!(reason instanceof ConnectError)) return reason;
  const mutable = reason as { code: Code; rawMessage: string; message: string; details: ConnectError["details"] };
  const corrected = decodeFailure(reason, context.method.input);
  if (corrected) {
    mutable.code = corrected.code;
    mutable.rawMessage = corrected.rawMessage;
    mutable.message = corrected.message;
    mutable.details = corrected.details;
  } else if (reason.code === Code.Internal && reason.rawMessage === COMPRESSED_WITHOUT_ENCODING) {
    const header = context.protocolName === "connect" ? "connect-content-encoding" : "grpc-encoding";
    mutable.rawMessage = `protocol error: a message has the compressed flag set, but the request names no encoding (${header})`;
    mutable.message = `[internal] ${mutable.rawMessage}`;
  }
  return reason;
}

/** One line a call when it ends: debug normally, warn when the server failed it (a bug; its error was logged with a reference). */
export function callLog(logger: Logger): CallObserver {
  return ({ procedure }) =>
    ({ code, serverFault, seconds }) => {
      const line = { procedure, code, duration_ms: Math.round(seconds * 1000) };
      if (serverFault) logger.warn(line, "call failed");
      else logger.debug(line, "call");
    };
}
