/**
 * The events scenarios: EventService.Publish -> EventService.Subscribe through
 * the real server.
 *
 * - "fanout": `subscribers` Subscribe streams, each on its own connection,
 *   all with the same run scope, so every published event matches every
 *   subscriber. Publishing is open loop at `rate` events/s in total (a
 *   scheduler fires Publish calls at their due times over `publishers`
 *   connections, never waiting for an answer before the next is due), so a
 *   slow server shows up as latency rather than as a lower offered rate.
 * - "max": one subscriber; `concurrency` closed Publish loops over
 *   `publishers` connections publish as fast as the server answers, pausing
 *   only while the subscriber is `maxLag` events behind (so the run measures
 *   a steady state, not a queue growing for as long as the run lasts). The
 *   figure is the EVENT frames/s that subscriber receives.
 *
 * Latency: each event's payload is the publish time (8 bytes, float64 ms, by
 * this process's clock, taken just before the Publish call); a subscriber
 * subtracts it from the time it takes the frame off the stream. Publisher and
 * subscribers run in this one process, so both ends read the same clock.
 *
 * Events are MODEL_STREAM_DELTA, a progress kind: the high-rate kind a run
 * publishes itself (Publish refuses the server's own mailbox and pool kinds).
 * Subscribers use BACKPRESSURE_CALLER (the default policy), so nothing is
 * dropped: a subscriber that falls behind lags and catches up from the journal,
 * and the lag shows in the latency.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type AgentEvent, type AgentEventSchema, EventFrameKind, EventKind } from "../gen/mailroom/v1/event_pb.js";
import { StartPosition } from "../gen/mailroom/v1/event_service_pb.js";
import type { ClientProtocol } from "../src/client/index.js";
import { connect, ErrorCounts, isAbort, type Load, loadAbortController, MeasuringWindow, perSecond, sleep } from "./load.js";
import { type LatencySummary, round, Samples } from "./samples.js";

export interface EventsOptions {
  url: string;
  protocol: ClientProtocol;
  mode: "fanout" | "max";
  /** Subscribe streams, one connection each ("max" uses 1). */
  subscribers: number;
  /** fanout: events published per second in total. */
  rate: number;
  /** Connections the Publish calls are spread over. */
  publishers: number;
  /** max: Publish calls in flight. fanout: the most in flight before the scheduler falls behind. */
  concurrency: number;
  /** max: publishers pause while the subscriber is this many events behind. */
  maxLag: number;
  /** Each subscriber's queue capacity (SubscriberQueueConfig.capacity; 0 = the server's default, 1024). */
  queueCapacity: number;
  /** Each subscriber's max_frames_per_message (0 = one frame a response, as before batching existed). */
  framesPerMessage: number;
  /** Prefix of this run's run id, so runs against a shared server do not mix. */
  tag: string;
}

export interface EventsReport {
  mode: EventsOptions["mode"];
  subscribers: number;
  /** fanout: the offered rate. */
  targetPerSecond?: number;
  /** Publish calls answered OK in the window, and per second. */
  published: number;
  publishPerSecond: number;
  publishRpcMs: LatencySummary;
  /** EVENT frames received in the window by all subscribers together, and per second. */
  frames: number;
  /** Responses (stream messages) those frames came in, and frames per response. */
  messages: number;
  framesPerMessage: number;
  framesPerSecond: number;
  /** framesPerSecond / subscribers: what one subscriber received per second. */
  framesPerSecondPerSubscriber: number;
  /** Publish call -> EVENT frame off a subscriber's stream, every frame of the window. */
  latencyMs: LatencySummary;
  /** Frames carrying an overflow notice (events dropped); 0 under BACKPRESSURE_CALLER. */
  overflowNotices: number;
  heartbeats: number;
  /**
   * After publishing stopped and subscribers had up to DRAIN_MS to catch up:
   * events published OK that some subscriber never received (summed over
   * subscribers). Anything above 0 is lost or badly late delivery.
   */
  undelivered: number;
  /** How long that catching up took. */
  drainMs: number;
  errors: Record<string, number>;
}

const PAYLOAD_BYTES = 8;
/** After the window, how long subscribers get to receive what was published. */
const DRAIN_MS = 10_000;
/** Idle heartbeats are not what is measured; the longest interval keeps them out of the way. */
const HEARTBEAT = durationFromMs(300_000);

function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

function stampedEvent(runId: string): MessageInitShape<typeof AgentEventSchema> {
  const data = new Uint8Array(PAYLOAD_BYTES);
  new DataView(data.buffer).setFloat64(0, wallMs(), true);
  return {
    envelope: { kind: EventKind.MODEL_STREAM_DELTA, runId },
    payload: { case: "full", value: { data, mediaType: "application/octet-stream" } },
  };
}

function publishedAt(event: AgentEvent | undefined): number | undefined {
  if (event?.payload.case !== "full") return undefined;
  const { data } = event.payload.value;
  if (data.byteLength < PAYLOAD_BYTES) return undefined;
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getFloat64(0, true);
}

