/**
 * Every server stream ends, and releases what it holds, once its client is
 * gone, however it left: also a client that stopped reading, so the server's
 * writes were waiting for it to take data, and then vanished (its connection
 * destroyed) or reset its stream. Issue 9, item 3: such a stream used to wait
 * for a `drain` that never came, and never ended.
 *
 * The clients are raw HTTP/2 sessions that announce a flow-control window of
 * 0 and never read, so not one byte of a frame can reach them; each stream is
 * then flooded with more than the server buffers before writes wait. Counts,
 * not times: `mailroom_open_streams` counts a stream until its handler has
 * released everything (its subscription, listener or channel), and every
 * such call ends counted as canceled.
 */
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import http2 from "node:http2";
import net from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { SubscribeRequestSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { LiveDeliveryOutcome } from "../../gen/mailroom/v1/live_pb.js";
import { OpenLiveChannelRequestSchema, WatchDispatchSignalsRequestSchema } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { AwaitWakeRequestSchema, ReceiveMessagesRequestSchema, WatchPoolRequestSchema } from "../../gen/mailroom/v1/pool_service_pb.js";
import type { MailroomClients } from "../../src/client/index.js";
import { say, uid, until } from "../support/mailbox.js";
import { body, poolWith, suspend, toRun } from "../support/pools.js";
import { grpcFrame } from "../support/raw-grpc.js";
import { useServerProcess } from "../support/server-process.js";
import { e2eAuthHeaderLines, e2eAuthHeaders, testClients } from "../support/e2e-auth.js";

/** Unread streams per case: each on its own connection. */
const STREAMS = 8;
/** Well above what the server buffers for a stream before its writes wait (16 KiB), whatever the frame size. */
const FLOOD_BYTES = 256 * 1024;

function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

async function metrics(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`, { headers: e2eAuthHeaders() })).text();
}

const openStreams = (procedure: string) => `mailroom_open_streams{procedure="${procedure}",namespace="default"}`;
const canceled = (procedure: string) => `mailroom_rpc_calls_total{procedure="${procedure}",code="canceled",namespace="default"}`;

/**
 * A server stream whose client never reads: its connection announces a
 * flow-control window of 0. Resolves once the response headers came (the
 * server produced its first frame, so the stream is registered).
 */
async function unreadStream<D extends DescMessage>(url: string, procedure: string, schema: D, request: MessageInitShape<D>): Promise<{ session: http2.ClientHttp2Session; stream: http2.ClientHttp2Stream }> {
  const session = http2.connect(url, { settings: { initialWindowSize: 0 } });
  session.on("error", () => undefined);
  const stream = session.request({ ":method": "POST", ":path": `/${procedure}`, "content-type": "application/grpc+proto", te: "trailers", ...e2eAuthHeaders() });
  stream.on("error", () => undefined);
  stream.end(grpcFrame(toBinary(schema, create(schema, request))));
  await new Promise<void>((resolve, reject) => {
    stream.once("response", () => resolve());
    stream.once("close", () => reject(new Error(`${procedure} closed before its first frame`)));
  });
  return { session, stream };
}

interface Case {
  procedure: string;
  /** Opens one unread stream of the procedure, on the world `setup` made. */
  open(url: string, world: World): Promise<{ session: http2.ClientHttp2Session; stream: http2.ClientHttp2Stream }>;
  /** Sends every open stream more frames than the server buffers (nothing for streams of a frame or two). */
  flood(clients: MailroomClients, world: World): Promise<void>;
}

interface World {
  threadId: string;
  runId: string;
  liveTarget: { threadId: string; runId: string };
  poolId: string;
  sender: string;
  receiver: string;
  conditionId: string;
}

async function makeWorld(clients: MailroomClients): Promise<World> {
  const { poolId, runs } = await poolWith(clients.pools, { sender: {}, receiver: {}, sleeper: {} });
  const { registration } = await suspend(clients.pools, poolId, runs.sleeper.runId, { filter: { runIds: [runs.sender.runId] }, timeout: { seconds: 3600n } });
  return {
    threadId: uid("flooded-thread"),
    runId: uid("flooded-run"),
    liveTarget: { threadId: uid("live-thread"), runId: uid("live-run") },
    poolId,
    sender: runs.sender.runId,
    receiver: runs.receiver.runId,
    conditionId: registration.conditionId,
  };
}

const kib = (n: number) => "x".repeat(n * 1024);

/** Pool messages from sender to receiver: one record each in WatchPool, and one inbox message each in ReceiveMessages. */
async function floodPool(clients: MailroomClients, world: World): Promise<void> {
  for (let sent = 0; sent < FLOOD_BYTES; sent += 32 * 1024) {
    await clients.pools.send({ poolId: world.poolId, message: { fromRunId: world.sender, to: toRun(world.receiver), body: body(kib(32)) } });
  }
}

const cases: Case[] = [
  {
    procedure: "mailroom.v1.MailboxService/WatchDispatchSignals",
    open: (url, world) => unreadStream(url, "mailroom.v1.MailboxService/WatchDispatchSignals", WatchDispatchSignalsRequestSchema, { threadId: world.threadId }),
    async flood(clients, world) {
      // A signal frame is ~60 bytes.
      for (let sent = 0; sent < FLOOD_BYTES; sent += 500 * 60) {
        await clients.mailbox.enqueueBatch({ dispatches: Array.from({ length: 500 }, () => ({ threadId: world.threadId, runId: world.runId })) });
      }
    },
  },
  {
    procedure: "mailroom.v1.EventService/Subscribe",
    open: (url, world) => unreadStream(url, "mailroom.v1.EventService/Subscribe", SubscribeRequestSchema, { scope: { case: "runId", value: world.runId } }),
    async flood(clients, world) {
      for (let sent = 0; sent < FLOOD_BYTES; sent += 16 * 1024) {
        const data = new TextEncoder().encode(kib(16));
        await clients.events.publish({ event: { envelope: { kind: EventKind.MODEL_STREAM_DELTA, runId: world.runId }, payload: { case: "full", value: { data } } } });
      }
    },
  },
  {
    procedure: "mailroom.v1.MailboxService/OpenLiveChannel",
    open: (url, world) => unreadStream(url, "mailroom.v1.MailboxService/OpenLiveChannel", OpenLiveChannelRequestSchema, { target: world.liveTarget }),
    async flood(clients, world) {
      for (let sent = 0; sent < FLOOD_BYTES; sent += 16 * 1024) {
        await clients.mailbox.deliverLive({ target: world.liveTarget, command: say(kib(16)) });
      }
    },
  },
  {
    procedure: "mailroom.v1.PoolService/ReceiveMessages",
    open: (url, world) => unreadStream(url, "mailroom.v1.PoolService/ReceiveMessages", ReceiveMessagesRequestSchema, { poolId: world.poolId, runId: world.receiver }),
    flood: floodPool,
  },
  {
    procedure: "mailroom.v1.PoolService/WatchPool",
    open: (url, world) => unreadStream(url, "mailroom.v1.PoolService/WatchPool", WatchPoolRequestSchema, { poolId: world.poolId }),
    flood: floodPool,
  },
  {
    procedure: "mailroom.v1.PoolService/AwaitWake",
    open: (url, world) => unreadStream(url, "mailroom.v1.PoolService/AwaitWake", AwaitWakeRequestSchema, { poolId: world.poolId, conditionId: world.conditionId }),
    flood: async () => undefined,
  },
  {
    procedure: "grpc.health.v1.Health/Watch",
    open: (url) => unreadStream(url, "grpc.health.v1.Health/Watch", HealthCheckRequestSchema, {}),
    flood: async () => undefined,
  },
];

describe("a server stream ends and releases what it holds once its client is gone, however it left", () => {
  const server = useServerProcess();

  describe.each(cases)("$procedure", (testCase) => {
    const leave = {
      "stopped reading, then its connection was destroyed": (client: { session: http2.ClientHttp2Session }) => client.session.destroy(),
      "stopped reading, then reset its stream (RST_STREAM CANCEL)": (client: { stream: http2.ClientHttp2Stream }) => client.stream.close(http2.constants.NGHTTP2_CANCEL),
    };

    it.each(Object.entries(leave))("a client that %s", async (_how, gone) => {
      const url = server().url;
      const clients = testClients({ baseUrl: url, protocol: "grpc" });
      onTestFinished(() => clients.close());
      const world = await makeWorld(clients);
      const before = await metrics(url);
      const streams = await Promise.all(Array.from({ length: STREAMS }, () => testCase.open(url, world)));
      onTestFinished(() => streams.forEach(({ session }) => session.destroy()));
      expect(sample(await metrics(url), openStreams(testCase.procedure)) - sample(before, openStreams(testCase.procedure))).toBe(STREAMS);

      await testCase.flood(clients, world);
      for (const stream of streams) gone(stream);

      const after = await until(async () => {
        const text = await metrics(url);
        return sample(text, openStreams(testCase.procedure)) === sample(before, openStreams(testCase.procedure)) && text;
      }, `every ${testCase.procedure} stream to end`, 20_000);
      expect(sample(after, canceled(testCase.procedure)) - sample(before, canceled(testCase.procedure))).toBe(STREAMS);
      if (testCase.procedure.endsWith("OpenLiveChannel")) {
        // The channel is unregistered: nothing is routed to a client that is gone.
        expect((await clients.mailbox.deliverLive({ target: world.liveTarget, command: say("anyone?") })).outcome).toBe(LiveDeliveryOutcome.NO_SUBSCRIBER);
      }
    });
  });
});

describe("over HTTP/1.1 (the Connect protocol), a stream whose client stopped reading and then closed its connection", () => {
  const server = useServerProcess();

  it("ends, counted as canceled", async () => {
    const url = server().url;
    const runId = uid("h1-run");
    const before = await metrics(url);
    const body = grpcFrame(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { scope: { case: "runId", value: runId } })));
    const socket = net.connect(server().port, "127.0.0.1");
    onTestFinished(() => {
      socket.destroy();
    });
    socket.on("error", () => undefined);
    const authorization = e2eAuthHeaderLines().map((line) => `${line}\r\n`).join("");
    socket.write(`POST /mailroom.v1.EventService/Subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/connect+proto\r\nConnect-Protocol-Version: 1\r\n${authorization}Content-Length: ${body.length}\r\n\r\n`);
    socket.write(body);
    // The response head means the stream is registered; from then on nothing is read.
    await new Promise((resolve) => socket.once("data", resolve));
    socket.pause();
    const clients = testClients({ baseUrl: url, protocol: "grpc" });
    onTestFinished(() => clients.close());
    // Far more than the sockets' buffers hold, so the server's writes wait for the client.
    const data = new Uint8Array(64 * 1024);
    for (let i = 0; i < 150; i++) await clients.events.publish({ event: { envelope: { kind: EventKind.MODEL_STREAM_DELTA, runId }, payload: { case: "full", value: { data } } } });
    const procedure = "mailroom.v1.EventService/Subscribe";
    expect(sample(await metrics(url), openStreams(procedure)) - sample(before, openStreams(procedure))).toBe(1);
    socket.destroy();
    const after = await until(async () => {
      const text = await metrics(url);
      return sample(text, openStreams(procedure)) === sample(before, openStreams(procedure)) && text;
    }, "the stream to end", 20_000);
    expect(sample(after, canceled(procedure)) - sample(before, canceled(procedure))).toBe(1);
  });
});
