/**
 * A PoolService client from an independent gRPC implementation:
 * @grpc/grpc-js with the service loaded at run time from proto/ by
 * @grpc/proto-loader (field names as in the .proto, enums as names, 64-bit
 * integers as strings, oneofs named by a `*_case`-like virtual field), as a
 * client generated in another language sees it. A refusal carries its gRPC
 * status code and the reason of the Mailroom ErrorDetail inside
 * `grpc-status-details-bin`.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { AnySchema, anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { join } from "node:path";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { repoRoot } from "./server-process.js";

const service = protoLoader.loadSync("mailroom/v1/pool_service.proto", {
  includeDirs: [join(repoRoot, "proto")],
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
})["mailroom.v1.PoolService"] as grpc.ServiceDefinition;

export interface GrpcJsPoolRefusal {
  /** The gRPC status number, e.g. 9 for FAILED_PRECONDITION. */
  code: number;
  /** The ErrorDetail reasons, by name (e.g. "RUN_NOT_MEMBER"). */
  reasons: string[];
}

/** The ErrorDetail reasons in a google.rpc.Status (its field 3 holds the Any details). */
function reasonsIn(status: Buffer): string[] {
  const reasons: string[] = [];
  for (const reader = new BinaryReader(status); reader.pos < reader.len; ) {
    const [field, wireType] = reader.tag();
    const detail = field === 3 ? anyUnpack(fromBinary(AnySchema, reader.bytes()), ErrorDetailSchema) : (reader.skip(wireType), undefined);
    if (detail) reasons.push(ErrorReason[detail.reason]);
  }
  return reasons;
}

export interface GrpcJsPools {
  /** A unary call by its method name in the .proto, e.g. "Send"; rejects with a GrpcJsPoolRefusal. */
  call<Reply>(method: string, request: object): Promise<Reply>;
  close(): void;
}

/** `target` is host:port (cleartext). */
export function grpcJsPools(target: string): GrpcJsPools {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
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
