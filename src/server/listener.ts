/**
 * One port for every client: HTTP/2 (gRPC clients, `buf curl`) and HTTP/1.1
 * (curl, browsers' gRPC-Web and Connect).
 *
 * Cleartext: Node's http2 module cannot serve h2c and HTTP/1.1 on one port,
 * so a plain TCP server reads the first bytes of each connection and hands the
 * socket to the HTTP/2 server when they are the HTTP/2 connection preface
 * (clients with "prior knowledge" send it first), else to the HTTP/1.1 server.
 * TLS: ALPN negotiates the protocol (`allowHTTP1`).
 *
 * The listener also counts requests in flight and keeps every connection, so
 * shutdown can wait for calls to finish and then close what is left, and
 * applies the connection limits (connections.ts) and timeouts: a connection
 * must name its protocol (and an HTTP/1.1 request its headers) within the
 * header timeout and send a whole HTTP/1.1 request within the request timeout.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "../log.js";
import { type ConnectionLimits, Connections } from "./connections.js";
import { StartupError } from "./startup-error.js";

/** What connectNodeAdapter returns: a request listener for http and http2 alike. */
export type NodeHandlerFn = ReturnType<typeof connectNodeAdapter>;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface ListenerOptions {
  host: string;
  port: number;
  /** PEM contents; TLS (HTTP/2 and HTTP/1.1 by ALPN) when given. */
  tls?: { cert: Buffer; key: Buffer };
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. */
  maxConcurrentStreams: number;
  limits: ConnectionLimits;
  /** For a new connection to say which protocol it speaks (TLS: to finish its handshake); for each HTTP/1.1 request's headers. */
  headerTimeoutMs: number;
  /** For a whole HTTP/1.1 request, body included. */
  requestTimeoutMs: number;
  logger: Logger;
}

export interface Listener {
  readonly port: number;
  readonly secure: boolean;
  /**
   * Stops accepting connections, sends GOAWAY on HTTP/2 sessions and closes
   * idle HTTP/1.1 connections; calls in flight continue.
   */
  beginShutdown(): void;
  /** Resolves once no request is in flight. */
  drained(): Promise<void>;
  /** Resolves once every connection has closed. */
  closed(): Promise<void>;
  /** Cuts every remaining connection. */
  destroy(): void;
}

export async function listen(handler: NodeHandlerFn, options: ListenerOptions): Promise<Listener> {
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  /** HTTP/1.1 connections and how many requests each has in flight. */
  const http1 = new Map<net.Socket, number>();
  /** Cleartext connections whose first bytes have not arrived yet. */
  const sniffing = new Set<net.Socket>();
  const connections = new Connections(options.limits, options.logger);
  let inFlight = 0;
  let shuttingDown = false;
  const idleWaiters: Array<() => void> = [];
  const closeWaiters: Array<() => void> = [];

  const endIfIdle = (socket: net.Socket) => {
    if ((http1.get(socket) ?? 0) === 0) socket.end();
  };

  const tracked: NodeHandlerFn = (request, response) => {
    inFlight++;
    const connection = connections.of(request.socket);
    if (connection) connections.begin(connection);
    const http1Response = response instanceof http.ServerResponse ? response : undefined;
    const socket = http1Response ? request.socket : undefined;
    if (http1Response && socket) {
      http1.set(socket, (http1.get(socket) ?? 0) + 1);
      // Served during shutdown: this response is the connection's last.
      if (shuttingDown) http1Response.shouldKeepAlive = false;
    }
    response.once("close", () => {
      inFlight--;
      if (connection) connections.end(connection);
      if (socket && http1.has(socket)) {
        http1.set(socket, (http1.get(socket) ?? 1) - 1);
        if (shuttingDown) endIfIdle(socket);
      }
      if (inFlight === 0) idleWaiters.splice(0).forEach((wake) => wake());
    });
    handler(request, response);
  };

  const settings = { maxConcurrentStreams: options.maxConcurrentStreams };
  const trackSession = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    connections.attachSession(session);
    session.once("close", () => sessions.delete(session));
    if (shuttingDown) session.close();
  };
  const http1Timeouts = { headersTimeout: options.headerTimeoutMs, requestTimeout: options.requestTimeoutMs };

  let front: net.Server;
  let h1: http.Server | undefined;
  /** Cleartext: reads a new connection's first bytes and hands it to the HTTP/2 or the HTTP/1.1 server. */
  let handOver: ((socket: net.Socket) => void) | undefined;
  if (options.tls) {
    const secure = createSecureServer({ ...options.tls, allowHTTP1: true, settings, handshakeTimeout: options.headerTimeoutMs }, tracked);
    // Node checks HTTP/1.1 timeouts every connectionsCheckingInterval (30 s by default).
    Object.assign(secure, http1Timeouts, { connectionsCheckingInterval: checkingInterval(options.headerTimeoutMs) });
    secure.on("session", trackSession);
    secure.on("secureConnection", (socket: net.Socket) => connections.track(socket, { keepalive: true }));
    front = secure;
  } else {
    const h2c = http2.createServer({ settings }, tracked);
    h2c.on("session", trackSession);
    h1 = http.createServer({ ...http1Timeouts, connectionsCheckingInterval: checkingInterval(options.headerTimeoutMs) }, tracked);
    // Node starts checking HTTP/1.1 header and request timeouts when a server emits `listening`,
    // which this one never does itself: it is handed sockets, it does not listen.
    h1.emit("listening");
    const http1Server = h1;
    front = net.createServer();
    handOver = (socket) => {
      const connection = connections.track(socket, { sniffing: true });
      sniffing.add(socket);
      sniff(socket, options.headerTimeoutMs, (isHttp2) => {
        sniffing.delete(socket);
        connections.handedOver(connection, !isHttp2);
        (isHttp2 ? h2c : http1Server).emit("connection", socket);
      });
    };
  }
  front.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      sniffing.delete(socket);
      http1.delete(socket);
      if (sockets.size === 0) closeWaiters.splice(0).forEach((wake) => wake());
    });
    if (shuttingDown || !connections.admit(sockets.size)) return void socket.destroy();
    handOver?.(socket);
  });

  await new Promise<void>((resolve, reject) => {
    front.once("error", (error: NodeJS.ErrnoException) => {
      connections.stop();
      h1?.close();
      reject(new StartupError(describeListenError(error, options)));
    });
    front.listen({ host: options.host, port: options.port }, resolve);
  });
  const address = front.address();
  const port = typeof address === "object" && address ? address.port : options.port;

  return {
    port,
    secure: options.tls !== undefined,
    beginShutdown() {
      if (shuttingDown) return;
      shuttingDown = true;
      front.close();
      for (const session of sessions) session.close();
      for (const socket of http1.keys()) endIfIdle(socket);
      // Nothing of theirs can be in flight yet.
      for (const socket of sniffing) socket.destroy();
    },
    drained: () => (inFlight === 0 ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve))),
    closed: () => (sockets.size === 0 ? Promise.resolve() : new Promise((resolve) => closeWaiters.push(resolve))),
    destroy() {
      connections.stop();
      h1?.close();
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
  };
}

