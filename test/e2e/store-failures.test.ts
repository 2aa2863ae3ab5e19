/**
 * A server whose store stops answering (issue 11): every call is bounded by
 * --store-timeout-ms and answers UNAVAILABLE past it, and the background
 * loops (the lease sweeper, the pool deadline timer) carry on after a call of
 * theirs was cut off. The store is each backend behind a FaultStore, which
 * makes exactly the calls a test names never answer.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DispatchSignalReason } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { WakeRegistrationStatus as Wake } from "../../gen/mailroom/v1/pool_pb.js";
import type { MailroomClients } from "../../src/client/index.js";
import type { Store } from "../../src/store/port.js";
import { FaultStore } from "../support/fault-store.js";
import { useInProcessServers } from "../support/in-process-servers.js";
import { enqueue, ms, refusal, signalOf, uid, watchSignals } from "../support/mailbox.js";
import { awaitWake, poolWith, suspend } from "../support/pools.js";
import { storeBackends } from "../support/stores.js";
import { testClients } from "../support/e2e-auth.js";

const STORE_TIMEOUT_MS = 200;

describe.each(storeBackends())("a server on a $name store that stops answering some calls", (inner) => {
  describe.skipIf(!inner.available)("bounds every store call and keeps its background loops going", () => {
    let faults: FaultStore;
    const running = useInProcessServers(
      {
        ...inner,
        open: async () => (faults = new FaultStore(await inner.open(), { seed: 1 })),
        dispose: async (store: Store) => inner.dispose((store as FaultStore).inner),
      },
      { engine: { storeTimeoutMs: STORE_TIMEOUT_MS, mailboxTimings: { leaseSweepMs: 20 }, poolTimings: { sweepMs: 50 } } },
    );
    let clients: MailroomClients;
    beforeAll(() => {
      clients = testClients({ baseUrl: running().servers[0]!.url, protocol: "grpc" });
    });
    afterAll(() => clients?.close());

    it("answers UNAVAILABLE (STORE_UNAVAILABLE) to a call whose store write never returns, and serves the next one", async () => {
      const threadId = uid("stalled");
      faults.inject("dispatches.insertMany", "hang");
      const stalled = await refusal(clients.mailbox.enqueue({ dispatch: { threadId } }));
      expect([stalled.code, stalled.detail?.reason]).toEqual([Code.Unavailable, ErrorReason.STORE_UNAVAILABLE]);
      expect((await enqueue(clients.mailbox, threadId)).threadId).toBe(threadId);
    });

    it("reclaims an expired lease though the sweep before it never got an answer from the store", async () => {
      const threadId = uid("sweep");
      const signals = watchSignals(clients.mailbox, threadId);
      await signals.next("the first heartbeat");
      const dispatch = await enqueue(clients.mailbox, threadId);
      const { dispatches } = await clients.mailbox.claim({ threadId, consumerId: "doomed", lease: ms(300), limit: 1 });
      expect(dispatches.map((d) => d.dispatchId)).toEqual([dispatch.dispatchId]);
      // The next lease sweep's query never answers; only the deadline can free the sweeper.
      faults.inject((call) => call.collection === "dispatches" && call.operation === "find" && "lease_until" in (call.args[0] as object), "hang");
      const reclaimed = await signals.nextMatching(
        (frame) => {
          const signal = signalOf(frame);
          return signal?.reason === DispatchSignalReason.LEASE_RECLAIMED ? signal : undefined;
        },
        "the lease to be reclaimed",
      );
      expect(reclaimed.dispatchId).toBe(dispatch.dispatchId);
      expect(faults.log).toContain("dispatches.find hang");
    });

    it("times out a wake condition though the deadline sweep before it never got an answer from the store", async () => {
      const { pools } = clients;
      const { poolId, runs } = await poolWith(pools, { waiter: {} });
      faults.inject((call) => call.collection === "pool_wakes" && call.operation === "find" && "deadline_at" in (call.args[0] as object), "hang");
      const { registration } = await suspend(pools, poolId, runs.waiter.runId, { filter: { kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(300) });
      expect((await awaitWake(pools, poolId, registration.conditionId)).map((r) => r.status)).toEqual([Wake.REGISTERED, Wake.TIMED_OUT]);
      expect(faults.log).toContain("pool_wakes.find hang");
    });
  });
});
