/**
 * The Mailroom server: the Connect handler (gRPC, gRPC-Web and Connect, each
 * limit set explicitly) on the one-port listener, and its graceful shutdown.
 */
import { readFile } from "node:fs/promises";
import type { ServerConfig } from "../config.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/port.js";
import { Engine, type EngineOptions } from "../engine/engine.js";
import { requestGate } from "./request-gate.js";
import { shuttingDownError } from "./errors.js";
import { HealthMonitor } from "./health.js";
import { callLog } from "./calls.js";
import { errorMappingInterceptor } from "./interceptors.js";
import { listen, type ListenerOptions } from "./listener.js";
import { ServerMetrics, withMetricsEndpoint } from "./metrics.js";
import { nodeAdapter } from "./node-adapter.js";
import { mailroomServiceNames, routes } from "./routes.js";
import { ServerStreams } from "./streams.js";
import { StartupError } from "./startup-error.js";

export { StartupError };

export interface ServerDeps {
  /** Closed by `close()` unless `closeStore` is false. */
  store: Store;
  logger: Logger;
  /** False when the store is shared with other server instances in this process (tests). */
  closeStore?: boolean;
  /** Engine settings beyond the configuration (tests: clocks, timings). */
  engine?: EngineOptions;
}

export interface RunningServer {
  /** Base URL for clients, e.g. `http://127.0.0.1:50051`. */
  readonly url: string;
  readonly port: number;
  readonly health: HealthMonitor;
  readonly engine: Engine;
  /**
   * Graceful shutdown, idempotent: health goes NOT_SERVING, no new
   * connections, open streams end with UNAVAILABLE (reason SHUTTING_DOWN),
   * unary calls get up to `shutdownGraceMs` to finish, then connections are
   * closed and the store is closed.
   */
  close(): Promise<void>;
}

/**
 * Starts serving. On failure nothing is left listening and the store is left
 * open for the caller to close.
 */
export async function startServer(config: ServerConfig, deps: ServerDeps): Promise<RunningServer> {
  const { store, logger } = deps;
  const tls = config.tlsCert && config.tlsKey ? await readTls(config.tlsCert, config.tlsKey) : undefined;
  const engine = await Engine.start(store, {
    log: logger,
    ...deps.engine,
    mailboxLimits: { maxLeaseMs: config.maxLeaseMs, ...deps.engine?.mailboxLimits },
    mailboxTimings: { retentionMs: config.dispatchRetentionMs, ...deps.engine?.mailboxTimings },
    events: { retentionMs: config.eventRetentionMs, ...deps.engine?.events },
  });
  const health = new HealthMonitor(store, logger, { services: mailroomServiceNames });
  const shutdown = new AbortController();
  // Streams write their messages past the router (streams.ts): should the router get jsonOptions, give them to both.
  const streams = new ServerStreams(
    { maxStreams: config.maxStreams, maxUnauthenticatedStreams: config.maxUnauthenticatedStreams, maxMessageBytes: config.maxMessageBytes },
    logger,
  );
  const metrics = new ServerMetrics(engine, streams);
  const connectHandler = nodeAdapter({
    routes: routes({ health, engine, streams, events: { maxMessageBytes: config.maxMessageBytes } }),
    grpc: true,
    grpcWeb: true,
    connect: true,
    readMaxBytes: config.maxMessageBytes,
    writeMaxBytes: config.maxMessageBytes,
    maxTimeoutMs: config.maxDeadlineMs,
    shutdownSignal: shutdown.signal,
    interceptors: [errorMappingInterceptor(logger)],
    requestGate: requestGate(config.authToken),
    stallTimeoutMs: config.streamStallTimeoutMs,
    observers: [callLog(logger), metrics.observer()],
    logger,
  });
  const handler = withMetricsEndpoint(connectHandler, metrics, logger, config.authToken);
  await health.start();
  const listenerOptions: ListenerOptions = {
    host: config.host,
    port: config.port,
    tls,
    maxConcurrentStreams: config.maxConcurrentStreams,
    limits: { maxConnections: config.maxConnections, idleTimeoutMs: config.idleTimeoutMs, keepaliveMs: config.keepaliveMs },
    headerTimeoutMs: config.headerTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    logger,
  };
  let listener;
  try {
    listener = await listen(handler, listenerOptions);
  } catch (error) {
    health.shutdown();
    await engine.stop();
    throw error;
  }
  const scheme = listener.secure ? "https" : "http";
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;

  let closing: Promise<void> | undefined;
  const close = async () => {
    logger.info({ grace_ms: config.shutdownGraceMs }, "shutting down: NOT_SERVING, ending streams, letting calls in flight finish");
    const grace = deadline(config.shutdownGraceMs);
    health.shutdown();
    listener.beginShutdown();
    shutdown.abort(shuttingDownError());
    const drained = await Promise.race([listener.drained().then(() => true), grace.passed.then(() => false)]);
    if (!drained) logger.warn({ grace_ms: config.shutdownGraceMs }, "calls still in flight after the grace period; cutting them");
    await Promise.race([listener.closed(), grace.passed]);
    grace.cancel();
    listener.destroy();
    await engine.stop();
    if (deps.closeStore !== false) await store.close();
    logger.info("server stopped");
  };

  return {
    url: `${scheme}://${host}:${listener.port}`,
    port: listener.port,
    health,
    engine,
    close: () => (closing ??= close()),
  };
}

async function readTls(certPath: string, keyPath: string): Promise<{ cert: Buffer; key: Buffer }> {
  const read = (path: string, flag: string) =>
    readFile(path).catch((error: NodeJS.ErrnoException) => {
      throw new StartupError(`cannot read ${flag} file ${JSON.stringify(path)}: ${error.code ?? error.message}`);
    });
  return { cert: await read(certPath, "--tls-cert"), key: await read(keyPath, "--tls-key") };
}

function deadline(ms: number): { passed: Promise<void>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const passed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return { passed, cancel: () => clearTimeout(timer) };
}
