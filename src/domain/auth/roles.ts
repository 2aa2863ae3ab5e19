/**
 * Roles and the role each RPC needs. A principal holds roles within its
 * namespace; `admin` holds them all. The table names every RPC of every
 * service the server answers (a test checks it against the services, the
 * proto comments and the README), and an RPC missing from it needs `admin`,
 * so a new RPC is closed until someone decides who may call it.
 */

export const ROLES = ["producer", "worker", "agent", "observer", "admin"] as const;
export type Role = (typeof ROLES)[number];

/**
 * What a call needs: a role; "authenticated" (any principal: server
 * reflection, which describes the contract and no data); or nothing (Health,
 * for probes without credentials).
 */
export type Requirement = Role | "authenticated" | "none";

export function isRole(value: unknown): value is Role {
  return typeof value === "string" && (ROLES as readonly string[]).includes(value);
}

const MAILBOX = "mailroom.v1.MailboxService";
const POOL = "mailroom.v1.PoolService";
const EVENTS = "mailroom.v1.EventService";
const HEALTH = "grpc.health.v1.Health";
const REFLECTION = "grpc.reflection.v1.ServerReflection";
const REFLECTION_ALPHA = "grpc.reflection.v1alpha.ServerReflection";

/** `<service type name>/<method name>` -> the role a call needs. */
export const RPC_ROLES: Readonly<Record<string, Requirement>> = {
  [`${HEALTH}/Check`]: "none",
  [`${HEALTH}/Watch`]: "none",
  [`${REFLECTION}/ServerReflectionInfo`]: "authenticated",
  [`${REFLECTION_ALPHA}/ServerReflectionInfo`]: "authenticated",

  [`${MAILBOX}/Enqueue`]: "producer",
  [`${MAILBOX}/EnqueueBatch`]: "producer",
  [`${MAILBOX}/Cancel`]: "producer",
  [`${MAILBOX}/Interrupt`]: "producer",
  [`${MAILBOX}/DeliverLive`]: "producer",
  [`${MAILBOX}/Claim`]: "worker",
  [`${MAILBOX}/ClaimDispatch`]: "worker",
  [`${MAILBOX}/Ack`]: "worker",
  [`${MAILBOX}/AckBatch`]: "worker",
  [`${MAILBOX}/RecordDispatchStart`]: "worker",
  [`${MAILBOX}/RecordRunResult`]: "worker",
  [`${MAILBOX}/Nack`]: "worker",
  [`${MAILBOX}/DeadLetter`]: "worker",
  [`${MAILBOX}/ExtendLease`]: "worker",
  [`${MAILBOX}/WatchDispatchSignals`]: "worker",
  [`${MAILBOX}/OpenLiveChannel`]: "worker",
  [`${MAILBOX}/AckLiveCommand`]: "worker",
  [`${MAILBOX}/PullDispatchSignals`]: "worker",
  [`${MAILBOX}/AckDispatchSignal`]: "worker",
  [`${MAILBOX}/NackDispatchSignal`]: "worker",
  [`${MAILBOX}/GetDispatchEpoch`]: "observer",
  [`${MAILBOX}/GetDispatch`]: "observer",
  [`${MAILBOX}/ListDispatches`]: "observer",
  [`${MAILBOX}/CountDispatches`]: "observer",
  [`${MAILBOX}/ListTerminalDispatches`]: "observer",
  [`${MAILBOX}/ListQueuedThreads`]: "observer",
  [`${MAILBOX}/SupersedeClaimed`]: "admin",
  [`${MAILBOX}/ReclaimExpiredLeases`]: "admin",
  [`${MAILBOX}/PurgeTerminal`]: "admin",

  [`${POOL}/JoinRun`]: "agent",
  [`${POOL}/LeaveRun`]: "agent",
  [`${POOL}/Send`]: "agent",
  [`${POOL}/Respond`]: "agent",
  [`${POOL}/CancelMessage`]: "agent",
  [`${POOL}/ReceiveMessages`]: "agent",
  [`${POOL}/SuspendUntil`]: "agent",
  [`${POOL}/PollWake`]: "agent",
  [`${POOL}/CancelWake`]: "agent",
  [`${POOL}/AwaitWake`]: "agent",
  [`${POOL}/SubscribePool`]: "agent",
  [`${POOL}/GetPool`]: "observer",
  [`${POOL}/ListMembers`]: "observer",
  [`${POOL}/WatchPool`]: "observer",
  [`${POOL}/ListMessages`]: "observer",
  [`${POOL}/ListWakeConditions`]: "observer",
  [`${POOL}/OpenPool`]: "admin",
  [`${POOL}/DeletePool`]: "admin",

  [`${EVENTS}/Publish`]: "producer",
  [`${EVENTS}/PublishBatch`]: "producer",
  [`${EVENTS}/Subscribe`]: "observer",
  [`${EVENTS}/ListEvents`]: "observer",
};

/** `GET /metrics` is a read. */
export const METRICS_ROLE: Role = "observer";

export function requiredRole(procedure: string): Requirement {
  return Object.hasOwn(RPC_ROLES, procedure) ? RPC_ROLES[procedure]! : "admin";
}

/** The role a principal lacks for a requirement, or undefined when it may call. */
export function missingRole(roles: ReadonlySet<Role>, required: Requirement): Role | undefined {
  if (required === "none" || required === "authenticated" || roles.has("admin") || roles.has(required)) return undefined;
  return required;
}

/** The README's table of RPC -> role (Markdown), generated from RPC_ROLES. */
export function renderRolesTable(): string {
  const rows = Object.entries(RPC_ROLES).map(([procedure, role]) => {
    const [service, method] = procedure.split("/");
    const who = role === "none" ? "none (no credentials needed)" : role === "authenticated" ? "any role (credentials needed when auth is on)" : role === "admin" ? "`admin`" : `\`${role}\` (or \`admin\`)`;
    return `| \`${service!.split(".").at(-1)}.${method}\` | ${who} |`;
  });
  return ["| RPC | Role |", "| --- | --- |", ...rows, `| \`GET /metrics\` | \`${METRICS_ROLE}\` (or \`admin\`) |`].join("\n");
}
