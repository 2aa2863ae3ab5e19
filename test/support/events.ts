/**
 * Helpers for EventService end-to-end tests: publishing in the words of the
 * contract, a subscription read only when the test asks for a frame (so a
 * test can stop reading, as a slow subscriber does, and resume), and the
 * bookkeeping of what a subscriber saw.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  type EventEnvelope,
  type EventEnvelopeSchema,
  type EventFrame,
  EventFrameKind,
  EventKind,
  type EventOverflowNotice,
} from "../../gen/mailroom/v1/event_pb.js";
import type { EventService, SubscribeRequestSchema, SubscribeResponse } from "../../gen/mailroom/v1/event_service_pb.js";

export type Events = Client<typeof EventService>;
export type SubscribeInit = MessageInitShape<typeof SubscribeRequestSchema>;
export type EnvelopeInit = Exclude<MessageInitShape<typeof EventEnvelopeSchema>, EventEnvelope>;

/** Publishes one event with a redacted-summary payload; returns the envelope as recorded. */
export async function publish(events: Events, envelope: EnvelopeInit, summary = ""): Promise<EventEnvelope> {
  const response = await events.publish({ event: { envelope, payload: { case: "redactedSummary", value: summary } } });
  return response.envelope!;
}

/**
 * Publishes `count` events, `concurrency` calls at a time; `envelopeOf(i)`
 * describes the i-th. Returns the recorded envelopes by index.
 */
export async function publishMany(events: Events, count: number, envelopeOf: (i: number) => EnvelopeInit, concurrency = 16): Promise<EventEnvelope[]> {
  const recorded: EventEnvelope[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < count; i = next++) recorded[i] = await publish(events, envelopeOf(i), `#${i}`);
    }),
  );
  return recorded;
}

/** The journal position of a recorded envelope, as a number. */
export const seqOf = (envelope: EventEnvelope): number => Number(envelope.eventSeq);

/** The journal position a frame's cursor stands for. */
export const cursorSeq = (frame: EventFrame): number => Number(frame.cursor?.eventSeq ?? -1);

export const isEvent = (frame: EventFrame): boolean => frame.kind === EventFrameKind.EVENT;

/** Kinds the contract calls terminal / progress (the ones the tests publish). */
export const TERMINAL = EventKind.RUN_COMPLETED;
export const PROGRESS = EventKind.MODEL_STREAM_DELTA;

/** Fails with a message naming what was awaited when `promise` takes longer than `timeoutMs`. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing within ${timeoutMs} ms while waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * One Subscribe call read a frame at a time, and only when the test asks:
 * between two `next` calls nothing consumes the stream, so the subscriber is
 * paused exactly as a client that stopped reading (HTTP/2 flow control then
 * holds the server back, and the server's queue and its overflow policy act).
 */
export class EventStream {
  private readonly controller = new AbortController();
  private readonly iterator: AsyncIterator<SubscribeResponse>;

  constructor(events: Events, request: SubscribeInit) {
    this.iterator = events.subscribe(request, { signal: this.controller.signal })[Symbol.asyncIterator]();
  }

  async next(what = "the next frame", timeoutMs = 10_000): Promise<EventFrame> {
    const result = await within(this.iterator.next(), timeoutMs, what);
    if (result.done) throw new Error(`the stream ended before ${what}`);
    return result.value.frame!;
  }

  /** Reads frames until one whose cursor has reached `seq`; returns every frame read. */
  async framesThrough(seq: number, what: string, timeoutMs = 10_000): Promise<EventFrame[]> {
    const frames: EventFrame[] = [];
    for (;;) {
      const frame = await this.next(`${what} (${frames.length} frames so far)`, timeoutMs);
      frames.push(frame);
      if (cursorSeq(frame) >= seq) return frames;
    }
  }

  /** Reads until the stream fails; the frames it sent first and the error (fails the test if it ends cleanly). */
  async untilFailure(what: string, timeoutMs = 10_000): Promise<{ frames: EventFrame[]; error: unknown }> {
    const frames: EventFrame[] = [];
    for (;;) {
      let result: IteratorResult<SubscribeResponse>;
      try {
        result = await within(this.iterator.next(), timeoutMs, what);
      } catch (error) {
        return { frames, error };
      }
      if (result.done) throw new Error(`the stream ended cleanly; expected ${what}`);
      frames.push(result.value.frame!);
    }
  }

  close(): void {
    this.controller.abort();
  }
}

/** Every notice among the frames. */
export function noticesOf(frames: readonly EventFrame[]): EventOverflowNotice[] {
  return frames.flatMap((frame) => (frame.overflow ? [frame.overflow] : []));
}

/**
 * Resolves once the server has handed the terminal event at `seq` of `runId`
 * to every live subscription: a second subscription (reading only the run's
 * terminal events) has received it, and the server passes each event to all
 * its live subscriptions at once. Lets a test know a paused subscriber's
 * queue has seen everything without sleeping.
 */
export async function handedToSubscribers(events: Events, runId: string, seq: number): Promise<void> {
  const probe = new EventStream(events, { scope: { case: "filter", value: { runIds: [runId], kinds: [TERMINAL] } } });
  try {
    await probe.framesThrough(seq, `event_seq ${seq} of run ${runId}`);
  } finally {
    probe.close();
  }
}
