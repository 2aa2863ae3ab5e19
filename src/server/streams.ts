/**
 * How Mailroom's server streams are served.
 *
 * A handler describes its stream as a StreamSource (open it, pull the next
 * message, close it) and ServerStreams serves it as the iterable Connect
 * reads: one plain iterator, no generator layers. Connect's response pipeline
 * (half a dozen async generators a message) carries the stream's first
 * message, which commits the response headers, and its end (status,
 * trailers); every message in between is encoded here and written straight
 * to the response (DIRECT_WRITER, from the Node adapter), as a length-prefixed
 * envelope, the same for gRPC, gRPC-Web and Connect, never compressed (each
 * envelope says so; peers accept that whatever encoding was negotiated), in
 * the call's wire format and within the message size limit. Around every
 * stream it
 * - admits it or refuses it with RESOURCE_EXHAUSTED (LIMIT_EXCEEDED) when the
 *   server has `maxStreams` open (the request gate caps the streams of each
 *   namespace and of callers without credentials before, namespace-limits.ts);
 * - maps whatever the source throws to what a client may see (errors.ts);
 * - closes the source exactly once, however the stream ended (it ran out,
 *   failed, its client went away or took nothing for the stall timeout, the
 *   server is shutting down), and only then counts it as closed: an open
 *   stream in the metrics is a handler still holding its resources.
 *
 * The queue streams (queueSource: WatchDispatchSignals, OpenLiveChannel)
 * send a heartbeat first (once the stream is registered, so whatever happens
 * after the client sees it reaches the client), then items as they come,
 * with a heartbeat whenever the stream was idle for its interval. When the
 * call's signal aborts (client gone, deadline, server shutting down) a stream
 * ends with the signal's reason, which for a shutdown is UNAVAILABLE with
 * reason SHUTTING_DOWN.
 */
import { create, type DescMessage, type JsonWriteOptions, type MessageInitShape, toBinary, toJsonString } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { type StreamHeartbeat, StreamHeartbeatSchema } from "../../gen/mailroom/v1/common_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import type { PushQueue } from "../engine/push-queue.js";
import type { Logger } from "../log.js";
import { errorWithDetail, toConnectError } from "./errors.js";
import { type Principal, principalKey } from "./principal.js";
import type { WireFormat } from "../domain/answer-size.js";

export type { WireFormat };

/** The wire format a call's messages use, from its content type (`application/grpc`, `application/connect+json`, ...). */
export function wireFormatOf(contentType: string | null): WireFormat {
  // Connect matches content types case-insensitively (`application/connect+JSON` is a JSON call).
  return contentType?.toLowerCase().includes("json") ? "json" : "binary";
}

/** Writes bytes to a call's response once its headers are out (see ServerStreams). */
export interface DirectWriter {
  /** Whether the response headers went out, so the body may be written. */
  readonly ready: boolean;
  /** A promise only when the client must take data first; throws (rejects) with CANCELED once the client is gone. */
  write(chunk: Uint8Array): Promise<void> | undefined;
  /** Writes and resolves once the transport took the chunk; rejects with CANCELED once the client is gone. */
  send(chunk: Uint8Array): Promise<void>;
}

/** The call's DirectWriter, in the context values of every call the Node adapter routes. */
export const DIRECT_WRITER = createContextKey<DirectWriter | undefined>(undefined, { description: "mailroom direct writer" });

export function heartbeat(): StreamHeartbeat {
  return create(StreamHeartbeatSchema, { sentAt: timestampNow() });
}

/** A server stream as a handler describes it. */
export interface StreamSource<M> {
  /** The next message; undefined ends the stream (OK). A rejection ends it with that error. */
  next(): Promise<M | undefined>;
  /** Releases what the stream holds; called exactly once, however the stream ended. */
  close(): void | Promise<void>;
  /**
   * Optional, for a binary stream's messages after the first: the next
   * message, or several consecutive ones, encoded and enveloped already
   * (each flags 0, length, protobuf bytes; together at most the message size
   * limit unless one message alone), for a source that can make those bytes
   * cheaper than encoding messages. Written with one write.
   */
  nextEnveloped?(): Promise<Uint8Array | undefined>;
}

export interface StreamLimits {
  /** Server streams open at once on this server. */
  maxStreams: number;
  /** The largest message written (--max-message-bytes). */
  maxMessageBytes: number;
  /** JSON options of the router, so messages written directly read as Connect would write them. */
  jsonOptions?: Partial<JsonWriteOptions>;
  /** The bounded metrics label of a caller's namespace (auth.ts); open streams are counted by it. */
  namespaceLabel?: (principal: Principal | undefined) => string;
}

/** Streams open now of one procedure and namespace label. */
export interface OpenStreams {
  procedure: string;
  namespace: string;
  open: number;
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };
const textEncoder = new TextEncoder();

/** Flags (1 byte) and length (4 bytes) before each message in a body. */
export const ENVELOPE_HEADER = 5;

/** A message as gRPC, gRPC-Web and Connect frame it in a body: flags (0: uncompressed data), length (big-endian), bytes. */
function envelope(bytes: Uint8Array): Uint8Array {
  const framed = new Uint8Array(bytes.byteLength + ENVELOPE_HEADER);
  new DataView(framed.buffer).setUint32(1, bytes.byteLength);
  framed.set(bytes, ENVELOPE_HEADER);
  return framed;
}

export class ServerStreams {
  private total = 0;
  /** Streams open now by procedure (`package.Service/Method`) and namespace label; those whose streams all closed stay at 0. */
  readonly open = new Map<string, OpenStreams>();

  constructor(
    private readonly limits: StreamLimits,
    private readonly logger: Logger,
  ) {}

