/**
 * A Subscribe stream read the way a consumer that counts its microseconds
 * reads it: raw gRPC over node:http2, each frame walked with protobuf-es's
 * BinaryReader for what the harness needs (its kind, whether it carries an
 * overflow notice, the payload's bytes), no message objects.
 *
 * Why the fan-out figures use it (`--subscriber-client lean`): the NATS runs'
 * subscribers get raw payload bytes from nats.js, while connect-node's client
 * decodes every frame into messages through its async pipeline, ~28 us of
 * the load generator's CPU a frame. At 100 subscribers x 1,000 events/s that
 * is ~2.8 cores, so with it the load generator, not the server, caps the run
 * on this 2-core machine. The connect-node run stays in the figures as
 * information (`--subscriber-client connect`, the events scenario's default).
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import http2 from "node:http2";
import { InlinePayloadSchema } from "../gen/mailroom/v1/common_pb.js";
import { AgentEventSchema, EventFrameKind, EventFrameSchema } from "../gen/mailroom/v1/event_pb.js";
import { SubscribeRequestSchema, SubscribeResponseSchema } from "../gen/mailroom/v1/event_service_pb.js";
import type { SubscriberSink } from "./fanout.js";

const RESPONSE = { frame: SubscribeResponseSchema.field.frame.number, frames: SubscribeResponseSchema.field.frames.number };
const FRAME = { kind: EventFrameSchema.field.kind.number, event: EventFrameSchema.field.event.number, overflow: EventFrameSchema.field.overflow.number };
const EVENT_FULL = AgentEventSchema.field.full.number;
const PAYLOAD_DATA = InlinePayloadSchema.field.data.number;

/** The bytes of a message's length-delimited field `no` (the last one), or undefined. */
function fieldBytes(bytes: Uint8Array, no: number): Uint8Array | undefined {
  const reader = new BinaryReader(bytes);
  let found: Uint8Array | undefined;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === no && wireType === WireType.LengthDelimited) found = reader.bytes();
    else reader.skip(wireType, field);
  }
  return found;
}

interface LeanFrame {
  kind: number;
  overflow: boolean;
  stamp: number | undefined;
}

/** What the harness needs of one EventFrame. */
function frameOf(bytes: Uint8Array, stampOf: (data: Uint8Array | undefined) => number | undefined): LeanFrame {
  const reader = new BinaryReader(bytes);
  let kind = 0;
  let overflow = false;
  let event: Uint8Array | undefined;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === FRAME.kind && wireType === WireType.Varint) kind = reader.int32();
    else if (field === FRAME.event && wireType === WireType.LengthDelimited) event = reader.bytes();
    else {
      if (field === FRAME.overflow) overflow = true;
      reader.skip(wireType, field);
    }
  }
  const payload = event && fieldBytes(event, EVENT_FULL);
  return { kind, overflow, stamp: stampOf(payload && fieldBytes(payload, PAYLOAD_DATA)) };
}

/** A gRPC request body: one message, enveloped (flags 0, big-endian length). */
export function enveloped(message: Uint8Array): Buffer {
  const body = Buffer.alloc(5 + message.byteLength);
  body.writeUInt32BE(message.byteLength, 1);
  body.set(message, 5);
  return body;
}

/** A `data` listener that hands over each whole enveloped message of a stream's body, whatever the chunks' boundaries. */
export function messagesOf(onMessage: (message: Buffer) => void): (chunk: Buffer) => void {
  let buffered: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5) {
      const length = buffered.readUInt32BE(1);
      if (buffered.length < 5 + length) break;
      const message = buffered.subarray(5, 5 + length);
      buffered = buffered.subarray(5 + length);
      onMessage(message);
    }
  };
}

/** Runs one Subscribe until `signal` aborts (resolves) or the stream fails (rejects). */
export function leanSubscribe(
  url: string,
  request: MessageInitShape<typeof SubscribeRequestSchema>,
  sink: SubscriberSink,
  signal: AbortSignal,
  stampOf: (data: Uint8Array | undefined) => number | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    const end = (error?: Error) => {
      signal.removeEventListener("abort", abort);
      session.destroy();
      if (error && !signal.aborted) reject(error);
      else resolve();
    };
    const abort = () => end();
    signal.addEventListener("abort", abort, { once: true });
    session.on("error", end);
    const stream = session.request({ ":method": "POST", ":path": "/mailroom.v1.EventService/Subscribe", "content-type": "application/grpc", te: "trailers" });
    stream.on("error", end);
    stream.on("trailers", (trailers) => {
      if (trailers["grpc-status"] !== "0") end(new Error(`Subscribe ended with grpc-status ${String(trailers["grpc-status"])}: ${decodeURIComponent(String(trailers["grpc-message"] ?? ""))}`));
    });
    stream.on("close", () => end(signal.aborted ? undefined : new Error("the Subscribe stream closed")));
    stream.end(enveloped(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, request))));
    stream.on(
      "data",
      messagesOf((message) => {
        const reader = new BinaryReader(message);
        const frames: LeanFrame[] = [];
        while (reader.pos < reader.len) {
          const [field, wireType] = reader.tag();
          if ((field === RESPONSE.frame || field === RESPONSE.frames) && wireType === WireType.LengthDelimited) frames.push(frameOf(reader.bytes(), stampOf));
          else reader.skip(wireType, field);
        }
        if (frames.some((f) => f.kind === EventFrameKind.EVENT)) sink.message();
        for (const { kind, overflow, stamp } of frames) {
          if (kind === EventFrameKind.CAUGHT_UP) sink.ready();
          else if (kind === EventFrameKind.EVENT) sink.event(stamp, overflow);
          else sink.other();
        }
      }),
    );
  });
}
