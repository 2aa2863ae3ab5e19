/**
 * Health follows the store: SERVING while it answers pings, NOT_SERVING
 * while it does not, NOT_SERVING for good once shutdown begins. Runs the
 * server in process against a memory store whose ping the test controls.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { createMailroomClients, type MailroomClients } from "../../src/client/index.js";
import { resolveServerConfig } from "../../src/config.js";
import { HealthMonitor } from "../../src/server/health.js";
import { type RunningServer, startServer } from "../../src/server/server.js";
import { MemoryStore } from "../../src/store/memory/store.js";
import { type Store, StoreUnavailableError } from "../../src/store/port.js";
import { captureLog } from "../support/log-capture.js";

/** A memory store whose ping the test controls: `answering` decides whether it answers. */
class PingOnlyStore extends MemoryStore {
  answering = true;
  hangs = false;
  closeCount = 0;
  override ping(): Promise<void> {
    if (this.hangs) return new Promise(() => undefined);
    return this.answering ? Promise.resolve() : Promise.reject(new StoreUnavailableError("no answer"));
  }
  override async close(): Promise<void> {
    this.closeCount++;
    await super.close();
  }
}

let server: RunningServer | undefined;
let clients: MailroomClients | undefined;

async function serve(store: Store): Promise<MailroomClients> {
  server = await startServer(resolveServerConfig({ port: 0 }), { store, logger: captureLog().logger });
  clients = createMailroomClients({ baseUrl: server.url, protocol: "grpc" });
  return clients;
}

afterEach(async () => {
  clients?.close();
  await server?.close();
  server = clients = undefined;
});

describe("Health.Check follows the store", () => {
  it("answers SERVING while the store answers, NOT_SERVING while it does not, SERVING again after", async () => {
    const store = new PingOnlyStore();
    const { health } = await serve(store);

    expect((await health.check({})).status).toBe(ServingStatus.SERVING);
    store.answering = false;
    expect((await health.check({})).status).toBe(ServingStatus.NOT_SERVING);
    expect((await health.check({ service: "mailroom.v1.PoolService" })).status).toBe(ServingStatus.NOT_SERVING);
    store.answering = true;
    expect((await health.check({})).status).toBe(ServingStatus.SERVING);
  });

  it("answers NOT_FOUND for a service the server does not serve", async () => {
    const { health } = await serve(new PingOnlyStore());
    await expect(health.check({ service: "mailroom.v1.Nope" })).rejects.toMatchObject({ code: Code.NotFound });
  });
});

describe("Health.Watch sees every change of status", () => {
  it("sends the current status first, then each change", async () => {
    const store = new PingOnlyStore();
    const { health } = await serve(store);
    const watch = health.watch({ service: "mailroom.v1.EventService" })[Symbol.asyncIterator]();

    expect((await watch.next()).value?.status).toBe(ServingStatus.SERVING);
    store.answering = false;
    await health.check({});
    expect((await watch.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
    store.answering = true;
    await health.check({});
    expect((await watch.next()).value?.status).toBe(ServingStatus.SERVING);
    await watch.return?.();
  });

  it("sends SERVICE_UNKNOWN for an unknown service and keeps the stream open", async () => {
    const { health } = await serve(new PingOnlyStore());
    const controller = new AbortController();
    const watch = health.watch({ service: "mailroom.v1.Nope" }, { signal: controller.signal })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.status).toBe(ServingStatus.SERVICE_UNKNOWN);
    const next = watch.next();
    controller.abort();
    // It ended because the client cancelled, not because the server closed it.
    await expect(next).rejects.toMatchObject({ code: Code.Canceled });
  });
});

describe("a store that does not answer in time counts as down", () => {
  it("turns NOT_SERVING when a ping outlasts the timeout", async () => {
    const store = new PingOnlyStore();
    const monitor = new HealthMonitor(store, captureLog().logger, { services: [], pingTimeoutMs: 20 });
    await monitor.refresh();
    expect(monitor.status("")).toBe(ServingStatus.SERVING);
    store.hangs = true;
    await monitor.refresh();
    expect(monitor.status("")).toBe(ServingStatus.NOT_SERVING);
  });
});

describe("shutdown", () => {
  it("makes every service NOT_SERVING for good, whatever the store says", async () => {
    const monitor = new HealthMonitor(new PingOnlyStore(), captureLog().logger, { services: ["mailroom.v1.MailboxService"] });
    await monitor.start();
    monitor.shutdown();
    await monitor.refresh();
    expect(monitor.status("")).toBe(ServingStatus.NOT_SERVING);
    expect(monitor.status("mailroom.v1.MailboxService")).toBe(ServingStatus.NOT_SERVING);
  });

  it("ends open streams with UNAVAILABLE after telling Watch NOT_SERVING, and closes the store once", async () => {
    const store = new PingOnlyStore();
    const { health } = await serve(store);
    const watch = health.watch({})[Symbol.asyncIterator]();
    expect((await watch.next()).value?.status).toBe(ServingStatus.SERVING);

    const closing = server?.close();
    expect((await watch.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
    const end = await watch.next().catch((error: unknown) => error);
    expect(end).toBeInstanceOf(ConnectError);
    expect((end as ConnectError).code).toBe(Code.Unavailable);
    await closing;
    await server?.close();
    expect(store.closeCount).toBe(1);
  });
});