  /** Streams of a procedure open now, in all namespaces. */
  openOf(procedure: string): number {
    let open = 0;
    for (const counted of this.open.values()) if (counted.procedure === procedure) open += counted.open;
    return open;
  }

  /**
   * Serves a stream; `open` runs on the first pull (its errors are the
   * stream's, before any frame). Throws RESOURCE_EXHAUSTED when a limit is reached.
   */
  serve<M>(context: HandlerContext, open: () => Promise<StreamSource<M>> | StreamSource<M>): AsyncIterable<M> {
    const procedure = `${context.service.typeName}/${context.method.name}`;
    this.admit();
    this.total++;
    const namespace = this.limits.namespaceLabel?.(context.values.get(principalKey)) ?? "";
    const key = `${procedure} ${namespace}`;
    let counted = this.open.get(key);
    if (!counted) this.open.set(key, (counted = { procedure, namespace, open: 0 }));
    counted.open++;

    let source: StreamSource<M> | undefined;
    let closing: Promise<void> | undefined;
    /**
     * Once the first message went through Connect (the response is
     * committed): what writes the rest straight to the response until the
     * source ends, or null when this call cannot be written to directly.
     */
    let pump: ((source: StreamSource<M>) => Promise<void>) | null | undefined;
    let sentFirst = false;
    const finish = (): Promise<void> =>
      (closing ??= (async () => {
        try {
          await source?.close();
        } catch (error) {
          this.logger.warn({ procedure, error: error instanceof Error ? error.message : String(error) }, "could not close a stream's resources");
        } finally {
          this.total--;
          counted.open--;
        }
      })());
    const iterator: AsyncIterator<M, undefined> = {
      next: async () => {
        if (closing) return DONE;
        try {
          source ??= await open();
          if (sentFirst) pump ??= this.directPump<M>(context);
          if (pump) {
            // Everything up to the end goes straight to the response; the end goes through Connect.
            await pump(source);
          } else {
            const message = await source.next();
            if (message !== undefined) {
              sentFirst = true;
              return { done: false, value: message };
            }
          }
        } catch (error) {
          await finish();
          throw toConnectError(error, this.logger);
        }
        await finish();
        return DONE;
      },
      return: async () => {
        await finish();
        return DONE;
      },
      throw: async (error: unknown) => {
        await finish();
        throw error;
      },
    };
    return { [Symbol.asyncIterator]: () => iterator };
  }

  /**
   * Writes a source's messages to the response past Connect's pipeline, each
   * enveloped in the call's wire format (or as the source envelopes it
   * itself); null when the call has no direct writer or its response is not
   * committed.
   */
  private directPump<M>(context: HandlerContext): ((source: StreamSource<M>) => Promise<void>) | null {
    const writer = context.values.get(DIRECT_WRITER);
    const contentType = context.requestHeader.get("content-type");
    // gRPC-Web's text variant (base64) is not served; its envelopes would need encoding too.
    if (writer === undefined || !writer.ready || /grpc-web-text/i.test(contentType ?? "")) return null;
    const schema: DescMessage = context.method.output;
    const { maxMessageBytes, jsonOptions } = this.limits;
    const binary = wireFormatOf(contentType) === "binary";
    const serialize = binary
      ? (message: M) => toBinary(schema, create(schema, message as MessageInitShape<DescMessage>))
      : (message: M) => textEncoder.encode(toJsonString(schema, create(schema, message as MessageInitShape<DescMessage>), jsonOptions));
    return async (source) => {
      const enveloped = binary ? source.nextEnveloped?.bind(source) : undefined;
      for (;;) {
        let bytes: Uint8Array | undefined;
        if (enveloped) {
          bytes = await enveloped();
        } else {
          const message = await source.next();
          bytes = message === undefined ? undefined : envelope(serialize(message));
        }
        if (bytes === undefined) return;
        if (bytes.byteLength - ENVELOPE_HEADER > maxMessageBytes) {
          throw new ConnectError(`message size ${bytes.byteLength - ENVELOPE_HEADER} is larger than configured writeMaxBytes ${maxMessageBytes}`, Code.ResourceExhausted);
        }
        // One write in flight: what becomes ready while the transport takes this one goes out together in the next.
        await writer.send(bytes);
      }
    };
  }

  /** Streams of callers without credentials, and of each namespace, are capped before this, by the request gate (namespace-limits.ts). */
  private admit(): void {
    if (this.total >= this.limits.maxStreams) {
      throw errorWithDetail(Code.ResourceExhausted, `the server has ${this.limits.maxStreams} streams open, its limit (--max-streams); retry later`, {
        reason: ErrorReason.LIMIT_EXCEEDED,
        metadata: { limit: String(this.limits.maxStreams) },
      });
    }
  }
}

/**
 * A stream of a queue's items: a heartbeat first (the caller registered the
 * queue's producer before), then each item as it comes, a heartbeat whenever
 * the stream was idle for `heartbeatMs`; it ends when the queue closes, or
 * with the signal's reason.
 */
export function queueSource<T, M>(
  queue: PushQueue<T>,
  options: { heartbeatMs: number; signal: AbortSignal; frame: (item: T) => M; heartbeat: (beat: StreamHeartbeat) => M; close: () => void | Promise<void> },
): StreamSource<M> {
  let first = true;
  return {
    async next() {
      if (first) {
        first = false;
        return options.heartbeat(heartbeat());
      }
      const pulled = await queue.next(options.heartbeatMs, options.signal);
      if ("value" in pulled) return options.frame(pulled.value);
      if ("timeout" in pulled) return options.heartbeat(heartbeat());
      if (options.signal.aborted) throw options.signal.reason;
      return undefined;
    },
    close: () => {
      const closing = options.close();
      queue.close(); // after: the owner's close may look at the queue (LiveChannel does)
      return closing;
    },
  };
}
