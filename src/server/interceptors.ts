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

/** One line a call when it ends: debug normally, warn when the server failed it. */
export function loggingInterceptor(logger: Logger): Interceptor {
  return (next) => async (request) => {
    const started = performance.now();
    const procedure = `${request.service.typeName}/${request.method.name}`;
    const done = (error?: unknown) => {
      const code = error === undefined ? undefined : ConnectError.from(error).code;
      const line = { procedure, code: code === undefined ? "ok" : codeToString(code), duration_ms: Math.round(performance.now() - started) };
      if (code === Code.Internal) logger.warn(line, "call failed");
      else logger.debug(line, "call");
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
