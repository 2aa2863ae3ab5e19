/**
 * What every publish -> receive load shares, whichever system carries the
 * events (Mailroom's EventService, NATS core, NATS JetStream): subscribers
 * that stamp each event's arrival, the publishing schedule, the drain at the
 * end and the figures. A transport supplies how to subscribe and publish.
 *
 * - "fanout": `subscribers` subscriptions that all match every event.
 *   Publishing is open loop at `rate` events/s in total (a scheduler fires
 *   publish calls at their due times, never waiting for an answer before the
 *   next is due, at most `concurrency` in flight), so a slow system shows up as
 *   latency and as fewer published/s than offered.
 * - "max": one subscriber; `concurrency` closed publish loops as fast as the
 *   system answers, pausing only while the subscriber is `maxLag` events
 *   behind. The figure is the events/s that subscriber receives.
 *
 * Latency: each event's payload is its publish time (8 bytes, float64 ms by
 * this process's clock, taken just before the publish call); a subscriber
 * subtracts it from the time it takes the event. Publishers and subscribers
 * run in this one process, so both ends read the same clock.
 */
import { stampedPayload, wallMs } from "./jobs.js";
import { ErrorCounts, type Load, loadAbortController, MeasuringWindow, perSecond, sleep } from "./load.js";
import { type LatencySummary, round, Samples } from "./samples.js";

export interface FanoutOptions {
  mode: "fanout" | "max";
  /** Subscriptions ("max" uses 1). */
  subscribers: number;
  /** fanout: events published per second in total. */
  rate: number;
  /** max: publish calls in flight. fanout: the most in flight before the scheduler falls behind. */
  concurrency: number;
  /** max: publishers pause while the subscriber is this many events behind. */
  maxLag: number;
}

export interface EventsReport {
  mode: FanoutOptions["mode"];
  subscribers: number;
  /** fanout: the offered rate. */
  targetPerSecond?: number;
  /** Publish calls answered OK in the window, and per second. */
  published: number;
  publishPerSecond: number;
  publishRpcMs: LatencySummary;
  /** Events received in the window by all subscribers together, and per second. */
  frames: number;
  framesPerSecond: number;
  /** Stream messages that carried those events (a peer's: one an event), and events a message. */
  messages: number;
  framesPerMessage: number;
  /** framesPerSecond / subscribers: what one subscriber received per second. */
  framesPerSecondPerSubscriber: number;
  /** Publish call -> event off a subscriber's stream, every event of the window. */
  latencyMs: LatencySummary;
  /** Frames carrying an overflow notice (events dropped); 0 under Mailroom's BACKPRESSURE_CALLER. */
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

/** What a subscription tells the harness. */
export interface SubscriberSink {
  /** Every subscription is registered from now on (publishing may start once all are). */
  ready(): void;
  /** An event arrived; `stamp` is its publish time when its payload carried one. */
  event(stamp: number | undefined, overflow?: boolean): void;
  /** A frame that is not an event (heartbeat, notice). */
  other(): void;
  /** A stream message holding events arrived (before its events); transports of one event a message may skip it. */
  message(): void;
}

export interface FanoutTransport {
  /** Runs subscription `index` until `signal` aborts; rejects when it fails. */
  subscribe(index: number, sink: SubscriberSink, signal: AbortSignal): Promise<void>;
  /** Publishes one event carrying `payload`; resolves once the system accepted it. */
  publish(payload: Uint8Array): Promise<void>;
  /** Closes the publishers' connections (subscriptions end on the signal). */
  close(): Promise<void>;
  /** Name of the failing call in error counts, e.g. "Publish". */
  readonly names: { publish: string; subscribe: string };
}

/** After the window, how long subscribers get to receive what was published. */
const DRAIN_MS = 10_000;

export function startFanoutLoad(options: FanoutOptions, transport: FanoutTransport): Load<EventsReport> {
  const subscriberCount = options.mode === "max" ? 1 : options.subscribers;
  // Subscribers end on `abort`; publishers on `stopping`, so their last calls are answered and counted.
  const abort = loadAbortController();
  const { signal } = abort;
  let stopping = false;
  const errors = new ErrorCounts();
  const latency = new Samples();
  const publishRpc = new Samples();
  const window = { published: 0, frames: 0, messages: 0, messagesSeen: false, overflowNotices: 0, heartbeats: 0 };
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

  // Publishing starts only once every subscriber is registered, so none misses the start.
  let readyCount = 0;
  let markReady!: () => void;
  let failReady!: (error: unknown) => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  ready.catch(() => undefined); // observed by run.ts; publishers only wait on it

  const subscriber = async (index: number) => {
    let isReady = false;
    const sink: SubscriberSink = {
      ready: () => {
        if (isReady) return;
        isReady = true;
        if (++readyCount === subscriberCount) markReady();
      },
      event: (stamp, overflow) => {
        const now = wallMs();
        received[index]!++;
        // Only "max" publishers wait, and only on its one subscriber.
        if (index === 0 && progressWaiters.length > 0) progressed();
        if (!measuring.open) return;
        window.frames++;
        if (overflow) window.overflowNotices++;
        if (stamp !== undefined) latency.add(now - stamp);
      },
      other: () => {
        if (measuring.open) window.heartbeats++;
      },
      message: () => {
        window.messagesSeen = true;
        if (measuring.open) window.messages++;
      },
    };
    try {
      await transport.subscribe(index, sink, signal);
    } catch (error) {
      if (signal.aborted) return;
      errors.record(transport.names.subscribe, error);
      failReady(error);
    }
  };

  const publish = async (): Promise<void> => {
    const started = performance.now();
    try {
      await transport.publish(stampedPayload());
    } catch (error) {
      errors.record(transport.names.publish, error);
      return;
    }
    publishedTotal++;
    if (measuring.open) {
      publishRpc.add(performance.now() - started);
      window.published++;
    }
  };

  /** fanout: fire publish calls at their due times (rate/s from the start), up to `concurrency` in flight. */
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

  /** max: a closed publish loop, paused while the one subscriber lags by maxLag or more. */
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
      await transport.close();
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
        framesPerSecond,
        messages: window.messagesSeen ? window.messages : window.frames,
        framesPerMessage: window.messagesSeen && window.messages > 0 ? round(window.frames / window.messages, 2) : 1,
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
