/**
 * Server reflection (grpc.reflection.v1 and v1alpha): clients that have no
 * proto file discover every service and call it. Two independent clients ask:
 * `buf curl` without `--schema` (Go, run outside the repository) and
 * @grpc/grpc-js with only the reflection protocol's proto.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { fileDescriptorSet, openReflection, type ReflectionSession, type ReflectionVersion } from "../support/grpc-js-reflection.js";
import { repoRoot, useServerProcess } from "../support/server-process.js";
import { e2eAuthHeaderLines, grpcJsClientOptions } from "../support/e2e-auth.js";

const run = promisify(execFile);
const TOKEN = "reflection-t0ken";

const mailroomServices = ["grpc.health.v1.Health", "mailroom.v1.EventService", "mailroom.v1.MailboxService", "mailroom.v1.PoolService"];
const reflectionServices = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/** `buf curl` with no schema: it asks the server by reflection. Runs outside the repository, so no proto file is near. */
async function bufCurl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // The suites' token (to reflection too), unless the call sends its own.
  const auth = e2eAuthHeaderLines(args).flatMap((line) => ["-H", line, "--reflect-header", line]);
  return run(join(repoRoot, "node_modules/.bin/buf"), ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...auth, ...args], { cwd: tmpdir() }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({ code: error.code ?? -1, stdout: error.stdout ?? "", stderr: error.stderr ?? "" }),
  );
}

const protocols: Array<[ReflectionVersion, string]> = [
  ["v1", "grpc-v1"],
  ["v1alpha", "grpc-v1alpha"],
];

describe.each(protocols)("server reflection %s, asked by buf curl without proto files", (_version, reflectProtocol) => {
  const server = useServerProcess();
  const curl = (...args: string[]) => bufCurl(["--reflect-protocol", reflectProtocol, ...args]);

  it("lists every service, the reflection services included", async () => {
    const { code, stdout, stderr } = await curl("--list-services", server().url);
    expect(code, stderr).toBe(0);
    expect(stdout.trim().split("\n")).toEqual([...mailroomServices, ...reflectionServices].sort());
  });

  it("lists the methods of every service", async () => {
    const { code, stdout, stderr } = await curl("--list-methods", server().url);
    expect(code, stderr).toBe(0);
    const methods = stdout.trim().split("\n");
    expect(methods).toEqual(
      expect.arrayContaining(["grpc.health.v1.Health/Watch", "mailroom.v1.MailboxService/Enqueue", "mailroom.v1.PoolService/Send", "mailroom.v1.EventService/Subscribe"]),
    );
    expect(new Set(methods.map((method) => method.split("/")[0]))).toEqual(new Set([...mailroomServices, ...reflectionServices]));
  });

  it.each([
    ["grpc.health.v1.Health/Check", "{}", { status: "SERVING" }],
    ["mailroom.v1.MailboxService/Enqueue", '{"dispatch": {"threadId": "reflected"}}', { dispatch: { threadId: "reflected", status: "RUN_DISPATCH_STATUS_QUEUED" } }],
    ["mailroom.v1.PoolService/OpenPool", '{"poolId": "reflected-pool"}', { snapshot: { poolId: "reflected-pool" }, opened: true }],
    ["mailroom.v1.EventService/ListEvents", '{"all": {}, "pageSize": 1}', { frames: [{ kind: "EVENT_FRAME_KIND_EVENT" }] }],
  ])("calls %s with JSON encoded from the reflected schema", async (method, body, expected) => {
    // The Enqueue case runs before ListEvents, so there is an event to list.
    const { code, stdout, stderr } = await curl("--data", body, `${server().url}/${method}`);
    expect(code, stderr).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject(expected);
  });
});

