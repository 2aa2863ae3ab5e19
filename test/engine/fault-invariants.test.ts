/**
 * The engine's promises hold when the store misbehaves: two instances run a
 * workload over a FaultStore (calls refused, calls applied but unconfirmed,
 * calls that never answer, writes that land after their caller gave up,
 * change streams that lose changes and break), each client retrying what
 * answered UNAVAILABLE, as the contract tells clients to. Afterwards:
 *
 * - every call either succeeded or answered UNAVAILABLE (nothing INTERNAL,
 *   nothing hung: each store call is bounded);
 * - no dispatch was lost, and none was handed to two workers at once;
 * - a subscriber that resumes from its last cursor whenever its stream fails
 *   sees every event exactly once, in journal order.
 *
 * The faults are drawn from a seed (MAILROOM_FAULT_SEED, default 1): a
 * failure replays with the same seed.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentEventSchema, EventKind, SubscriberOverflowPolicy as Policy } from "../../gen/mailroom/v1/event_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { EVERYTHING } from "../../src/domain/events/filter.js";
import { parsePublish } from "../../src/domain/events/publish.js";
import { Engine } from "../../src/engine/engine.js";
import type { Subscription } from "../../src/engine/events/subscription.js";
import type { EventDoc, JournalDoc } from "../../src/engine/journal/records.js";
import type { DispatchDoc } from "../../src/engine/mailbox/records.js";
import { createLogger } from "../../src/log.js";
import { toConnectError } from "../../src/server/errors.js";
import type { Store } from "../../src/store/port.js";
import { type FaultPlan, FaultStore } from "../support/fault-store.js";
import { FAULT_SEED, storeBackends } from "../support/stores.js";

const STORE_TIMEOUT_MS = 100;
const LEASE_MS = 30_000;
const silent = createLogger({ level: "silent" });

function faultsFor(seed: number): FaultPlan {
  return {
    seed,
    // Per store call; a request makes several, a claim across threads a dozen or more.
    failBefore: 0.01,
    failAfter: 0.01,
    hang: 0.002,
    slow: { rate: 0.005, ms: 2 * STORE_TIMEOUT_MS },
    delay: { rate: 0.1, maxMs: 3 },
    streamBreak: { rate: 0.05, maxGap: 3 },
  };
}

/** What clients saw: successes, UNAVAILABLE answers, and anything else (which fails the test). */
class Calls {
  succeeded = 0;
  unavailable = 0;
  readonly other: string[] = [];

  /** One attempt: the value, or undefined when it answered UNAVAILABLE. */
  async attempt<T>(what: string, call: () => Promise<T>): Promise<T | undefined> {
    try {
      const value = await call();
      this.succeeded++;
      return value;
    } catch (error) {
      const answered = toConnectError(error, silent);
      if (answered.code !== Code.Unavailable) {
        this.other.push(`${what}: ${Code[answered.code]} ${answered.rawMessage}`);
        throw error;
      }
      this.unavailable++;
      return undefined;
    }
  }

  /** Retries what answered UNAVAILABLE, as a client does. */
  async retry<T>(what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const value = await this.attempt(what, call);
      if (value !== undefined) return value;
    }
    throw new Error(`${what}: UNAVAILABLE 100 times in a row`);
  }
}

