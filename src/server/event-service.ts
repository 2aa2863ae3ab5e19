/**
 * EventService: each handler checks its request (domain), calls the engine
 * (the events of its caller's namespace) and translates the answer.
 */
import { create } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import type { ServiceImpl } from "@connectrpc/connect";
import { type EventService, type SubscribeResponse, SubscribeResponseSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { parsePublishBatch } from "../domain/events/batch.js";
import { parsePublish } from "../domain/events/publish.js";
import { parseListEvents, parseSubscribe, type SubscribeCommand } from "../domain/events/requests.js";
import { cursor } from "../domain/events/scope.js";
import type { Engine } from "../engine/engine.js";
import type { Subscription, SubscriptionFrame } from "../engine/events/subscription.js";
import { EventAnswers } from "./event-answers.js";
import { eventFrame, formatOf, frameField, frameKey, jsonFrameBytes, subscriptionFrame } from "./event-frames.js";
import { scopeOf } from "./principal.js";
import { ENVELOPE_HEADER, type ServerStreams, type StreamSource, type WireFormat, wireFormatOf } from "./streams.js";

export function eventService(engine: Engine, streams: ServerStreams, maxMessageBytes: number): ServiceImpl<typeof EventService> {
  const answers = new EventAnswers(maxMessageBytes);
  return {
    async publish(request, context) {
      const event = parsePublish(request.event, engine.clock.now());
      answers.checkPublish(event);
      return scopeOf(engine, context).events.publish(event);
    },

    async publishBatch(request, context) {
      return scopeOf(engine, context).events.publishBatch(parsePublishBatch(request.events, engine.clock.now()));
    },

    subscribe(request, context) {
      const command = parseSubscribe(request);
      const wire = wireFormatOf(context.requestHeader.get("content-type"));
      return streams.serve(context, async () => {
        const subscription = await scopeOf(engine, context).events.subscribe(command);
        return new SubscribeSource(subscription, command, context.signal, wire, batchBudget(maxMessageBytes));
      });
    },

    async listEvents(request, context) {
      const command = parseListEvents(request);
      const page = await scopeOf(engine, context).events.list(command);
      const frames = page.events.map((doc) => eventFrame(doc, command.scope, command.filter.payloadAccess));
      // A page holds only what fits in one answer; the next one starts after its last event.
      const fit = answers.framesThatFit(frames, formatOf(context));
      if (fit < frames.length) return { frames: frames.slice(0, fit), nextCursor: cursor(command.scope, page.events[fit - 1]!._id), endOfRange: false };
      return { frames, nextCursor: cursor(command.scope, page.next), endOfRange: page.end };
    },
  };
}

/** Bytes of frames one batch may carry: half the message limit (room for framing and JSON), at most 1 MiB. */
function batchBudget(maxMessageBytes: number): number {
  return Math.min(1024 * 1024, Math.floor(maxMessageBytes / 2));
}

/** The most one-frame responses a stream without batching takes from its subscription for one write. */
const COALESCED_FRAMES = 64;

const FRAME_FIELD = SubscribeResponseSchema.field.frame.number;
const FRAMES_FIELD = SubscribeResponseSchema.field.frames.number;

/**
 * A Subscribe stream's responses. A binary stream's frames travel
 * pre-encoded (frameField: one encoding per event, scope and payload access,
 * shared by every subscriber) as the response's field, written verbatim. With
 * batching, a response takes what the subscription has ready, up to
 * `max_frames_per_message` frames and the batch budget; frames beyond the
 * budget go first in the next response.
 *
 * Without batching, a binary stream still takes what is ready (up to
 * COALESCED_FRAMES and the budget) and hands it over as consecutive
 * one-frame responses in one write: the client reads exactly the messages it
 * asked for, each event in its own response, while the server pays one write
 * (and one pull from the subscription) for all of them. A subscriber that
 * keeps up has one frame ready at a time and gets it at once, as before.
 */
class SubscribeSource implements StreamSource<SubscribeResponse> {
  private carried: SubscriptionFrame[] = [];
  private readonly batched: boolean;
  /** The response field frames travel in: `frames` when batched, else `frame` (both length-delimited; tags fit one byte). */
  private readonly field: number;
  /** The shared encoding this subscriber's frames use (frameKey). */
  private readonly frameKey: string;

  constructor(
    private readonly subscription: Subscription,
    private readonly command: SubscribeCommand,
    private readonly signal: AbortSignal,
    private readonly wire: WireFormat,
    private readonly budget: number,
  ) {
    this.batched = command.maxFramesPerMessage > 1;
    this.field = this.batched ? FRAMES_FIELD : FRAME_FIELD;
    this.frameKey = frameKey(command.scope, command.filter.payloadAccess);
  }

  async next(): Promise<SubscribeResponse | undefined> {
    const frames = await this.nextFrames();
    if (!frames) return undefined;
    const { scope, filter } = this.command;
    const response = create(SubscribeResponseSchema);
    if (this.wire === "json") {
      const made = this.fit(frames, jsonFrameBytes).map((frame) => subscriptionFrame(frame, scope, filter.payloadAccess, "json"));
      if (this.batched) response.frames = made;
      else response.frame = made[0];
      return response;
    }
    response.$unknown = this.fields(frames).map((data) => ({ no: this.field, wireType: WireType.LengthDelimited, data }));
    return response;
  }

  /**
   * The next responses of a binary stream, encoded and enveloped, without
   * making messages (each frame's field is written after its tag): one
   * response of up to `max_frames_per_message` frames when batched, else one
   * response a frame for every frame that is ready.
   */
  async nextEnveloped(): Promise<Uint8Array | undefined> {
    const frames = await this.nextFrames(this.batched ? this.command.maxFramesPerMessage : COALESCED_FRAMES);
    if (!frames) return undefined;
    const fields = this.fields(frames);
    const perResponse = this.batched ? fields.length : 1;
    let length = 0;
    for (const field of fields) length += 1 + field.byteLength;
    const bytes = new Uint8Array((fields.length / perResponse) * ENVELOPE_HEADER + length);
    const view = new DataView(bytes.buffer);
    const tag = (this.field << 3) | WireType.LengthDelimited;
    let at = 0;
    for (let first = 0; first < fields.length; first += perResponse) {
      const envelope = at;
      at += ENVELOPE_HEADER;
      for (let i = first; i < first + perResponse; i++) {
        const field = fields[i]!;
        bytes[at++] = tag;
        bytes.set(field, at);
        at += field.byteLength;
      }
      view.setUint32(envelope + 1, at - envelope - ENVELOPE_HEADER);
    }
    return bytes;
  }

  /** Frames for the next response(s): those carried over, else what the subscription has (up to `max`); undefined once it ended. */
  private async nextFrames(max = this.command.maxFramesPerMessage): Promise<SubscriptionFrame[] | undefined> {
    const frames = this.carried.length > 0 ? this.carried : await this.subscription.take(max, this.command.heartbeatMs, this.signal);
    this.carried = [];
    if (frames === undefined && this.signal.aborted) throw this.signal.reason;
    return frames;
  }

  /** The encoded frame fields of a binary response: the leading ones that fit the budget (at least one); the rest are carried to the next. */
  private fields(frames: SubscriptionFrame[]): Uint8Array[] {
    const { scope, filter } = this.command;
    const fields = frames.map((frame) => frameField(frame, scope, filter.payloadAccess, this.frameKey));
    return fields.slice(0, this.fit(frames, (_frame, i) => fields[i]!.byteLength).length);
  }

  close(): void {
    this.subscription.close();
  }

  /** The leading frames that fit the budget (always at least one); the rest are carried to the next response. */
  private fit(frames: SubscriptionFrame[], size: (frame: SubscriptionFrame, i: number) => number): SubscriptionFrame[] {
    let bytes = 0;
    let count = 0;
    while (count < frames.length) {
      bytes += size(frames[count]!, count);
      if (count > 0 && bytes > this.budget) break;
      count++;
    }
    if (count < frames.length) this.carried = frames.slice(count);
    return count < frames.length ? frames.slice(0, count) : frames;
  }
}
