/**
 * The unary baseline: `concurrency` loops, each on its own connection, each
 * calling grpc.health.v1.Health/Check back to back (closed loop). Against the
 * bare echo server it measures connect-node itself; against Mailroom it adds
 * the server's interceptors, request gate and a store ping. With `rpc`
 * "enqueue" the loops call Mailroom's unary MailboxService.Enqueue instead
 * (one dispatch, 8-byte payload, threads round robin), the `unary` figure.
 */
import type { ClientProtocol, MailroomClients } from "../src/client/index.js";
import { stampedPayload } from "./jobs.js";
import { abortLoops, connect, ErrorCounts, isAbort, type Load, loadAbortController, MeasuringWindow, perSecond } from "./load.js";
import { type LatencySummary, Samples } from "./samples.js";

export interface EchoOptions {
  url: string;
  protocol: ClientProtocol;
  concurrency: number;
  /** What each loop calls: Health.Check (default) or a unary Enqueue. */
  rpc?: "health" | "enqueue";
  /** enqueue: prefix of the thread ids (spread round robin over `threads`). */
  tag?: string;
  threads?: number;
}

export interface EchoReport {
  calls: number;
  callsPerSecond: number;
  latencyMs: LatencySummary;
  errors: Record<string, number>;
}

export function startEchoLoad(options: EchoOptions): Load<EchoReport> {
  const abort = loadAbortController();
  const latency = new Samples();
  const errors = new ErrorCounts();
  const measuring = new MeasuringWindow();
  let calls = 0;
  let next = 0;
  const what = options.rpc === "enqueue" ? "Enqueue" : "Health.Check";
  const call = (clients: MailroomClients): Promise<unknown> => {
    if (options.rpc !== "enqueue") return clients.health.check({}, { signal: abort.signal });
    const threadId = `${options.tag ?? "unary"}-${next++ % (options.threads ?? 1000)}`;
    return clients.mailbox.enqueue({ dispatch: { threadId, payload: { data: stampedPayload(), mediaType: "application/octet-stream" } } }, { signal: abort.signal });
  };

  const loop = async () => {
    const clients = connect(options.url, options.protocol);
    try {
      while (!abort.signal.aborted) {
        const started = performance.now();
        try {
          await call(clients);
        } catch (error) {
          if (isAbort(error, abort.signal)) break;
          if (measuring.open) errors.record(what, error);
          continue;
        }
        if (measuring.open) {
          latency.add(performance.now() - started);
          calls++;
        }
      }
    } finally {
      clients.close();
    }
  };
  const loops = Array.from({ length: options.concurrency }, loop);

  return {
    beginMeasuring: measuring.beginMeasuring,
    endMeasuring: measuring.endMeasuring,
    stop: () => abortLoops(abort, loops),
    report: (seconds) => ({
      calls,
      callsPerSecond: perSecond(calls, seconds),
      latencyMs: latency.summary(),
      errors: errors.toJSON(),
    }),
  };
}
