/**
 * Connect's router on Node's `request` event (http and http2 alike), in place
 * of connect-node's connectNodeAdapter, for what that adapter cannot do:
 *
 * - **Streams end when their client goes.** connect-node writes a response
 *   chunk and, when the write is not flushed at once, waits for `drain` or
 *   `error`. A client that stopped reading and then disconnected (or whose
 *   HTTP/2 stream was reset) gets neither: Node emits only `close` for a
 *   stream destroyed with writes pending. The write waited forever, so the
 *   handler never learned that its call had ended and kept its subscription,
 *   its queue and its listeners. Here a write also ends on `close`, and on a
 *   stall: a write waiting longer than `stallTimeoutMs` for the client to
 *   take data ends the stream (an HTTP/2 stream is reset, an HTTP/1.1
 *   connection closed). Either way the handler is told (its iterator is
 *   thrown into), so it releases everything at once.
 * - **Nothing is armed per chunk.** A write that is flushed at once costs one
 *   `write` call: listeners (`drain`) and the stall deadline (on the shared
 *   timer wheel) exist only while a write waits.
 * - **Every call is observed** (calls.ts): the adapter knows when a response
 *   is done and whether it was written to the end.
 */
import http from "node:http";
import http2 from "node:http2";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
  createContextValues,
  createServiceImplSpec,
} from "@connectrpc/connect";
import { createMethodUrl, type UniversalHandler, type UniversalServerRequest, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { type GrpcUnaryHandler, grpcUnaryHandler, type UnaryBody } from "./grpc-unary.js";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { Logger } from "../log.js";
import { TimerWheel, type WheelEntry } from "../engine/timer-wheel.js";
import { CALL, type CallObserver, CallRecord } from "./calls.js";
import type { NodeHandlerFn } from "./listener.js";
import { DIRECT_WRITER, type DirectWriter } from "./streams.js";

type NodeRequest = Parameters<NodeHandlerFn>[0];
type NodeResponse = Parameters<NodeHandlerFn>[1];

export interface NodeAdapterOptions extends ConnectRouterOptions {
  routes: (router: ConnectRouter) => void;
  /** How long one write may wait for the client to take data before the stream is ended. */
  stallTimeoutMs: number;
  /** Serve unary gRPC calls with binary messages past Connect's pipeline (grpc-unary.ts); default true. */
  grpcUnaryFastPath?: boolean;
  /** Told of every call the router serves. */
  observers: readonly CallObserver[];
  logger: Logger;
}

/** Stalled writes are checked on this wheel (stall timeouts are many seconds). */
const stallWheel = new TimerWheel(250);

export function nodeAdapter(options: NodeAdapterOptions): NodeHandlerFn {
  const routerOptions = { ...options, acceptCompression: options.acceptCompression ?? [compressionGzip, compressionBrotli] };
  const router = createConnectRouter(routerOptions);
  const unary = new Map<string, GrpcUnaryHandler>();
  options.routes(options.grpcUnaryFastPath === false ? router : unaryCapturing(router, routerOptions, unary));
  const handlers = new Map<string, UniversalHandler>(router.handlers.map((handler) => [handler.requestPath, handler]));

  return (request, response) => {
    const path = pathOf(request.url);
    const handler = handlers.get(path);
    if (handler === undefined) {
      response.writeHead(404);
      response.end();
      return;
    }
    const procedure = `${handler.service.typeName}/${handler.method.name}`;
    const call = new CallRecord({ procedure, stream: handler.method.methodKind !== "unary" }, options.observers);
    const writer = new ResponseWriter(response, options.stallTimeoutMs, () => {
      options.logger.info({ procedure, stall_timeout_ms: options.stallTimeoutMs }, "ended a stream whose client took no data for the stall timeout");
    });
    const values = createContextValues().set(CALL, call).set(DIRECT_WRITER, writer.direct);
    const fast = unary.get(path);
    const aborting = new AbortController();
    const universal = universalRequest(request, writer, values, aborting);
    const answering =
      fast?.accepts({ method: request.method, httpVersion: request.httpVersion, contentType: request.headers["content-type"] }) === true
        ? fast.serve(universal, aborting, bodyOf(request, universal.signal))
        : handler(universal);
    answering
      .then((answer) => respond(answer, writer))
      .catch((error: unknown) => {
        // Connect turns a handler's failures into responses; this is a failure of the plumbing itself.
        options.logger.error({ error, procedure }, "could not serve a call");
        writer.abandon();
      })
      .finally(() => call.end(writer.finished, response.statusCode));
  };
}

/**
 * The router, also keeping a gRPC fast path (grpc-unary.ts) for every unary
 * method registered with the router's own options (a service registered with
 * options of its own is served by Connect's handler only).
 */
function unaryCapturing(router: ConnectRouter, routerOptions: ConnectRouterOptions, unary: Map<string, GrpcUnaryHandler>): ConnectRouter {
  const capturing: ConnectRouter = {
    get handlers() {
      return router.handlers;
    },
    service(service, implementation, serviceOptions) {
      router.service(service, implementation, serviceOptions);
      if (serviceOptions === undefined) {
        for (const spec of Object.values(createServiceImplSpec(service, implementation).methods)) {
          if (spec.kind === "unary") unary.set(createMethodUrl("/", spec.method), grpcUnaryHandler(spec, routerOptions));
        }
      }
      return capturing;
    },
    rpc(method, implementation, rpcOptions) {
      router.rpc(method, implementation, rpcOptions);
      return capturing;
    },
  };
  return capturing;
}

/** A unary request's body, read on the Node request's events (no async iterator a call). */
function bodyOf(request: NodeRequest, signal: AbortSignal): UnaryBody {
  return {
    read: (limit) =>
      new Promise<Uint8Array>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const done = () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
        const gone = () => reject(signal.reason instanceof Error ? signal.reason : new ConnectError("the client went away", Code.Canceled));
        if (signal.aborted) return gone();
        signal.addEventListener("abort", gone, { once: true });
        request.on("data", (chunk: Buffer) => {
          if (size > limit) return;
          chunks.push(chunk);
          size += chunk.byteLength;
          if (size > limit) done();
        });
        request.once("end", () => {
          signal.removeEventListener("abort", gone);
          done();
        });
      }),
  };
}

