/**
 * The mailbox's rules, through the engine, on every backend.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import type { EnqueueCommand } from "../../src/domain/dispatch/commands.js";
import { ErrorReason, MailroomError } from "../../src/domain/errors.js";
import type { Engine } from "../../src/engine/engine.js";
import { type EventDoc, eventOf } from "../../src/engine/journal/records.js";
import type { DispatchDoc } from "../../src/engine/mailbox/records.js";
import { DispatchSignalReason, type WorkSignal } from "../../src/engine/mailbox/work-signals.js";
import type { Store } from "../../src/store/port.js";
import { type EngineHarness, engineHarness } from "../support/engines.js";
import { GatedStore } from "../support/gated-store.js";
import { storeBackends } from "../support/stores.js";

const LEASE = 30_000;

function command(threadId: string, extra: Partial<EnqueueCommand> = {}): EnqueueCommand {
  return { threadId, priority: 128, maxAttempts: 5, schedule: undefined, ...extra };
}

async function enqueue(engine: Engine, threadId: string, extra: Partial<EnqueueCommand> = {}): Promise<DispatchDoc> {
  const [outcome] = await engine.mailbox.enqueue([command(threadId, extra)]);
  if (!outcome || "error" in outcome) throw new Error("enqueue failed");
  return outcome.dispatch;
}

function claim(engine: Engine, options: { threadId?: string; limit?: number; consumerId?: string; waitMs?: number; leaseMs?: number } = {}) {
  return engine.mailbox.claim({ consumerId: options.consumerId ?? "worker", leaseMs: options.leaseMs ?? LEASE, limit: options.limit ?? 1, waitMs: options.waitMs ?? 0, threadId: options.threadId });
}

async function refusal(promise: Promise<unknown>): Promise<MailroomError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(MailroomError);
  return error as MailroomError;
}

/** The journal's mailbox events for one dispatch, in order. */
async function eventsOf(engine: Engine, dispatchId: string): Promise<EventKind[]> {
  const docs = (await engine.journal.events.find({ dispatch_id: dispatchId }, { sort: { _id: 1 } })) as EventDoc[];
  return docs.map((d) => eventOf(d).envelope!.kind);
}