describe.each(storeBackends())("engine invariants under injected store faults, on the $name backend", (backend) => {
  let store: Store;
  const engines: Engine[] = [];
  const faults: FaultStore[] = [];
  const clock = new ManualClock();

  /** An instance on its own view of the store, with faults of its own (off while it starts). */
  async function instance(seed: number): Promise<Engine> {
    const view = new FaultStore(store, faultsFor(seed));
    view.enabled = false;
    const engine = await Engine.start(view, {
      clock,
      background: false,
      storeTimeoutMs: STORE_TIMEOUT_MS,
      journal: { holeTimeoutMs: 3 * STORE_TIMEOUT_MS },
      changeFeed: { retryDelayMs: 10 },
    });
    view.enabled = true;
    engines.push(engine);
    faults.push(view);
    return engine;
  }

  /** Faults off, and every late write landed: the store can be read as it is. */
  async function quiesce(): Promise<void> {
    for (const view of faults) view.enabled = false;
    await Promise.all(faults.map((view) => view.settled()));
  }

  beforeEach(async () => {
    if (backend.available) store = await backend.open();
  });
  afterEach(async () => {
    await quiesce();
    await Promise.all(engines.splice(0).map((engine) => engine.stop()));
    faults.splice(0);
    if (store) await backend.dispose(store);
  });

  describe.skipIf(!backend.available)(`seed ${FAULT_SEED}`, () => {
    it("loses no dispatch and never hands one (or one thread) to two workers at once; every call succeeds or answers UNAVAILABLE", async () => {
      const calls = new Calls();
      const [one, two] = [await instance(FAULT_SEED * 10 + 1), await instance(FAULT_SEED * 10 + 2)];
      const threads = Array.from({ length: 6 }, (_, t) => `thread-${t}`);
      const ids = threads.flatMap((threadId) => Array.from({ length: 5 }, (_, i) => ({ threadId, dispatchId: `${threadId}-d${i}` })));
      for (const [i, { threadId, dispatchId }] of ids.entries()) {
        // The client's own dispatch id makes the retry of an enqueue that was applied a duplicate, not a second dispatch.
        await calls.retry("enqueue", () => (i % 2 ? one : two).mailbox.enqueue([{ threadId, dispatchId, priority: 128, maxAttempts: 100, schedule: undefined }]));
      }

      interface HandedOut { dispatchId: string; threadId: string; token: string; leaseUntil: number; released: boolean }
      const handedOut: HandedOut[] = [];
      const violations: string[] = [];
      const acked = new Map<string, Set<string>>();
      /** How many dispatches a worker claimed and acked; undefined when its claim answered UNAVAILABLE. */
      const worker = async (engine: Engine, name: string, threadId?: string): Promise<number | undefined> => {
        const claimed = await calls.attempt("claim", () => engine.mailbox.claim({ consumerId: name, leaseMs: LEASE_MS, limit: 2, waitMs: 0, threadId }));
        for (const dispatch of claimed ?? []) {
          const live = handedOut.filter((h) => !h.released && h.leaseUntil > clock.now() && (h.dispatchId === dispatch._id || h.threadId === dispatch.thread_id));
          for (const other of live) violations.push(`${name} got ${dispatch._id} while ${other.dispatchId} of ${other.threadId} was still held`);
          handedOut.push({ dispatchId: dispatch._id, threadId: dispatch.thread_id, token: dispatch.claim_token!, leaseUntil: dispatch.lease_until!, released: false });
        }
        for (const dispatch of claimed ?? []) {
          // Released before the ack is sent: a claim granted after the ack committed is no violation.
          handedOut.find((h) => h.token === dispatch.claim_token)!.released = true;
          await calls.retry("ack", () => engine.mailbox.ack({ dispatchId: dispatch._id, claimToken: dispatch.claim_token! }));
          const tokens = acked.get(dispatch._id) ?? new Set();
          acked.set(dispatch._id, tokens.add(dispatch.claim_token!));
        }
        return claimed?.length;
      };

      // Dispatches only a claim naming their thread found (see the KNOWN DEFECT in store-failures.test.ts).
      let hiddenFromClaimsAcrossThreads = 0;
      let stuckRounds = 0;
      for (let round = 0; acked.size < ids.length; round++) {
        if (round >= 300) throw new Error(`only ${acked.size} of ${ids.length} dispatches acked after ${round} rounds`);
        const progress = await Promise.all([worker(one, "one"), worker(two, "two")]);
        if (progress.some((claimed) => claimed !== 0)) {
          if (progress.some((claimed) => claimed)) stuckRounds = 0;
          continue;
        }
        // Nothing claimable: claims that were applied but never answered hold threads until their lease ends.
        clock.advance(LEASE_MS + 1);
        await calls.retry("reclaim", () => one.mailbox.reclaimExpired(100));
        await calls.attempt("repair", () => two.background.repair());
        if (++stuckRounds < 3) continue;
        // Still nothing, leases long over: workers that watch one thread each find what claims across threads no longer see.
        for (const threadId of threads) hiddenFromClaimsAcrossThreads += (await worker(one, `one-${threadId}`, threadId)) ?? 0;
      }
      if (hiddenFromClaimsAcrossThreads > 0) console.log(`${hiddenFromClaimsAcrossThreads} dispatch(es) were claimable only by their thread (a stale thread hint; see the KNOWN DEFECT in store-failures.test.ts)`);

      await quiesce();
      await one.outbox.repair();
      await two.outbox.repair();
      const stored = await store.collection<DispatchDoc>("dispatches").find({}, { sort: { _id: 1 } });
      expect(stored.map((d) => [d._id, d.status])).toEqual(ids.map(({ dispatchId }) => [dispatchId, "ACKED"]).sort());
      expect(violations).toEqual([]);
      expect([...acked].filter(([, tokens]) => tokens.size !== 1)).toEqual([]);
      const ackEvents = (await store.collection<JournalDoc>("events").find({ kind: EventKind.DISPATCH_ACKED } as never)) as EventDoc[];
      expect(ackEvents.map((e) => e.dispatch_id).sort()).toEqual(ids.map((d) => d.dispatchId).sort());
      expect(calls.other).toEqual([]);
      expect(calls.unavailable, "the faults made some calls answer UNAVAILABLE").toBeGreaterThan(0);
    });

    it("a subscriber resuming from its last cursor whenever its stream fails sees every event once, in order", async () => {
      const calls = new Calls();
      const [publisher, reader] = [await instance(FAULT_SEED * 10 + 3), await instance(FAULT_SEED * 10 + 4)];
      const count = 80;
      const seen: EventDoc[] = [];
      let subscription: Subscription | undefined;
      const subscribe = async () => {
        subscription?.close();
        const after = seen.at(-1)?._id;
        subscription = await calls.retry("subscribe", () =>
          reader.events.subscribe({
            scope: { kind: "all" },
            filter: EVERYTHING,
            start: "earliest",
            ...(after !== undefined ? { after } : {}),
            queue: { capacity: 1024, terminalReserve: 16, policy: Policy.BACKPRESSURE_CALLER },
            heartbeatMs: 60_000,
            maxFramesPerMessage: 1,
          }),
        );
      };
      await subscribe();
      const reading = (async () => {
        const abort = new AbortController();
        while (seen.length < count) {
          const frame = await calls.attempt("read", () => subscription!.next(60_000, abort.signal));
          if (frame === undefined) {
            // The stream failed (UNAVAILABLE): resubscribe from the last cursor, as a client does.
            await subscribe();
            continue;
          }
          if (frame.kind === "event") seen.push(frame.delivery.frame.item);
          // And now and then the client goes away and comes back.
          if (frame.kind === "event" && seen.length % 25 === 0) await subscribe();
        }
      })();
      const publishing = Array.from({ length: 4 }, (_, w) =>
        (async () => {
          for (let i = w; i < count; i += 4) {
            const event = () => create(AgentEventSchema, { envelope: { eventId: `event-${i}`, runId: `run-${i % 3}`, kind: EventKind.USAGE_RECORDED } });
            await calls.retry("publish", () => publisher.events.publish(parsePublish(event(), clock.now())));
          }
        })(),
      );
      await Promise.all(publishing);
      await reading;
      subscription?.close();

      await quiesce();
      const journaled = ((await store.collection<JournalDoc>("events").find({ event_id: { $exists: true } } as never, { sort: { _id: 1 } })) as EventDoc[]);
      expect(journaled.map((e) => e.event_id).sort()).toEqual(Array.from({ length: count }, (_, i) => `event-${i}`).sort());
      expect(seen.map((e) => e._id)).toEqual(journaled.map((e) => e._id));
      expect(calls.other).toEqual([]);
      expect(calls.unavailable, "the faults made some calls answer UNAVAILABLE").toBeGreaterThan(0);
    });
  });
});
