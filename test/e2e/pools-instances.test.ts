/**
 * Pools across server instances and restarts: instances are stateless, so
 * several on one store behave as one pool service (every deadline fires
 * once, every instance streams the same records), and a deadline persisted
 * before a restart fires after it (durable backends only).
 *
 * Two instances share a store in process on every store backend, or a
 * MongoDB database as two server processes when a MongoDB is available.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { type AgentPoolRecord, MessageStatus, WakeRegistrationStatus as Wake } from "../../gen/mailroom/v1/pool_pb.js";
import type { ClientProtocol, MailroomClients } from "../../src/client/index.js";
import { resolveServerConfig } from "../../src/config.js";
import { startServer } from "../../src/server/server.js";
import { MongoStore } from "../../src/store/mongo/store.js";
import type { Store } from "../../src/store/port.js";
import { publish } from "../support/events.js";
import { captureLog } from "../support/log-capture.js";
import { isolated, ms, uid, until } from "../support/mailbox.js";
import { awaitWake, describeRecord, join, newPool, type Pools, poolRecords, poolRecordsThrough, poolWith, send, suspend, toRun } from "../support/pools.js";
import { type ServerBackend, serverBackends, startServerProcess, useServerProcess } from "../support/server-process.js";
import { useInProcessServers } from "../support/in-process-servers.js";
import { storeBackends } from "../support/stores.js";
import { testClients } from "../support/e2e-auth.js";

interface TwoInstances {
  /** Clients of instance 1 (over gRPC) and of instance 2 (over Connect). */
  one: MailroomClients;
  two: MailroomClients;
}

function clientsFor(one: string, two: string): TwoInstances {
  return { one: testClients({ baseUrl: one, protocol: "grpc" }), two: testClients({ baseUrl: two, protocol: "connect" }) };
}

const timedOutWake = (record: AgentPoolRecord) => record.record.case === "wake" && record.record.value.registration?.status === Wake.TIMED_OUT;
const timedOutMessage = (record: AgentPoolRecord) => record.record.case === "message" && record.record.value.receipt?.status === MessageStatus.TIMED_OUT;

