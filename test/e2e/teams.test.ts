/**
 * Teams end to end: the real server with an auth file of several principals
 * in two namespaces (tokens and a JWKS made here), called through generated
 * clients. Who may call what (every RPC against every role), JWTs good and
 * bad, SIGHUP adding and removing principals, claim tokens only in claiming
 * responses, per-namespace stream and rate limits that leave other
 * namespaces alone, bounded metric labels, and start-up refusals naming the
 * entry. That namespaces keep their data apart is checked in namespaces.test.ts.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { beforeAll, describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { RunStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventFrameKind } from "../../gen/mailroom/v1/event_pb.js";
import { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { PoolService } from "../../gen/mailroom/v1/pool_service_pb.js";
import type { MailroomClients } from "../../src/client/index.js";
import { requiredRole, type Role, ROLES } from "../../src/domain/auth/roles.js";
import { curlConnect } from "../support/http-tools.js";
import { LONG_LEASE, uid } from "../support/mailbox.js";
import { type LogLine, runCliToExit, type ServerProcess, startServerProcess, useServerProcess } from "../support/server-process.js";
import { clientsWith, NAMESPACE_CLAIM, type PrincipalSpec, ROLES_CLAIM, TeamsFixture } from "../support/teams.js";

const PRINCIPALS: PrincipalSpec[] = [
  ...ROLES.map((role) => ({ name: `billing-${role}`, namespace: "billing", roles: [role] })),
  { name: "search-admin", namespace: "search", roles: ["admin"] },
  { name: "search-worker", namespace: "search", roles: ["worker"] },
  { name: "throttled-admin", namespace: "throttled", roles: ["admin"] },
];
const LIMITS = { search: { max_open_streams: 2 }, throttled: { requests_per_second: 1 } };

function refusal(error: unknown): { code: Code; reason: ErrorReason | undefined; metadata: Record<string, string> } {
  const connect = ConnectError.from(error);
  const [detail] = connect.findDetails(ErrorDetailSchema);
  return { code: connect.code, reason: detail?.reason, metadata: detail?.metadata ?? {} };
}

async function outcome(call: () => Promise<unknown>): Promise<ReturnType<typeof refusal> | "ok"> {
  try {
    await call();
    return "ok";
  } catch (error) {
    return refusal(error);
  }
}

type AnyClient = Record<string, (request: object, options?: { signal?: AbortSignal }) => unknown>;

/** Calls any RPC with an empty request; a server stream is read to its first frame, then cancelled. */
async function callEmpty(clients: MailroomClients, service: DescService, method: DescMethod): Promise<void> {
  const client = { [MailboxService.typeName]: clients.mailbox, [PoolService.typeName]: clients.pools, [EventService.typeName]: clients.events, [Health.typeName]: clients.health }[service.typeName] as unknown as AnyClient;
  if (method.methodKind === "unary") {
    await client[method.localName]!({});
    return;
  }
  const abort = new AbortController();
  const frames = client[method.localName]!({}, { signal: abort.signal }) as AsyncIterable<unknown>;
  for await (const _ of frames) break;
}

/** The reason that names a missing role: PRODUCER_ROLE_REQUIRED, ... */
const roleReason = (role: Role): ErrorReason => ErrorReason[`${role.toUpperCase()}_ROLE_REQUIRED` as keyof typeof ErrorReason];

/** The log lines after the first `from` ones that match. */
function logAfter(server: ServerProcess, from: number, matches: (line: LogLine) => boolean, description: string): Promise<LogLine> {
  return server.waitForLog((line) => server.logs.indexOf(line) >= from && matches(line), description);
}

