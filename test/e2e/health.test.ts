/**
 * Every kind of client reaches the one port: generated Connect clients over
 * gRPC, gRPC-Web and Connect (binary and JSON, HTTP/2 and HTTP/1.1), an
 * independent gRPC implementation, plain curl and buf curl.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { createMailroomClients, type MailroomClientOptions } from "../../src/client/index.js";
import { grpcJsHealth } from "../support/grpc-js-health.js";
import { bufCurlGrpc, curlConnect } from "../support/http-tools.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

const GRPC_NOT_FOUND = 5;
const services = ["", "mailroom.v1.MailboxService", "mailroom.v1.PoolService", "mailroom.v1.EventService"];

describe.each(serverBackends())("Health on the $name backend", (backend) => {
  const server = useServerProcess({ backend });

  describe.skipIf(!backend.available)("Check answers SERVING through every protocol", () => {
    const transports: Array<Omit<MailroomClientOptions, "baseUrl">> = [
      { protocol: "grpc", binary: true },
      { protocol: "grpc", binary: false },
      { protocol: "grpc-web", binary: true, httpVersion: "1.1" },
      { protocol: "grpc-web", binary: false, httpVersion: "2" },
      { protocol: "connect", binary: false, httpVersion: "1.1" },
      { protocol: "connect", binary: true, httpVersion: "2" },
    ];

    it.each(transports)("generated client: $protocol, binary $binary, HTTP/$httpVersion", async (transport) => {
      const clients = createMailroomClients({ baseUrl: server().url, ...transport });
      try {
        for (const service of services) {
          expect((await clients.health.check({ service })).status, service || '""').toBe(ServingStatus.SERVING);
        }
      } finally {
        clients.close();
      }
    });

    it("@grpc/grpc-js with the service loaded from proto/", async () => {
      const health = grpcJsHealth(`127.0.0.1:${server().port}`);
      try {
        for (const service of services) expect(await health.check(service)).toEqual({ status: "SERVING" });
      } finally {
        health.close();
      }
    });

    it.each([
      [false, "1.1"],
      [true, "2"],
    ])("curl, a Connect JSON POST (HTTP/2 prior knowledge: %s)", async (http2PriorKnowledge, httpVersion) => {
      const reply = await curlConnect(server().url, "/grpc.health.v1.Health/Check", '{"service":"mailroom.v1.MailboxService"}', { http2PriorKnowledge });
      expect(reply).toEqual({ status: 200, httpVersion, body: '{"status":"SERVING"}' });
    });

    it("buf curl over gRPC with the schema from proto/", async () => {
      expect(await bufCurlGrpc(server().url, "/grpc.health.v1.Health/Check", "{}")).toEqual({ status: "SERVING" });
    });
  });

  describe.skipIf(!backend.available)("an unknown service", () => {
    it("gets NOT_FOUND from Check", async () => {
      const clients = createMailroomClients({ baseUrl: server().url, protocol: "grpc" });
      try {
        await expect(clients.health.check({ service: "mailroom.v1.NoSuchService" })).rejects.toMatchObject({ code: Code.NotFound });
      } finally {
        clients.close();
      }
      const health = grpcJsHealth(`127.0.0.1:${server().port}`);
      try {
        await expect(health.check("mailroom.v1.NoSuchService")).rejects.toMatchObject({ code: GRPC_NOT_FOUND });
      } finally {
        health.close();
      }
    });

    it("gets SERVICE_UNKNOWN from Watch", async () => {
      const health = grpcJsHealth(`127.0.0.1:${server().port}`);
      const stream = health.watch("mailroom.v1.NoSuchService");
      try {
        const [first] = (await once(stream, "data")) as [{ status: string }];
        expect(first.status).toBe("SERVICE_UNKNOWN");
      } finally {
        stream.cancel();
        health.close();
      }
    });
  });

  describe.skipIf(!backend.available)("Watch", () => {
    it("delivers the current status first", async () => {
      const clients = createMailroomClients({ baseUrl: server().url, protocol: "grpc" });
      const controller = new AbortController();
      try {
        for await (const reply of clients.health.watch({ service: "mailroom.v1.PoolService" }, { signal: controller.signal })) {
          expect(reply.status).toBe(ServingStatus.SERVING);
          break;
        }
      } finally {
        controller.abort();
        clients.close();
      }
    });
  });
});

function once(emitter: NodeJS.EventEmitter, event: string): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    emitter.once(event, (...args: unknown[]) => resolve(args));
    emitter.once("error", reject);
  });
}
