/**
 * The gRPC unary fast path (src/server/grpc-unary.ts) answers every request
 * exactly as Connect's handler does: two servers on one store, one with the
 * fast path and one without, get the same hand-made requests (well-formed,
 * malformed, compressed, refused by the gate, failing in the handler) and
 * must give the same status, headers, trailers (error details included) and
 * messages, and count the same calls in their metrics.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { AckRequestSchema, ClaimRequestSchema, EnqueueRequestSchema, EnqueueResponseSchema } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { resolveServerConfig } from "../../src/config.js";
import { ROLES } from "../../src/domain/auth/roles.js";
import { type RunningServer, startServer } from "../../src/server/server.js";
import { MemoryStore } from "../../src/store/memory/store.js";
import { captureLog } from "../support/log-capture.js";
import { grpcFrame } from "../support/raw-grpc.js";

const admin = randomBytes(18).toString("base64url");
const producer = randomBytes(18).toString("base64url");

function authFile(): string {
  const principal = (name: string, token: string, roles: readonly string[]) => ({ name, token_sha256: createHash("sha256").update(token).digest("hex"), namespace: "default", roles });
  const path = join(mkdtempSync(join(tmpdir(), "mailroom-grpc-unary-")), "auth.json");
  writeFileSync(path, JSON.stringify({ principals: [principal("admin", admin, ROLES), principal("producer", producer, ["producer"])] }));
  return path;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  trailers: Record<string, string>;
  messages: Array<{ flags: number; data: Buffer }>;
}

/** The protocol's own headers of an answer (dates and the like left out). */
const KEPT = ["content-type", "grpc-encoding", "grpc-status", "grpc-message", "grpc-status-details-bin"];

function call(url: string, path: string, body: Buffer, headers: http2.OutgoingHttpHeaders): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    const answer: Answer = { status: 0, headers: {}, trailers: {}, messages: [] };
    const pick = (from: http2.IncomingHttpHeaders, into: Record<string, string>) => {
      for (const name of KEPT) if (from[name] !== undefined) into[name] = String(from[name]);
    };
    const chunks: Buffer[] = [];
    stream.on("response", (head) => {
      answer.status = Number(head[":status"]);
      pick(head, answer.headers);
    });
    stream.on("trailers", (trailers) => pick(trailers, answer.trailers));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", reject);
    stream.on("close", () => {
      const bytes = Buffer.concat(chunks);
      for (let at = 0; at + 5 <= bytes.length; ) {
        const length = bytes.readUInt32BE(at + 1);
        answer.messages.push({ flags: bytes[at]!, data: bytes.subarray(at + 5, at + 5 + length) });
        at += 5 + length;
      }
      session.close();
      resolve(answer);
    });
    stream.end(body);
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const HEALTH = "/grpc.health.v1.Health/Check";
const ENQUEUE = "/mailroom.v1.MailboxService/Enqueue";
const CLAIM = "/mailroom.v1.MailboxService/Claim";
const ACK = "/mailroom.v1.MailboxService/Ack";
const enqueue = (threadId: string, data = new Uint8Array(8)) => toBinary(EnqueueRequestSchema, create(EnqueueRequestSchema, { dispatch: { threadId, payload: { data, mediaType: "application/octet-stream" } } }));
const health = (service = "") => toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service }));

