/**
 * Interceptors around every handler. Order matters: logging is outermost so it
 * records the code the client actually receives, after error mapping.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "../log.js";
import { toConnectError } from "./errors.js";

/** Turns whatever a handler throws, also mid-stream, into a client-safe ConnectError. */
export function errorMappingInterceptor(logger: Logger): Interceptor {
  return (next) => async (request) => {
    try {
      const response = await next(request);
      if (!response.stream) return response;
      return { ...response, message: mapStreamErrors(response.message, logger) };
    } catch (error) {
      throw toConnectError(error, logger);
    }
  };
}

async function* mapStreamErrors<T>(messages: AsyncIterable<T>, logger: Logger): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    throw toConnectError(error, logger);
  }
}

/** What an observer learns when a call starts, and when it ends. */
export interface CallStart {
  procedure: string;
  stream: boolean;
}

export interface CallEnd {
  /** The code the client receives, as gRPC names it in lower case ("ok", "not_found"). */
  code: string;
  /** Null when the call succeeded. */
  failure: Code | undefined;
  seconds: number;
}

/**
 * Calls `onStart` when a call begins and the function it returns once the
 * call has ended: a unary call when it answers, a server stream when its last
 * frame is sent, it fails, or the client goes away.
 */
export function observeCall(onStart: (call: CallStart) => (end: CallEnd) => void): Interceptor {
  return (next) => async (request) => {
    const started = performance.now();
    const procedure = `${request.service.typeName}/${request.method.name}`;
    const streaming = request.method.methodKind !== "unary";
    const onEnd = onStart({ procedure, stream: streaming });
    const done = (error?: unknown) => {
      const failure = error === undefined ? undefined : ConnectError.from(error).code;
      onEnd({ code: failure === undefined ? "ok" : codeToString(failure), failure, seconds: (performance.now() - started) / 1000 });
    };
    try {
      const response = await next(request);
      if (!response.stream) {
        done();
        return response;
      }
      return { ...response, message: observeEnd(response.message, done) };
    } catch (error) {
      done(error);
      throw error;
    }
  };
}

/** One line a call when it ends: debug normally, warn when the server failed it. */
export function loggingInterceptor(logger: Logger): Interceptor {
  return observeCall(({ procedure }) => ({ code, failure, seconds }) => {
    const line = { procedure, code, duration_ms: Math.round(seconds * 1000) };
    if (failure === Code.Internal) logger.warn(line, "call failed");
    else logger.debug(line, "call");
  });
}

async function* observeEnd<T>(messages: AsyncIterable<T>, done: (error?: unknown) => void): AsyncIterable<T> {
  let error: unknown;
  try {
    yield* messages;
  } catch (thrown) {
    error = thrown;
    throw thrown;
  } finally {
    // Also reached when the client goes away and the stream is returned early.
    done(error);
  }
}
