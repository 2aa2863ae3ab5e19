/**
 * gRPC server reflection (grpc.reflection.v1, and v1alpha for older clients),
 * answered from the descriptors compiled into gen/: grpcurl, `buf curl` and
 * gRPC UIs discover the services and their messages without the proto files.
 *
 * It is registered like every other service, so with `--auth-token` it needs
 * the token too (only Health is open).
 */
import { create, type DescFile, type DescMessage, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** What one reflection request is answered with, the same in both versions of the protocol. */
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: Array<{ name: string }> } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** The request oneof, the same in both versions of the protocol. */
type Question =
  | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: undefined; value?: undefined };

// google.rpc.Code values, as the reflection protocol carries them in ErrorResponse.
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;

/** Every file the served services need, by file name and by the symbols they declare. */
export class DescriptorIndex {
  private readonly services: string[];
  private readonly files = new Map<string, DescFile>();
  private readonly bySymbol = new Map<string, DescFile>();
  private readonly messages = new Map<string, DescMessage>();
  private readonly encoded = new Map<string, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.services = services.map((service) => service.typeName);
    for (const service of services) this.addFile(service.file);
  }

  answer(question: Question): Answer {
    switch (question.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.services.map((name) => ({ name })) } };
      case "fileByFilename":
        return this.fileAnswer(this.files.get(question.value), `file ${question.value}`);
      case "fileContainingSymbol":
        return this.fileAnswer(this.bySymbol.get(question.value), `symbol ${question.value}`);
      case "fileContainingExtension":
        // The contract declares no extensions.
        return notFound(`extension ${question.value.extensionNumber} of ${question.value.containingType}`);
      case "allExtensionNumbersOfType":
        if (!this.messages.has(question.value)) return notFound(`message type ${question.value}`);
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: question.value, extensionNumber: [] } };
      default:
        return { case: "errorResponse", value: { errorCode: INVALID_ARGUMENT, errorMessage: "the request names no question (message_request is empty)" } };
    }
  }

  /** The file and every file it imports, directly or not, imports first. */
  private fileAnswer(file: DescFile | undefined, what: string): Answer {
    if (!file) return notFound(what);
    const ordered: DescFile[] = [];
    const visit = (f: DescFile) => {
      if (ordered.includes(f)) return;
      f.dependencies.forEach(visit);
      ordered.push(f);
    };
    visit(file);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: ordered.map((f) => this.encode(f)) } };
  }

  private encode(file: DescFile): Uint8Array {
    let bytes = this.encoded.get(file.name);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.encoded.set(file.name, bytes);
    }
    return bytes;
  }

  private addFile(file: DescFile): void {
    if (this.files.has(file.proto.name)) return;
    this.files.set(file.proto.name, file);
    for (const dependency of file.dependencies) this.addFile(dependency);
    for (const service of file.services) {
      this.bySymbol.set(service.typeName, file);
      for (const method of service.methods) this.bySymbol.set(`${service.typeName}.${method.name}`, file);
    }
    for (const enumeration of file.enums) this.bySymbol.set(enumeration.typeName, file);
    for (const extension of file.extensions) this.bySymbol.set(extension.typeName, file);
    const addMessage = (message: DescMessage) => {
      this.bySymbol.set(message.typeName, file);
      this.messages.set(message.typeName, message);
      for (const enumeration of message.nestedEnums) this.bySymbol.set(enumeration.typeName, file);
      for (const extension of message.nestedExtensions) this.bySymbol.set(extension.typeName, file);
      message.nestedMessages.forEach(addMessage);
    };
    file.messages.forEach(addMessage);
  }
}

function notFound(what: string): Answer {
  return { case: "errorResponse", value: { errorCode: NOT_FOUND, errorMessage: `${what} not found` } };
}

/** Answers each request of the stream in turn; `respond` builds the version's response message. */
function answerEach<Request extends { host: string; messageRequest: Question }, Response>(
  index: DescriptorIndex,
  respond: (request: Request, answer: Answer) => Response,
): (requests: AsyncIterable<Request>) => AsyncIterable<Response> {
  return async function* (requests) {
    for await (const request of requests) yield respond(request, index.answer(request.messageRequest));
  };
}

export function reflectionV1(index: DescriptorIndex): ServiceImpl<typeof v1.ServerReflection> {
  return {
    serverReflectionInfo: answerEach(index, (request: v1.ServerReflectionRequest, answer) =>
      create(v1.ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse: answer }),
    ),
  };
}

export function reflectionV1alpha(index: DescriptorIndex): ServiceImpl<typeof v1alpha.ServerReflection> {
  return {
    serverReflectionInfo: answerEach(index, (request: v1alpha.ServerReflectionRequest, answer) =>
      create(v1alpha.ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse: answer }),
    ),
  };
}

/** The reflection services themselves are listed too, as other servers do. */
export const reflectionServices: readonly DescService[] = [v1.ServerReflection, v1alpha.ServerReflection];
