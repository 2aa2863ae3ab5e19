/**
 * The baseline: a bare connect-node server (cleartext HTTP/2, gRPC and
 * Connect, no interceptors, no store) whose only RPC, grpc.health.v1.Health
 * Check, answers SERVING at once. What it does per second bounds what any
 * unary RPC can do through connect-node on this machine.
 *
 *   node --import tsx bench/echo-server.ts [port]
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";

const handler = connectNodeAdapter({
  grpc: true,
  grpcWeb: true,
  connect: true,
  routes: (router) =>
    router.service(Health, {
      check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
    }),
});

const server = http2.createServer(handler);
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  const { port } = server.address() as AddressInfo;
  console.log(JSON.stringify({ level: "info", msg: "echo server listening", address: `http://127.0.0.1:${port}`, port }));
});

const stop = () => {
  server.close(() => process.exit(0));
  // Clients keep HTTP/2 sessions open; do not wait for them.
  setTimeout(() => process.exit(0), 500).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
