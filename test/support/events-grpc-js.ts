/**
 * An EventService client from an independent gRPC implementation:
 * @grpc/grpc-js with the service loaded at run time from proto/ by
 * @grpc/proto-loader (field names as in the .proto, enums as names, 64-bit
 * integers as strings), as a client generated in another language sees it.
 */
import * as grpc from "@grpc/grpc-js";
import { loadGrpcJsService } from "./grpc-js-mailbox.js";
import { grpcJsClientOptions } from "./e2e-auth.js";

const service = loadGrpcJsService("mailroom/v1/event_service.proto", "mailroom.v1.EventService");

/** An EventCursor as proto-loader decodes it; send it back unchanged to resume. */
export interface GrpcJsCursor {
  scope: Record<string, unknown> | null;
  event_seq: string;
}

/** An EventFrame as proto-loader decodes it (only the fields the tests read). */
export interface GrpcJsFrame {
  /** e.g. "EVENT_FRAME_KIND_EVENT". */
  kind: string;
  cursor: GrpcJsCursor | null;
  event: { envelope: { event_id: string; run_id: string } | null } | null;
}

export interface GrpcJsEvents {
  /** A Subscribe call (request fields as in the .proto); `call.cancel()` disconnects. */
  subscribe(request: object): grpc.ClientReadableStream<{ frame: GrpcJsFrame | null }>;
  close(): void;
}

/** `target` is host:port (cleartext). */
export function grpcJsEvents(target: string): GrpcJsEvents {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), grpcJsClientOptions());
  const method = service.Subscribe as grpc.MethodDefinition<object, { frame: GrpcJsFrame | null }>;
  return {
    subscribe: (request) => client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, request),
    close: () => client.close(),
  };
}