describe("a server with an auth file of principals in two namespaces", () => {
  let fixture: TeamsFixture;
  let server: ServerProcess;
  const token = (name: string) => fixture.token(name);
  const as = (name: string | undefined, protocol?: "grpc" | "connect" | "grpc-web") => clientsWith(server.url, name === undefined ? undefined : token(name), protocol);

  beforeAll(async () => {
    fixture = await TeamsFixture.create();
    const path = fixture.write(fixture.file(PRINCIPALS, { limits: LIMITS }));
    server = await startServerProcess({ args: ["--auth-file", path, "--max-unauthenticated-streams", "1", "--max-message-bytes", "65536"] });
    return () => server.stop();
  });

  describe("every role boundary", () => {
    const services = [MailboxService, PoolService, EventService, Health];

    it.each(ROLES)("a principal with only the %s role gets PERMISSION_DENIED naming the missing role outside it, and passes the gate inside it", async (role) => {
      const clients = as(`billing-${role}`);
      for (const service of services) {
        for (const method of service.methods) {
          const procedure = `${service.typeName}/${method.name}`;
          const required = requiredRole(procedure);
          const result = await outcome(() => callEmpty(clients, service, method));
          if (required === "none" || required === "authenticated" || required === role || role === "admin") {
            // Reaching the handler: whatever it answers, it is not the gate's refusal.
            expect(result === "ok" || ![Code.PermissionDenied, Code.Unauthenticated].includes(result.code), `${role} -> ${procedure}: ${JSON.stringify(result)}`).toBe(true);
          } else {
            expect(result, `${role} -> ${procedure}`).toEqual({ code: Code.PermissionDenied, reason: roleReason(required), metadata: { role: required, procedure } });
          }
        }
      }
    });

    it("refuses a call outside the caller's roles before reading its body", async () => {
      // Above --max-message-bytes: had the body been read, this would be RESOURCE_EXHAUSTED.
      const body = JSON.stringify({ dispatch: { threadId: "x".repeat(70_000) } });
      const denied = await curlConnect(server.url, "/mailroom.v1.MailboxService/Enqueue", body, { headers: [`authorization: Bearer ${token("billing-observer")}`] });
      expect(JSON.parse(denied.body)).toMatchObject({ code: "permission_denied" });
      const read = await curlConnect(server.url, "/mailroom.v1.MailboxService/Enqueue", body, { headers: [`authorization: Bearer ${token("billing-producer")}`] });
      expect(JSON.parse(read.body)).toMatchObject({ code: "resource_exhausted" });
    });

    it("answers over gRPC and gRPC-Web alike", async () => {
      for (const protocol of ["grpc", "grpc-web"] as const) {
        const result = await outcome(() => as("billing-worker", protocol).mailbox.purgeTerminal({ completedBefore: timestampFromMs(Date.now()) }));
        expect(result).toMatchObject({ code: Code.PermissionDenied, reason: ErrorReason.ADMIN_ROLE_REQUIRED });
      }
    });
  });

  describe("credentials", () => {
    const jwtClaims = (extra: Record<string, unknown> = {}) => ({ sub: "svc-1", [NAMESPACE_CLAIM]: "billing", [ROLES_CLAIM]: ["observer", "producer"], ...extra });
    const countWith = (bearer: string | undefined) => outcome(() => clientsWith(server.url, bearer).mailbox.countDispatches({}));

    it("a JWT signed by a key of the JWKS works, with the roles of its claims", async () => {
      const jwt = await fixture.jwt(jwtClaims());
      expect(await countWith(jwt)).toBe("ok");
      expect(await outcome(() => clientsWith(server.url, jwt).mailbox.claim({}))).toMatchObject({ code: Code.PermissionDenied, reason: ErrorReason.WORKER_ROLE_REQUIRED });
    });

    it.each<[string, () => Promise<string | undefined>, ErrorReason, Record<string, string>?]>([
      ["no token", async () => undefined, ErrorReason.UNAUTHENTICATED],
      ["an unknown token", async () => "not-a-known-token", ErrorReason.UNAUTHENTICATED],
      ["a known token with a suffix", async () => `${fixture.token("billing-admin")}x`, ErrorReason.UNAUTHENTICATED],
      ["a tampered JWT", async () => {
        const [header, payload, signature] = (await fixture.jwt(jwtClaims())).split(".");
        const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, "base64url").toString()), [ROLES_CLAIM]: ["admin"] })).toString("base64url");
        return `${header}.${forged}.${signature}`;
      }, ErrorReason.TOKEN_INVALID],
      ["a JWT signed by a key not in the JWKS", () => fixture.jwt(jwtClaims(), { stranger: true }), ErrorReason.TOKEN_INVALID],
      ["an expired JWT", () => fixture.jwt(jwtClaims(), { expiresAt: Math.floor(Date.now() / 1000) - 600 }), ErrorReason.TOKEN_EXPIRED, { claim: "exp" }],
      ["a JWT not valid yet", () => fixture.jwt(jwtClaims(), { notBefore: Math.floor(Date.now() / 1000) + 600 }), ErrorReason.TOKEN_EXPIRED, { claim: "nbf" }],
      ["a JWT for another audience", () => fixture.jwt(jwtClaims(), { audience: "someone-else" }), ErrorReason.TOKEN_CLAIM_INVALID, { claim: "aud" }],
      ["a JWT of another issuer", () => fixture.jwt(jwtClaims(), { issuer: "https://elsewhere" }), ErrorReason.TOKEN_CLAIM_INVALID, { claim: "iss" }],
      ["a JWT without the namespace claim", () => fixture.jwt(jwtClaims({ [NAMESPACE_CLAIM]: undefined })), ErrorReason.TOKEN_CLAIM_INVALID, { claim: NAMESPACE_CLAIM }],
      ["a JWT whose roles claim is a string", () => fixture.jwt(jwtClaims({ [ROLES_CLAIM]: "observer" })), ErrorReason.TOKEN_CLAIM_INVALID, { claim: ROLES_CLAIM }],
    ])("%s is UNAUTHENTICATED with a reason, and changes nothing", async (_case, bearer, reason, metadata) => {
      const credential = await bearer();
      const result = await countWith(credential);
      expect(result).toMatchObject({ code: Code.Unauthenticated, reason });
      if (metadata) expect((result as { metadata: object }).metadata).toMatchObject(metadata);
      const thread = uid("refused");
      expect(await outcome(() => clientsWith(server.url, credential).mailbox.enqueue({ dispatch: { threadId: thread, runId: "r" } }))).toMatchObject({ code: Code.Unauthenticated });
      expect((await as("billing-observer").mailbox.countDispatches({ threadId: thread })).total).toBe(0n);
    });

    it("a stream opened with a JWT ends with UNAUTHENTICATED (TOKEN_EXPIRED) when the JWT expires", async () => {
      const jwt = await fixture.jwt(jwtClaims(), { expiresAt: Math.floor(Date.now() / 1000) + 2 });
      const stream = clientsWith(server.url, jwt).events.subscribe({ scope: { case: "all", value: {} } })[Symbol.asyncIterator]();
      const ended = await outcome(async () => {
        for (let next = await stream.next(); !next.done; next = await stream.next());
      });
      expect(ended).toMatchObject({ code: Code.Unauthenticated, reason: ErrorReason.TOKEN_EXPIRED });
    });

    it("Health needs no credentials, and a wrong one does not stop it", async () => {
      for (const bearer of [undefined, "wrong"]) expect(await outcome(() => clientsWith(server.url, bearer).health.check({}))).toBe("ok");
    });
  });

  describe("claim tokens are secrets", () => {
    it("appear only in the responses of Claim and ClaimDispatch, never in another response, stream or event, for any role", async () => {
      const admin = as("billing-admin").mailbox;
      const worker = as("billing-worker").mailbox;
      const observer = as("billing-observer");
      const thread = uid("secret");
      const ids = [];
      for (let i = 0; i < 4; i++) ids.push((await as("billing-producer").mailbox.enqueue({ dispatch: { threadId: thread, runId: `run-${i}` } })).dispatch!.dispatchId);
      const seen: unknown[] = [];
      const tokens: string[] = [];
      const claim = async () => {
        const [claimed] = (await worker.claim({ threadId: thread, consumerId: "w", lease: LONG_LEASE, limit: 1 })).dispatches;
        expect(claimed!.claimToken).not.toBe("");
        tokens.push(claimed!.claimToken);
        return { dispatchId: claimed!.dispatchId, claimToken: claimed!.claimToken };
      };

      let ref = await claim();
      seen.push(await worker.extendLease({ ...ref, extension: LONG_LEASE }));
      seen.push(await worker.recordDispatchStart({ ...ref, dispatchInstanceId: "instance-1" }));
      seen.push(await worker.recordRunResult({ ...ref, result: { runStatus: RunStatus.RUNNING } }));
      for (const reader of [admin, observer.mailbox]) {
        seen.push(await reader.getDispatch({ dispatchId: ref.dispatchId }));
        seen.push(await reader.listDispatches({ threadId: thread }));
      }
      seen.push(await as("billing-producer").mailbox.interrupt({ threadId: uid("other-thread") }));
      seen.push(await worker.ack(ref));
      seen.push(await worker.ack(ref)); // the idempotent repeat too
      seen.push(await admin.listTerminalDispatches({ threadId: thread }));

      ref = await claim();
      seen.push(await worker.nack({ ...ref, error: "retry" }));
      ref = await claim();
      seen.push(await worker.ackBatch({ claims: [ref] }));
      const named = await worker.claimDispatch({ dispatchId: ids[3]!, consumerId: "w", lease: LONG_LEASE });
      expect(named.dispatch!.claimToken).not.toBe("");
      tokens.push(named.dispatch!.claimToken);
      seen.push(await as("billing-producer").mailbox.interrupt({ threadId: thread, detailed: true }));
      seen.push(await as("billing-producer").mailbox.cancel({ dispatchId: ids[3]! }));
      seen.push(await admin.getDispatch({ dispatchId: ids[3]! }));

      for (const reader of [admin, observer.mailbox]) seen.push(await reader.listDispatches({ threadId: thread }));
      seen.push(await observer.events.listEvents({ scope: { case: "all", value: {} }, pageSize: 1000 }));
      const abort = new AbortController();
      for await (const frame of observer.events.subscribe({ scope: { case: "all", value: {} } }, { signal: abort.signal })) {
        seen.push(frame);
        if (frame.frame?.kind === EventFrameKind.CAUGHT_UP) break;
      }

      const text = JSON.stringify(seen, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value));
      expect(text).toContain(ids[0]); // what was read is there...
      for (const secret of tokens) expect(text).not.toContain(secret); // ...and no token in it
    });
  });

  describe("per-namespace limits", () => {
    it("a namespace at its stream limit gets RESOURCE_EXHAUSTED; another namespace still opens streams; a closed stream frees its slot", async () => {
      const open = async (name: string | undefined, service: "mailbox" | "health") => {
        const abort = new AbortController();
        const clients = clientsWith(server.url, name === undefined ? undefined : token(name));
        const stream = (service === "mailbox" ? clients.mailbox.watchDispatchSignals({}, { signal: abort.signal }) : clients.health.watch({}, { signal: abort.signal }))[Symbol.asyncIterator]();
        await stream.next(); // the first frame: the stream is open
        return () => abort.abort();
      };
      const first = await open("search-worker", "mailbox");
      const second = await open("search-worker", "mailbox");
      const refused = await outcome(() => open("search-worker", "mailbox"));
      expect(refused).toEqual({ code: Code.ResourceExhausted, reason: ErrorReason.STREAM_LIMIT, metadata: { namespace: "search", limit: "2" } });
      const billing = await open("billing-worker", "mailbox");
      billing();
      second();
      // The server learns of the cancel asynchronously: try until the slot is free.
      let reopened: (() => void) | undefined;
      for (let attempt = 0; attempt < 200 && !reopened; attempt++) reopened = await open("search-worker", "mailbox").catch(() => undefined);
      expect(reopened).toBeDefined();
      reopened!();
      first();
    });

    it("callers without credentials share the fixed stream cap; a principal's Health.Watch counts against its namespace", async () => {
      const anonymous = clientsWith(server.url, undefined).health.watch({})[Symbol.asyncIterator]();
      await anonymous.next();
      const second = await outcome(async () => clientsWith(server.url, undefined).health.watch({})[Symbol.asyncIterator]().next());
      expect(second).toEqual({ code: Code.ResourceExhausted, reason: ErrorReason.STREAM_LIMIT, metadata: { namespace: "", limit: "1" } });
      const abort = new AbortController();
      expect(await outcome(() => as("billing-observer").health.watch({}, { signal: abort.signal })[Symbol.asyncIterator]().next())).toBe("ok");
      abort.abort();
      await anonymous.return?.();
    });

    it("a namespace past its requests per second gets RESOURCE_EXHAUSTED (RATE_LIMITED); another namespace is unaffected", async () => {
      const throttled = as("throttled-admin").mailbox;
      const billing = as("billing-observer").mailbox;
      const [limited, free] = await Promise.all([
        Promise.all(Array.from({ length: 10 }, () => outcome(() => throttled.countDispatches({})))),
        Promise.all(Array.from({ length: 10 }, () => outcome(() => billing.countDispatches({})))),
      ]);
      expect(free.every((r) => r === "ok")).toBe(true);
      const refusals = limited.filter((r) => r !== "ok");
      expect(refusals.length).toBeGreaterThan(0);
      expect(refusals[0]).toMatchObject({ code: Code.ResourceExhausted, reason: ErrorReason.RATE_LIMITED, metadata: { namespace: "throttled", limit: "1" } });
    });
  });

  describe("metrics", () => {
    const scrape = (bearer?: string) => fetch(`${server.url}/metrics`, { headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });

    it("need the observer role", async () => {
      expect((await scrape()).status).toBe(401);
      expect((await scrape("wrong")).status).toBe(401);
      expect((await scrape(token("billing-worker"))).status).toBe(403);
      expect((await scrape(token("billing-observer"))).status).toBe(200);
      expect((await scrape(token("search-admin"))).status).toBe(200);
    });

    it("label calls with configured namespaces only; a JWT's other namespace is `_other`", async () => {
      await as("billing-observer").mailbox.countDispatches({});
      const stranger = await fixture.jwt({ sub: "x", [NAMESPACE_CLAIM]: `team-${uid("n")}`, [ROLES_CLAIM]: ["observer"] });
      await clientsWith(server.url, stranger).mailbox.countDispatches({});
      const body = await (await scrape(token("billing-observer"))).text();
      expect(body).toContain('mailroom_rpc_calls_total{procedure="mailroom.v1.MailboxService/CountDispatches",code="ok",namespace="billing"}');
      expect(body).toContain('mailroom_rpc_calls_total{procedure="mailroom.v1.MailboxService/CountDispatches",code="ok",namespace="_other"}');
      expect(body).not.toMatch(/namespace="team-/);
    });
  });
});