describe("server reflection, asked by @grpc/grpc-js (an independent gRPC implementation)", () => {
  const server = useServerProcess();
  const target = () => new URL(server().url).host;
  let session: ReflectionSession | undefined;
  afterEach(() => session?.close());

  describe.each(["v1", "v1alpha"] as const)("over %s", (version) => {
    it("lists the services", async () => {
      session = openReflection(target(), version);
      const answer = await session.ask({ listServices: "" });
      expect(answer.listServicesResponse?.service.map((s) => s.name).sort()).toEqual([...mailroomServices, ...reflectionServices].sort());
      expect(answer.originalRequest).toMatchObject({ listServices: "" });
    });

    it("answers a symbol with its file and every file it imports, enough to call the service with no proto file", async () => {
      session = openReflection(target(), version);
      const answer = await session.ask({ fileContainingSymbol: "mailroom.v1.MailboxService" });
      const files = answer.fileDescriptorResponse?.fileDescriptorProto ?? [];
      const definition = protoLoader.loadFileDescriptorSetFromBuffer(fileDescriptorSet(files), { keepCase: true, defaults: true, enums: String });
      const Mailbox = grpc.loadPackageDefinition(definition).mailroom as unknown as {
        v1: { MailboxService: new (target: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => grpc.Client & Record<string, grpc.requestCallback<unknown> & CallableFunction> };
      };
      const client = new Mailbox.v1.MailboxService(target(), grpc.credentials.createInsecure(), grpcJsClientOptions());
      try {
        const reply = await new Promise<{ dispatch: { thread_id: string; status: string } }>((resolve, reject) =>
          (client as unknown as { Enqueue: (request: object, callback: (error: Error | null, reply: unknown) => void) => void }).Enqueue(
            { dispatch: { thread_id: "reflected-grpc-js" } },
            (error, reply) => (error ? reject(error) : resolve(reply as { dispatch: { thread_id: string; status: string } })),
          ),
        );
        expect(reply.dispatch).toMatchObject({ thread_id: "reflected-grpc-js", status: "RUN_DISPATCH_STATUS_QUEUED" });
      } finally {
        client.close();
      }
    });

    it("answers a method name and a file name with the same file", async () => {
      session = openReflection(target(), version);
      const byMethod = await session.ask({ fileContainingSymbol: "mailroom.v1.PoolService.Send" });
      const byName = await session.ask({ fileByFilename: "mailroom/v1/pool_service.proto" });
      expect(byMethod.fileDescriptorResponse?.fileDescriptorProto).toEqual(byName.fileDescriptorResponse?.fileDescriptorProto);
      expect(byName.fileDescriptorResponse?.fileDescriptorProto.length).toBeGreaterThan(1);
    });

    it("answers an unknown symbol, file or extension with NOT_FOUND in the stream, and goes on answering", async () => {
      session = openReflection(target(), version);
      for (const question of [
        { fileContainingSymbol: "mailroom.v1.Nope" },
        { fileByFilename: "nope.proto" },
        { allExtensionNumbersOfType: "mailroom.v1.Nope" },
        { fileContainingExtension: { containingType: "mailroom.v1.RunDispatch", extensionNumber: 100 } },
      ]) {
        expect((await session.ask(question)).errorResponse).toMatchObject({ errorCode: grpc.status.NOT_FOUND });
      }
      const known = await session.ask({ allExtensionNumbersOfType: "mailroom.v1.RunDispatch" });
      expect(known.allExtensionNumbersResponse).toEqual({ baseTypeName: "mailroom.v1.RunDispatch", extensionNumber: [] });
    });
  });
});

describe("server reflection with --auth-token", () => {
  const server = useServerProcess({ env: { MAILROOM_AUTH_TOKEN: TOKEN } });

  it("is refused without the token (UNAUTHENTICATED), like every service but Health", async () => {
    const session = openReflection(new URL(server().url).host, "v1");
    try {
      await expect(session.ask({ listServices: "" })).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    } finally {
      session.close();
    }
  });

  it("answers buf curl that sends the token to reflection too", async () => {
    const { code, stdout, stderr } = await bufCurl(["-H", `authorization: Bearer ${TOKEN}`, "--reflect-header", "*", "--list-services", server().url]);
    expect(code, stderr).toBe(0);
    expect(stdout).toContain("mailroom.v1.MailboxService");
  });
});
