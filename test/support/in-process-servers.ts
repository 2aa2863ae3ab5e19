/**
 * Mailroom servers started in the test's own process on one store of a
 * backend: for tests that drive an engine's clock or need several instances
 * on one store. Started before the suite's tests, stopped (and the store
 * discarded) after them.
 */
import { afterAll, beforeAll } from "vitest";
import { resolveServerConfig } from "../../src/config.js";
import type { EngineOptions } from "../../src/engine/engine.js";
import type { LogLevel } from "../../src/log.js";
import { type RunningServer, startServer } from "../../src/server/server.js";
import type { Store } from "../../src/store/port.js";
import { type CapturedLog, captureLog } from "./log-capture.js";
import type { StoreBackend } from "./stores.js";
import { e2eAuth } from "./e2e-auth.js";

export interface InProcessServers {
  servers: RunningServer[];
  /** Each server's log, in the order of `servers`. */
  logs: CapturedLog[];
}

export interface InProcessOptions {
  /** How many instances share the store (default 1). */
  count?: number;
  engine?: EngineOptions;
  logLevel?: LogLevel;
}

export function useInProcessServers(backend: StoreBackend, options: InProcessOptions = {}): () => InProcessServers {
  let stores: Store[] = [];
  let running: InProcessServers = { servers: [], logs: [] };
  beforeAll(async () => {
    const store = await backend.open();
    // The memory backend hands back the same store; mongo a second connection to the same database.
    stores = [store];
    for (let i = 1; i < (options.count ?? 1); i++) stores.push(await backend.reconnect(store));
    const logs = stores.map(() => captureLog(options.logLevel ?? "info"));
    const servers = await Promise.all(
      stores.map((s, i) => startServer(resolveServerConfig({ port: 0, authFile: e2eAuth?.path }), { store: s, logger: logs[i]!.logger, closeStore: false, engine: options.engine })),
    );
    running = { servers, logs };
  });
  afterAll(async () => {
    await Promise.all(running.servers.map((server) => server.close()));
    for (const store of new Set(stores.slice(1))) if (store !== stores[0]) await store.close();
    if (stores[0]) await backend.dispose(stores[0]);
  });
  return () => running;
}
