/**
 * Bad input gets the right status and never takes the process down.
 */
import { Code } from "@connectrpc/connect";
import http2 from "node:http2";
import { describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { createMailroomClients } from "../../src/client/index.js";
import { curlConnect } from "../support/http-tools.js";
import { grpcFrame, rawGrpcCall, stillServing } from "../support/raw-grpc.js";
import { useServerProcess } from "../support/server-process.js";

const GRPC_INVALID_ARGUMENT = "3";
const SMALL_LIMIT = 64;

describe("a malformed request is INVALID_ARGUMENT and the server keeps answering", () => {
  const server = useServerProcess();

  it("a Connect POST whose body is not JSON", async () => {
    const reply = await curlConnect(server().url, "/grpc.health.v1.Health/Check", "{not json");
    expect(reply.status).toBe(400);
    expect(JSON.parse(reply.body)).toMatchObject({ code: "invalid_argument" });
    await stillServing(server());
  });

  it("a gRPC frame cut short of the length its prefix announces", async () => {
    const truncated = grpcFrame(Buffer.alloc(100)).subarray(0, 5 + 4);
    const reply = await rawGrpcCall(server().url, "/grpc.health.v1.Health/Check", truncated);
    expect(reply.grpcStatus).toBe(GRPC_INVALID_ARGUMENT);
    await stillServing(server());
  });

  const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff]);

  it("a Connect POST whose protobuf body does not decode", async () => {
    const reply = await fetch(`${server().url}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/proto" }, body: garbage });
    expect(reply.status).toBe(400);
    expect(await reply.json()).toMatchObject({ code: "invalid_argument", message: expect.stringContaining("grpc.health.v1.HealthCheckRequest") });
    await stillServing(server());
  });

  it("a gRPC-Web frame whose bytes do not decode", async () => {
    const reply = await fetch(`${server().url}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/grpc-web+proto" }, body: grpcFrame(garbage) });
    // gRPC-Web carries the status in a trailer frame at the end of the body.
    expect(Buffer.from(await reply.arrayBuffer()).toString("latin1")).toMatch(/grpc-status:\s*3\b/);
    await stillServing(server());
  });

  // connect-es alone would answer INTERNAL here; src/server/request-gate.ts corrects it.
  it("a gRPC frame whose bytes do not decode as the request message", async () => {
    const reply = await rawGrpcCall(server().url, "/grpc.health.v1.Health/Check", grpcFrame(Buffer.from([0xff, 0xff, 0xff, 0xff])));
    await stillServing(server());
    expect(reply.grpcStatus).toBe(GRPC_INVALID_ARGUMENT);
  });
});

describe("a message flagged compressed in a request that names no encoding", () => {
  const server = useServerProcess();

  // grpc-go and connect-go answer INTERNAL too; gRPC's status code table gives INTERNAL to what cannot be decompressed.
  it("is INTERNAL, with a message that says so, and the server keeps answering", async () => {
    const reply = await rawGrpcCall(server().url, "/grpc.health.v1.Health/Check", grpcFrame(Buffer.alloc(0), 1));
    expect(reply).toEqual({ grpcStatus: "13", grpcMessage: "protocol error: a message has the compressed flag set, but the request names no encoding (grpc-encoding)" });
    await stillServing(server());
  });
});

describe("a request above --max-message-bytes is RESOURCE_EXHAUSTED and the server keeps answering", () => {
  const oversized = { service: "x".repeat(SMALL_LIMIT * 2) };

  describe.each([
    ["the flag", { args: ["--max-message-bytes", String(SMALL_LIMIT)] }],
    ["its environment variable", { env: { MAILROOM_MAX_MESSAGE_BYTES: String(SMALL_LIMIT) } }],
  ])("with the limit set by %s", (_how, options) => {
    const server = useServerProcess(options);

    it("over gRPC", async () => {
      const clients = createMailroomClients({ baseUrl: server().url, protocol: "grpc" });
      try {
        await expect(clients.health.check(oversized)).rejects.toMatchObject({ code: Code.ResourceExhausted });
      } finally {
        clients.close();
      }
      await stillServing(server());
    });

    it("over Connect with curl", async () => {
      const reply = await curlConnect(server().url, "/grpc.health.v1.Health/Check", JSON.stringify(oversized));
      expect(JSON.parse(reply.body)).toMatchObject({ code: "resource_exhausted" });
      await stillServing(server());
    });
  });
});

describe("limits are the configured ones, not the libraries' defaults", () => {
  const server = useServerProcess({ args: ["--max-concurrent-streams", "7", "--max-deadline-ms", "1000"] });

  it("advertises --max-concurrent-streams in its HTTP/2 settings", async () => {
    const session = http2.connect(server().url);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      expect(settings.maxConcurrentStreams).toBe(7);
    } finally {
      session.close();
    }
  });

  it("refuses a deadline longer than --max-deadline-ms with INVALID_ARGUMENT", async () => {
    const clients = createMailroomClients({ baseUrl: server().url, protocol: "grpc" });
    try {
      await expect(clients.health.check({}, { timeoutMs: 5000 })).rejects.toMatchObject({ code: Code.InvalidArgument });
      expect((await clients.health.check({}, { timeoutMs: 500 })).status).toBe(ServingStatus.SERVING);
    } finally {
      clients.close();
    }
  });
});
