/**
 * A server-reflection client from an independent gRPC implementation:
 * @grpc/grpc-js speaking grpc.reflection.v1 (or v1alpha), with only the
 * reflection protocol's own proto loaded by @grpc/proto-loader. What it
 * learns (serialized FileDescriptorProtos) becomes a package definition, so
 * calls are made with the server's schema and no Mailroom proto file.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { join } from "node:path";
import { repoRoot } from "./server-process.js";
import { e2eGrpcMetadata } from "./e2e-auth.js";

export type ReflectionVersion = "v1" | "v1alpha";

/** The request oneof, in proto-loader's object form (one of these keys set). */
export type ReflectionQuestion =
  | { listServices: string }
  | { fileContainingSymbol: string }
  | { fileByFilename: string }
  | { allExtensionNumbersOfType: string }
  | { fileContainingExtension: { containingType: string; extensionNumber: number } };

export interface ReflectionAnswer {
  validHost: string;
  originalRequest: Record<string, unknown>;
  messageResponse: "fileDescriptorResponse" | "allExtensionNumbersResponse" | "listServicesResponse" | "errorResponse";
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  allExtensionNumbersResponse?: { baseTypeName: string; extensionNumber: number[] };
  listServicesResponse?: { service: Array<{ name: string }> };
  errorResponse?: { errorCode: number; errorMessage: string };
}

export interface ReflectionSession {
  /** One request on the open stream, and its answer. */
  ask(question: ReflectionQuestion): Promise<ReflectionAnswer>;
  close(): void;
}

export function openReflection(target: string, version: ReflectionVersion, metadata = e2eGrpcMetadata()): ReflectionSession {
  const definition = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, {
    includeDirs: [join(repoRoot, "proto")],
    oneofs: true,
    defaults: true,
  });
  const method = (definition[`grpc.reflection.${version}.ServerReflection`] as grpc.ServiceDefinition).ServerReflectionInfo as grpc.MethodDefinition<
    ReflectionQuestion,
    ReflectionAnswer
  >;
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const call = client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, metadata);
  const waiting: Array<{ resolve: (answer: ReflectionAnswer) => void; reject: (error: Error) => void }> = [];
  call.on("data", (answer: ReflectionAnswer) => waiting.shift()?.resolve(answer));
  call.on("error", (error: Error) => {
    for (const waiter of waiting.splice(0)) waiter.reject(error);
  });
  return {
    ask: (question) =>
      new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        call.write(question);
      }),
    close: () => {
      call.end();
      client.close();
    },
  };
}

/**
 * A FileDescriptorSet (field 1: repeated FileDescriptorProto) made of the
 * serialized files, as proto-loader's loadFileDescriptorSetFromBuffer takes it.
 */
export function fileDescriptorSet(files: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const file of files) parts.push(Buffer.from([0x0a]), varint(file.length), file);
  return Buffer.concat(parts);
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}
