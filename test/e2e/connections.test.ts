/**
 * Connections and streams are bounded by documented flags, so idle or
 * misbehaving clients cannot hold the server's resources (issue 9, item 6):
 * header and request timeouts (HTTP/1.1 too, in cleartext), an idle timeout,
 * a connection cap that gives way to callers with work, streams per
 * connection and in total, a smaller cap for streams of callers without the
 * token, keepalive pings, and the stall timeout of a client that stopped
 * reading. Every test waits for the event it asserts (a close, a GOAWAY, a
 * refusal), never for a time.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import http2 from "node:http2";
import net from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { SubscribeRequestSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { createMailroomClients } from "../../src/client/index.js";
import { uid, until } from "../support/mailbox.js";
import { grpcFrame, stillServing } from "../support/raw-grpc.js";
import { errorCodeOf, FRAME, H2_ERROR, RawH2Client } from "../support/raw-h2.js";
import { useServerProcess } from "../support/server-process.js";
import { e2eAuth, e2eAuthHeaders, testClients } from "../support/e2e-auth.js";
import { NO_NAMESPACE_LABEL } from "../../src/server/auth.js";

/** Writes `text` on a new cleartext connection; resolves with what the server sent back once it closed the connection. */
async function rawHttp1(port: number, text: string): Promise<string> {
  const socket = net.connect(port, "127.0.0.1");
  let received = "";
  socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
  socket.on("error", () => undefined);
  socket.write(text);
  await new Promise((resolve) => socket.once("close", resolve));
  return received;
}

async function connected(url: string): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(url);
  session.on("error", () => undefined);
  onTestFinished(() => session.destroy());
  await new Promise<void>((resolve, reject) => {
    session.once("remoteSettings", () => resolve());
    session.once("close", () => reject(new Error("the connection closed before the server's settings came")));
  });
  return session;
}

const closed = (session: http2.ClientHttp2Session) => new Promise<void>((resolve) => (session.closed || session.destroyed ? resolve() : session.once("close", () => resolve())));

/** A Health.Watch call left open on the session; resolves once its first frame (the status) came. */
async function openWatch(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders = {}): Promise<http2.ClientHttp2Stream> {
  const stream = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Watch", "content-type": "application/grpc", te: "trailers", ...headers });
  stream.on("error", () => undefined);
  stream.end(grpcFrame(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, {}))));
  await new Promise<void>((resolve, reject) => {
    stream.once("data", () => resolve());
    stream.once("close", () => reject(new Error("the Watch stream closed before its first frame")));
  });
  return stream;
}

describe("timeouts: --header-timeout-ms, --request-timeout-ms, --idle-timeout-ms", () => {
  const server = useServerProcess({ args: ["--header-timeout-ms", "300", "--request-timeout-ms", "600", "--idle-timeout-ms", "500"] });

  it("closes a cleartext connection that sends nothing", async () => {
    expect(await rawHttp1(server().port, "")).toBe("");
    await stillServing(server());
  });

  it("answers 408 and closes a cleartext HTTP/1.1 connection whose request headers never end", async () => {
    const reply = await rawHttp1(server().port, "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n");
    expect(reply).toMatch(/^HTTP\/1\.1 408/);
    await stillServing(server());
  });

  it("answers 408 and closes an HTTP/1.1 connection whose request body never arrives whole", async () => {
    const reply = await rawHttp1(server().port, "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
    expect(reply).toMatch(/^HTTP\/1\.1 408/);
    await stillServing(server());
  });

  it("closes an idle HTTP/2 connection with GOAWAY, and not one with a stream open", async () => {
    const busy = await connected(server().url);
    await openWatch(busy);
    const idle = await connected(server().url);
    const goaway = new Promise<number>((resolve) => idle.once("goaway", (code) => resolve(code)));
    expect(await goaway).toBe(H2_ERROR.NO_ERROR);
    await closed(idle);
    // Had the busy connection been closed too, its GOAWAY would have come with the idle one's, before this call.
    const check = busy.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", te: "trailers" });
    check.end(grpcFrame(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, {}))));
    const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      check.on("trailers", resolve);
      check.on("error", reject);
      check.resume();
    });
    expect(trailers["grpc-status"]).toBe("0");
  });
});

describe("--max-connections", () => {
  const server = useServerProcess({ args: ["--max-connections", "3"] });

  it("makes room for a new connection by closing the one idle the longest", async () => {
    const oldest = await connected(server().url);
    await connected(server().url);
    await connected(server().url);
    await stillServing(server()); // a fourth connection, with work
    await closed(oldest);
  });

  it("refuses a new connection while every open one has a call in flight", async () => {
    const busy = await Promise.all([0, 1, 2].map(async () => openWatch(await connected(server().url))));
    expect(busy).toHaveLength(3);
    const refused = http2.connect(server().url);
    refused.on("error", () => undefined);
    onTestFinished(() => refused.destroy());
    let answered = false;
    refused.once("remoteSettings", () => (answered = true));
    await closed(refused);
    expect(answered).toBe(false);
  });
});

