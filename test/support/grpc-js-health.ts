/**
 * A Health client from an independent gRPC implementation: @grpc/grpc-js with
 * the service loaded at run time from proto/ by @grpc/proto-loader, as any
 * other language's generated client would see the contract.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { join } from "node:path";
import { repoRoot } from "./server-process.js";

export interface HealthReply {
  /** The enum value's name, e.g. "SERVING". */
  status: string;
}

export interface GrpcJsHealth {
  check(service: string, metadata?: grpc.Metadata): Promise<HealthReply>;
  /** The stream of replies; errors carry `code` (a gRPC status number) and `details`. */
  watch(service: string): grpc.ClientReadableStream<HealthReply>;
  close(): void;
}

const definition = protoLoader.loadSync("grpc/health/v1/health.proto", {
  includeDirs: [join(repoRoot, "proto")],
  enums: String,
  defaults: true,
});

function method(name: "Check" | "Watch"): grpc.MethodDefinition<{ service: string }, HealthReply> {
  const service = definition["grpc.health.v1.Health"];
  if (!service || !("Check" in service)) throw new Error("grpc.health.v1.Health not found in proto/");
  return (service as grpc.ServiceDefinition)[name] as grpc.MethodDefinition<{ service: string }, HealthReply>;
}

/** `target` is host:port; `ca` switches to TLS trusting that certificate authority. */
export function grpcJsHealth(target: string, options: { ca?: Buffer } = {}): GrpcJsHealth {
  const credentials = options.ca ? grpc.credentials.createSsl(options.ca) : grpc.credentials.createInsecure();
  const client = new grpc.Client(target, credentials);
  const check = method("Check");
  const watch = method("Watch");
  return {
    check: (service, metadata = new grpc.Metadata()) =>
      new Promise((resolve, reject) => {
        client.makeUnaryRequest(check.path, check.requestSerialize, check.responseDeserialize, { service }, metadata, (error, reply) =>
          error || !reply ? reject(error ?? new Error("no reply")) : resolve(reply),
        );
      }),
    watch: (service) => client.makeServerStreamRequest(watch.path, watch.requestSerialize, watch.responseDeserialize, { service }),
    close: () => client.close(),
  };
}