/** Each case: a name, the RPC, the body and the headers (a bearer token of the admin unless the case says otherwise). */
const cases: Array<[string, string, Buffer, http2.OutgoingHttpHeaders]> = [
  ["Health.Check", HEALTH, grpcFrame(health()), {}],
  ["Health.Check of an unknown service", HEALTH, grpcFrame(health("nope")), {}],
  ["Health.Check with content type application/grpc+proto", HEALTH, grpcFrame(health()), { "content-type": "application/grpc+proto" }],
  ["Enqueue", ENQUEUE, grpcFrame(enqueue("fast-path-thread")), {}],
  ["Enqueue of a large payload to a client accepting gzip (a compressed answer)", ENQUEUE, grpcFrame(enqueue("fast-path-large", new Uint8Array(4096).fill(1))), { "grpc-accept-encoding": "gzip" }],
  ["Enqueue compressed with gzip", ENQUEUE, grpcFrame(gzipSync(enqueue("fast-path-gzip")), 1), { "grpc-encoding": "gzip" }],
  ["Enqueue that fails validation (no thread id)", ENQUEUE, grpcFrame(enqueue("")), {}],
  ["Ack of an unknown dispatch", ACK, grpcFrame(toBinary(AckRequestSchema, create(AckRequestSchema, { dispatchId: "nope", claimToken: "nope" }))), {}],
  ["a body that does not decode", ENQUEUE, grpcFrame(Buffer.from([0xff, 0xff, 0xff, 0xff])), {}],
  ["an empty body", ENQUEUE, Buffer.alloc(0), {}],
  ["two messages", HEALTH, Buffer.concat([grpcFrame(health()), grpcFrame(health())]), {}],
  ["an incomplete envelope", HEALTH, grpcFrame(health()).subarray(0, 3), {}],
  ["a message cut short", ENQUEUE, grpcFrame(enqueue("cut")).subarray(0, 12), {}],
  ["a message larger than --max-message-bytes", ENQUEUE, (() => { const b = Buffer.alloc(5); b.writeUInt32BE(64 * 1024 * 1024, 1); return b; })(), {}],
  ["the compressed flag without an encoding", ENQUEUE, grpcFrame(enqueue("flag"), 1), {}],
  ["an encoding the server does not have", ENQUEUE, grpcFrame(enqueue("snappy"), 1), { "grpc-encoding": "snappy" }],
  ["a malformed grpc-timeout", HEALTH, grpcFrame(health()), { "grpc-timeout": "soon" }],
  ["a deadline beyond --max-deadline-ms", HEALTH, grpcFrame(health()), { "grpc-timeout": "100H" }],
  ["a deadline within it", HEALTH, grpcFrame(health()), { "grpc-timeout": "5S" }],
  [
    "a deadline that passes while the call waits (a long-poll Claim of an empty thread ends its wait then)",
    CLAIM,
    grpcFrame(toBinary(ClaimRequestSchema, create(ClaimRequestSchema, { threadId: "fast-path-empty", consumerId: "w", limit: 1, lease: { seconds: 30n }, wait: { seconds: 5n } }))),
    { "grpc-timeout": "150m" },
  ],
  ["no credentials", ENQUEUE, grpcFrame(enqueue("anonymous")), { authorization: undefined }],
  ["a wrong token", ENQUEUE, grpcFrame(enqueue("wrong")), bearer("not-a-token")],
  ["a role the caller lacks (PERMISSION_DENIED)", CLAIM, grpcFrame(Buffer.alloc(0)), bearer(producer)],
  ["JSON over gRPC (Connect's handler on both)", HEALTH, grpcFrame(Buffer.from("{}")), { "content-type": "application/grpc+json" }],
];

/** A case's headers over the admin's token (a header given as undefined is left out). */
function headersOf(headers: http2.OutgoingHttpHeaders): http2.OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries({ ...bearer(admin), ...headers }).filter(([, value]) => value !== undefined));
}

/** What must be equal: volatile parts of successful answers (ids, times) are compared by shape. */
function comparable(answer: Answer, path: string) {
  const messages = answer.messages.map(({ flags, data }) => {
    const bytes = flags === 1 ? gunzipSync(data) : data;
    if (path !== ENQUEUE) return { flags, bytes: bytes.toString("base64") };
    const { dispatch } = fromBinary(EnqueueResponseSchema, bytes);
    return { flags, threadId: dispatch?.threadId, payloadBytes: dispatch?.payload?.data.length, hasId: dispatch?.dispatchId !== "" };
  });
  return { status: answer.status, headers: answer.headers, trailers: answer.trailers, messages };
}

describe("unary gRPC through the fast path", () => {
  const store = new MemoryStore();
  let fast: RunningServer;
  let connect: RunningServer;
  beforeAll(async () => {
    const config = resolveServerConfig({ port: 0, authFile: authFile(), maxDeadlineMs: 60_000 });
    fast = await startServer(config, { store, logger: captureLog("warn").logger, closeStore: false });
    connect = await startServer(config, { store, logger: captureLog("warn").logger, closeStore: false, withoutGrpcUnaryFastPath: true });
  });
  afterAll(async () => {
    await fast?.close();
    await connect?.close();
    await store.close();
  });

  it.each(cases)("answers %s as Connect's handler does", async (_name, path, body, headers) => {
    const given = headersOf(headers);
    const [viaFast, viaConnect] = [await call(fast.url, path, body, given), await call(connect.url, path, body, given)];
    expect(comparable(viaFast, path)).toEqual(comparable(viaConnect, path));
  });

  it("covers successes and failures of every kind (the cases above are not all alike)", async () => {
    const statuses = new Set<string>();
    for (const [, path, body, headers] of cases) {
      const given = headersOf(headers);
      // Both servers, so that their call counts stay comparable (below).
      for (const server of [fast, connect]) {
        const answer = await call(server.url, path, body, given);
        statuses.add(answer.trailers["grpc-status"] ?? answer.headers["grpc-status"] ?? "none");
      }
    }
    // OK, NOT_FOUND, INVALID_ARGUMENT, UNIMPLEMENTED, RESOURCE_EXHAUSTED, INTERNAL, UNAUTHENTICATED, PERMISSION_DENIED at least.
    for (const code of ["0", "5", "3", "12", "8", "13", "16", "7"]) expect(statuses).toContain(code);
  });

  it("counts the same calls with the same codes in the metrics", async () => {
    const scrape = async (server: RunningServer) => {
      const text = await (await fetch(`${server.url}/metrics`, { headers: bearer(admin) })).text();
      return text.split("\n").filter((line) => line.startsWith("mailroom_rpc_calls_total{"));
    };
    const [viaFast, viaConnect] = [await scrape(fast), await scrape(connect)];
    expect(viaFast.length).toBeGreaterThan(5);
    expect(viaFast).toEqual(viaConnect);
  });
});