describe("SIGHUP re-reads the auth file", () => {
  it("adds and removes principals without a restart; a bad file keeps the previous ones and says so", async () => {
    const fixture = await TeamsFixture.create();
    const base: PrincipalSpec[] = [{ name: "keeper", namespace: "billing", roles: ["observer"] }];
    const path = fixture.write(fixture.file(base, { jwt: false }));
    const server = await startServerProcess({ args: ["--auth-file", path] });
    try {
      const count = (name: string) => outcome(() => clientsWith(server.url, fixture.token(name)).mailbox.countDispatches({}));
      const reload = async (content: object | string, done: (line: LogLine) => boolean) => {
        const from = server.logs.length;
        fixture.write(content);
        server.kill("SIGHUP");
        return logAfter(server, from, done, "the outcome of the reload");
      };
      const reloaded = (line: LogLine) => line.msg.startsWith("auth file reloaded");

      await reload(fixture.file([...base, { name: "newcomer", namespace: "search", roles: ["observer"] }], { jwt: false }), reloaded);
      expect(await count("newcomer")).toBe("ok");
      expect(await count("keeper")).toBe("ok");

      const failed = await reload('{"principals": [{"name": "x", "token_sha256": "nope"}]', (line) => line.level === "error" || reloaded(line));
      expect(failed.msg).toMatch(/AUTH FILE RELOAD FAILED.*not valid JSON/);
      expect(await count("newcomer")).toBe("ok");

      const subscribe = (name: string) => clientsWith(server.url, fixture.token(name)).events.subscribe({ scope: { case: "all", value: {} } })[Symbol.asyncIterator]();
      const [doomed, kept] = [subscribe("newcomer"), subscribe("keeper")];
      await Promise.all([doomed.next(), kept.next()]); // both open
      const removed = await reload(fixture.file(base, { jwt: false }), reloaded);
      expect(removed.streams_ended).toBe(1);
      expect(await count("newcomer")).toMatchObject({ code: Code.Unauthenticated });
      expect(await count("keeper")).toBe("ok");
      // The removed principal's open stream ends; the other one is left alone.
      const ended = await outcome(async () => {
        for (let next = await doomed.next(); !next.done; next = await doomed.next());
      });
      expect(ended).toMatchObject({ code: Code.Unauthenticated, reason: ErrorReason.UNAUTHENTICATED });
      await kept.return?.(); // (streams_ended said it was not ended)
      expect(server.logs.filter((line) => /listening/.test(line.msg))).toHaveLength(1); // nothing restarted
    } finally {
      await server.stop();
    }
  });
});

