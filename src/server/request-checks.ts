/**
 * Checks every request of a service gets before its handler sees it, for
 * rules that hold across all messages rather than per field: each enum field
 * holds a value its enum defines. (Unknown fields never get this far: binary
 * requests are read without them and JSON requests with them are refused,
 * see server.ts.)
 */
import type { DescMessage, DescService, Message } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { requireDefinedEnums } from "../domain/enum-values.js";

type Unary = (request: Message, context: HandlerContext) => Promise<unknown>;
type ServerStreaming = (request: Message, context: HandlerContext) => AsyncIterable<unknown>;

function checked(input: DescMessage, handler: Unary): Unary;
function checked(input: DescMessage, handler: ServerStreaming, streaming: true): ServerStreaming;
function checked(input: DescMessage, handler: Unary | ServerStreaming, streaming = false): Unary | ServerStreaming {
  if (streaming) {
    // No generator around the handler's stream: its messages after the first go past Connect's pipeline (streams.ts).
    return (request, context) => {
      requireDefinedEnums(input, request);
      return (handler as ServerStreaming)(request, context);
    };
  }
  return async (request, context) => {
    requireDefinedEnums(input, request);
    return (handler as Unary)(request, context);
  };
}

/** The same implementation, every method checking its request first. */
export function withRequestChecks<S extends DescService>(service: S, impl: ServiceImpl<S>): ServiceImpl<S> {
  const handlers = impl as unknown as Record<string, Unary | ServerStreaming>;
  const wrapped: Record<string, Unary | ServerStreaming> = {};
  for (const method of service.methods) {
    const handler = handlers[method.localName];
    if (handler === undefined) continue;
    wrapped[method.localName] = method.methodKind === "server_streaming"
      ? checked(method.input, handler as ServerStreaming, true)
      : checked(method.input, handler as Unary);
  }
  return wrapped as unknown as ServiceImpl<S>;
}
