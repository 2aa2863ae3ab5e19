/**
 * Server instances are stateless: several run against one store, and the
 * mailbox behaves as one. Two instances share a store (in process, on every
 * store backend) or a MongoDB database (two server processes, when a MongoDB
 * is available); a client of each talks to them over a different protocol.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { RunDispatchStatus as Status } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { LiveDeliveryOutcome as Outcome } from "../../gen/mailroom/v1/live_pb.js";
import type { MailroomClients } from "../../src/client/index.js";
import { testClients } from "../support/e2e-auth.js";
import { EVENTS, type JournalDoc } from "../../src/engine/journal/records.js";
import { MongoStore } from "../../src/store/mongo/store.js";
import type { Collection } from "../../src/store/port.js";
import {
  ack,
  emptyMailbox,
  enqueue,
  LONG_LEASE,
  longPollThenEnqueue,
  type Mailbox,
  ms,
  nextCommand,
  openLiveChannel,
  refusal,
  say,
  uid,
  until,
} from "../support/mailbox.js";
import { type ServerBackend, useServerProcess } from "../support/server-process.js";
import { useInProcessServers } from "../support/in-process-servers.js";
import { storeBackends } from "../support/stores.js";

const RECLAIMED = "reclaimed dispatches whose lease expired";
const LONG_POLL_BOUND_MS = 1_000;

interface TwoInstances {
  /** Clients of instance 1 (over gRPC) and of instance 2 (over Connect). */
  one: MailroomClients;
  two: MailroomClients;
  /** The journal both instances write to. */
  events(): Collection<JournalDoc>;
  /** How many expired leases both instances have reclaimed so far (sweeps and requests alike), by their logs. */
  reclaimed(): number;
}

function sumReclaimed(lines: ReadonlyArray<Record<string, unknown>>): number {
  return lines.filter((line) => line.msg === RECLAIMED).reduce((sum, line) => sum + Number(line.dispatches), 0);
}

function clientsFor(one: string, two: string): { one: MailroomClients; two: MailroomClients } {
  return { one: testClients({ baseUrl: one, protocol: "grpc" }), two: testClients({ baseUrl: two, protocol: "connect" }) };
}