describe("start-up", () => {
  let fixture: TeamsFixture;
  beforeAll(async () => {
    fixture = await TeamsFixture.create();
  });
  const principal = { name: "p", token_sha256: "a".repeat(64), namespace: "billing", roles: ["worker"] };

  it.each<[string, () => string, RegExp]>([
    ["invalid JSON", () => fixture.write("{ nope", "invalid.json"), /invalid\.json.*not valid JSON/],
    ["an unknown role", () => fixture.write({ principals: [{ ...principal, roles: ["wrker"] }] }, "role.json"), /principals\[0\] \("p"\)\.roles\[0\]: unknown role "wrker"/],
    ["an empty namespace", () => fixture.write({ principals: [{ ...principal, namespace: "" }] }, "ns.json"), /principals\[0\] \("p"\)\.namespace: must be a namespace/],
    ["a duplicate hash", () => fixture.write({ principals: [principal, { ...principal, name: "q" }] }, "dup.json"), /principals\[1\] \("q"\)\.token_sha256: the same token as principals\[0\]/],
    ["a missing JWKS", () => fixture.write({ principals: [], jwt: { jwks_file: "absent.json", issuer: "i", audience: "a", namespace_claim: "n", roles_claim: "r" } }, "jwks.json"), /jwt\.jwks_file .*absent\.json.*ENOENT/],
    ["a missing file", () => `${fixture.dir}/absent.json`, /cannot read it \(ENOENT\)/],
  ])("refuses %s in one line naming the entry", async (_case, write, message) => {
    const run = await runCliToExit({ args: ["--auth-file", write()] });
    expect(run.code).toBe(1);
    expect(run.logs.map((line) => line.msg)).toEqual([expect.stringMatching(message)]);
  });

  it("refuses another interface than loopback without authentication, unless --insecure-no-auth", async () => {
    const refused = await runCliToExit({ args: ["--host", "0.0.0.0"], withoutAuth: true });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/--host 0\.0\.0\.0 is reachable from other machines.*--insecure-no-auth/);
    const server = await startServerProcess({ args: ["--host", "0.0.0.0", "--insecure-no-auth"], withoutAuth: true });
    await server.stop();
  });
});

describe("without credentials configured, on loopback", () => {
  const server = useServerProcess({ withoutAuth: true });

  it("every caller is admin of namespace default", async () => {
    const clients = clientsWith(server().url, undefined);
    expect(await outcome(() => clients.mailbox.purgeTerminal({ completedBefore: timestampFromMs(0) }))).toBe("ok");
    expect(await outcome(() => clients.pools.openPool({ poolId: uid("pool") }))).toBe("ok");
  });
});