export function startEventsLoad(options: EventsOptions): Load<EventsReport> {
  const subscriberCount = options.mode === "max" ? 1 : options.subscribers;
  const runId = `${options.tag}-run`;
  // Subscribers end on `abort`; publishers on `stopping`, so their last calls are answered and counted.
  const abort = loadAbortController();
  const { signal } = abort;
  let stopping = false;
  const errors = new ErrorCounts();
  const latency = new Samples();
  const publishRpc = new Samples();
  const window = { published: 0, frames: 0, messages: 0, overflowNotices: 0, heartbeats: 0 };
  const measuring = new MeasuringWindow();
  let publishedTotal = 0;
  const received = new Array<number>(subscriberCount).fill(0);
  let drain = { undelivered: 0, ms: 0 };
  let progressWaiters: Array<() => void> = [];
  const progressed = () => {
    const waiters = progressWaiters;
    progressWaiters = [];
    for (const wake of waiters) wake();
  };
  const nextProgress = () => new Promise<void>((resolve) => progressWaiters.push(resolve));

  // Publishing starts only once every subscriber is registered (its CAUGHT_UP frame came), so none misses the start.
  let caughtUp = 0;
  let markReady!: () => void;
  let failReady!: (error: unknown) => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  ready.catch(() => undefined); // observed by run.ts; publishers only wait on it

  const subscriber = async (index: number) => {
    const { events, close } = connect(options.url, options.protocol);
    try {
      const stream = events.subscribe(
        {
          scope: { case: "runId", value: runId },
          start: StartPosition.LATEST,
          queue: { capacity: options.queueCapacity },
          heartbeatInterval: HEARTBEAT,
          maxFramesPerMessage: options.framesPerMessage,
        },
        { signal },
      );
      for await (const response of stream) {
        const frames = response.frame ? [response.frame] : response.frames;
        if (measuring.open && frames.some((f) => f.kind === EventFrameKind.EVENT)) window.messages++;
        for (const frame of frames) {
          if (frame.kind === EventFrameKind.CAUGHT_UP) {
            if (++caughtUp === subscriberCount) markReady();
            continue;
          }
          if (frame.kind !== EventFrameKind.EVENT) {
            if (measuring.open) window.heartbeats++;
            continue;
          }
          const now = wallMs();
          received[index]!++;
          // Only "max" publishers wait, and only on its one subscriber.
          if (index === 0 && progressWaiters.length > 0) progressed();
          if (!measuring.open) continue;
          window.frames++;
          if (frame.overflow) window.overflowNotices++;
          const at = publishedAt(frame.event);
          if (at !== undefined) latency.add(now - at);
        }
      }
    } catch (error) {
      if (isAbort(error, signal)) return;
      errors.record("Subscribe", error);
      failReady(error);
    } finally {
      close();
    }
  };

  const publishers = Array.from({ length: options.publishers }, () => connect(options.url, options.protocol));
  let nextPublisher = 0;
  const publish = async (): Promise<void> => {
    const client = publishers[nextPublisher++ % publishers.length]!;
    const started = performance.now();
    try {
      await client.events.publish({ event: stampedEvent(runId) });
    } catch (error) {
      errors.record("Publish", error);
      return;
    }
    publishedTotal++;
    if (measuring.open) {
      publishRpc.add(performance.now() - started);
      window.published++;
    }
  };

  /** fanout: fire Publish calls at their due times (rate/s from the start), up to `concurrency` in flight. */
  const scheduler = async () => {
    await ready;
    const inFlight = new Set<Promise<void>>();
    const start = performance.now();
    let fired = 0;
    while (!stopping) {
      const due = Math.floor(((performance.now() - start) * options.rate) / 1000);
      while (fired < due && inFlight.size < options.concurrency) {
        fired++;
        const call = publish().finally(() => inFlight.delete(call));
        inFlight.add(call);
      }
      // ~1 ms: at 1,000/s one event a tick, so the offered load is smooth rather than bursts.
      await sleep(1);
    }
    await Promise.all(inFlight);
  };

  /** max: a closed Publish loop, paused while the one subscriber lags by maxLag or more. */
  const closedLoop = async () => {
    await ready;
    while (!stopping) {
      if (publishedTotal - received[0]! >= options.maxLag) {
        await nextProgress();
        continue;
      }
      await publish();
    }
  };

  const subscribers = Array.from({ length: subscriberCount }, (_, i) => subscriber(i));
  const publishing = (options.mode === "fanout" ? [scheduler()] : Array.from({ length: options.concurrency }, closedLoop))
    // A subscriber that failed before everyone was ready leaves nothing to publish for.
    .map((loop) => loop.catch(() => undefined));

  return {
    ready,
    beginMeasuring: measuring.beginMeasuring,
    endMeasuring: measuring.endMeasuring,
    stop: async () => {
      stopping = true;
      progressed();
      await Promise.all(publishing);
      // Let subscribers receive what was published, then count what never arrived.
      const drainStarted = performance.now();
      const behind = () => received.reduce((sum, n) => sum + Math.max(0, publishedTotal - n), 0);
      while (behind() > 0 && performance.now() - drainStarted < DRAIN_MS) await sleep(20);
      drain = { undelivered: behind(), ms: Math.round(performance.now() - drainStarted) };
      abort.abort();
      await Promise.all(subscribers);
      for (const { close } of publishers) close();
    },
    report: (seconds) => {
      const framesPerSecond = perSecond(window.frames, seconds);
      return {
        mode: options.mode,
        subscribers: subscriberCount,
        ...(options.mode === "fanout" ? { targetPerSecond: options.rate } : {}),
        published: window.published,
        publishPerSecond: perSecond(window.published, seconds),
        publishRpcMs: publishRpc.summary(),
        frames: window.frames,
        messages: window.messages,
        framesPerMessage: window.messages === 0 ? 0 : round(window.frames / window.messages, 2),
        framesPerSecond,
        framesPerSecondPerSubscriber: round(framesPerSecond / subscriberCount, 0),
        latencyMs: latency.summary(),
        overflowNotices: window.overflowNotices,
        heartbeats: window.heartbeats,
        undelivered: drain.undelivered,
        drainMs: drain.ms,
        errors: errors.toJSON(),
      };
    },
  };
}
