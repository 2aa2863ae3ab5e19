/**
 * Unary gRPC calls (HTTP/2, binary protobuf) served without Connect's
 * per-call stream pipeline.
 *
 * Why: connect-node's gRPC handler treats a unary call as a stream: the
 * request body and the response pass through half a dozen async generators
 * (split, decompress, parse, invoke, serialize, compress, join, catch), each
 * a few promise hops. On this machine that costs ~310 us of CPU a call (a
 * bare connect-node server answering Health.Check: ~390 us a call; a bare
 * Node HTTP/2 server answering the same bytes: ~80 us), more than most of
 * Mailroom's RPCs themselves cost, and it is paid by every unary call:
 * Enqueue, Claim, Ack, Publish.
 *
 * What stays the same: this path is built from Connect's own parts, with the
 * router's options: the handler context (as createHandlerContext makes it:
 * deadline, shutdown and request signals; see unaryContext), the request gate (authentication, roles,
 * namespace limits, the call record), interceptors and implementation
 * (invokeUnaryImplementation), serialization with the same limits and
 * options (createMethodSerializationLookup), compression negotiation and
 * envelopes (compressionNegotiate, envelopeDecompress, envelopeCompress),
 * grpc-timeout parsing and status trailers. So a call answers exactly what
 * Connect's handler would, errors included, in the same order (gate, then
 * compression and timeout errors, then the body). Only the plumbing between
 * those parts is a straight async function here. Everything else (Connect,
 * gRPC-Web, JSON, HTTP/1.1, streams) goes to Connect's handler.
 */