/** The behaviours of two instances sharing one store, however they were started. */
function behavesAsOnePoolService(instances: () => TwoInstances): void {
  /** Every record of the pool, as each instance streams it, through a record written after everything else. */
  const recordsOnBoth = async (poolId: string) => {
    const marker = await join(instances().two.pools, poolId, { runId: uid("marker") });
    const [one, two] = await Promise.all([poolRecordsThrough(instances().one.pools, poolId, marker.cursor), poolRecordsThrough(instances().two.pools, poolId, marker.cursor)]);
    expect(one.at(-1)?.cursor).toBe(marker.cursor);
    return { one, two };
  };

  it("a 200 ms wake timeout fires exactly once though both instances watch its deadline: one TIMED_OUT record, seen alike by both", async () => {
    const { one, two } = instances();
    const { poolId, runs } = await poolWith(one.pools, { waiter: {} });
    const { registration } = await suspend(one.pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(200) });
    // Fired by its persisted deadline: AwaitWake on the other instance ends with it (how soon is bench/'s concern, not a test's).
    expect((await awaitWake(two.pools, poolId, registration.conditionId)).map((r) => r.status)).toEqual([Wake.REGISTERED, Wake.TIMED_OUT]);
    const records = await recordsOnBoth(poolId);
    expect(records.two).toEqual(records.one);
    expect(records.one.filter(timedOutWake)).toHaveLength(1);
  });

  it("a response timeout fires exactly once though both instances watch its deadline: one RUN_MESSAGE_TIMED_OUT record", async () => {
    const { one, two } = instances();
    const { poolId, runs } = await poolWith(two.pools, { asker: {}, x: {} });
    const { receipt } = await send(one.pools, poolId, { fromRunId: runs.asker.runId, to: toRun(runs.x.runId), responseContract: { expectedResponses: 1, timeout: ms(200) } });
    const timedOut = async () => (await two.pools.getPool({ poolId })).snapshot?.messages.at(-1)?.receipt?.status === MessageStatus.TIMED_OUT;
    await until(timedOut, `message ${receipt.messageId} to time out`);
    const records = await recordsOnBoth(poolId);
    expect(records.two).toEqual(records.one);
    expect(records.one.filter(timedOutMessage).map(describeRecord)).toEqual([`message ${receipt.messageId} ${MessageStatus.TIMED_OUT}`]);
  });

  it("a condition registered through instance 1 is triggered by an event published to instance 2, and AwaitWake on instance 2 sees it", async () => {
    const { one, two } = instances();
    const { poolId, runs } = await poolWith(one.pools, { waiter: {}, worker: {} });
    const { registration } = await suspend(one.pools, poolId, runs.waiter.runId, { filter: { runIds: [runs.worker.runId], kinds: [EventKind.RUN_COMPLETED] } });
    const awaiting = awaitWake(two.pools, poolId, registration.conditionId);
    const event = await publish(two.events, { kind: EventKind.RUN_COMPLETED, runId: runs.worker.runId });
    expect((await awaiting).at(-1)).toMatchObject({ status: Wake.TRIGGERED, matchedEventId: event.eventId });
    const records = await recordsOnBoth(poolId);
    expect(records.two).toEqual(records.one);
    expect(records.one.filter((r) => r.record.case === "wake").map(describeRecord)).toEqual([Wake.REGISTERED, Wake.TRIGGERED].map((s) => `wake ${registration.conditionId} ${s}`));
  });

  it("concurrent joins through both instances are all kept, exactly one answers pool_created, and both stream the same records", async () => {
    const { one, two } = instances();
    const poolId = await newPool(one.pools);
    const runIds = Array.from({ length: 12 }, (_, i) => `run-${String(i).padStart(2, "0")}`);
    const joined = await Promise.all(runIds.map((runId, i) => (i % 2 ? one : two).pools.joinRun({ poolId, member: { runId, agentId: "agent" } })));
    expect(joined.filter((j) => j.poolCreated)).toHaveLength(1);
    expect((await two.pools.listMembers({ poolId })).members.map((m) => m.runId)).toEqual(runIds);
    const records = await recordsOnBoth(poolId);
    expect(records.two).toEqual(records.one);
    expect(records.one.filter((r) => r.record.case === "memberJoined")).toHaveLength(runIds.length + 1);
  });
}

describe.each(storeBackends({ faults: true }))("two in-process server instances on one $name store", (backend) => {
  describe.skipIf(!backend.available)("behave as one pool service", () => {
    const running = useInProcessServers(backend, { count: 2 });
    let clients: TwoInstances | undefined;

    beforeAll(() => {
      const [one, two] = running().servers;
      clients = clientsFor(one!.url, two!.url);
    });
    afterAll(() => {
      clients?.one.close();
      clients?.two.close();
    });

    behavesAsOnePoolService(() => clients!);
  });
});

describe.each(storeBackends({ faults: true }))("an instance started on the $name store a stopped instance left", (backend) => {
  describe.skipIf(!backend.available)("fires the deadlines that instance persisted", () => {
    let store: Store | undefined;
    beforeAll(async () => {
      store = await backend.open();
    });
    afterAll(async () => {
      if (store) await backend.dispose(store);
    });

    it("a 200 ms wake timeout registered on an instance that stopped before it was due ends TIMED_OUT on the next instance, once", async () => {
      const start = () => startServer(resolveServerConfig({ port: 0 }), { store: store!, logger: captureLog("info").logger, closeStore: false });
      const first = await start();
      const firstClients = testClients({ baseUrl: first.url, protocol: "grpc" });
      const { poolId, runs } = await poolWith(firstClients.pools, { waiter: {} });
      const { registration } = await suspend(firstClients.pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(200) });
      firstClients.close();
      await first.close();

      const next = await start();
      const nextClients = testClients({ baseUrl: next.url, protocol: "connect" });
      try {
        expect((await awaitWake(nextClients.pools, poolId, registration.conditionId)).at(-1)?.status).toBe(Wake.TIMED_OUT);
        expect((await poolRecords(nextClients.pools, poolId)).filter(timedOutWake)).toHaveLength(1);
      } finally {
        nextClients.close();
        await next.close();
      }
    });
  });
});

