/**
 * `GET /metrics` on the server's port: Prometheus text with every RPC by
 * procedure, code and namespace (without authentication every caller is of
 * namespace `default`), open streams, and the instance's journal position;
 * behind the bearer token when one is set.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import http2 from "node:http2";
import { describe, expect, it, onTestFinished } from "vitest";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { grpcFrame, rawGrpcCall } from "../support/raw-grpc.js";
import { useServerProcess } from "../support/server-process.js";
import { e2eAuthHeaders, testClients } from "../support/e2e-auth.js";

/** The value of one sample line, e.g. metric(text, 'mailroom_rpc_calls_total{procedure="x",code="ok"}'). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function scrape(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; type: string | null }> {
  const response = await fetch(`${url}/metrics`, { headers: { ...e2eAuthHeaders(), ...headers } });
  return { status: response.status, body: await response.text(), type: response.headers.get("content-type") };
}

const calls = (procedure: string, code: string) => `mailroom_rpc_calls_total{procedure="${procedure}",code="${code}",namespace="default"}`;

/**
 * Scrapes until `series` has grown by `by` since `before` (the server counts
 * a call once its response is written, which may be just after the client
 * has read it).
 */
async function grown(url: string, before: string, series: string, by: number): Promise<string> {
  for (;;) {
    const body = (await scrape(url)).body;
    if ((sample(body, series) ?? 0) - (sample(before, series) ?? 0) >= by) return body;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe("GET /metrics", () => {
  const server = useServerProcess();

  it("counts every RPC by procedure and the code the client received", async () => {
    const clients = testClients({ baseUrl: server().url, protocol: "grpc" });
    onTestFinished(() => clients.close());
    const before = (await scrape(server().url)).body;
    await clients.health.check({});
    await clients.mailbox.enqueue({ dispatch: { threadId: "metrics-thread", runId: "metrics-run" } });
    await expect(clients.mailbox.enqueue({ dispatch: { threadId: "" } })).rejects.toThrow();
    const after = await scrape(server().url);
    expect(after.status).toBe(200);
    expect(after.type).toContain("text/plain");
    const delta = (series: string) => (sample(after.body, series) ?? 0) - (sample(before, series) ?? 0);
    expect(delta(calls("grpc.health.v1.Health/Check", "ok"))).toBe(1);
    expect(delta(calls("mailroom.v1.MailboxService/Enqueue", "ok"))).toBe(1);
    expect(delta(calls("mailroom.v1.MailboxService/Enqueue", "invalid_argument"))).toBe(1);
    expect(sample(after.body, "mailroom_journal_position")).toBeGreaterThanOrEqual(1);
    expect(after.body).toContain("mailroom_process_resident_memory_bytes");
  });

  it("shows a server stream as open until it ends", async () => {
    const clients = testClients({ baseUrl: server().url, protocol: "connect" });
    onTestFinished(() => clients.close());
    const open = 'mailroom_open_streams{procedure="mailroom.v1.EventService/Subscribe",namespace="default"}';
    const abort = new AbortController();
    const stream = clients.events.subscribe({ scope: { case: "all", value: {} } }, { signal: abort.signal })[Symbol.asyncIterator]();
    await stream.next(); // the stream is registered once a frame arrives
    expect(sample((await scrape(server().url)).body, open)).toBe(1);
    abort.abort();
    await stream.next().catch(() => undefined);
    // The server learns of the cancel asynchronously: wait for its count to drop.
    for (let body = (await scrape(server().url)).body; sample(body, open) !== 0; body = (await scrape(server().url)).body) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(sample((await scrape(server().url)).body, open)).toBe(0);
  });

  it("ignores a query string, as scrapers may send one", async () => {
    const response = await fetch(`${server().url}/metrics?name[]=mailroom_rpc_calls_total`, { headers: e2eAuthHeaders() });
    expect(response.status).toBe(200);
    expect(await response.text()).toContain("mailroom_rpc_calls_total");
  });

  it("answers over HTTP/2 too, and refuses other methods", async () => {
    const session = http2.connect(server().url);
    onTestFinished(() => session.close());
    const status = (method: string) =>
      new Promise<number>((resolve, reject) => {
        const request = session.request({ ":method": method, ":path": "/metrics", ...e2eAuthHeaders() });
        request.on("response", (headers) => resolve(Number(headers[":status"])));
        request.on("error", reject);
        request.end();
      });
    expect(await status("GET")).toBe(200);
    expect(await status("POST")).toBe(405);
  });
});

describe("every call is counted and logged with the code its client received", () => {
  const server = useServerProcess({ args: ["--log-level", "debug"] });
  const SUBSCRIBE = "mailroom.v1.EventService/Subscribe";
  const CHECK = "grpc.health.v1.Health/Check";
  const garbage = grpcFrame(Buffer.from([0xff, 0xff, 0xff, 0xff]));
  const serverFailures = () => server().logs.filter((line) => line.msg === "call failed");

  it("a server stream whose request body does not decode: INVALID_ARGUMENT, counted and logged as such, not as a server failure", async () => {
    const before = (await scrape(server().url)).body;
    const reply = await rawGrpcCall(server().url, `/${SUBSCRIBE}`, garbage);
    expect(reply.grpcStatus).toBe(String(Code.InvalidArgument));
    const after = await grown(server().url, before, calls(SUBSCRIBE, "invalid_argument"), 1);
    expect((sample(after, calls(SUBSCRIBE, "internal")) ?? 0) - (sample(before, calls(SUBSCRIBE, "internal")) ?? 0)).toBe(0);
    await server().waitForLog((line) => line.msg === "call" && line.procedure === SUBSCRIBE && line.code === "invalid_argument", "the call's log line");
    expect(serverFailures()).toEqual([]);
  });

  it("a unary call whose request body does not decode is counted too (Connect refuses it before any interceptor runs)", async () => {
    const before = (await scrape(server().url)).body;
    const reply = await rawGrpcCall(server().url, `/${CHECK}`, garbage);
    expect(reply.grpcStatus).toBe(String(Code.InvalidArgument));
    await grown(server().url, before, calls(CHECK, "invalid_argument"), 1);
    expect(serverFailures()).toEqual([]);
  });

  it("a message flagged compressed without an encoding: INTERNAL as grpc-go and connect-go answer it, counted so, and no server failure", async () => {
    const before = (await scrape(server().url)).body;
    const request = toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, {}));
    const reply = await rawGrpcCall(server().url, `/${CHECK}`, grpcFrame(request, 1));
    expect(reply).toEqual({ grpcStatus: String(Code.Internal), grpcMessage: expect.stringContaining("compressed flag set, but the request names no encoding (grpc-encoding)") });
    await grown(server().url, before, calls(CHECK, "internal"), 1);
    expect(serverFailures()).toEqual([]);
  });

  it("a stream its client cancels counts as canceled", async () => {
    const clients = testClients({ baseUrl: server().url, protocol: "grpc" });
    onTestFinished(() => clients.close());
    const before = (await scrape(server().url)).body;
    const abort = new AbortController();
    const stream = clients.events.subscribe({ scope: { case: "all", value: {} } }, { signal: abort.signal })[Symbol.asyncIterator]();
    await stream.next();
    abort.abort();
    await stream.next().catch(() => undefined);
    await grown(server().url, before, calls(SUBSCRIBE, "canceled"), 1);
  });
});

describe("GET /metrics with --auth-token", () => {
  const server = useServerProcess({ args: ["--auth-token", "scrape-token"] });

  it("needs the bearer token", async () => {
    expect((await scrape(server().url)).status).toBe(401);
    expect((await scrape(server().url, { authorization: "Bearer wrong" })).status).toBe(401);
    expect((await scrape(server().url, { authorization: "Bearer scrape-token" })).status).toBe(200);
  });
});
