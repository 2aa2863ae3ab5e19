/**
 * Subscribe with `max_frames_per_message` (issue 10, item 4): a subscriber
 * that is behind gets its backlog in batches, one that keeps up still gets
 * each event at once, alone; batches never exceed what was asked for nor the
 * server's message size limit; old clients (the field unset) are unaffected.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it, onTestFinished } from "vitest";
import { ErrorDetailSchema } from "../../gen/mailroom/v1/errors_pb.js";
import { EventFrameKind, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { SubscribeRequestSchema, type SubscribeResponse, SubscribeResponseSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import type { ClientProtocol } from "../../src/client/index.js";
import { e2eAuthHeaders, testClients } from "../support/e2e-auth.js";
import { type Events, publishMany, seqOf, type SubscribeInit, within } from "../support/events.js";
import { uid } from "../support/mailbox.js";
import { grpcFrame } from "../support/raw-grpc.js";
import { useServerProcess } from "../support/server-process.js";

/** A subscription read a response at a time. */
function responses(events: Events, request: SubscribeInit) {
  const abort = new AbortController();
  onTestFinished(() => abort.abort());
  const iterator = events.subscribe(request, { signal: abort.signal })[Symbol.asyncIterator]();
  return async (what: string): Promise<SubscribeResponse> => {
    const result = await within(iterator.next(), 10_000, what);
    if (result.done) throw new Error(`the stream ended before ${what}`);
    return result.value;
  };
}

const wires: Array<[string, { protocol: ClientProtocol; binary: boolean }]> = [
  ["gRPC, binary", { protocol: "grpc", binary: true }],
  ["Connect, JSON", { protocol: "connect", binary: false }],
];

describe.each(wires)("Subscribe with max_frames_per_message over %s", (_name, wire) => {
  const server = useServerProcess();

  it("replays a backlog in order in batches of at most that many frames, then CAUGHT_UP; a live event comes at once, alone", async () => {
    const clients = testClients({ baseUrl: server().url, ...wire });
    onTestFinished(() => clients.close());
    const runId = uid("batched-run");
    const published = await publishMany(clients.events, 120, () => ({ runId, kind: EventKind.MODEL_STREAM_DELTA }));
    const next = responses(clients.events, { scope: { case: "runId", value: runId }, maxFramesPerMessage: 50 });

    const sizes: number[] = [];
    const seqs: number[] = [];
    for (;;) {
      const response = await next(`the backlog (${seqs.length} events so far)`);
      expect(response.frame).toBeUndefined();
      sizes.push(response.frames.length);
      const caughtUp = response.frames.findIndex((f) => f.kind === EventFrameKind.CAUGHT_UP);
      seqs.push(...response.frames.filter((f) => f.kind === EventFrameKind.EVENT).map((f) => Number(f.cursor!.eventSeq)));
      if (caughtUp >= 0) {
        expect(caughtUp).toBe(response.frames.length - 1);
        break;
      }
    }
    expect(seqs).toEqual(published.map(seqOf).sort((a, b) => a - b));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(50);
    expect(Math.max(...sizes)).toBeGreaterThan(1);

    const [live] = await publishMany(clients.events, 1, () => ({ runId, kind: EventKind.RUN_COMPLETED }));
    const response = await next("the live event");
    expect(response.frames.map((f) => Number(f.cursor!.eventSeq))).toEqual([seqOf(live!)]);
    expect(response.frames[0]!.event?.envelope?.eventId).toBe(live!.eventId);
  });

  it("without the field, every response carries one frame in `frame`, as before", async () => {
    const clients = testClients({ baseUrl: server().url, ...wire });
    onTestFinished(() => clients.close());
    const runId = uid("single-run");
    await publishMany(clients.events, 5, () => ({ runId, kind: EventKind.MODEL_STREAM_DELTA }));
    const next = responses(clients.events, { scope: { case: "runId", value: runId } });
    for (let i = 0; i < 6; i++) {
      const response = await next(`frame ${i}`);
      expect(response.frames).toEqual([]);
      expect(response.frame?.kind).toBe(i < 5 ? EventFrameKind.EVENT : EventFrameKind.CAUGHT_UP);
    }
  });

  it("refuses more than 1000 with INVALID_ARGUMENT naming the field", async () => {
    const clients = testClients({ baseUrl: server().url, ...wire });
    onTestFinished(() => clients.close());
    const error = await responses(clients.events, { scope: { case: "all", value: {} }, maxFramesPerMessage: 1001 })("a refusal").then(
      () => undefined,
      (thrown: unknown) => ConnectError.from(thrown),
    );
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.findDetails(ErrorDetailSchema)[0]?.field).toBe("max_frames_per_message");
  });
});

