/**
 * The interceptor around every handler: whatever a handler throws becomes a
 * client-safe ConnectError (errors.ts). For a server stream it covers the
 * stream's opening; what a stream throws once it runs is mapped by
 * ServerStreams, which serves every stream without a layer per message.
 * Calls are logged and counted by the Node adapter (calls.ts), which also
 * sees the calls that fail before an interceptor runs.
 */
import type { Interceptor } from "@connectrpc/connect";
import type { Logger } from "../log.js";
import { toConnectError } from "./errors.js";

export function errorMappingInterceptor(logger: Logger): Interceptor {
  return (next) => async (request) => {
    try {
      return await next(request);
    } catch (error) {
      throw toConnectError(error, logger);
    }
  };
}
