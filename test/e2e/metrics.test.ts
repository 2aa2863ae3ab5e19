/**
 * `GET /metrics` on the server's port: Prometheus text with every RPC by
 * procedure, code and namespace (without authentication every caller is of
 * namespace `default`), open streams, and the instance's journal position;
 * behind the bearer token when one is set.
 */
import http2 from "node:http2";
import { describe, expect, it, onTestFinished } from "vitest";
import { createMailroomClients } from "../../src/client/index.js";
import { useServerProcess } from "../support/server-process.js";

/** The value of one sample line, e.g. metric(text, 'mailroom_rpc_calls_total{procedure="x",code="ok"}'). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function scrape(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; type: string | null }> {
  const response = await fetch(`${url}/metrics`, { headers });
  return { status: response.status, body: await response.text(), type: response.headers.get("content-type") };
}

const calls = (procedure: string, code: string) => `mailroom_rpc_calls_total{procedure="${procedure}",code="${code}",namespace="default"}`;

describe("GET /metrics", () => {
  const server = useServerProcess();

  it("counts every RPC by procedure and the code the client received", async () => {
    const clients = createMailroomClients({ baseUrl: server().url, protocol: "grpc" });
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
    const clients = createMailroomClients({ baseUrl: server().url, protocol: "connect" });
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
    const response = await fetch(`${server().url}/metrics?name[]=mailroom_rpc_calls_total`);
    expect(response.status).toBe(200);
    expect(await response.text()).toContain("mailroom_rpc_calls_total");
  });

  it("answers over HTTP/2 too, and refuses other methods", async () => {
    const session = http2.connect(server().url);
    onTestFinished(() => session.close());
    const status = (method: string) =>
      new Promise<number>((resolve, reject) => {
        const request = session.request({ ":method": method, ":path": "/metrics" });
        request.on("response", (headers) => resolve(Number(headers[":status"])));
        request.on("error", reject);
        request.end();
      });
    expect(await status("GET")).toBe(200);
    expect(await status("POST")).toBe(405);
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