const mongodbUri = inject("mongodbUri");

describe.skipIf(mongodbUri === "")("two server processes on one MongoDB database", () => {
  const database = uid("mailroom_e2e_pool_instances").replace(/-/g, "_");
  // Registered before the servers: runs after they stopped.
  afterAll(() => dropDatabase(database));
  const shared: ServerBackend = { name: "mongo", available: true, args: ["--store", "mongo", "--mongodb-database", database], env: { MONGODB_URI: mongodbUri } };
  const first = useServerProcess({ backend: shared });
  const second = useServerProcess({ backend: shared });
  let clients: TwoInstances | undefined;
  beforeAll(() => {
    clients = clientsFor(first().url, second().url);
  });
  afterAll(() => {
    clients?.one.close();
    clients?.two.close();
  });

  behavesAsOnePoolService(() => clients!);
});

async function dropDatabase(database: string): Promise<void> {
  const store = await MongoStore.connect(mongodbUri, database);
  await store.dropDatabase().catch(() => undefined);
  await store.close();
}

describe.each(serverBackends())("persisted pool deadlines across a server restart on the $name backend", (backend) => {
  const durable = backend.name !== "memory";
  describe.skipIf(!durable || !backend.available)(`fire after the restart${durable ? "" : " (skipped: the memory store is lost with its process)"}`, () => {
    // Both servers on one database of its own.
    const store = isolated(backend);
    afterAll(async () => {
      const database = store.args[store.args.indexOf("--mongodb-database") + 1];
      if (database) await dropDatabase(database);
    });

    /** Runs `use` against a server process of its own on the shared database, then stops it with SIGTERM. */
    const withServer = async <T>(protocol: ClientProtocol, use: (pools: Pools) => Promise<T>): Promise<T> => {
      const server = await startServerProcess({ backend: store });
      const clients = testClients({ baseUrl: server.url, protocol });
      try {
        return await use(clients.pools);
      } finally {
        clients.close();
        expect(await server.stop()).toMatchObject({ code: 0 });
      }
    };

    it("a 200 ms wake timeout registered before a SIGTERM fires on the server started next: AwaitWake ends TIMED_OUT, with one TIMED_OUT record", async () => {
      const { poolId, conditionId } = await withServer("grpc", async (pools) => {
        const pool = await poolWith(pools, { waiter: {} });
        const { registration } = await suspend(pools, pool.poolId, pool.runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(200) });
        expect(registration.status).toBe(Wake.REGISTERED);
        return { poolId: pool.poolId, conditionId: registration.conditionId };
      });
      await withServer("connect", async (pools) => {
        expect((await awaitWake(pools, poolId, conditionId)).at(-1)?.status).toBe(Wake.TIMED_OUT);
        expect((await poolRecords(pools, poolId)).filter(timedOutWake)).toHaveLength(1);
      });
    });

    it("a response timeout still pending at the restart fires on the server started next", async () => {
      const { poolId, messageId } = await withServer("grpc", async (pools) => {
        const pool = await poolWith(pools, { asker: {}, x: {} });
        const { receipt } = await send(pools, pool.poolId, { fromRunId: pool.runs.asker.runId, to: toRun(pool.runs.x.runId), responseContract: { expectedResponses: 1, timeout: ms(200) } });
        expect(receipt.status).toBe(MessageStatus.DELIVERED);
        return { poolId: pool.poolId, messageId: receipt.messageId };
      });
      await withServer("grpc-web", async (pools) => {
        const records = await until(async () => {
          const all = await poolRecords(pools, poolId);
          return all.some(timedOutMessage) && all;
        }, `message ${messageId} to time out after the restart`);
        expect(records.filter(timedOutMessage).map(describeRecord)).toEqual([`message ${messageId} ${MessageStatus.TIMED_OUT}`]);
      });
    });
  });
});
