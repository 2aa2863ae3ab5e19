/**
 * grpc.health.v1.Health: the server is SERVING while its store answers pings,
 * NOT_SERVING when the store does not or once shutdown has begun. One status
 * holder is shared by Check (which refreshes it) and by every Watch stream
 * (which observes it).
 */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/port.js";
import type { ServerStreams } from "./streams.js";

export { ServingStatus };

export interface HealthMonitorOptions {
  /** Services reported besides "" (the server as a whole). */
  services: readonly string[];
  /** A ping slower than this counts as a failure. */
  pingTimeoutMs?: number;
  /** How often the store is pinged so Watch streams learn of outages without a Check. */
  intervalMs?: number;
}

export class HealthMonitor {
  private readonly services: ReadonlySet<string>;
  private readonly pingTimeoutMs: number;
  private readonly intervalMs: number;
  private current = ServingStatus.SERVING;
  private stopped = false;
  private ping: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    options: HealthMonitorOptions,
  ) {
    this.services = new Set(["", ...options.services]);
    this.pingTimeoutMs = options.pingTimeoutMs ?? 2000;
    this.intervalMs = options.intervalMs ?? 5000;
  }

  /** Pings now, then periodically until shutdown. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  /** The status of a service; undefined when the server does not serve it. */
  status(service: string): ServingStatus | undefined {
    return this.services.has(service) ? this.current : undefined;
  }

  /** Pings the store (sharing a ping already under way) and updates the status. */
  refresh(): Promise<void> {
    this.ping ??= this.pingOnce().finally(() => {
      this.ping = undefined;
    });
    return this.ping;
  }

  /** NOT_SERVING from now on; every watcher is told. */
  shutdown(): void {
    clearInterval(this.timer);
    this.stopped = true;
    this.set(ServingStatus.NOT_SERVING);
  }

  /** Resolves at the next status change, or when the signal aborts. */
  nextChange(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const wake = () => {
        signal.removeEventListener("abort", wake);
        this.waiters = this.waiters.filter((waiter) => waiter !== wake);
        resolve();
      };
      this.waiters.push(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  private async pingOnce(): Promise<void> {
    if (this.stopped) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.pingTimeoutMs} ms`)), this.pingTimeoutMs);
    });
    try {
      await Promise.race([this.store.ping(), timeout]);
      if (this.current !== ServingStatus.SERVING) this.logger.info("store answers again: SERVING");
      this.set(ServingStatus.SERVING);
    } catch (error) {
      if (this.current === ServingStatus.SERVING && !this.stopped) this.logger.warn({ error }, "store does not answer: NOT_SERVING");
      this.set(ServingStatus.NOT_SERVING);
    } finally {
      clearTimeout(timer);
    }
  }

  private set(status: ServingStatus): void {
    // A ping that was under way when shutdown began must not revive the server.
    if (this.stopped && status !== ServingStatus.NOT_SERVING) return;
    if (status === this.current) return;
    this.current = status;
    for (const wake of this.waiters) wake();
  }
}

export function healthService(monitor: HealthMonitor, streams: ServerStreams): ServiceImpl<typeof Health> {
  return {
    async check(request) {
      if (monitor.status(request.service) === undefined) {
        throw new ConnectError(`unknown service ${JSON.stringify(request.service)}`, Code.NotFound);
      }
      await monitor.refresh();
      return { status: monitor.status(request.service) };
    },

    watch(request, context) {
      return streams.serve(context, () => {
        let sent: ServingStatus | undefined;
        return {
          async next() {
            for (;;) {
              const status = monitor.status(request.service) ?? ServingStatus.SERVICE_UNKNOWN;
              if (status !== sent) {
                sent = status;
                return { status };
              }
              // Checked after sending, so a shutdown's NOT_SERVING reaches the
              // watcher before the stream ends with the shutdown's status.
              if (context.signal.aborted) throw context.signal.reason;
              await monitor.nextChange(context.signal);
            }
          },
          close() {},
        };
      });
    },
  };
}