describe.each(wires)("a batch stays within --max-message-bytes, over %s", (_name, wire) => {
  const LIMIT = 64 * 1024;
  const server = useServerProcess({ args: ["--max-message-bytes", String(LIMIT)] });

  it("carries fewer frames when they are large, and loses none", async () => {
    const clients = testClients({ baseUrl: server().url, ...wire });
    onTestFinished(() => clients.close());
    const runId = uid("large-run");
    const data = new Uint8Array(6 * 1024).fill(7);
    const published: number[] = [];
    for (let i = 0; i < 30; i++) {
      const { envelope } = await clients.events.publish({ event: { envelope: { runId, kind: EventKind.MODEL_STREAM_DELTA }, payload: { case: "full", value: { data } } } });
      published.push(seqOf(envelope!));
    }
    const next = responses(clients.events, { scope: { case: "runId", value: runId }, maxFramesPerMessage: 1000 });
    const seqs: number[] = [];
    let batches = 0;
    while (seqs.length < published.length) {
      const response = await next(`event ${seqs.length + 1} of ${published.length}`);
      expect(toBinary(SubscribeResponseSchema, response).byteLength).toBeLessThanOrEqual(LIMIT);
      seqs.push(...response.frames.filter((f) => f.kind === EventFrameKind.EVENT).map((f) => Number(f.cursor!.eventSeq)));
      batches++;
    }
    expect(seqs).toEqual(published);
    expect(batches).toBeGreaterThan(1);
  });
});

/** The HTTP/2 DATA chunks of a raw gRPC Subscribe, until `enough` says so (then the stream is cancelled). */
async function rawSubscribeChunks(url: string, request: SubscribeInit, enough: (chunks: Buffer[]) => boolean): Promise<Buffer[]> {
  const session = http2.connect(url);
  try {
    const body = grpcFrame(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, request)));
    const stream = session.request({ ":method": "POST", ":path": "/mailroom.v1.EventService/Subscribe", "content-type": "application/grpc", te: "trailers", ...e2eAuthHeaders() });
    stream.end(body);
    const chunks: Buffer[] = [];
    await within(
      new Promise<void>((resolve, reject) => {
        stream.on("data", (chunk: Buffer) => {
          chunks.push(chunk);
          if (enough(chunks)) resolve();
        });
        stream.on("error", reject);
        stream.on("close", () => reject(new Error("the stream ended early")));
      }),
      10_000,
      "the responses",
    );
    stream.close(http2.constants.NGHTTP2_CANCEL);
    return chunks;
  } finally {
    session.close();
  }
}

/** The enveloped messages of a chunk (which holds whole envelopes only when the server wrote them together, as it does here). */
function envelopesOf(chunk: Buffer): Buffer[] {
  const messages: Buffer[] = [];
  for (let at = 0; at + 5 <= chunk.byteLength; ) {
    const length = chunk.readUInt32BE(at + 1);
    messages.push(chunk.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return messages;
}

describe("Subscribe without batches, over gRPC (binary)", () => {
  const server = useServerProcess();

  it("hands a subscriber that is behind one response an event, several of them in one write", async () => {
    const clients = testClients({ baseUrl: server().url, protocol: "grpc", binary: true });
    onTestFinished(() => clients.close());
    const runId = uid("coalesced-run");
    const published = await publishMany(clients.events, 200, () => ({ runId, kind: EventKind.MODEL_STREAM_DELTA }));
    const messagesIn = (chunks: Buffer[]) => chunks.flatMap(envelopesOf);
    const chunks = await rawSubscribeChunks(server().url, { scope: { case: "runId", value: runId } }, (got) => messagesIn(got).length >= published.length + 1);

    const responses = messagesIn(chunks).map((bytes) => fromBinary(SubscribeResponseSchema, bytes));
    for (const response of responses) {
      expect(response.frames).toEqual([]);
      expect(response.frame).toBeDefined();
    }
    const events = responses.filter((r) => r.frame!.kind === EventFrameKind.EVENT);
    expect(events.map((r) => Number(r.frame!.cursor!.eventSeq))).toEqual(published.map(seqOf).sort((a, b) => a - b));
    expect(responses[published.length]!.frame!.kind).toBe(EventFrameKind.CAUGHT_UP);
    // The backlog went out in fewer writes than responses.
    expect(Math.max(...chunks.map((chunk) => envelopesOf(chunk).length))).toBeGreaterThan(1);
  });
});
