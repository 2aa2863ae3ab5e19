/**
 * With --auth-token every call but Health needs `authorization: Bearer <token>`.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { type ClientProtocol, createMailroomClients } from "../../src/client/index.js";
import { curlConnect } from "../support/http-tools.js";
import { type ServerProcess, useServerProcess } from "../support/server-process.js";

const TOKEN = "t0ken-for-tests";
const LIMIT = ["--max-message-bytes", "1024"];

async function enqueueWith(server: ServerProcess, protocol: ClientProtocol, token: string | undefined): Promise<ConnectError> {
  const clients = createMailroomClients({ baseUrl: server.url, protocol, token });
  try {
    await clients.mailbox.enqueue({});
    throw new Error("Enqueue unexpectedly succeeded");
  } catch (error) {
    return ConnectError.from(error);
  } finally {
    clients.close();
  }
}

describe.each([
  ["--auth-token", { args: [...LIMIT, "--auth-token", TOKEN] }],
  ["MAILROOM_AUTH_TOKEN", { args: LIMIT, env: { MAILROOM_AUTH_TOKEN: TOKEN } }],
])("a server with a token set by %s", (_how, options) => {
  const server = useServerProcess(options);

  describe.each(["grpc", "connect"] as const)("over %s", (protocol) => {
    it.each([
      ["no token", undefined],
      ["a wrong token", "not-the-token"],
      ["the token with a suffix", `${TOKEN}x`],
    ])("refuses %s with UNAUTHENTICATED (reason UNAUTHENTICATED)", async (_case, token) => {
      const error = await enqueueWith(server(), protocol, token);
      expect(error.code).toBe(Code.Unauthenticated);
      expect(error.findDetails(ErrorDetailSchema).map((detail) => detail.reason)).toEqual([ErrorReason.UNAUTHENTICATED]);
    });

    it("lets the right token through to the RPC", async () => {
      // An empty Enqueue reaching the handler's own check proves the call got past authentication.
      expect((await enqueueWith(server(), protocol, TOKEN)).code).toBe(Code.InvalidArgument);
    });

    it("answers Health without a token, and with one", async () => {
      for (const token of [undefined, TOKEN]) {
        const clients = createMailroomClients({ baseUrl: server().url, protocol, token });
        try {
          expect((await clients.health.check({})).status).toBe(ServingStatus.SERVING);
        } finally {
          clients.close();
        }
      }
    });
  });

  it("refuses a plain curl without the header", async () => {
    const reply = await curlConnect(server().url, "/mailroom.v1.MailboxService/Enqueue", "{}");
    expect(reply.status).toBe(401);
    expect(JSON.parse(reply.body)).toMatchObject({ code: "unauthenticated" });
  });

  it("refuses an unauthenticated request before reading its body", async () => {
    // Above --max-message-bytes: had the body been read first, this would be RESOURCE_EXHAUSTED.
    const body = JSON.stringify({ dispatch: { threadId: "x".repeat(4096) } });
    const refused = await curlConnect(server().url, "/mailroom.v1.MailboxService/Enqueue", body);
    expect(JSON.parse(refused.body)).toMatchObject({ code: "unauthenticated" });
    const read = await curlConnect(server().url, "/mailroom.v1.MailboxService/Enqueue", body, { headers: [`authorization: Bearer ${TOKEN}`] });
    expect(JSON.parse(read.body)).toMatchObject({ code: "resource_exhausted" });
  });
});