describe("--max-concurrent-streams, --keepalive-ms and --stream-stall-timeout-ms", () => {
  const server = useServerProcess({ args: ["--max-concurrent-streams", "2", "--keepalive-ms", "1000", "--stream-stall-timeout-ms", "500"] });

  // Clients keep to the limit the server's SETTINGS announce (protocol.test.ts checks the announcement);
  // one that does not commits a connection error (RFC 9113, 5.1.2; nghttp2 closes the connection).
  it("closes the connection of a client that opens more streams than the limit, and keeps serving others", async () => {
    const client = await RawH2Client.connect(server().port);
    onTestFinished(() => client.destroy());
    for (const streamId of [1, 3, 5]) client.request(streamId, "/grpc.health.v1.Health/Check");
    await client.untilClosed();
    expect(client.frames.some((f) => f.type === FRAME.GOAWAY && errorCodeOf(f) !== H2_ERROR.NO_ERROR)).toBe(true);
    await stillServing(server());
  });

  it("closes a connection whose peer does not answer pings, which ends its streams", async () => {
    const client = await RawH2Client.connect(server().port);
    onTestFinished(() => client.destroy());
    client.request(1, "/grpc.health.v1.Health/Watch", grpcFrame(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, {}))));
    await client.until((frames) => frames.some((f) => f.type === FRAME.DATA && f.streamId === 1), "the Watch stream's first frame");
    await client.until((frames) => frames.some((f) => f.type === FRAME.PING), "a keepalive PING");
    await client.untilClosed();
    expect(client.frames.filter((f) => f.type === FRAME.PING).length).toBeGreaterThanOrEqual(1);
    await until(async () => {
      const text = await (await fetch(`${server().url}/metrics`, { headers: e2eAuthHeaders() })).text();
      // A Watch without credentials counts under the namespace label of callers without one when authentication is on.
      const namespace = e2eAuth ? NO_NAMESPACE_LABEL : "default";
      return text.split("\n").includes(`mailroom_open_streams{procedure="grpc.health.v1.Health/Watch",namespace="${namespace}"} 0`);
    }, "the Watch stream to end");
  });

  it("ends a stream whose client stopped reading and took no data for the stall timeout (RST_STREAM CANCEL)", async () => {
    const runId = uid("stalled-run");
    const session = http2.connect(server().url, { settings: { initialWindowSize: 0 } });
    session.on("error", () => undefined);
    onTestFinished(() => session.destroy());
    const stream = session.request({ ":method": "POST", ":path": "/mailroom.v1.EventService/Subscribe", "content-type": "application/grpc", te: "trailers", ...e2eAuthHeaders() });
    stream.on("error", () => undefined);
    stream.end(grpcFrame(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { scope: { case: "runId", value: runId } }))));
    await new Promise((resolve) => stream.once("response", resolve));
    const publisher = testClients({ baseUrl: server().url, protocol: "grpc" });
    onTestFinished(() => publisher.close());
    const data = new Uint8Array(32 * 1024);
    const ended = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
    for (let i = 0; i < 8 && !stream.closed; i++) {
      await publisher.events.publish({ event: { envelope: { kind: EventKind.MODEL_STREAM_DELTA, runId }, payload: { case: "full", value: { data } } } });
    }
    expect(await ended).toBe(H2_ERROR.CANCEL);
    expect(session.closed).toBe(false);
  });
});

describe("--max-streams and --max-unauthenticated-streams", () => {
  const TOKEN = "stream-cap-token";
  const server = useServerProcess({ args: ["--auth-token", TOKEN, "--max-streams", "4", "--max-unauthenticated-streams", "2"] });
  it("refuses a third Health.Watch of callers without the token, admits one with it, and refuses any stream past the total", async () => {
    const clients = { anonymous: createMailroomClients({ baseUrl: server().url, protocol: "grpc" }), authorized: createMailroomClients({ baseUrl: server().url, protocol: "grpc", token: TOKEN }) };
    onTestFinished(() => Object.values(clients).forEach((c) => c.close()));
    const abort = new AbortController();
    onTestFinished(() => abort.abort());
    const open = async (client: typeof clients.anonymous) => {
      const stream = client.health.watch({}, { signal: abort.signal })[Symbol.asyncIterator]();
      return stream.next().then(
        () => undefined,
        (error: unknown) => ConnectError.from(error),
      );
    };
    expect(await open(clients.anonymous)).toBeUndefined();
    expect(await open(clients.anonymous)).toBeUndefined();
    const third = await open(clients.anonymous);
    expect(third?.code).toBe(Code.ResourceExhausted);
    expect(third?.findDetails(ErrorDetailSchema)[0]?.reason).toBe(ErrorReason.STREAM_LIMIT);
    expect(third?.rawMessage).toContain("--max-unauthenticated-streams");

    expect(await open(clients.authorized)).toBeUndefined();
    expect(await open(clients.authorized)).toBeUndefined();
    const fifth = await open(clients.authorized);
    expect(fifth?.code).toBe(Code.ResourceExhausted);
    expect(fifth?.rawMessage).toContain("--max-streams");
  });
});