/** The behaviours of two instances sharing one store, however they were started. */
function behavesAsOneMailbox(instances: () => TwoInstances): void {
  let one: Mailbox;
  let two: Mailbox;
  beforeAll(() => {
    ({ mailbox: one } = instances().one);
    ({ mailbox: two } = instances().two);
  });
  beforeEach(() => emptyMailbox(one));

  it("a live command sent to instance 1 reaches a channel open on instance 2, and is sent again when the channel re-opens on instance 1", async () => {
    const target = { threadId: uid("live-thread"), runId: uid("run") };
    const onTwo = await openLiveChannel(two, target);
    const sent = await one.deliverLive({ target, command: say("from instance 1") });
    expect(sent.outcome).toBe(Outcome.DELIVERED);
    expect(await nextCommand(onTwo, "the command, on instance 2")).toMatchObject({ commandId: sent.commandId, body: say("from instance 1").body });
    onTwo.close();

    const onOne = await openLiveChannel(one, target);
    expect((await nextCommand(onOne, "the unacked command, sent again by instance 1")).commandId).toBe(sent.commandId);
    expect((await two.ackLiveCommand({ commandId: sent.commandId })).newlyAcked).toBe(true);
    expect((await one.ackLiveCommand({ commandId: sent.commandId })).newlyAcked).toBe(false);
  });

  it("concurrent claims of one thread through both instances hand out one dispatch", async () => {
    const thread = uid("contended");
    for (let i = 0; i < 3; i++) await enqueue(one, thread);
    const claims = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? one : two).claim({ threadId: thread, consumerId: `worker-${i}`, lease: LONG_LEASE, limit: 1 })),
    );
    expect(claims.flatMap((c) => c.dispatches)).toHaveLength(1);
    expect((await one.countDispatches({ threadId: thread, statuses: [Status.CLAIMED] })).total).toBe(1n);
  });

  it("workers on both instances claiming across threads never hold one thread twice, and each dispatch is acked once", async () => {
    const threads = Array.from({ length: 6 }, () => uid("shared-thread"));
    const enqueued = await one.enqueueBatch({ dispatches: threads.flatMap((threadId) => Array.from({ length: 4 }, () => ({ threadId }))) });
    const ids = enqueued.results.map((r) => r.dispatch!.dispatchId);
    const held = new Set<string>();
    const doubleClaims: string[] = [];
    const acked: string[] = [];

    const worker = async (mailbox: Mailbox, name: string) => {
      while (acked.length < ids.length) {
        const { dispatches } = await mailbox.claim({ consumerId: name, lease: LONG_LEASE, limit: 3, wait: ms(200) });
        await Promise.all(dispatches.map(async (dispatch) => {
          if (held.has(dispatch.threadId)) doubleClaims.push(`${name} got ${dispatch.threadId} while another worker held it`);
          held.add(dispatch.threadId);
          await mailbox.getDispatch({ dispatchId: dispatch.dispatchId }); // hold the claim for a round trip
          // Released before the ack is sent: a claim granted after the ack committed is no violation.
          held.delete(dispatch.threadId);
          await ack(mailbox, dispatch);
          acked.push(dispatch.dispatchId);
        }));
      }
    };
    await Promise.all([worker(one, "one-a"), worker(one, "one-b"), worker(two, "two-a"), worker(two, "two-b")]);

    expect(doubleClaims).toEqual([]);
    expect([...acked].sort()).toEqual([...ids].sort());
    expect((await two.countDispatches({ statuses: [Status.ACKED] })).total).toBe(BigInt(ids.length));
  });

  it("a dispatch enqueued on instance 1 wakes a long-poll Claim waiting on instance 2", async () => {
    const poll = await longPollThenEnqueue(two, one, uid("long-poll"));
    expect(poll.waitedForTheEnqueue, "Claim was still waiting while the thread was empty").toBe(true);
    expect(poll.claimed.map((d) => d.dispatchId)).toEqual([poll.enqueued.dispatchId]);
    console.log(`long-poll Claim on instance 2 returned ${poll.latencyMs.toFixed(1)} ms after the enqueue on instance 1 completed`);
    expect(poll.latencyMs).toBeLessThan(LONG_POLL_BOUND_MS);
  });

  it("an expired lease is reclaimed exactly once though both instances sweep and both are asked to reclaim it", async () => {
    const sweptBefore = instances().reclaimed();
    const threads = Array.from({ length: 10 }, () => uid("expiring"));
    await two.enqueueBatch({ dispatches: threads.map((threadId) => ({ threadId })) });
    // One claim: every lease ends at the same instant, so the reclaimers race for all of them.
    const { dispatches: claims } = await one.claim({ consumerId: "doomed", lease: ms(300), limit: threads.length });
    expect(claims).toHaveLength(threads.length);
    const ids = claims.map((d) => d.dispatchId);
    const leaseUntil = timestampMs(claims[0]!.leaseUntil!);
    // No event says a lease has passed before it is reclaimed: wait for the instant itself.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, leaseUntil + 2 - Date.now())));
    const asked = await Promise.all([one, two, one, two].map((mailbox) => mailbox.reclaimExpiredLeases({})));

    const expiries = () => instances().events().countDocuments({ kind: EventKind.DISPATCH_LEASE_EXPIRED, dispatch_id: { $in: ids } });
    await until(async () => instances().reclaimed() - sweptBefore >= ids.length && (await expiries()) >= ids.length, "the expired leases to be reclaimed");
    const byRequest = asked.flatMap((r) => r.dispatches.map((d) => d.dispatchId));
    expect(new Set(byRequest).size, "no dispatch reclaimed by two requests").toBe(byRequest.length);
    expect(instances().reclaimed() - sweptBefore).toBe(ids.length);
    expect(await expiries()).toBe(ids.length);
    const { dispatches } = await one.listDispatches({ statuses: [Status.QUEUED] });
    expect(dispatches.filter((d) => ids.includes(d.dispatchId)).map((d) => d.attemptCount)).toEqual(ids.map(() => 1));
    // The expired claims are gone, whichever instance is asked.
    for (const [i, claim] of claims.entries()) {
      const late = await refusal((i % 2 ? two : one).ack({ dispatchId: claim.dispatchId, claimToken: claim.claimToken }));
      expect([late.code, late.detail?.reason]).toEqual([Code.FailedPrecondition, ErrorReason.DISPATCH_NOT_CLAIMED]);
    }
  });
}

describe.each(storeBackends({ faults: true }))("two in-process server instances on one $name store", (backend) => {
  describe.skipIf(!backend.available)("behave as one mailbox", () => {
    const running = useInProcessServers(backend, { count: 2 });
    let clients: { one: MailroomClients; two: MailroomClients } | undefined;

    beforeAll(() => {
      const [one, two] = running().servers;
      clients = clientsFor(one!.url, two!.url);
    });
    afterAll(() => {
      clients?.one.close();
      clients?.two.close();
    });

    behavesAsOneMailbox(() => ({
      ...clients!,
      events: () => running().servers[0]!.engine.journal.events,
      reclaimed: () => sumReclaimed(running().logs.flatMap((log) => log.lines)),
    }));
  });
});

const mongodbUri = inject("mongodbUri");

describe.skipIf(mongodbUri === "")("two server processes on one MongoDB database", () => {
  const database = uid("mailroom_e2e_instances").replace(/-/g, "_");
  let journal: MongoStore | undefined;
  let clients: { one: MailroomClients; two: MailroomClients } | undefined;
  // Registered before the servers: runs after they stopped.
  afterAll(async () => {
    await journal?.dropDatabase().catch(() => undefined);
    await journal?.close();
  });
  const shared: ServerBackend = { name: "mongo", available: mongodbUri !== "", args: ["--store", "mongo", "--mongodb-database", database], env: { MONGODB_URI: mongodbUri } };
  const first = useServerProcess({ backend: shared });
  const second = useServerProcess({ backend: shared });
  beforeAll(async () => {
    journal = await MongoStore.connect(mongodbUri, database);
    clients = clientsFor(first().url, second().url);
  });
  afterAll(() => {
    clients?.one.close();
    clients?.two.close();
  });

  behavesAsOneMailbox(() => ({
    ...clients!,
    events: () => journal!.collection<JournalDoc>(EVENTS),
    reclaimed: () => sumReclaimed([...first().logs, ...second().logs]),
  }));
});
