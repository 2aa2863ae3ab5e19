/**
 * gRPC by hand over Node's http2 client: for requests no generated client
 * sends (malformed frames, flags without an encoding) and for clients that
 * misbehave (stop reading, vanish).
 */
import http2 from "node:http2";
import { expect } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { e2eAuthHeaders, testClients } from "./e2e-auth.js";
import type { ServerProcess } from "./server-process.js";

/** A length-prefixed gRPC message frame around `payload` (flags 1 = compressed). */
export function grpcFrame(payload: Uint8Array, flags = 0): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt8(flags, 0);
  prefix.writeUInt32BE(payload.length, 1);
  return Buffer.concat([prefix, payload]);
}

/** A gRPC call with a hand-made body; resolves with the status from the trailers. */
export function rawGrpcCall(baseUrl: string, path: string, body: Buffer, headers: http2.OutgoingHttpHeaders = {}): Promise<{ grpcStatus: string; grpcMessage: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers", ...e2eAuthHeaders(), ...headers });
    stream.on("error", reject);
    let received: http2.IncomingHttpHeaders = {};
    const settle = (all: http2.IncomingHttpHeaders) => {
      resolve({ grpcStatus: String(all["grpc-status"]), grpcMessage: decodeURIComponent(String(all["grpc-message"] ?? "")) });
      session.close();
    };
    stream.on("response", (headers) => {
      received = headers;
    });
    // A gRPC error without a body comes as a trailers-only response (status in the headers).
    stream.on("trailers", (trailers) => settle({ ...received, ...trailers }));
    stream.on("end", () => {
      if (received["grpc-status"] !== undefined) settle(received);
      else session.close();
    });
    stream.resume();
    stream.end(body);
  });
}

/** The server still answers a Health.Check over a new connection, and has logged no error. */
export async function stillServing(server: ServerProcess): Promise<void> {
  const clients = testClients({ baseUrl: server.url, protocol: "grpc" });
  try {
    expect((await clients.health.check({})).status).toBe(ServingStatus.SERVING);
  } finally {
    clients.close();
  }
  expect(server.logs.filter((line) => line.level === "error" || line.level === "fatal")).toEqual([]);
}
