/**
 * Typed clients for a Mailroom server, over any of its three protocols.
 *
 *   const { mailbox, health, close } = createMailroomClients({ baseUrl: "http://127.0.0.1:50051", protocol: "grpc" });
 */
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { PoolService } from "../../gen/mailroom/v1/pool_service_pb.js";

export type ClientProtocol = "grpc" | "grpc-web" | "connect";

export interface MailroomClientOptions {
  /** The server's URL, e.g. `http://127.0.0.1:50051` or `https://mailroom.internal:443`. */
  baseUrl: string;
  protocol: ClientProtocol;
  /** Sent as `authorization: Bearer <token>` when the server runs with `--auth-token`. */
  token?: string;
  /** Protobuf binary (default) or JSON on the wire; gRPC and gRPC-Web support both too. */
  binary?: boolean;
  /** HTTP/2 (the default, and required for gRPC) or HTTP/1.1 (gRPC-Web and Connect only). */
  httpVersion?: "1.1" | "2";
  /** PEM certificate authority to trust for `https` (a self-signed server certificate). */
  ca?: string | Buffer;
}

export interface MailroomClients {
  mailbox: Client<typeof MailboxService>;
  pools: Client<typeof PoolService>;
  events: Client<typeof EventService>;
  health: Client<typeof Health>;
  /** Closes the HTTP/2 connection (a no-op over HTTP/1.1); calls after it reconnect. */
  close(): void;
}

export function createMailroomClients(options: MailroomClientOptions): MailroomClients {
  const { transport, close } = createTransport(options);
  return {
    mailbox: createClient(MailboxService, transport),
    pools: createClient(PoolService, transport),
    events: createClient(EventService, transport),
    health: createClient(Health, transport),
    close,
  };
}

function createTransport(options: MailroomClientOptions): { transport: Transport; close: () => void } {
  const common = {
    baseUrl: options.baseUrl,
    useBinaryFormat: options.binary ?? true,
    interceptors: options.token === undefined ? [] : [bearerToken(options.token)],
  };
  const httpVersion = options.protocol === "grpc" ? "2" : (options.httpVersion ?? "2");
  if (httpVersion === "1.1") {
    const nodeOptions = options.ca === undefined ? undefined : { ca: options.ca };
    const http1 = { ...common, httpVersion, nodeOptions } as const;
    const transport = options.protocol === "grpc-web" ? createGrpcWebTransport(http1) : createConnectTransport(http1);
    return { transport, close: () => undefined };
  }
  const sessionManager = new Http2SessionManager(options.baseUrl, {}, options.ca === undefined ? {} : { ca: options.ca });
  const http2 = { ...common, httpVersion, sessionManager } as const;
  const create = { grpc: createGrpcTransport, "grpc-web": createGrpcWebTransport, connect: createConnectTransport }[options.protocol];
  return { transport: create(http2), close: () => sessionManager.abort() };
}

function bearerToken(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}
