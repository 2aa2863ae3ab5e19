/**
 * Prometheus metrics (prom-client), served as text at `GET /metrics` on the
 * server's port: every RPC by procedure and code, unary latency, open
 * streams, and the instance's live state (journal position, wake conditions
 * being matched), plus Node's process metrics.
 *
 * Labels are bounded: procedures are the contract's methods and codes are
 * gRPC's; no id ever becomes a label.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Engine } from "../engine/engine.js";
import type { Logger } from "../log.js";
import { bearerTokenMatches } from "./auth.js";
import type { CallObserver } from "./calls.js";
import type { NodeHandlerFn } from "./listener.js";
import { pathOf } from "./node-adapter.js";
import type { ServerStreams } from "./streams.js";

export const METRICS_PATH = "/metrics";

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly calls: Counter<"procedure" | "code">;
  private readonly duration: Histogram<"procedure">;

  constructor(engine: Engine, streams: ServerStreams) {
    collectDefaultMetrics({ register: this.registry, prefix: "mailroom_" });
    this.calls = new Counter({ name: "mailroom_rpc_calls_total", help: "RPCs that ended, by procedure and status code.", labelNames: ["procedure", "code"], registers: [this.registry] });
    this.duration = new Histogram({
      name: "mailroom_rpc_duration_seconds",
      help: "Time from request to response of unary RPCs (long polls included).",
      labelNames: ["procedure"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    new Gauge({
      name: "mailroom_open_streams",
      help: "Server streams open now, by procedure: a stream counts until its handler has released what it holds.",
      labelNames: ["procedure"],
      registers: [this.registry],
      collect() {
        for (const [procedure, open] of streams.open) this.set({ procedure }, open);
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
  }

  /** Counts every call when it ends, with the code its client received; times unary calls. */
  observer(): CallObserver {
    return (call) =>
      ({ code, seconds }) => {
        this.calls.inc({ procedure: call.procedure, code });
        if (!call.stream) this.duration.observe({ procedure: call.procedure }, seconds);
      };
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * Answers `GET /metrics` (HTTP/1.1 or HTTP/2) and hands every other request
 * to the RPC handler. With an auth token, scrapers send it too.
 */
export function withMetricsEndpoint(handler: NodeHandlerFn, metrics: ServerMetrics, logger: Logger, authToken?: string): NodeHandlerFn {
  const authorized = authToken === undefined ? () => true : bearerTokenMatches(authToken);
  return (request, response) => {
    if (pathOf(request.url) !== METRICS_PATH) return handler(request, response);
    if (request.method !== "GET") {
      response.writeHead(405, { allow: "GET" });
      response.end();
      return;
    }
    if (!authorized(request.headers.authorization)) {
      response.writeHead(401, { "www-authenticate": "Bearer" });
      response.end();
      return;
    }
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
  };
}
