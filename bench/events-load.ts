/**
 * The events scenarios through the real server: EventService.Publish ->
 * EventService.Subscribe (the schedule, latency and drain are fanout.ts's).
 *
 * Every subscriber has its own connection and the same run scope, so every
 * published event matches every subscriber; it starts `LATEST` and counts as
 * registered at its `CAUGHT_UP` frame. Publish calls are spread over
 * `publishers` connections.
 *
 * Events are MODEL_STREAM_DELTA, a progress kind: the high-rate kind a run
 * publishes itself (Publish refuses the server's own mailbox and pool kinds).
 * Subscribers use BACKPRESSURE_CALLER (the default policy), so nothing is
 * dropped: a subscriber that falls behind lags and catches up from the journal,
 * and the lag shows in the latency.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type AgentEvent, EventFrameKind, EventKind } from "../gen/mailroom/v1/event_pb.js";
import { StartPosition } from "../gen/mailroom/v1/event_service_pb.js";
import type { ClientProtocol } from "../src/client/index.js";
import { type EventsReport, type FanoutOptions, type FanoutTransport, startFanoutLoad } from "./fanout.js";
import { stampOf } from "./jobs.js";
import { leanSubscribe } from "./lean-subscriber.js";
import { connect, type Load } from "./load.js";

export type { EventsReport };

export interface EventsOptions extends FanoutOptions {
  url: string;
  protocol: ClientProtocol;
  /** Connections the Publish calls are spread over. */
  publishers: number;
  /** Each subscriber's queue capacity (SubscriberQueueConfig.capacity; 0 = the server's default, 1024). */
  queueCapacity: number;
  /** Each subscriber's max_frames_per_message (0 = one frame a response, as before batching existed). */
  framesPerMessage: number;
  /** Prefix of this run's run id, so runs against a shared server do not mix. */
  tag: string;
  /** How subscribers read their streams: connect-node's client (decodes every frame), or raw HTTP/2 walking only what is measured (lean-subscriber.ts). */
  subscriberClient: SubscriberClient;
}

export type SubscriberClient = "connect" | "lean";

/** Idle heartbeats are not what is measured; the longest interval keeps them out of the way. */
const HEARTBEAT = durationFromMs(300_000);

function payloadOf(event: AgentEvent | undefined): Uint8Array | undefined {
  return event?.payload.case === "full" ? event.payload.value.data : undefined;
}

function mailroomTransport(options: EventsOptions): FanoutTransport {
  const runId = `${options.tag}-run`;
  const publishers = Array.from({ length: options.publishers }, () => connect(options.url, options.protocol));
  let nextPublisher = 0;
  return {
    names: { publish: "Publish", subscribe: "Subscribe" },
    async subscribe(_index, sink, signal) {
      const request = { scope: { case: "runId" as const, value: runId }, start: StartPosition.LATEST, queue: { capacity: options.queueCapacity }, heartbeatInterval: HEARTBEAT, maxFramesPerMessage: options.framesPerMessage };
      if (options.subscriberClient === "lean") return leanSubscribe(options.url, request, sink, signal, stampOf);
      const { events, close } = connect(options.url, options.protocol);
      try {
        const stream = events.subscribe(request, { signal });
        for await (const response of stream) {
          // One frame a response, or a batch of them (max_frames_per_message).
          const frames = response.frame ? [response.frame] : response.frames;
          if (frames.some((frame) => frame.kind === EventFrameKind.EVENT)) sink.message();
          for (const frame of frames) {
            if (frame.kind === EventFrameKind.CAUGHT_UP) sink.ready();
            else if (frame.kind === EventFrameKind.EVENT) sink.event(stampOf(payloadOf(frame.event)), frame.overflow !== undefined);
            else sink.other();
          }
        }
      } finally {
        close();
      }
    },
    async publish(data) {
      const client = publishers[nextPublisher++ % publishers.length]!;
      await client.events.publish({
        event: {
          envelope: { kind: EventKind.MODEL_STREAM_DELTA, runId },
          payload: { case: "full", value: { data, mediaType: "application/octet-stream" } },
        },
      });
    },
    async close() {
      for (const { close } of publishers) close();
    },
  };
}

export function startEventsLoad(options: EventsOptions): Load<EventsReport> {
  return startFanoutLoad(options, mailroomTransport(options));
}
