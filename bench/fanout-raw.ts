/**
 * The fan-out run with subscribers that cost almost nothing, to find the
 * server's own limit: `npm run bench -- --scenario events` decodes every
 * frame of its 100 subscribers through connect-node's client, which takes
 * more CPU a frame than the server now does, so it, not the server, limits
 * that run. Here each subscriber is a raw HTTP/2 stream whose envelopes are
 * only counted (their frames by their field tags); one response in 50 is
 * decoded for latency. Publishing is as in the events run: open loop at
 * `--event-rate`, at most 64 `Publish` calls in flight over 4 connections,
 * MODEL_STREAM_DELTA events whose 8-byte payload is the publish time.
 *
 *   node --import tsx bench/fanout-raw.ts [--subscribers 100] [--event-rate 1000] [--frames-per-message 0] [--duration 8] [--server-root <checkout>] [--quiet 40]
 *
 * Prints one JSON line; saves nothing.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Command, InvalidArgumentError } from "commander";
import http2 from "node:http2";
import { EventFrameKind, EventKind } from "../gen/mailroom/v1/event_pb.js";
import { StartPosition, SubscribeRequestSchema, SubscribeResponseSchema } from "../gen/mailroom/v1/event_service_pb.js";
import { enveloped, messagesOf } from "./lean-subscriber.js";
import { connect, sleep } from "./load.js";
import { UsageSampler, waitForQuiet } from "./proc-stats.js";
import { round, Samples } from "./samples.js";
import { mailroomServer, spawnServer } from "./server.js";

const integer = (raw: string): number => {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new InvalidArgumentError("must be a whole number");
  return value;
};
const options = new Command("fanout-raw")
  .option("--subscribers <n>", "Subscribe streams, one connection each", integer, 100)
  .option("--event-rate <n>", "events published per second in total", integer, 1000)
  .option("--frames-per-message <n>", "each subscriber's max_frames_per_message", integer, 0)
  .option("--duration <seconds>", "measured time", integer, 8)
  .option("--server-root <dir>", "start Mailroom from this checkout instead")
  .option("--cpu-prof <dir>", "run the server with node --cpu-prof, writing its profile into dir")
  .option("--quiet <percent>", "first wait (up to 120 s) until the machine's busy CPU is at most this % of one core (0: do not wait)", integer, 40)
  .parse()
  .opts<{ subscribers: number; eventRate: number; framesPerMessage: number; duration: number; serverRoot?: string; quiet: number; cpuProf?: string }>();

const beforeRun = options.quiet > 0 ? await waitForQuiet(options.quiet, 120_000) : undefined;

const server = await spawnServer({ script: mailroomServer("memory", []), cwd: options.serverRoot, cpuProfileDir: options.cpuProf });
const runId = `raw-${process.pid}`;
const window = { open: false, frames: 0, messages: 0, published: 0 };
const latency = new Samples();
let caughtUp = 0;

/** Top-level fields of a SubscribeResponse (each is one frame, in `frame` or `frames`), counted by skipping their lengths. */
function countFields(message: Buffer): number {
  let at = 0;
  let count = 0;
  while (at < message.length) {
    at++; // the tag: fields 1 and 2, length-delimited
    let length = 0;
    for (let shift = 0, byte = 0x80; byte & 0x80; shift += 7) {
      byte = message[at++]!;
      length |= (byte & 0x7f) << shift;
    }
    at += length;
    count++;
  }
  return count;
}

const request = enveloped(
  toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, {
    scope: { case: "runId", value: runId },
    start: StartPosition.LATEST,
    maxFramesPerMessage: options.framesPerMessage,
    heartbeatInterval: { seconds: 300n },
  })),
);
const sessions = Array.from({ length: options.subscribers }, () => {
  const session = http2.connect(server.url);
  session.on("error", () => undefined);
  const stream = session.request({ ":method": "POST", ":path": "/mailroom.v1.EventService/Subscribe", "content-type": "application/grpc", te: "trailers" });
  stream.on("error", () => undefined);
  stream.end(request);
  let responses = 0;
  let registered = false;
  stream.on(
    "data",
    messagesOf((message) => {
      if (window.open) {
        window.messages++;
        window.frames += countFields(message);
      }
      if (registered && responses++ % 50 !== 0) return;
      const response = fromBinary(SubscribeResponseSchema, message);
      for (const frame of response.frame ? [response.frame] : response.frames) {
        if (frame.kind === EventFrameKind.CAUGHT_UP && !registered) {
          registered = true;
          caughtUp++;
        }
        const payload = frame.event?.payload;
        if (window.open && payload?.case === "full") {
          const sent = new DataView(payload.value.data.buffer, payload.value.data.byteOffset).getFloat64(0, true);
          latency.add(performance.timeOrigin + performance.now() - sent);
        }
      }
    }),
  );
  return session;
});
while (caughtUp < options.subscribers) await sleep(20);

const publishers = Array.from({ length: 4 }, () => connect(server.url, "grpc"));
let stopping = false;
const publishing = (async () => {
  const start = performance.now();
  let fired = 0;
  let inFlight = 0;
  while (!stopping) {
    const due = Math.floor(((performance.now() - start) * options.eventRate) / 1000);
    for (; fired < due && inFlight < 64; fired++) {
      inFlight++;
      const data = new Uint8Array(8);
      new DataView(data.buffer).setFloat64(0, performance.timeOrigin + performance.now(), true);
      publishers[fired % publishers.length]!.events.publish({ event: { envelope: { kind: EventKind.MODEL_STREAM_DELTA, runId }, payload: { case: "full", value: { data } } } })
        .then(() => window.open && window.published++, () => undefined)
        .finally(() => inFlight--);
    }
    await sleep(1);
  }
})();

await sleep(2000);
const sampler = new UsageSampler(server.pid);
sampler.start();
window.open = true;
const started = performance.now();
await sleep(options.duration * 1000);
window.open = false;
const seconds = (performance.now() - started) / 1000;
const usage = sampler.stop();
stopping = true;
await publishing;

const framesPerSecond = window.frames / seconds;
const summary = latency.summary();
console.log(JSON.stringify({
  subscribers: options.subscribers,
  offeredPerSecond: options.eventRate,
  framesPerMessageAsked: options.framesPerMessage,
  publishedPerSecond: round(window.published / seconds, 0),
  framesPerSecond: round(framesPerSecond, 0),
  framesPerMessage: round(window.frames / Math.max(1, window.messages), 2),
  latencyMs: { p50: summary.p50, p99: summary.p99, max: summary.max },
  serverCpuPercent: usage.server?.cpuPercent,
  serverCpuUsPerFrame: usage.server ? round(((usage.server.cpuPercent / 100) * 1e6) / framesPerSecond, 1) : undefined,
  clientCpuPercent: usage.client.cpuPercent,
  otherCpuPercent: usage.machine.otherPercent,
  quietBefore: beforeRun?.quiet,
}));
for (const session of sessions) session.destroy();
for (const publisher of publishers) publisher.close();
await server.stop();
process.exit(0);