/** How often Node looks for HTTP/1.1 connections past their header or request timeout. */
function checkingInterval(headerTimeoutMs: number): number {
  return Math.max(10, Math.min(1000, Math.floor(headerTimeoutMs / 2)));
}

function createSecureServer(options: http2.SecureServerOptions, handler: NodeHandlerFn): http2.Http2SecureServer {
  try {
    return http2.createSecureServer(options, handler);
  } catch (error) {
    // OpenSSL's words, e.g. "error:1E08010C:DECODER routines::unsupported".
    throw new StartupError(`cannot use --tls-cert/--tls-key: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * Which protocol a connection speaks, from its first bytes: "undecided" while
 * they are a proper prefix of the HTTP/2 preface (a short first chunk).
 */
export function classifyFirstBytes(received: Buffer): "http2" | "http1" | "undecided" {
  const compared = Math.min(received.length, PREFACE.length);
  if (!received.subarray(0, compared).equals(PREFACE.subarray(0, compared))) return "http1";
  return received.length < PREFACE.length ? "undecided" : "http2";
}

/** Waits for enough bytes to tell an HTTP/2 preface from anything else. */
function sniff(socket: net.Socket, timeoutMs: number, handOver: (isHttp2: boolean) => void): void {
  let received = Buffer.alloc(0);
  const drop = () => socket.destroy();
  const onReadable = () => {
    for (let chunk: Buffer | null; (chunk = socket.read() as Buffer | null) !== null; ) {
      received = Buffer.concat([received, chunk]);
    }
    const protocol = classifyFirstBytes(received);
    if (protocol === "undecided") return;
    socket.off("readable", onReadable);
    socket.off("error", drop);
    socket.setTimeout(0);
    socket.off("timeout", drop);
    // Put the bytes back: the HTTP server that takes over reads them first.
    socket.unshift(received);
    handOver(protocol === "http2");
  };
  socket.on("readable", onReadable);
  socket.on("error", drop);
  socket.setTimeout(timeoutMs);
  socket.on("timeout", drop);
}

function describeListenError(error: NodeJS.ErrnoException, options: ListenerOptions): string {
  const where = `${options.host}:${options.port}`;
  switch (error.code) {
    case "EADDRINUSE":
      return `cannot listen on ${where}: the port is already in use (choose another with --port, or 0 for a free one)`;
    case "EACCES":
      return `cannot listen on ${where}: permission denied (ports below 1024 need privileges)`;
    case "EADDRNOTAVAIL":
    case "ENOTFOUND":
      return `cannot listen on ${where}: no such local address (check --host)`;
    default:
      return `cannot listen on ${where}: ${error.message}`;
  }
}
