/**
 * `mailroom_store_operations_total{collection,operation}` on `/metrics`: every
 * call the server makes through the storage port, on whichever backend it
 * runs. Which operations a call makes is the engine's business; that each
 * RPC's store work shows up is the contract asserted here.
 */
import { describe, expect, it, onTestFinished } from "vitest";
import { serverBackends, useServerProcess } from "../support/server-process.js";
import { e2eAuthHeaders, testClients } from "../support/e2e-auth.js";

const SERIES = "mailroom_store_operations_total";

/** Every store-operations sample of a scrape, keyed by its labels. */
async function storeOperations(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`, { headers: e2eAuthHeaders() })).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const match = /^mailroom_store_operations_total\{collection="([^"]*)",operation="([^"]*)"\} (\S+)$/.exec(line);
    if (match) out.set(`${match[1]}.${match[2]}`, Number(match[3]));
  }
  return out;
}

/** How much the operations on `collection` grew between two scrapes. */
function grew(before: Map<string, number>, after: Map<string, number>, collection?: string): number {
  let sum = 0;
  for (const [key, value] of after) {
    if (collection === undefined || key.startsWith(`${collection}.`)) sum += value - (before.get(key) ?? 0);
  }
  return sum;
}

describe.each(serverBackends())("store operations on /metrics, $name backend", (backend) => {
  const server = useServerProcess({ backend });

  describe.skipIf(!backend.available)("mailroom_store_operations_total", () => {
    it("is exported from start-up, by collection and operation", async () => {
      const text = await (await fetch(`${server().url}/metrics`, { headers: e2eAuthHeaders() })).text();
      expect(text).toContain(`# TYPE ${SERIES} counter`);
      const counts = await storeOperations(server().url);
      // Start-up creates the dispatch collection's indexes and the health monitor pings.
      expect(counts.get("dispatches.createIndexes")).toBeGreaterThanOrEqual(1);
      expect(counts.get("*.ping")).toBeGreaterThanOrEqual(1);
    });

    it("grows with each step of enqueue -> claim -> ack, and never goes down", async () => {
      const clients = testClients({ baseUrl: server().url, protocol: "grpc" });
      onTestFinished(() => clients.close());
      const threadId = `store-ops-${backend.name}-${Date.now()}`;

      const start = await storeOperations(server().url);
      const { dispatch } = await clients.mailbox.enqueue({ dispatch: { threadId, runId: "store-ops-run" } });
      const enqueued = await storeOperations(server().url);
      expect(grew(start, enqueued, "dispatches")).toBeGreaterThanOrEqual(1);

      const { dispatches } = await clients.mailbox.claim({ threadId, consumerId: "store-ops-worker", lease: { seconds: 30n }, limit: 1 });
      expect(dispatches.map((d) => d.dispatchId)).toEqual([dispatch!.dispatchId]);
      const claimed = await storeOperations(server().url);
      expect(grew(enqueued, claimed, "dispatches")).toBeGreaterThanOrEqual(1);

      await clients.mailbox.ack({ dispatchId: dispatch!.dispatchId, claimToken: dispatches[0]!.claimToken });
      const acked = await storeOperations(server().url);
      expect(grew(claimed, acked, "dispatches")).toBeGreaterThanOrEqual(1);

      for (const [key, value] of start) expect(acked.get(key), key).toBeGreaterThanOrEqual(value);
    });
  });
});
