/**
 * A PoolService client from an independent gRPC implementation:
 * @grpc/grpc-js with the service loaded at run time from proto/ by
 * @grpc/proto-loader (field names as in the .proto, enums as names, 64-bit
 * integers as strings, oneofs named by a `*_case`-like virtual field), as a
 * client generated in another language sees it. A refusal carries its gRPC
 * status code and the reason of the Mailroom ErrorDetail inside
 * `grpc-status-details-bin`.
 */
import * as grpc from "@grpc/grpc-js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { errorDetailsOf, loadGrpcJsService } from "./grpc-js-mailbox.js";
import { grpcJsClientOptions } from "./e2e-auth.js";

const service = loadGrpcJsService("mailroom/v1/pool_service.proto", "mailroom.v1.PoolService");

export interface GrpcJsPoolRefusal {
  /** The gRPC status number, e.g. 9 for FAILED_PRECONDITION. */
  code: number;
  /** The ErrorDetail reasons, by name (e.g. "RUN_NOT_MEMBER"). */
  reasons: string[];
}

/** The ErrorDetail reasons in a google.rpc.Status, by name. */
function reasonsIn(status: Buffer): string[] {
  return errorDetailsOf(status).map((detail) => ErrorReason[detail.reason]);
}

export interface GrpcJsPools {
  /** A unary call by its method name in the .proto, e.g. "Send"; rejects with a GrpcJsPoolRefusal. */
  call<Reply>(method: string, request: object): Promise<Reply>;
  close(): void;
}

/** `target` is host:port (cleartext). */
export function grpcJsPools(target: string): GrpcJsPools {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), grpcJsClientOptions());
  const call = <Reply>(name: string, request: object) =>
    new Promise<Reply>((resolve, reject) => {
      const method = service[name] as grpc.MethodDefinition<object, Reply>;
      client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, (error, reply) => {
        if (!error) return resolve(reply!);
        const status = error.metadata?.get("grpc-status-details-bin")[0];
        reject({ code: error.code, reasons: Buffer.isBuffer(status) ? reasonsIn(status) : [] } satisfies GrpcJsPoolRefusal);
      });
    });
  return { call, close: () => client.close() };
}
