/**
 * The unary baseline: `concurrency` loops, each on its own connection, each
 * calling grpc.health.v1.Health/Check back to back (closed loop). Against the
 * bare echo server it measures connect-node itself; against Mailroom it adds
 * the server's interceptors, request gate and a store ping.
 */
import type { ClientProtocol } from "../src/client/index.js";
import { abortLoops, connect, ErrorCounts, isAbort, type Load, loadAbortController, MeasuringWindow, perSecond } from "./load.js";
import { type LatencySummary, Samples } from "./samples.js";

export interface EchoOptions {
  url: string;
  protocol: ClientProtocol;
  concurrency: number;
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

  const loop = async () => {
    const { health, close } = connect(options.url, options.protocol);
    try {
      while (!abort.signal.aborted) {
        const started = performance.now();
        try {
          await health.check({}, { signal: abort.signal });
        } catch (error) {
          if (isAbort(error, abort.signal)) break;
          if (measuring.open) errors.record("Health.Check", error);
          continue;
        }
        if (measuring.open) {
          latency.add(performance.now() - started);
          calls++;
        }
      }
    } finally {
      close();
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
