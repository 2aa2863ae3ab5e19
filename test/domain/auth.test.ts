/**
 * The auth rules, without I/O: the auth file is parsed strictly (every
 * problem names its entry), JWT claims name a principal or say which claim
 * is wrong, and every RPC of every service needs the role the issue gives it
 * (the same in the domain table, the proto comments and the README).
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_mailroom_v1_event_service } from "../../gen/mailroom/v1/event_service_pb.js";
import { file_mailroom_v1_mailbox_service } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { file_mailroom_v1_pool_service } from "../../gen/mailroom/v1/pool_service_pb.js";
import { AuthFileError, limitsOf, parseAuthFile } from "../../src/domain/auth/auth-file.js";
import { isNamespace } from "../../src/domain/auth/namespaces.js";
import { principalFromClaims } from "../../src/domain/auth/principal.js";
import { missingRole, type Role, renderRolesTable, requiredRole, ROLES, RPC_ROLES } from "../../src/domain/auth/roles.js";

const HASH = "a".repeat(64);
const principal = (extra: Record<string, unknown> = {}) => ({ name: "p", token_sha256: HASH, namespace: "billing", roles: ["worker"], ...extra });
const file = (value: unknown) => JSON.stringify(value);

describe("the auth file", () => {
  it("gives principals (hashes in lower case), JWT settings with a default skew, and limits", () => {
    const parsed = parseAuthFile(
      file({
        principals: [principal({ token_sha256: "AB".repeat(32), roles: ["worker", "observer"] })],
        jwt: { jwks_file: "keys.json", issuer: "https://idp", audience: "mailroom", namespace_claim: "ns", roles_claim: "roles" },
        limits: { billing: { max_open_streams: 2 }, "*": { requests_per_second: 10 } },
      }),
    );
    expect(parsed.principals).toEqual([{ name: "p", tokenSha256: "ab".repeat(32), namespace: "billing", roles: new Set(["worker", "observer"]) }]);
    expect(parsed.jwt).toMatchObject({ jwksFile: "keys.json", clockSkewSeconds: 30 });
    expect(limitsOf(parsed, "billing")).toEqual({ maxOpenStreams: 2 });
    expect(limitsOf(parsed, "search")).toEqual({ requestsPerSecond: 10 });
    expect(limitsOf(parseAuthFile(file({ principals: [] })), "billing")).toEqual({});
  });

  it.each([
    ["invalid JSON", "{ principals: [", /not valid JSON/],
    ["no principals array", file({}), /principals: must be an array/],
    ["an unknown top-level field", file({ principals: [], principal: [] }), /unknown field "principal"/],
    ["an unknown field in an entry", file({ principals: [principal({ token: "x" })] }), /principals\[0\]: unknown field "token"/],
    ["a token in clear instead of its hash", file({ principals: [principal({ token_sha256: "secret" })] }), /principals\[0\] \("p"\)\.token_sha256: must be the SHA-256/],
    ["an unknown role", file({ principals: [principal(), principal({ name: "q", token_sha256: "b".repeat(64), roles: ["admn"] })] }), /principals\[1\] \("q"\)\.roles\[0\]: unknown role "admn"/],
    ["no roles", file({ principals: [principal({ roles: [] })] }), /principals\[0\] \("p"\)\.roles: must be a non-empty array/],
    ["an empty namespace", file({ principals: [principal({ namespace: "" })] }), /principals\[0\] \("p"\)\.namespace: must be a namespace/],
    ["a namespace with a NUL", file({ principals: [principal({ namespace: "a\u0000b" })] }), /\.namespace: must be a namespace/],
    ["a duplicate hash", file({ principals: [principal(), principal({ name: "q", token_sha256: HASH.toUpperCase() })] }), /principals\[1\] \("q"\)\.token_sha256: the same token as principals\[0\]/],
    ["a duplicate name", file({ principals: [principal(), principal({ token_sha256: "b".repeat(64) })] }), /principals\[1\]\.name: "p" is also the name of principals\[0\]/],
    ["a JWT section without an issuer", file({ principals: [], jwt: { jwks_file: "k", audience: "a", namespace_claim: "n", roles_claim: "r" } }), /jwt\.issuer: must be a non-empty string/],
    ["a clock skew out of range", file({ principals: [], jwt: { jwks_file: "k", issuer: "i", audience: "a", namespace_claim: "n", roles_claim: "r", clock_skew_seconds: 3600 } }), /jwt\.clock_skew_seconds/],
    ["a limit of zero", file({ principals: [], limits: { billing: { requests_per_second: 0 } } }), /limits\["billing"\]\.requests_per_second: must be an integer from 1/],
    ["a limit for a malformed namespace", file({ principals: [], limits: { "bad ns": {} } }), /limits\["bad ns"\]: must be a namespace/],
  ])("refuses %s, naming the entry", (_case, content, message) => {
    expect(() => parseAuthFile(content)).toThrow(AuthFileError);
    expect(() => parseAuthFile(content)).toThrow(message);
  });

  it("accepts namespaces of letters, digits, '.', '_' and '-' up to 63 characters", () => {
    for (const ok of ["default", "billing", "team-1.prod_eu", "A", "x".repeat(63)]) expect(isNamespace(ok), ok).toBe(true);
    for (const bad of ["", "-lead", "_none", "has space", "x".repeat(64), "a/b", "é"]) expect(isNamespace(bad), bad).toBe(false);
  });
});

describe("JWT claims name a principal", () => {
  const names = { namespaceClaim: "mailroom_namespace", rolesClaim: "mailroom_roles" };

  it("from the namespace and roles claims, ignoring roles that are not Mailroom's", () => {
    expect(principalFromClaims({ sub: "svc-1", mailroom_namespace: "billing", mailroom_roles: ["worker", "billing-reader"] }, names)).toEqual({
      principal: { name: "jwt:svc-1", namespace: "billing", roles: new Set(["worker"]) },
    });
  });

  it.each([
    ["no namespace claim", { mailroom_roles: [] }, "mailroom_namespace"],
    ["a namespace claim that is not a namespace", { mailroom_namespace: 7, mailroom_roles: [] }, "mailroom_namespace"],
    ["an empty namespace", { mailroom_namespace: "", mailroom_roles: [] }, "mailroom_namespace"],
    ["a roles claim that is a string", { mailroom_namespace: "billing", mailroom_roles: "worker" }, "mailroom_roles"],
    ["a roles claim with a number", { mailroom_namespace: "billing", mailroom_roles: ["worker", 1] }, "mailroom_roles"],
    ["no roles claim", { mailroom_namespace: "billing" }, "mailroom_roles"],
  ])("or say which claim is wrong: %s", (_case, claims, claim) => {
    expect(principalFromClaims(claims, names)).toMatchObject({ claim });
  });
});

const services = [
  file_grpc_health_v1_health,
  file_grpc_reflection_v1_reflection,
  file_grpc_reflection_v1alpha_reflection,
  file_mailroom_v1_mailbox_service,
  file_mailroom_v1_pool_service,
  file_mailroom_v1_event_service,
].flatMap((f) => f.services);
const procedures = services.flatMap((service) => service.methods.map((method) => `${service.typeName}/${method.name}`));

describe("roles", () => {
  it("the table names every RPC of every service, and nothing else", () => {
    expect(Object.keys(RPC_ROLES).sort()).toEqual([...procedures].sort());
  });

  it.each<[string, Role]>([
    ["MailboxService/Enqueue", "producer"],
    ["MailboxService/Cancel", "producer"],
    ["MailboxService/Interrupt", "producer"],
    ["MailboxService/DeliverLive", "producer"],
    ["EventService/Publish", "producer"],
    ["MailboxService/Claim", "worker"],
    ["MailboxService/Ack", "worker"],
    ["MailboxService/Nack", "worker"],
    ["MailboxService/ExtendLease", "worker"],
    ["MailboxService/RecordRunResult", "worker"],
    ["MailboxService/DeadLetter", "worker"],
    ["MailboxService/OpenLiveChannel", "worker"],
    ["MailboxService/WatchDispatchSignals", "worker"],
    ["PoolService/JoinRun", "agent"],
    ["PoolService/LeaveRun", "agent"],
    ["PoolService/Send", "agent"],
    ["PoolService/ReceiveMessages", "agent"],
    ["PoolService/SuspendUntil", "agent"],
    ["MailboxService/GetDispatch", "observer"],
    ["MailboxService/ListDispatches", "observer"],
    ["MailboxService/CountDispatches", "observer"],
    ["EventService/Subscribe", "observer"],
    ["PoolService/WatchPool", "observer"],
    ["MailboxService/PurgeTerminal", "admin"],
    ["MailboxService/ReclaimExpiredLeases", "admin"],
    ["MailboxService/SupersedeClaimed", "admin"],
    ["PoolService/OpenPool", "admin"],
  ])("%s needs %s, as the issue defines", (procedure, role) => {
    expect(requiredRole(`mailroom.v1.${procedure}`)).toBe(role);
  });

  it("Health needs nothing; an RPC missing from the table needs admin", () => {
    expect(requiredRole("grpc.health.v1.Health/Check")).toBe("none");
    expect(requiredRole("mailroom.v1.MailboxService/SomethingNew")).toBe("admin");
    expect(requiredRole("constructor")).toBe("admin");
  });

  it("admin holds every role; other roles hold only themselves", () => {
    for (const role of ROLES) expect(missingRole(new Set(["admin"]), role)).toBeUndefined();
    expect(missingRole(new Set(["worker", "observer"]), "observer")).toBeUndefined();
    expect(missingRole(new Set(["worker"]), "producer")).toBe("producer");
    expect(missingRole(new Set(), "none")).toBeUndefined();
  });

  const repo = (path: string) => readFileSync(fileURLToPath(new URL(`../../${path}`, import.meta.url)), "utf8");

  it("each RPC's proto comment says the role the table gives it", () => {
    const commented = new Map<string, string>();
    for (const [path, service] of [["mailbox_service", "MailboxService"], ["pool_service", "PoolService"], ["event_service", "EventService"]]) {
      for (const match of repo(`proto/mailroom/v1/${path}.proto`).matchAll(/\/\/ Role: (\w+)[^\n]*\n\s*rpc (\w+)\(/g)) {
        commented.set(`mailroom.v1.${service}/${match[2]}`, match[1]!);
      }
    }
    const expected = Object.entries(RPC_ROLES).filter(([procedure]) => procedure.startsWith("mailroom."));
    expect(Object.fromEntries(commented)).toEqual(Object.fromEntries(expected));
  });

  it("the README's table is the table", () => {
    const match = /<!-- roles-table:start -->\n([\s\S]*?)\n<!-- roles-table:end -->/.exec(repo("README.md"));
    expect(match?.[1]).toBe(renderRolesTable());
  });
});
