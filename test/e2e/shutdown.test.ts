/**
 * Graceful shutdown of the real process on SIGTERM: Watch streams hear
 * NOT_SERVING and then end with UNAVAILABLE/SHUTTING_DOWN, calls in flight
 * finish, and the process exits 0 promptly.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import http from "node:http";
import { describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { createMailroomClients } from "../../src/client/index.js";
import { type ServerProcess, serverBackends, startServerProcess } from "../support/server-process.js";

const EXIT_WITHIN_MS = 5000;

type Outcome = { status: number; body: string } | { error: string };

/**
 * A Health.Check over HTTP/1.1 whose body is held back: the server has taken
 * the call (it answered `Expect: 100-continue`) but cannot finish it until
 * `sendBody()`. `outcome` says how it ended: a response, or the connection cut.
 */
async function callInFlight(server: ServerProcess): Promise<{ sendBody: () => void; outcome: Promise<Outcome> }> {
  const request = http.request(`${server.url}/grpc.health.v1.Health/Check`, {
    method: "POST",
    headers: { "content-type": "application/json", expect: "100-continue", "content-length": "2" },
  });
  const outcome = new Promise<Outcome>((resolve) => {
    request.on("response", (incoming) => {
      let body = "";
      incoming.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
      incoming.on("end", () => resolve({ status: incoming.statusCode ?? 0, body }));
    });
    request.on("error", (error) => resolve({ error: error.message }));
  });
  request.flushHeaders();
  await new Promise<void>((resolve) => request.once("continue", resolve));
  return { sendBody: () => request.end("{}"), outcome };
}

const shuttingDown = (line: { msg: string }) => line.msg.startsWith("shutting down");

describe.each(serverBackends())("SIGTERM on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("with a Health.Watch stream open", () => {
    it("sends NOT_SERVING, ends the stream with UNAVAILABLE (reason SHUTTING_DOWN) and exits 0 within 5 s", async () => {
      const server = await startServerProcess({ backend });
      const clients = createMailroomClients({ baseUrl: server.url, protocol: "grpc" });
      const watch = clients.health.watch({})[Symbol.asyncIterator]();
      expect((await watch.next()).value?.status).toBe(ServingStatus.SERVING);

      const signalled = performance.now();
      server.kill("SIGTERM");
      expect((await watch.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
      const end = await watch.next().then(
        () => undefined,
        (error: unknown) => error,
      );
      const exit = await server.exited;
      const took = performance.now() - signalled;
      clients.close();

      expect(end).toBeInstanceOf(ConnectError);
      const error = end as ConnectError;
      expect(error.code).toBe(Code.Unavailable);
      expect(error.rawMessage).toMatch(/shutting down; reconnect/);
      expect(error.findDetails(ErrorDetailSchema).map((detail) => detail.reason)).toEqual([ErrorReason.SHUTTING_DOWN]);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(took).toBeLessThan(EXIT_WITHIN_MS);
    });
  });

  describe.skipIf(!backend.available)("with a unary call in flight", () => {
    it("lets the call finish, then exits 0", async () => {
      const server = await startServerProcess({ backend });
      const call = await callInFlight(server);

      server.kill("SIGTERM");
      await server.waitForLog(shuttingDown, "the shutting-down line");
      call.sendBody();

      // It completed normally; health by then says the server is going away.
      expect(await call.outcome).toEqual({ status: 200, body: JSON.stringify({ status: "NOT_SERVING" }) });
      expect(await server.exited).toEqual({ code: 0, signal: null });
    });

    it("cuts the call once --shutdown-grace-ms has passed, and still exits 0", async () => {
      const server = await startServerProcess({ backend, args: ["--shutdown-grace-ms", "100"] });
      const call = await callInFlight(server);

      server.kill("SIGTERM");

      expect(await server.exited).toEqual({ code: 0, signal: null });
      expect(server.logs.some((line) => line.level === "warn" && /still in flight/.test(line.msg))).toBe(true);
      expect(await call.outcome).toHaveProperty("error");
    });

    it("exits 1 at once on a second signal", async () => {
      const server = await startServerProcess({ backend, args: ["--shutdown-grace-ms", "60000"] });
      const call = await callInFlight(server);

      server.kill("SIGTERM");
      await server.waitForLog(shuttingDown, "the shutting-down line");
      server.kill("SIGTERM");

      expect(await server.exited).toEqual({ code: 1, signal: null });
      expect(await call.outcome).toHaveProperty("error");
    });
  });
});
