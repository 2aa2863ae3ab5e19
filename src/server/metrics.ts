/**
 * Prometheus metrics (prom-client), served as text at `GET /metrics` on the
 * server's port: every RPC by procedure and code, unary latency, open
 * streams, and the instance's live state (journal position, wake conditions
 * being matched), plus Node's process metrics.
 *
 * Labels are bounded: procedures are the contract's methods and codes are
 * gRPC's; namespaces are those the configuration names (others, which only
 * JWTs can bring, share the label `_other`; callers without credentials are
 * `_none`); no id ever becomes a label.
 */
import type { Principal } from "../domain/auth/principal.js";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Engine } from "../engine/engine.js";
import type { Logger } from "../log.js";
import type { StoreOperationCounts } from "../store/counting.js";
import type { CallObserver } from "./calls.js";
import type { NodeHandlerFn } from "./listener.js";
import { pathOf } from "./node-adapter.js";
import type { ServerStreams } from "./streams.js";

export const METRICS_PATH = "/metrics";

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly calls: Counter<"procedure" | "code" | "namespace">;
  private readonly duration: Histogram<"procedure" | "namespace">;

  /** `namespaceLabel` maps a caller to a bounded label (the same as ServerStreams counts open streams by). */
  constructor(
    engine: Engine,
    private readonly namespaceLabel: (principal: Principal | undefined) => string,
    storeOperations: StoreOperationCounts | undefined,
    streams: ServerStreams,
  ) {
    collectDefaultMetrics({ register: this.registry, prefix: "mailroom_" });
    this.calls = new Counter({ name: "mailroom_rpc_calls_total", help: "RPCs that ended, by procedure, status code and namespace.", labelNames: ["procedure", "code", "namespace"], registers: [this.registry] });
    this.duration = new Histogram({
      name: "mailroom_rpc_duration_seconds",
      help: "Time from request to response of unary RPCs (long polls included).",
      labelNames: ["procedure", "namespace"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    new Gauge({
      name: "mailroom_open_streams",
      help: "Server streams open now, by procedure and namespace: a stream counts until its handler has released what it holds.",
      labelNames: ["procedure", "namespace"],
      registers: [this.registry],
      collect() {
        for (const { procedure, namespace, open } of streams.open.values()) this.set({ procedure, namespace }, open);
      },
    });
    new Gauge({
      name: "mailroom_journal_position",
      help: "The journal position this instance has delivered to its subscribers (every event up to it).",
      registers: [this.registry],
      collect() {
        this.set(engine.tail.position);
      },
    });
    new Gauge({
      name: "mailroom_wake_conditions_watched",
      help: "REGISTERED wake conditions this instance matches journal events against.",
      registers: [this.registry],
      collect() {
        this.set(engine.wakeMatcher.watching);
      },
    });
    if (storeOperations) registerStoreOperations(this.registry, storeOperations);
  }

  /** Counts every call when it ends, with the code its client received; times unary calls. */
  observer(): CallObserver {
    return (call) =>
      ({ code, seconds, principal }) => {
        const namespace = this.namespaceLabel(principal);
        this.calls.inc({ procedure: call.procedure, code, namespace });
        if (!call.stream) this.duration.observe({ procedure: call.procedure, namespace }, seconds);
      };
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** Calls through the storage port (each a round trip on MongoDB), read from the counts when scraped. */
function registerStoreOperations(registry: Registry, counts: StoreOperationCounts): void {
  new Counter({
    name: "mailroom_store_operations_total",
    help: "Calls through the storage port by collection and operation (on MongoDB each is a round trip); collection \"*\" is store-wide (watch counts once per change stream opened, ping, close).",
    labelNames: ["collection", "operation"],
    registers: [registry],
    collect() {
      // The counts are kept outside prom-client so a store call costs one increment; a scrape copies them.
      this.reset();
      counts.forEach((collection, operation, count) => this.inc({ collection, operation }, count));
    },
  });
}

/** Whether a scraper may read the metrics: 200, 401 (no valid credentials) or 403 (not an observer). */
export type ScrapeAccess = (authorization: string | undefined) => Promise<200 | 401 | 403>;

/**
 * Answers `GET /metrics` (HTTP/1.1 or HTTP/2) and hands every other request
 * to the RPC handler. With authentication on, scrapers send a bearer token
 * of a principal with the observer role.
 */
export function withMetricsEndpoint(handler: NodeHandlerFn, metrics: ServerMetrics, logger: Logger, access: ScrapeAccess): NodeHandlerFn {
  return (request, response) => {
    if (pathOf(request.url) !== METRICS_PATH) return handler(request, response);
    if (request.method !== "GET") {
      response.writeHead(405, { allow: "GET" });
      response.end();
      return;
    }
    access(request.headers.authorization).then((status) => {
      if (status === 200) return serveMetrics(metrics, response, logger);
      response.writeHead(status, status === 401 ? { "www-authenticate": "Bearer" } : {});
      response.end();
    }, (error: unknown) => {
      logger.warn({ error: error instanceof Error ? error.message : String(error) }, "could not authorize a metrics scrape");
      response.writeHead(500);
      response.end();
    });
  };
}

function serveMetrics(metrics: ServerMetrics, response: Parameters<NodeHandlerFn>[1], logger: Logger): void {
  metrics.render().then(
    ({ contentType, body }) => {
      response.writeHead(200, { "content-type": contentType });
      response.end(body);
    },
    (error: unknown) => {
      logger.warn({ error: error instanceof Error ? error.message : String(error) }, "could not render metrics");
      response.writeHead(500);
      response.end();
    },
  );
}