import type { DescMethodUnary } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type HandlerContext, type MethodImplSpec } from "@connectrpc/connect";
import {
  compressedFlag,
  compressionNegotiate,
  createAsyncIterable,
  createMethodSerializationLookup,
  encodeEnvelope,
  envelopeCompress,
  envelopeDecompress,
  invokeUnaryImplementation,
  type UniversalHandlerOptions,
  type UniversalServerRequest,
  type UniversalServerResponse,
  validateUniversalHandlerOptions,
} from "@connectrpc/connect/protocol";
import { contentTypeProto, grpcStatusOk, parseContentType, parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;

/** A unary call's request body, as the Node adapter reads it. */
export interface UnaryBody {
  /**
   * The whole body, or its first bytes once more than `limit` arrived (the
   * rest is read and dropped); a rejection when the request failed or its
   * client went away.
   */
  read(limit: number): Promise<Uint8Array>;
}

/** Serves one unary method over gRPC with binary messages; `accepts` tells which requests it can take. */
export interface GrpcUnaryHandler {
  accepts(request: { method?: string; httpVersion: string; contentType: string | undefined }): boolean;
  /** `aborting` is the controller of `request.signal` (the Node adapter's, aborted when the client goes): the call's context signal is its signal. */
  serve(request: UniversalServerRequest, aborting: AbortController, body: UnaryBody): Promise<UniversalServerResponse>;
}

/**
 * Connect aborts a finished call's context with nothing, which makes a
 * DOMException (a stack trace) per call that nobody reads; the call record
 * reads any AbortError as success (calls.ts), so one shared error does.
 */
const SUCCEEDED = Object.assign(new Error("the call succeeded"), { name: "AbortError" });

const HEADER = 5;

export function grpcUnaryHandler(spec: UnarySpec, options: Partial<UniversalHandlerOptions>): GrpcUnaryHandler {
  const opt = validateUniversalHandlerOptions(options);
  const method: DescMethodUnary = spec.method;
  const serialization = createMethodSerializationLookup(method, opt.binaryOptions, opt.jsonOptions, opt);
  const input = serialization.getI(true);
  const output = serialization.getO(true);

  /** The request's one message, with the errors (codes and words) Connect's envelope reader and unary invoker give. */
  async function message(body: UnaryBody, decompress: ReturnType<typeof compressionNegotiate>["request"]) {
    const bytes = await body.read(opt.readMaxBytes + HEADER);
    if (bytes.byteLength === 0) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
    if (bytes.byteLength < HEADER) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER);
    const length = view.getUint32(1);
    if (length > opt.readMaxBytes) throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${opt.readMaxBytes}`, Code.ResourceExhausted);
    if (bytes.byteLength - HEADER < length) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    if (bytes.byteLength - HEADER > length) throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
    const { data } = await envelopeDecompress({ flags: view.getUint8(0), data: bytes.subarray(HEADER) }, decompress, opt.readMaxBytes);
    return input.parse(data);
  }

  return {
    accepts: ({ method: httpMethod, httpVersion, contentType }) => httpMethod === "POST" && httpVersion === "2.0" && parseContentType(contentType ?? null)?.binary === true,

    async serve(request, aborting, body) {
      const timeout = parseTimeout(request.header.get("grpc-timeout"), opt.maxTimeoutMs);
      const context = unaryContext(spec, request, aborting, timeout.timeoutMs, opt.shutdownSignal);
      const compression = compressionNegotiate(opt.acceptCompression, request.header.get("grpc-encoding"), request.header.get("grpc-accept-encoding"), "grpc-accept-encoding");
      if (compression.response) context.responseHeader.set("grpc-encoding", compression.response.name);
      let answer: Uint8Array | undefined;
      try {
        // The gate runs before the body is read: a call it refuses is never read.
        if (opt.requestGate) await opt.requestGate(context);
        if (compression.error) throw compression.error;
        if (timeout.error) throw timeout.error;
        const reply = await invokeUnaryImplementation(spec, context, await message(body, compression.request), opt.interceptors);
        const envelope = await envelopeCompress({ flags: 0, data: output.serialize(reply) }, compression.response, opt.compressMinBytes);
        answer = encodeEnvelope(envelope.flags & compressedFlag, envelope.data);
        context.abort(SUCCEEDED);
      } catch (error) {
        // As Connect's handler: the context learns the error first (the call record corrects and keeps it), then the trailers say it.
        context.abort(error);
        setTrailerStatus(context.responseTrailer, error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error));
      }
      return { status: 200, header: context.responseHeader, body: answer === undefined ? undefined : createAsyncIterable([answer]), trailer: context.responseTrailer };
    },
  };
}

/**
 * What createHandlerContext makes, for one unary call, without its copies:
 * the call's own abort controller is the context's (createHandlerContext
 * links a new one to it, and to a deadline controller made even without a
 * deadline), the request headers are the call's own (made for it), and the
 * shutdown signal and the deadline are linked only when there are ones.
 * The context ends as Connect's does: aborted with the reason of whichever
 * came first (the client went away, the server shuts down, the deadline
 * passed: DEADLINE_EXCEEDED), or by the handler when the call is over, which
 * unlinks everything.
 */
function unaryContext(spec: UnarySpec, request: UniversalServerRequest, aborting: AbortController, timeoutMs: number | undefined, shutdown: AbortSignal | undefined): HandlerContext & { abort(reason?: unknown): void } {
  let timer: NodeJS.Timeout | undefined;
  const onShutdown = () => aborting.abort(shutdown?.reason);
  const abort = (reason?: unknown) => {
    clearTimeout(timer);
    shutdown?.removeEventListener("abort", onShutdown);
    aborting.abort(reason);
  };
  if (shutdown?.aborted) onShutdown();
  else shutdown?.addEventListener("abort", onShutdown, { once: true });
  let deadline: number | undefined;
  if (timeoutMs !== undefined) {
    deadline = Date.now() + timeoutMs;
    const expire = () => abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    if (timeoutMs <= 0) expire();
    else timer = setTimeout(expire, timeoutMs);
  }
  return {
    method: spec.method,
    service: spec.method.parent,
    requestMethod: request.method,
    protocolName: "grpc",
    url: request.url,
    signal: aborting.signal,
    timeoutMs: () => (deadline === undefined ? undefined : deadline - Date.now()),
    requestHeader: request.header,
    responseHeader: new Headers({ "content-type": contentTypeProto }),
    responseTrailer: new Headers({ "grpc-status": grpcStatusOk }),
    values: request.contextValues ?? createContextValues(),
    abort,
  };
}
