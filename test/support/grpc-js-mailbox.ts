/**
 * A MailboxService client from an independent gRPC implementation:
 * @grpc/grpc-js with the service loaded at run time from proto/ by
 * @grpc/proto-loader (field names as in the .proto, enums as names, 64-bit
 * integers as strings), as a client generated in another language sees it.
 * Errors carry the gRPC status code and the Mailroom ErrorDetails decoded
 * from `grpc-status-details-bin` (a google.rpc.Status), as such a client
 * would decode them.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { AnySchema, anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { join } from "node:path";
import { type ErrorDetail, ErrorDetailSchema } from "../../gen/mailroom/v1/errors_pb.js";
import { repoRoot } from "./server-process.js";
import { grpcJsClientOptions } from "./e2e-auth.js";

/** A Mailroom service loaded from proto/, decoded as a client generated in another language would. */
export function loadGrpcJsService(file: string, name: string): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [join(repoRoot, "proto")],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  return definition[name] as grpc.ServiceDefinition;
}

const service = loadGrpcJsService("mailroom/v1/mailbox_service.proto", "mailroom.v1.MailboxService");

export interface GrpcJsFailure {
  /** The gRPC status number, e.g. 3 for INVALID_ARGUMENT. */
  code: number;
  details: string;
  errorDetails: ErrorDetail[];
}

/** google.rpc.Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; } */
export function errorDetailsOf(status: Uint8Array): ErrorDetail[] {
  const reader = new BinaryReader(status);
  const found: ErrorDetail[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field !== 3) {
      reader.skip(wireType);
      continue;
    }
    const detail = anyUnpack(fromBinary(AnySchema, reader.bytes()), ErrorDetailSchema);
    if (detail) found.push(detail);
  }
  return found;
}

export interface GrpcJsMailbox {
  /** A unary call by its method name in the .proto, e.g. "Enqueue"; rejects with a GrpcJsFailure. */
  call<Reply>(method: string, request: object): Promise<Reply>;
  close(): void;
}

/** `target` is host:port (cleartext). */
export function grpcJsMailbox(target: string): GrpcJsMailbox {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), grpcJsClientOptions());
  return {
    call: <Reply>(name: string, request: object) => {
      const method = service[name] as grpc.MethodDefinition<object, Reply> | undefined;
      if (!method) throw new Error(`mailroom.v1.MailboxService has no method ${name}`);
      return new Promise<Reply>((resolve, reject) => {
        client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, (error, reply) => {
          if (error) {
            const raw = error.metadata?.get("grpc-status-details-bin")[0];
            const failure: GrpcJsFailure = { code: error.code, details: error.details, errorDetails: raw instanceof Buffer ? errorDetailsOf(raw) : [] };
            reject(failure);
          } else if (reply === undefined) {
            reject(new Error(`${name}: no reply`));
          } else {
            resolve(reply);
          }
        });
      });
    },
    close: () => client.close(),
  };
}