/**
 * Connect's view of a Node request. Its signal aborts when the client goes
 * away before the response was written (with CANCELED), or on a request
 * error; a response written to the end aborts nothing (connect-node aborts
 * every call's request signal when its stream closes, with a DOMException,
 * costly to make, that nobody reads).
 */
function universalRequest(request: NodeRequest, writer: ResponseWriter, contextValues: ContextValues, abort: AbortController): UniversalServerRequest {
  const authority = "authority" in request ? request.authority : request.headers.host;
  const encrypted = "encrypted" in request.socket && request.socket.encrypted === true;
  writer.onGone = (reason) => abort.abort(reason);
  request.once("error", (error: Error) => abort.abort(new ConnectError(`the request failed: ${error.message}`, Code.Canceled)));
  return {
    httpVersion: request.httpVersion,
    method: request.method ?? "",
    url: new URL(request.url ?? "", `${encrypted ? "https" : "http"}://${authority ?? "localhost"}`).toString(),
    header: webHeaders(request.headers),
    // A Node request is an async iterable of Buffers, which are Uint8Arrays.
    body: request,
    signal: abort.signal,
    contextValues,
  };
}

function webHeaders(headers: NodeRequest["headers"]): Headers {
  const out = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(":") || value === undefined) continue;
    if (Array.isArray(value)) for (const each of value) out.append(name, each);
    else out.append(name, String(value));
  }
  return out;
}

/** Writes a Connect response to Node's response, telling the handler when the client is gone. */
async function respond(answer: UniversalServerResponse, writer: ResponseWriter): Promise<void> {
  const body = answer.body?.[Symbol.asyncIterator]();
  let writing = false;
  try {
    if (body !== undefined) {
      let chunk = await body.next();
      // Headers go out with the first chunk, so a handler can still set them until it produced one.
      writer.head(answer.status, answer.header);
      for (; chunk.done !== true; chunk = await body.next()) {
        writing = true;
        const pending = writer.write(chunk.value);
        if (pending) await pending;
        writing = false;
      }
    }
    writer.head(answer.status, answer.header);
    await writer.end(answer.trailer);
  } catch (error) {
    if (!writer.gone) throw error;
    // The client is gone (or stalled): the handler learns it here and releases what it holds.
    if (writing) body?.throw?.(error).catch(() => undefined);
  } finally {
    body?.return?.().catch(() => undefined);
  }
}

/** The client went away (or took nothing for the stall timeout) before the response was written. */
class ClientGone extends ConnectError {
  constructor(message: string) {
    super(message, Code.Canceled);
  }
}

class ResponseWriter {
  /** The whole response was handed to the transport. */
  finished = false;
  /** Told once when the client goes away (or stalls) before the response was written. */
  onGone: ((reason: ConnectError) => void) | undefined;
  /** What streams write their messages with, past Connect's pipeline (streams.ts). */
  readonly direct: DirectWriter;
  private closed = false;
  private failure: ClientGone | undefined;
  private blocked: { resolve: () => void; reject: (error: Error) => void } | undefined;
  private readonly stall: WheelEntry;
  private readonly onDrain = () => this.unblock(undefined);
  /** When the write send() waits for began (stallWheel's clock). */
  private waitingSince = 0;
  private readonly onSent = (error?: Error | null) => {
    // A failed write is followed by `close` or `error`, which end the response with the reason.
    if (error) return;
    const blocked = this.blocked;
    this.blocked = undefined;
    blocked?.resolve();
  };

