/**
 * With --tls-cert and --tls-key the one port serves TLS: HTTP/2 for gRPC and
 * HTTP/1.1 for Connect, chosen by ALPN. The certificate is a throwaway
 * self-signed one made with openssl for this run.
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { createMailroomClients, type MailroomClientOptions } from "../../src/client/index.js";
import { grpcJsHealth } from "../support/grpc-js-health.js";
import { curlConnect } from "../support/http-tools.js";
import { useServerProcess } from "../support/server-process.js";

function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const opensslMissing = !hasOpenssl();
if (opensslMissing) console.log("TLS suite SKIPPED: openssl is not on PATH, so no test certificate can be made.");

describe.skipIf(opensslMissing)("a server with --tls-cert and --tls-key", () => {
  const dir = join(tmpdir(), `mailroom-tls-${randomUUID()}`);
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");

  // Registered before the server's hooks: the certificate exists before it starts, and is removed after it stops.
  beforeAll(() => {
    mkdirSync(dir);
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", cert],
      { stdio: "ignore" },
    );
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const server = useServerProcess({ args: ["--tls-cert", cert, "--tls-key", key] });

  it("names an https address in its start-up line", () => {
    expect(server().url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it("answers @grpc/grpc-js over TLS, trusting the certificate", async () => {
    const health = grpcJsHealth(`127.0.0.1:${server().port}`, { ca: readFileSync(cert) });
    try {
      expect(await health.check("")).toEqual({ status: "SERVING" });
    } finally {
      health.close();
    }
  });

  it.each<Omit<MailroomClientOptions, "baseUrl" | "ca">>([
    { protocol: "grpc" },
    { protocol: "connect", httpVersion: "1.1", binary: false },
    { protocol: "grpc-web", httpVersion: "1.1" },
  ])("answers the generated client: $protocol, HTTP/$httpVersion", async (transport) => {
    const clients = createMailroomClients({ baseUrl: server().url, ca: readFileSync(cert), ...transport });
    try {
      expect((await clients.health.check({})).status).toBe(ServingStatus.SERVING);
    } finally {
      clients.close();
    }
  });

  it("answers curl over HTTPS/1.1", async () => {
    const reply = await curlConnect(server().url, "/grpc.health.v1.Health/Check", "{}", { cacert: cert, http1: true });
    expect(reply).toEqual({ status: 200, httpVersion: "1.1", body: '{"status":"SERVING"}' });
  });
});
