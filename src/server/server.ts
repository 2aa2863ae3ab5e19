/**
 * The Mailroom server: the Connect handler (gRPC, gRPC-Web and Connect, each
 * limit set explicitly) on the one-port listener, and its graceful shutdown.
 */
import { readFile } from "node:fs/promises";
import type { ServerConfig } from "../config.js";
import type { Logger } from "../log.js";
import { MemoryStore } from "../store/memory/store.js";
import type { Store } from "../store/port.js";
import { CountingStore, StoreOperationCounts } from "../store/counting.js";
import { Engine, type EngineOptions } from "../engine/engine.js";
import { Authenticator, authSourceOf } from "./auth.js";
import { claimTokenInterceptor } from "./claim-tokens.js";
import { NamespaceLimiter } from "./namespace-limits.js";
import { requestGate, scrapeAccess } from "./request-gate.js";
import { StreamCredentials } from "./stream-credentials.js";
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

/** Below this, the server's own records may not fit in an answer (it says so at start). */
const ROOMY_MESSAGE_BYTES = 16 * 1024;

export interface ServerDeps {
  /** Closed by `close()` unless `closeStore` is false. */
  store: Store;
  logger: Logger;
  /** False when the store is shared with other server instances in this process (tests). */
  closeStore?: boolean;
  /** Engine settings beyond the configuration (tests: clocks, timings). */
  engine?: EngineOptions;
  /** Tests: serve unary gRPC through Connect's handler only, to compare its answers with the fast path's (grpc-unary.ts). */
  withoutGrpcUnaryFastPath?: boolean;
}

export interface RunningServer {
  /** Base URL for clients, e.g. `http://127.0.0.1:50051`. */
  readonly url: string;
  readonly port: number;
  readonly health: HealthMonitor;
  readonly engine: Engine;
  /**
   * Re-reads the auth file (SIGHUP): new principals work, removed ones stop
   * working, nothing else restarts. A bad file keeps the previous principals;
   * either way the outcome is logged. Resolves false when the file was refused.
   */
  reloadAuth(): Promise<boolean>;
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
  const { logger } = deps;
  const storeOperations = new StoreOperationCounts();
  const store = new CountingStore(deps.store, storeOperations);
  const tls = config.tlsCert && config.tlsKey ? await readTls(config.tlsCert, config.tlsKey) : undefined;
  // The store as given, not the counting wrapper around it.
  if (deps.store instanceof MemoryStore) deps.store.limitTo(config.memoryStoreMaxBytes);
  const auth = await Authenticator.start(authSourceOf(config));
  const engine = await Engine.start(store, {
    log: logger,
    ...deps.engine,
    storeTimeoutMs: deps.engine?.storeTimeoutMs ?? config.storeTimeoutMs,
    journal: { ...(config.journalHoleTimeoutMs !== undefined ? { holeTimeoutMs: config.journalHoleTimeoutMs } : {}), ...deps.engine?.journal },
    mailboxLimits: { maxLeaseMs: config.maxLeaseMs, maxResponseBytes: config.maxMessageBytes, ...deps.engine?.mailboxLimits },
    mailboxTimings: { retentionMs: config.dispatchRetentionMs, ...deps.engine?.mailboxTimings },
    events: { retentionMs: config.eventRetentionMs, ...deps.engine?.events },
    // Read at each enqueue, so a reloaded auth file's limits apply at once.
    maxQueuedDispatches: (namespace) => auth.limitsOf(namespace).maxQueuedDispatches,
  });
  if (config.maxMessageBytes < ROOMY_MESSAGE_BYTES) {
    logger.warn(
      { max_message_bytes: config.maxMessageBytes },
      `--max-message-bytes ${config.maxMessageBytes} leaves little room: writes whose records would not fit in an answer are refused, ` +
        `and records the server writes itself (journal events, about 1-4 KiB in JSON) may not fit either; ${ROOMY_MESSAGE_BYTES} or more is recommended`,
    );
  }
  const health = new HealthMonitor(store, logger, { services: mailroomServiceNames });
  const shutdown = new AbortController();
  // Streams write their messages past the router (streams.ts): should the router get jsonOptions, give them to both.
  const streams = new ServerStreams({ maxStreams: config.maxStreams, maxMessageBytes: config.maxMessageBytes, namespaceLabel: (principal) => auth.namespaceLabel(principal) }, logger);
  const metrics = new ServerMetrics(engine, (principal) => auth.namespaceLabel(principal), storeOperations, streams);
  const credentials = new StreamCredentials();
  const connectHandler = nodeAdapter({
    routes: routes({ health, engine, streams, maxMessageBytes: config.maxMessageBytes }),
    grpc: true,
    grpcWeb: true,
    connect: true,
    // Nothing a request carries beyond the contract is kept (it would be
    // stored and served back, past every limit): binary requests are read
    // without unknown fields, JSON requests that have any are refused.
    binaryOptions: { readUnknownFields: false },
    jsonOptions: { ignoreUnknownFields: false },
    readMaxBytes: config.maxMessageBytes,
    writeMaxBytes: config.maxMessageBytes,
    maxTimeoutMs: config.maxDeadlineMs,
    shutdownSignal: shutdown.signal,
    interceptors: [errorMappingInterceptor(logger), claimTokenInterceptor()],
    requestGate: requestGate({ auth, limiter: new NamespaceLimiter(config.maxUnauthenticatedStreams), streams: credentials }),
    stallTimeoutMs: config.streamStallTimeoutMs,
    grpcUnaryFastPath: deps.withoutGrpcUnaryFastPath !== true,
    observers: [callLog(logger), metrics.observer()],
    logger,
  });
  const handler = withMetricsEndpoint(connectHandler, metrics, logger, scrapeAccess(auth));
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
  logAuth(auth, logger);
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
    reloadAuth: () => reloadAuth(auth, credentials, logger),
    close: () => (closing ??= close()),
  };
}

function logAuth(auth: Authenticator, logger: Logger): void {
  const { source } = auth;
  if (source.kind === "none") {
    logger.info({ auth: "none" }, "authentication off: every caller is admin of namespace default (give --auth-file to name principals)");
  } else if (source.kind === "token") {
    logger.info({ auth: "token" }, "authentication: --auth-token (its holder is admin of namespace default)");
  } else {
    logger.info({ auth: "file", auth_file: source.path, principals: auth.principalCount, jwt: auth.verifiesJwts }, `authentication: ${auth.principalCount} principals from ${source.path}${auth.verifiesJwts ? ", and JWTs" : ""}`);
  }
}

async function reloadAuth(auth: Authenticator, streams: StreamCredentials, logger: Logger): Promise<boolean> {
  if (auth.source.kind !== "file") {
    logger.info("SIGHUP: no --auth-file to re-read");
    return true;
  }
  try {
    await auth.reload();
  } catch (error) {
    logger.error(
      { auth_file: auth.source.path, error: error instanceof Error ? error.message : String(error) },
      `AUTH FILE RELOAD FAILED, the previous principals stay in force: ${error instanceof Error ? error.message : String(error)}`,
    );
    return false;
  }
  const ended = await streams.recheck(auth);
  logger.info(
    { auth_file: auth.source.path, principals: auth.principalCount, jwt: auth.verifiesJwts, streams_ended: ended },
    `auth file reloaded: ${auth.principalCount} principals${ended > 0 ? `; ${ended} streams of revoked credentials ended` : ""}`,
  );
  return true;
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