  constructor(
    private readonly response: NodeResponse,
    private readonly stallTimeoutMs: number,
    private readonly onStall: () => void,
  ) {
    this.stall = stallWheel.entry(() => this.stalled());
    const ready = () => this.response.headersSent && this.failure === undefined;
    this.direct = {
      get ready() {
        return ready();
      },
      write: (chunk) => this.write(chunk),
      send: (chunk) => this.send(chunk),
    };
    response.once("close", () => {
      this.closed = true;
      // The error is made only when someone is left to learn of it.
      if (!this.finished) this.fail(new ClientGone("the client went away"));
    });
    // Errors on the response (HTTP/1.1 socket errors) end it like a close.
    response.on("error", (error: Error) => this.fail(new ClientGone(`the response failed: ${error.message}`)));
  }

  /** Whether the response can no longer be written (the client went away, or an error or a stall ended it). */
  get gone(): boolean {
    return this.failure !== undefined;
  }

  head(status: number, header: Headers | undefined): void {
    if (this.failure) throw this.failure;
    if (this.response.headersSent) return;
    try {
      this.response.writeHead(status, nodeHeaders(header));
    } catch (error) {
      // An HTTP/2 stream already destroyed, its `close` not yet emitted.
      this.fail(new ClientGone(`the response can no longer be written: ${error instanceof Error ? error.message : String(error)}`));
      throw this.failure;
    }
  }

  /** Writes a chunk; a promise only when the client must take data first (rejects once it is gone). */
  write(chunk: Uint8Array): Promise<void> | undefined {
    if (this.failure) throw this.failure;
    if (this.response.write(chunk)) return undefined;
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.blocked = { resolve, reject };
      this.response.once("drain", this.onDrain);
      this.waitingSince = stallWheel.now();
      stallWheel.schedule(this.stall, this.waitingSince + this.stallTimeoutMs);
    });
  }

  /**
   * Writes a chunk and resolves once the transport took it (its write
   * callback), not when it was only buffered; rejects once the client is
   * gone. A wait longer than the stall timeout ends the response. The stall
   * deadline is armed by the first wait and left in place between writes
   * (stalled() looks at how long the current one waits), so a stream that
   * writes often moves nothing on the wheel a write.
   */
  send(chunk: Uint8Array): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.blocked = { resolve, reject };
      this.waitingSince = stallWheel.now();
      if (this.stall.slot === undefined) stallWheel.schedule(this.stall, this.waitingSince + this.stallTimeoutMs);
      this.response.write(chunk, this.onSent);
    });
  }

  async end(trailer: Headers | undefined): Promise<void> {
    if (this.failure) throw this.failure;
    if (trailer) this.response.addTrailers(nodeHeaders(trailer));
    await new Promise<void>((resolve, reject) => {
      this.blocked = { resolve, reject };
      this.response.end(() => {
        this.finished = true;
        this.unblock(undefined);
      });
    });
  }

  /** Gives up on the response (the handler failed to produce one). */
  abandon(): void {
    if (this.closed) return;
    if (!this.response.headersSent) {
      this.response.writeHead(500);
      this.response.end();
    } else {
      destroy(this.response);
    }
  }

  private fail(error: ClientGone): void {
    if (this.failure === undefined) {
      this.failure = error;
      if (!this.finished) this.onGone?.(error);
    }
    this.unblock(this.failure);
  }

  private unblock(error: Error | undefined): void {
    stallWheel.cancel(this.stall);
    this.response.off("drain", this.onDrain);
    const blocked = this.blocked;
    this.blocked = undefined;
    if (blocked === undefined) return;
    if (error && !this.finished) blocked.reject(error);
    else blocked.resolve();
  }

  private stalled(): void {
    if (this.blocked === undefined || this.closed) return;
    const due = this.waitingSince + this.stallTimeoutMs;
    if (due > stallWheel.now()) return stallWheel.schedule(this.stall, due);
    this.onStall();
    this.fail(new ClientGone(`the client took no data for ${this.stallTimeoutMs} ms`));
    destroy(this.response);
  }
}

/** Ends a response abruptly: an HTTP/2 stream is reset (CANCEL); HTTP/1.1 has no way but closing the connection. */
function destroy(response: NodeResponse): void {
  if (response instanceof http2.Http2ServerResponse) response.stream.close(http2.constants.NGHTTP2_CANCEL);
  else if (response instanceof http.ServerResponse) response.destroy();
}

function nodeHeaders(header: Headers | undefined): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  header?.forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

/** The path of a request target, without its query. */
export function pathOf(url: string | undefined): string {
  const query = url?.indexOf("?") ?? -1;
  return query < 0 ? (url ?? "") : url!.slice(0, query);
}

export type { NodeRequest, NodeResponse };