describe.each(storeBackends({ faults: true }))("mailbox engine: $name backend", (backend) => {
  let store: Store;
  let harness: EngineHarness;
  let engine: Engine;

  beforeEach(async () => {
    if (!backend.available) return;
    store = await backend.open();
    harness = engineHarness(store);
    engine = await harness.instance();
  });
  afterEach(async () => {
    if (!backend.available) return;
    await harness.stopAll();
    await backend.dispose(store);
  });

  describe.skipIf(!backend.available)("enqueue", () => {
    it("stamps the thread's current epoch and the defaults", async () => {
      const dispatch = await enqueue(engine, "t1");
      expect(dispatch).toMatchObject({ thread_id: "t1", status: "QUEUED", epoch: 0, priority: 128, max_attempts: 5, attempt_count: 0 });
      await engine.mailbox.interrupt("t1", false);
      expect((await enqueue(engine, "t1")).epoch).toBe(1);
    });

    it("returns the original dispatch, flagged, for a repeated dedupe key, and enqueues nothing", async () => {
      const first = await enqueue(engine, "t1", { dedupeKey: "req-1", runId: "run-a" });
      const [again] = await engine.mailbox.enqueue([command("t1", { dedupeKey: "req-1", runId: "run-b" })]);
      expect(again).toEqual({ dispatch: expect.objectContaining({ _id: first._id, run_id: "run-a" }), deduplicated: true });
      expect(await engine.queries.count("t1", undefined)).toContainEqual({ status: "QUEUED", count: 1 });
      // The same key in another thread is another dispatch.
      const other = await enqueue(engine, "t2", { dedupeKey: "req-1" });
      expect(other._id).not.toBe(first._id);
    });

    it("treats a dispatch_id reused in its thread as a duplicate, and refuses it in another thread", async () => {
      await enqueue(engine, "t1", { dispatchId: "d-1" });
      const [same, other] = await engine.mailbox.enqueue([command("t1", { dispatchId: "d-1" }), command("t2", { dispatchId: "d-1" })]);
      expect(same).toMatchObject({ deduplicated: true });
      expect(other).toMatchObject({ error: expect.objectContaining({ code: "already_exists" }) });
    });

    it("keeps a delayed dispatch from being claimed before its time", async () => {
      await enqueue(engine, "t1", { schedule: { delayMs: 5_000 } });
      expect(await claim(engine)).toEqual([]);
      harness.clock.advance(5_000);
      expect(await claim(engine)).toHaveLength(1);
    });
  });

  describe.skipIf(!backend.available)("claim", () => {
    it("takes a thread's dispatches highest priority first, then oldest", async () => {
      const low = await enqueue(engine, "t1", { priority: 10 });
      harness.clock.advance(1);
      const highOld = await enqueue(engine, "t1", { priority: 200 });
      harness.clock.advance(1);
      const highNew = await enqueue(engine, "t1", { priority: 200 });
      const order: string[] = [];
      for (let i = 0; i < 3; i++) {
        const [d] = await claim(engine, { threadId: "t1" });
        order.push(d!._id);
        await engine.mailbox.ack({ dispatchId: d!._id, claimToken: d!.claim_token! });
      }
      expect(order).toEqual([highOld._id, highNew._id, low._id]);
    });

    it("across threads returns at most one dispatch per thread, best first", async () => {
      await enqueue(engine, "a", { priority: 5 });
      await enqueue(engine, "a", { priority: 250 });
      harness.clock.advance(1);
      await enqueue(engine, "b", { priority: 100 });
      await enqueue(engine, "c", { priority: 250 });
      const claimed = await claim(engine, { limit: 10 });
      expect(claimed.map((d) => [d.thread_id, d.priority])).toEqual([["a", 250], ["c", 250], ["b", 100]]);
    });

    it("across threads takes the best claimable dispatch, not the thread whose best queued one is delayed or was a duplicate", async () => {
      await enqueue(engine, "delayed", { priority: 255, schedule: { delayMs: 60_000 } });
      await enqueue(engine, "delayed", { priority: 0 });
      await enqueue(engine, "dup", { priority: 1, dispatchId: "d-dup" });
      await enqueue(engine, "dup", { priority: 255, dispatchId: "d-dup" }); // deduplicated: nothing enqueued
      const best = await enqueue(engine, "plain", { priority: 100 });
      const second = await enqueue(engine, "other", { priority: 50 });
      expect((await claim(engine, { limit: 1 })).map((d) => d._id)).toEqual([best._id]);
      expect((await claim(engine, { limit: 1 })).map((d) => d._id)).toEqual([second._id]);
      expect((await claim(engine, { limit: 5 })).map((d) => [d.thread_id, d.priority])).toEqual([["dup", 1], ["delayed", 0]]);
    });

    it("never hides work enqueued while another instance recomputes the thread's readiness", async () => {
      const cancelled = await enqueue(engine, "t1");
      const view = new GatedStore(store, "enqueuer");
      const side = engineHarness(view);
      try {
        const enqueuer = await side.instance();
        view.gate = async (label) => {
          if (label !== "enqueuer dispatches.insertMany") return;
          view.gate = undefined;
          // Between the enqueue's lowering of the thread's hint and its insert, a cancel elsewhere recomputes the hint.
          await engine.mailbox.cancel(cancelled._id, undefined);
        };
        const fresh = await enqueue(enqueuer, "t1");
        expect((await engine.queries.queuedThreads(10, undefined)).items).toEqual(["t1"]);
        expect((await claim(engine, { limit: 5 })).map((d) => d._id)).toEqual([fresh._id]);
      } finally {
        await side.stopAll();
      }
    });

    it("frees the thread of a claim that ended before the claimer recorded it, so the thread's work is not hidden", async () => {
      const first = await enqueue(engine, "t1", { priority: 200 });
      const next = await enqueue(engine, "t1");
      const view = new GatedStore(store, "claimer");
      const side = engineHarness(view);
      try {
        const claimer = await side.instance();
        view.gate = async (label) => {
          if (label !== "claimer threads.bulkWrite") return;
          view.gate = undefined;
          // The claim is cancelled elsewhere before the claimer records it on the thread.
          await engine.mailbox.cancel(first._id, undefined);
        };
        expect((await claim(claimer, { threadId: "t1" })).map((d) => d._id)).toEqual([first._id]);
        expect((await engine.queries.queuedThreads(10, undefined)).items).toEqual(["t1"]);
        expect((await claim(engine, { limit: 5 })).map((d) => d._id)).toEqual([next._id]);
      } finally {
        await side.stopAll();
      }
    });

    it("yields nothing from a thread that has a claimed dispatch", async () => {
      await enqueue(engine, "t1");
      await enqueue(engine, "t1");
      expect(await claim(engine, { threadId: "t1" })).toHaveLength(1);
      expect(await claim(engine, { threadId: "t1" })).toEqual([]);
      expect(await claim(engine, { limit: 10 })).toEqual([]);
    });

    it("never lets two concurrent claimers hold the same thread", async () => {
      for (let i = 0; i < 5; i++) await enqueue(engine, "t1");
      const second = await harness.instance();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => claim(i % 2 ? engine : second, { threadId: "t1", consumerId: `w${i}` })));
      expect(results.flat()).toHaveLength(1);
      expect(await engine.queries.count("t1", ["CLAIMED"])).toEqual([{ status: "CLAIMED", count: 1 }]);
    });

    it("issues a fresh claim token and counts the attempt each time", async () => {
      const d = await enqueue(engine, "t1");
      const [first] = await claim(engine);
      await engine.mailbox.nack({ dispatchId: d._id, claimToken: first!.claim_token! }, undefined, "try again");
      const [second] = await claim(engine);
      expect(second!.claim_token).not.toBe(first!.claim_token);
      expect([first!.attempt_count, second!.attempt_count]).toEqual([1, 2]);
    });

    it("long-polls: returns as soon as work arrives, or empty when the wait ends", async () => {
      const started = performance.now();
      expect(await claim(engine, { waitMs: 150 })).toEqual([]);
      expect(performance.now() - started).toBeGreaterThanOrEqual(140);
      const waiting = claim(engine, { waitMs: 10_000 });
      await enqueue(engine, "t9");
      expect((await waiting).map((d) => d.thread_id)).toEqual(["t9"]);
    });

    it("long-polls across instances: work enqueued through another instance wakes the waiter", async () => {
      const other = await harness.instance();
      const waiting = claim(engine, { waitMs: 10_000, threadId: "shared" });
      await enqueue(other, "shared");
      expect(await waiting).toHaveLength(1);
    });
  });

  describe.skipIf(!backend.available)("fencing", () => {
    it("refuses a wrong token, an expired lease and a cancelled dispatch with the reason, changing nothing", async () => {
      const d = await enqueue(engine, "t1");
      const [held] = await claim(engine, { leaseMs: 1_000 });
      const wrong = await refusal(engine.mailbox.ack({ dispatchId: d._id, claimToken: "ct_not-it" }));
      expect(wrong.details.reason).toBe(ErrorReason.CLAIM_TOKEN_MISMATCH);
      harness.clock.advance(1_000);
      const expired = await refusal(engine.mailbox.ack({ dispatchId: d._id, claimToken: held!.claim_token! }));
      expect([expired.code, expired.details.reason]).toEqual(["failed_precondition", ErrorReason.LEASE_EXPIRED]);
      expect((await engine.queries.get(d._id)).status).toBe("CLAIMED");
      await engine.mailbox.cancel(d._id, undefined);
      const cancelled = await refusal(engine.mailbox.extendLease({ dispatchId: d._id, claimToken: held!.claim_token! }, 1_000));
      expect(cancelled.details.reason).toBe(ErrorReason.DISPATCH_CANCELLED);
      const missing = await refusal(engine.mailbox.ack({ dispatchId: "nope", claimToken: "x" }));
      expect(missing.code).toBe("not_found");
    });

    it("answers a repeated ack with the acked dispatch", async () => {
      await enqueue(engine, "t1");
      const [held] = await claim(engine);
      const ref = { dispatchId: held!._id, claimToken: held!.claim_token! };
      const first = await engine.mailbox.ack(ref);
      const again = await engine.mailbox.ack(ref);
      expect(again.status).toBe("ACKED");
      expect(again.completed_at).toBe(first.completed_at);
      expect(await eventsOf(engine, held!._id)).toEqual([EventKind.DISPATCH_ENQUEUED, EventKind.DISPATCH_CLAIMED, EventKind.DISPATCH_ACKED]);
    });

    it("answers a repeated DeadLetter, but refuses DeadLetter from a worker whose claim Nack or the lease sweeper dead-lettered", async () => {
      await enqueue(engine, "t1", { maxAttempts: 1 });
      const [own] = await claim(engine, { threadId: "t1" });
      const ownRef = { dispatchId: own!._id, claimToken: own!.claim_token! };
      await engine.mailbox.deadLetter(ownRef, "poison");
      expect(await engine.mailbox.deadLetter(ownRef, "poison")).toMatchObject({ status: "DEAD_LETTER", last_error: "poison" });

      await enqueue(engine, "t2", { maxAttempts: 1 });
      const [expired] = await claim(engine, { threadId: "t2", leaseMs: 1_000 });
      harness.clock.advance(1_000);
      await engine.mailbox.reclaimExpired(10);
      const late = await refusal(engine.mailbox.deadLetter({ dispatchId: expired!._id, claimToken: expired!.claim_token! }, "poison"));
      expect([late.code, late.details.reason]).toEqual(["failed_precondition", ErrorReason.DISPATCH_NOT_CLAIMED]);

      await enqueue(engine, "t3", { maxAttempts: 1 });
      const [nacked] = await claim(engine, { threadId: "t3" });
      const nackedRef = { dispatchId: nacked!._id, claimToken: nacked!.claim_token! };
      expect((await engine.mailbox.nack(nackedRef, undefined, "boom")).status).toBe("DEAD_LETTER");
      expect((await refusal(engine.mailbox.deadLetter(nackedRef, "poison"))).details.reason).toBe(ErrorReason.DISPATCH_NOT_CLAIMED);
      expect((await engine.queries.get(nacked!._id)).last_error).toBe("boom");
    });
  });

  describe.skipIf(!backend.available)("nack, dead letter and lease expiry", () => {
    it("requeues a nacked dispatch at its retry time and dead-letters it once attempts are spent, keeping the error", async () => {
      const d = await enqueue(engine, "t1", { maxAttempts: 3 });
      for (let attempt = 1; attempt <= 3; attempt++) {
        const [held] = await claim(engine);
        expect(held!.attempt_count).toBe(attempt);
        const after = await engine.mailbox.nack({ dispatchId: d._id, claimToken: held!.claim_token! }, { delayMs: 1_000 }, `failure ${attempt}`);
        if (attempt < 3) {
          expect(after).toMatchObject({ status: "QUEUED", available_at: harness.clock.now() + 1_000 });
          expect(await claim(engine)).toEqual([]);
          harness.clock.advance(1_000);
        } else {
          expect(after).toMatchObject({ status: "DEAD_LETTER", last_error: "failure 3", terminal: true });
        }
      }
    });

    it("reclaims an expired lease: the dispatch is redelivered and the old token is refused", async () => {
      const d = await enqueue(engine, "t1");
      const [first] = await claim(engine, { leaseMs: 1_000, consumerId: "slow" });
      harness.clock.advance(1_001);
      expect((await engine.mailbox.reclaimExpired(10)).map((r) => r.status)).toEqual(["QUEUED"]);
      const [again] = await claim(engine, { consumerId: "fast" });
      expect(again!._id).toBe(d._id);
      const late = await refusal(engine.mailbox.ack({ dispatchId: d._id, claimToken: first!.claim_token! }));
      expect(late.details.reason).toBe(ErrorReason.CLAIM_TOKEN_MISMATCH);
      expect((await engine.mailbox.ack({ dispatchId: d._id, claimToken: again!.claim_token! })).status).toBe("ACKED");
    });

    it("reclaims a lease from the instant its token is refused as expired, never leaving a claim nobody can end", async () => {
      const d = await enqueue(engine, "t1");
      const [held] = await claim(engine, { leaseMs: 1_000 });
      harness.clock.advance(999);
      expect(await engine.mailbox.reclaimExpired(10)).toEqual([]);
      harness.clock.advance(1); // now = lease_until
      const late = await refusal(engine.mailbox.ack({ dispatchId: d._id, claimToken: held!.claim_token! }));
      expect(late.details.reason).toBe(ErrorReason.LEASE_EXPIRED);
      expect((await engine.mailbox.reclaimExpired(10)).map((r) => [r._id, r.status])).toEqual([[d._id, "QUEUED"]]);
    });

    it("has two instances sweeping the same expired leases reclaim each once", async () => {
      const other = await harness.instance();
      for (let i = 0; i < 10; i++) await enqueue(engine, `t${i}`);
      await claim(engine, { limit: 10, leaseMs: 1_000 });
      harness.clock.advance(1_001);
      const [a, b] = await Promise.all([engine.mailbox.reclaimExpired(100), other.mailbox.reclaimExpired(100)]);
      expect(a.length + b.length).toBe(10);
      const expiries = await engine.journal.events.countDocuments({ kind: EventKind.DISPATCH_LEASE_EXPIRED });
      expect(expiries).toBe(10);
    });

    it("dead-letters an expired claim whose attempts are spent", async () => {
      await enqueue(engine, "t1", { maxAttempts: 1 });
      await claim(engine, { leaseMs: 10 });
      harness.clock.advance(11);
      const [reclaimed] = await engine.mailbox.reclaimExpired(10);
      expect(reclaimed).toMatchObject({ status: "DEAD_LETTER", terminal: true });
      expect(reclaimed!.last_error).toContain("lease expired");
    });
  });

  describe.skipIf(!backend.available)("interrupt", () => {
    it("bumps the epoch, supersedes exactly the older queued dispatches and returns the active one", async () => {
      await enqueue(engine, "t1");
      const [active] = await claim(engine);
      const queued = [await enqueue(engine, "t1"), await enqueue(engine, "t1")];
      await enqueue(engine, "other");
      const outcome = await engine.mailbox.interrupt("t1", true);
      expect(outcome.newEpoch).toBe(1);
      expect(outcome.active?._id).toBe(active!._id);
      expect(outcome.supersededCount).toBe(2);
      expect(outcome.superseded.map((d) => d._id).sort()).toEqual(queued.map((d) => d._id).sort());
      const fresh = await enqueue(engine, "t1");
      await engine.mailbox.ack({ dispatchId: active!._id, claimToken: active!.claim_token! });
      expect((await claim(engine, { threadId: "t1" }))[0]!._id).toBe(fresh._id);
      expect(await engine.queries.count("other", ["QUEUED"])).toEqual([{ status: "QUEUED", count: 1 }]);
    });

    it("journals the epochs each of two simultaneous first interrupts of a thread really moved between", async () => {
      const other = await harness.instance();
      const outcomes = await Promise.all([engine.mailbox.interrupt("fresh", false), other.mailbox.interrupt("fresh", false)]);
      expect(outcomes.map((o) => o.newEpoch).sort()).toEqual([1, 2]);
      const docs = (await engine.journal.events.find({ thread_id: "fresh", kind: EventKind.THREAD_INTERRUPTED }, { sort: { _id: 1 } })) as EventDoc[];
      const epochs = docs.map((d) => eventOf(d).envelope!).map((e) => `${e.stateBefore} -> ${e.stateAfter}`).sort();
      expect(epochs).toEqual(["epoch 0 -> epoch 1", "epoch 1 -> epoch 2"]);
    });

    it("never returns work of the new epoch, claimed while it ran, as the active dispatch", async () => {
      const view = new GatedStore(store, "interrupter");
      const side = engineHarness(view);
      try {
        const interrupter = await side.instance();
        let fresh: DispatchDoc | undefined;
        view.gate = async (label) => {
          if (label !== "interrupter dispatches.findOne") return;
          view.gate = undefined;
          // After the epoch moved, new work arrives and is claimed before the interrupt looks for the active claim.
          fresh = await enqueue(engine, "t1");
          await claim(engine, { threadId: "t1" });
        };
        const outcome = await interrupter.mailbox.interrupt("t1", false);
        expect(fresh).toMatchObject({ epoch: 1 });
        expect(outcome).toMatchObject({ newEpoch: 1, active: null });
      } finally {
        await side.stopAll();
      }
    });

    it("tells a heartbeating worker it was interrupted", async () => {
      await enqueue(engine, "t1");
      const [held] = await claim(engine);
      await engine.mailbox.interrupt("t1", false);
      const extended = await engine.mailbox.extendLease({ dispatchId: held!._id, claimToken: held!.claim_token! }, 5_000);
      expect(extended).toMatchObject({ interrupted: true, threadEpoch: 1 });
      expect(await engine.threads.epoch("never-seen")).toBe(0);
    });
  });

  describe.skipIf(!backend.available)("cancel", () => {
    it("cancels queued and claimed dispatches, frees the thread, and leaves terminal ones unchanged", async () => {
      const queued = await enqueue(engine, "t1");
      expect(await engine.mailbox.cancel(queued._id, "not needed")).toMatchObject({ changed: true, dispatch: expect.objectContaining({ status: "CANCELLED" }) });
      await enqueue(engine, "t2");
      const next = await enqueue(engine, "t2");
      const [held] = await claim(engine, { threadId: "t2" });
      await engine.mailbox.cancel(held!._id, undefined);
      expect((await claim(engine, { threadId: "t2" }))[0]!._id).toBe(next._id);
      expect(await engine.mailbox.cancel(queued._id, "again")).toMatchObject({ changed: false, dispatch: expect.objectContaining({ last_error: "not needed" }) });
    });
  });

  describe.skipIf(!backend.available)("queries", () => {
    it("lists a thread's dispatches oldest first in pages that neither repeat nor skip", async () => {
      for (let i = 0; i < 7; i++) {
        await enqueue(engine, "t1");
        if (i % 3 === 0) harness.clock.advance(1); // some share a created_at, some do not
      }
      const all = await engine.queries.list({ threadId: "t1", pageSize: 3 });
      const seen = [...all.items];
      let token = all.nextPageToken;
      while (token) {
        const page = await engine.queries.list({ threadId: "t1", pageSize: 3, pageToken: token });
        seen.push(...page.items);
        token = page.nextPageToken;
      }
      expect(seen).toHaveLength(7);
      expect(new Set(seen.map((d) => d._id)).size).toBe(7);
      const other = await refusal(engine.queries.list({ threadId: "t2", pageSize: 3, pageToken: all.nextPageToken }));
      expect(other.details.field).toBe("page_token");
    });

    it("purges only terminal dispatches completed before the cutoff", async () => {
      await enqueue(engine, "t1");
      const [old] = await claim(engine);
      await engine.mailbox.ack({ dispatchId: old!._id, claimToken: old!.claim_token! });
      harness.clock.advance(10_000);
      const cutoff = harness.clock.now();
      await enqueue(engine, "t1");
      const [recent] = await claim(engine);
      await engine.mailbox.ack({ dispatchId: recent!._id, claimToken: recent!.claim_token! });
      const queued = await enqueue(engine, "t1");
      expect(await engine.queries.purgeTerminal(cutoff, 100)).toBe(1);
      await expect(engine.queries.get(old!._id)).rejects.toMatchObject({ code: "not_found" });
      expect((await engine.queries.get(recent!._id)).status).toBe("ACKED");
      expect((await engine.queries.get(queued._id)).status).toBe("QUEUED");
    });

    it("lists threads with claimable work", async () => {
      await enqueue(engine, "busy");
      await enqueue(engine, "busy");
      await claim(engine, { threadId: "busy" });
      await enqueue(engine, "ready");
      await enqueue(engine, "later", { schedule: { delayMs: 60_000 } });
      expect((await engine.queries.queuedThreads(10, undefined)).items).toEqual(["ready"]);
    });
  });

  describe.skipIf(!backend.available)("answers of batched transitions", () => {
    it("a batch answers each dispatch as its own transition left it, though another instance moved it on before the batch read it back", async () => {
      const first = await enqueue(engine, "t1");
      await enqueue(engine, "t2");
      await claim(engine, { limit: 2, leaseMs: 100 });
      harness.clock.advance(100);
      const view = new GatedStore(store, "sweeper");
      const side = engineHarness(view);
      try {
        const sweeper = await side.instance({ clock: harness.clock });
        let reclaimedBoth = false;
        view.gate = async (label) => {
          if (label === "sweeper dispatches.bulkWrite") reclaimedBoth = true;
          else if (reclaimedBoth && label === "sweeper dispatches.find") {
            view.gate = undefined;
            // Between the reclaim's bulk write and its read back: claimed again elsewhere.
            expect((await claim(engine, { threadId: "t1", consumerId: "other" })).map((d) => d._id)).toEqual([first._id]);
          }
        };
        const reclaimed = await sweeper.mailbox.reclaimExpired(10);
        expect(reclaimed.map((d) => [d._id, d.status, d.claim_token]).sort()).toEqual([
          [first._id, "QUEUED", undefined],
          [expect.any(String), "QUEUED", undefined],
        ].sort());
      } finally {
        await side.stopAll();
      }
    });
  });

  describe.skipIf(!backend.available)("journal order", () => {
    it("journals a dispatch's events in the order of its transitions, also when a later transition's journaling overtakes an earlier one's", async () => {
      const d = await enqueue(engine, "t1");
      const [held] = await claim(engine);
      await engine.outbox.drain(); // the dispatch's outbox now holds only what follows
      const views = [new GatedStore(store, "slow"), new GatedStore(store, "fast")];
      const sides = views.map((view) => engineHarness(view));
      try {
        const [slow, fast] = [await sides[0]!.instance(), await sides[1]!.instance()];
        let cancelling: Promise<unknown> | undefined;
        let fastAtInsert!: () => void;
        const fastWaits = new Promise<void>((resolve) => (fastAtInsert = resolve));
        let slowDone!: () => void;
        const slowFinished = new Promise<void>((resolve) => (slowDone = resolve));
        views[1]!.gate = async (label) => {
          if (label !== "fast events.insertMany") return;
          views[1]!.gate = undefined;
          fastAtInsert();
          await slowFinished;
        };
        views[0]!.gate = async (label) => {
          if (label !== "slow counters.findOneAndUpdate") return;
          views[0]!.gate = undefined;
          // The result is recorded but not journaled yet: a cancel elsewhere, whose outbox then
          // holds both events, takes its journal positions first and writes them last.
          cancelling = fast.mailbox.cancel(d._id, "no longer needed");
          await fastWaits;
        };
        await slow.mailbox.recordResult({ dispatchId: d._id, claimToken: held!.claim_token! }, { runStatus: 1 });
        slowDone();
        await cancelling;
        expect(await eventsOf(engine, d._id)).toEqual([EventKind.DISPATCH_ENQUEUED, EventKind.DISPATCH_CLAIMED, EventKind.DISPATCH_RESULT_RECORDED, EventKind.DISPATCH_CANCELLED]);
      } finally {
        await Promise.all(sides.map((side) => side.stopAll()));
      }
    });
  });

  describe.skipIf(!backend.available)("signals", () => {
    it("signals work as it becomes claimable: enqueued, thread released, lease reclaimed, and delayed work coming due", async () => {
      const seen: WorkSignal[] = [];
      engine.signals.listen(DEFAULT_NAMESPACE, (s) => seen.push(s));
      const first = await enqueue(engine, "t1");
      await enqueue(engine, "t1");
      const [held] = await claim(engine, { threadId: "t1", leaseMs: 100 });
      await engine.mailbox.ack({ dispatchId: held!._id, claimToken: held!.claim_token! });
      const [again] = await claim(engine, { threadId: "t1", leaseMs: 100 });
      harness.clock.advance(101);
      await engine.mailbox.reclaimExpired(10);
      const delayed = await enqueue(engine, "t2", { schedule: { delayMs: 500 } });
      harness.clock.advance(500);
      await engine.background.checkAvailability();
      await engine.tail.waitFor(await engine.journal.writtenHead());
      expect(seen.map((s) => [s.reason, s.dispatchId])).toEqual([
        [DispatchSignalReason.ENQUEUED, first._id],
        [DispatchSignalReason.ENQUEUED, again!._id],
        [DispatchSignalReason.THREAD_RELEASED, first._id],
        [DispatchSignalReason.LEASE_RECLAIMED, again!._id],
        [DispatchSignalReason.AVAILABLE, delayed._id],
      ]);
    });
  });
});
