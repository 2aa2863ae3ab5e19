/**
 * JSON that would silently mean something else is refused: a misspelled
 * field, or an enum name the contract does not define, gets INVALID_ARGUMENT
 * naming the field (with an ErrorDetail), on every protocol that carries
 * JSON, and nothing is changed.
 */
import http2 from "node:http2";
import { describe, expect, it } from "vitest";
import { uid } from "../support/mailbox.js";
import { type ServerProcess, useServerProcess } from "../support/server-process.js";
import { e2eAuthHeaders, testClients } from "../support/e2e-auth.js";

interface ConnectErrorBody {
  code: string;
  message: string;
  details?: Array<{ type: string; debug?: { reason?: string; field?: string } }>;
}

/** A Connect unary call with a JSON body; the status and the decoded body. */
async function postJson(server: ServerProcess, path: string, body: string): Promise<{ status: number; body: ConnectErrorBody & Record<string, unknown> }> {
  const reply = await fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", ...e2eAuthHeaders() }, body });
  return { status: reply.status, body: (await reply.json()) as ConnectErrorBody & Record<string, unknown> };
}

function fieldOf(body: ConnectErrorBody): string | undefined {
  return body.details?.find((d) => d.type === "mailroom.v1.ErrorDetail")?.debug?.field;
}

/** A gRPC call with a JSON message (`application/grpc+json`); the status and message from the trailers. */
function grpcJson(baseUrl: string, path: string, json: string): Promise<{ status: string; message: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+json", te: "trailers", ...e2eAuthHeaders() });
    let headers: http2.IncomingHttpHeaders = {};
    stream.on("response", (received) => (headers = received));
    const finish = (trailers: http2.IncomingHttpHeaders) => {
      const all = { ...headers, ...trailers };
      resolve({ status: String(all["grpc-status"]), message: decodeURIComponent(String(all["grpc-message"] ?? "")) });
      session.close();
    };
    stream.on("trailers", finish);
    stream.on("end", () => finish({}));
    stream.on("error", reject);
    stream.resume();
    const payload = Buffer.from(json);
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(payload.length, 1);
    stream.end(Buffer.concat([prefix, payload]));
  });
}

describe("Connect JSON refuses what it does not understand", () => {
  const server = useServerProcess();

  it("refuses a misspelled field (`priorty`) with INVALID_ARGUMENT naming it, and enqueues nothing", async () => {
    const thread = uid("misspelled");
    const reply = await postJson(server(), "/mailroom.v1.MailboxService/Enqueue", JSON.stringify({ dispatch: { threadId: thread, priorty: 250 } }));
    expect(reply.status).toBe(400);
    expect(reply.body.code).toBe("invalid_argument");
    expect(fieldOf(reply.body)).toBe("dispatch.priorty");
    expect(reply.body.message).toMatch(/^dispatch\.priorty: /);
    const listed = await postJson(server(), "/mailroom.v1.MailboxService/ListDispatches", JSON.stringify({ threadId: thread }));
    expect(listed.body.dispatches ?? []).toEqual([]);
  });

  it.each([
    ["ListDispatches", { statuses: ["ACKED"] }, "statuses"],
    ["CountDispatches", { statuses: ["ACKED"] }, "statuses"],
    ["ListDispatches", { statuses: [99] }, "statuses[0]"],
  ])("%s refuses a status the contract does not define (%j) instead of listing every status", async (method, body, field) => {
    const reply = await postJson(server(), `/mailroom.v1.MailboxService/${method}`, JSON.stringify(body));
    expect([reply.status, reply.body.code, fieldOf(reply.body)]).toEqual([400, "invalid_argument", field]);
  });

  it("ListEvents refuses an event kind the contract does not define instead of returning other kinds", async () => {
    const reply = await postJson(server(), "/mailroom.v1.EventService/ListEvents", JSON.stringify({ filter: { kinds: ["DISPATCH_ACKED"] } }));
    expect([reply.status, reply.body.code, fieldOf(reply.body)]).toEqual([400, "invalid_argument", "filter.kinds"]);
  });

  it("accepts the contract's own enum names", async () => {
    const reply = await postJson(server(), "/mailroom.v1.MailboxService/CountDispatches", JSON.stringify({ statuses: ["RUN_DISPATCH_STATUS_ACKED"] }));
    expect(reply.status).toBe(200);
  });

  it("refuses an unknown field on a server stream too (Subscribe over Connect JSON)", async () => {
    const body = Buffer.from(JSON.stringify({ all: {}, stat: "LATEST" }));
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
    envelope.writeUInt32BE(body.length, 1);
    const reply = await fetch(`${server().url}/mailroom.v1.EventService/Subscribe`, { method: "POST", headers: { "content-type": "application/connect+json", ...e2eAuthHeaders() }, body: envelope });
    const bytes = Buffer.from(await reply.arrayBuffer());
    // The end-of-stream frame (flag 2) carries the error as JSON.
    const end = JSON.parse(bytes.subarray(5).toString("utf8")) as { error: ConnectErrorBody };
    expect([end.error.code, fieldOf(end.error)]).toEqual(["invalid_argument", "stat"]);
  });

  it("refuses a misspelled field over gRPC with a JSON codec too", async () => {
    const reply = await grpcJson(server().url, "/mailroom.v1.MailboxService/Enqueue", JSON.stringify({ dispatch: { threadId: "t", priorty: 250 } }));
    expect(reply.status).toBe("3");
    expect(reply.message).toMatch(/^dispatch\.priorty: /);
  });

  it("still answers typed JSON clients", async () => {
    const clients = testClients({ baseUrl: server().url, protocol: "connect", binary: false });
    try {
      const { dispatch } = await clients.mailbox.enqueue({ dispatch: { threadId: uid("typed"), priority: 250 } });
      expect(dispatch?.priority).toBe(250);
    } finally {
      clients.close();
    }
  });
});
