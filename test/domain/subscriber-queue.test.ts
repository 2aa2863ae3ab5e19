/**
 * The seed's subscriber queue rules (event_bus.rs apply_queue_bounds), one
 * test per rule, and a property: nothing pushed is ever lost without a notice.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type Delivery,
  EventOverflowReason,
  type OverflowNotice,
  type QueuedFrame,
  SubscriberOverflowPolicy as Policy,
  SubscriberQueue,
} from "../../src/domain/events/subscriber-queue.js";

type Kind = "terminal" | "progress" | "plain";

function frame(seq: number, kind: Kind): QueuedFrame<string> {
  return { seq, terminal: kind === "terminal", progress: kind === "progress", item: `${kind}@${seq}` };
}

function queue(policy: Policy, capacity = 4, terminalReserve = 1) {
  return new SubscriberQueue<string>({ capacity, terminalReserve, policy });
}

function drain<T>(q: SubscriberQueue<T>): Delivery<T>[] {
  const out: Delivery<T>[] = [];
  for (let d = q.shift(); d; d = q.shift()) out.push(d);
  return out;
}

const seqs = (deliveries: Delivery<string>[]) => deliveries.map((d) => d.frame.seq);

describe("subscriber queue: capacity and terminal reserve", () => {
  it.each([Policy.DROP_NON_TERMINAL, Policy.DROP_PROGRESS, Policy.SUMMARIZE_AND_CONTINUE, Policy.FAIL_SUBSCRIBER, Policy.BACKPRESSURE_CALLER])(
    "under capacity, policy %s queues every frame in order without a notice",
    (policy) => {
      const q = queue(policy, 10, 2);
      [frame(1, "plain"), frame(2, "progress"), frame(3, "terminal")].forEach((f) => expect(q.push(f)).toBe("queued"));
      const out = drain(q);
      expect(seqs(out)).toEqual([1, 2, 3]);
      expect(out.every((d) => d.notice === undefined)).toBe(true);
    },
  );

  it("keeps the terminal reserve for terminal events: non-terminal ones stop at capacity minus reserve", () => {
    const q = queue(Policy.DROP_NON_TERMINAL, 4, 1);
    expect([1, 2, 3, 4].map((seq) => q.push(frame(seq, "plain")))).toEqual(["queued", "queued", "queued", "dropped"]);
    expect(q.push(frame(5, "terminal"))).toBe("queued");
    expect(q.size).toBe(4);
  });

  it("admits a terminal event by dropping the oldest frame the policy may drop", () => {
    const nonTerminal = queue(Policy.DROP_NON_TERMINAL, 3, 0);
    [1, 2, 3].forEach((seq) => nonTerminal.push(frame(seq, "plain")));
    expect(nonTerminal.push(frame(4, "terminal"))).toBe("queued");
    const out = drain(nonTerminal);
    expect(seqs(out)).toEqual([2, 3, 4]);
    expect(out[2]!.notice).toMatchObject({ droppedCount: 1, gapStart: 1, gapEnd: 1, repairFrom: 0, terminalPreserved: true, reason: EventOverflowReason.POLICY_DROPPED_NON_TERMINAL });

    const progress = queue(Policy.DROP_PROGRESS, 3, 0);
    [frame(1, "plain"), frame(2, "progress"), frame(3, "plain")].forEach((f) => progress.push(f));
    expect(progress.push(frame(4, "terminal"))).toBe("queued");
    const kept = drain(progress);
    expect(seqs(kept)).toEqual([1, 3, 4]);
    expect(kept[2]!.notice).toMatchObject({ droppedCount: 1, gapStart: 2, reason: EventOverflowReason.POLICY_DROPPED_PROGRESS });
  });

  it.each([Policy.DROP_NON_TERMINAL, Policy.DROP_PROGRESS, Policy.SUMMARIZE_AND_CONTINUE])(
    "never drops a terminal event: with nothing the policy may drop queued, it answers full (the subscription lags) under %s",
    (policy) => {
      const q = queue(policy, 2, 2 - 1);
      q.push(frame(1, "terminal"));
      q.push(frame(2, "terminal"));
      expect(q.push(frame(3, "terminal"))).toBe("full");
      const out = drain(q);
      expect(seqs(out)).toEqual([1, 2]);
      expect(out.every((d) => d.notice === undefined)).toBe(true);
    },
  );
});

describe("subscriber queue: DROP_NON_TERMINAL", () => {
  it("drops the newest non-terminal events that do not fit and reports the gap on the next frame queued", () => {
    const q = queue(Policy.DROP_NON_TERMINAL, 2, 0);
    [1, 2, 3, 4].forEach((seq) => q.push(frame(seq, "plain")));
    expect(seqs(drain(q))).toEqual([1, 2]);
    q.push(frame(5, "plain"));
    const [next] = drain(q);
    expect(next!.notice).toEqual({
      policy: Policy.DROP_NON_TERMINAL,
      droppedCount: 2,
      gapStart: 3,
      gapEnd: 4,
      repairFrom: 2,
      terminalPreserved: true,
      reason: EventOverflowReason.POLICY_DROPPED_NON_TERMINAL,
    } satisfies OverflowNotice);
  });
});

describe("subscriber queue: DROP_PROGRESS", () => {
  it("drops a progress event that does not fit", () => {
    const q = queue(Policy.DROP_PROGRESS, 2, 0);
    q.push(frame(1, "plain"));
    q.push(frame(2, "plain"));
    expect(q.push(frame(3, "progress"))).toBe("dropped");
  });

  it("makes room for a non-progress event by dropping the oldest queued progress event", () => {
    const q = queue(Policy.DROP_PROGRESS, 3, 0);
    [frame(1, "plain"), frame(2, "progress"), frame(3, "progress")].forEach((f) => q.push(f));
    expect(q.push(frame(4, "plain"))).toBe("queued");
    const out = drain(q);
    expect(seqs(out)).toEqual([1, 3, 4]);
    expect(out[2]!.notice).toMatchObject({ droppedCount: 1, gapStart: 2, reason: EventOverflowReason.POLICY_DROPPED_PROGRESS });
  });

  it("never drops a non-progress event: with no progress event queued to make room, it answers full (the subscription lags)", () => {
    const q = queue(Policy.DROP_PROGRESS, 2, 0);
    q.push(frame(1, "plain"));
    q.push(frame(2, "plain"));
    expect(q.push(frame(3, "plain"))).toBe("full");
    expect(seqs(drain(q))).toEqual([1, 2]);
    expect(q.takeNotice()).toBeUndefined();
  });
});

describe("subscriber queue: SUMMARIZE_AND_CONTINUE", () => {
  it("delivers progress events one by one while the subscriber keeps up", () => {
    const q = queue(Policy.SUMMARIZE_AND_CONTINUE, 4, 0);
    q.push(frame(1, "progress"));
    q.shift();
    q.push(frame(2, "progress"));
    expect(drain(q).map((d) => [d.frame.seq, d.summarized])).toEqual([[2, undefined]]);
  });

  it("folds the progress events that find no room into one summary, flushed before the next non-progress event", () => {
    const q = queue(Policy.SUMMARIZE_AND_CONTINUE, 3, 1);
    q.push(frame(1, "plain"));
    q.push(frame(2, "plain"));
    [3, 4, 5].forEach((seq) => expect(q.push(frame(seq, "progress"))).toBe("summarized"));
    q.push(frame(6, "terminal"));
    const out = drain(q);
    // The summary found no room (two non-terminal frames fill capacity minus reserve): reported, not lost.
    expect(seqs(out)).toEqual([1, 2, 6]);
    expect(out[2]!.notice).toMatchObject({ droppedCount: 3, gapStart: 3, gapEnd: 5, terminalPreserved: true });
  });

  it("queues the summary as soon as there is room, as the last summarised event with the count", () => {
    const q = queue(Policy.SUMMARIZE_AND_CONTINUE, 2, 0);
    q.push(frame(1, "plain"));
    q.push(frame(2, "plain"));
    [3, 4, 5, 6].forEach((seq) => q.push(frame(seq, "progress")));
    const out = drain(q);
    expect(out.map((d) => [d.frame.seq, d.summarized])).toEqual([[1, undefined], [2, undefined], [6, 4]]);
    expect(out[2]!.notice).toMatchObject({ policy: Policy.SUMMARIZE_AND_CONTINUE, droppedCount: 4, gapStart: 3, gapEnd: 6, repairFrom: 2, reason: EventOverflowReason.POLICY_DROPPED_PROGRESS });
  });
});

describe("subscriber queue: FAIL_SUBSCRIBER", () => {
  it("puts the notice on the last queued frame, fails, and refuses everything after", () => {
    const q = queue(Policy.FAIL_SUBSCRIBER, 2, 0);
    q.push(frame(1, "plain"));
    q.push(frame(2, "plain"));
    expect(q.push(frame(3, "plain"))).toBe("failed");
    expect(q.failed).toBe(true);
    expect(q.push(frame(4, "terminal"))).toBe("failed");
    const out = drain(q);
    expect(seqs(out)).toEqual([1, 2]);
    expect(out[1]!.notice).toMatchObject({ policy: Policy.FAIL_SUBSCRIBER, droppedCount: 1, gapStart: 3, reason: EventOverflowReason.SUBSCRIBER_QUEUE_FULL });
  });
});

describe("subscriber queue: BACKPRESSURE_CALLER", () => {
  it("never drops: it reports full and the subscription lags instead", () => {
    const q = queue(Policy.BACKPRESSURE_CALLER, 2, 1);
    expect([1, 2, 3].map((seq) => q.push(frame(seq, "progress")))).toEqual(["queued", "queued", "full"]);
    expect(q.push(frame(4, "terminal"))).toBe("full");
    expect(seqs(drain(q))).toEqual([1, 2]);
  });
});

describe("subscriber queue: notices", () => {
  it("hands out a gap with no later frame to ride on once the queue is empty", () => {
    const q = queue(Policy.DROP_NON_TERMINAL, 1, 0);
    q.push(frame(1, "plain"));
    q.push(frame(2, "plain"));
    expect(q.takeNotice()).toBeUndefined(); // frame 1 is still queued
    q.shift();
    expect(q.takeNotice()).toMatchObject({ droppedCount: 1, gapStart: 2 });
    expect(q.takeNotice()).toBeUndefined();
  });

  it("keeps the gap of a dropped frame's own notice", () => {
    const q = queue(Policy.DROP_PROGRESS, 2, 0);
    q.push(frame(1, "progress"));
    q.push(frame(2, "progress"));
    q.push(frame(3, "progress")); // dropped: the next frame queued carries it
    q.push(frame(4, "plain")); // evicts 1, carries the notice about 3 and 1
    q.push(frame(5, "plain")); // evicts 2 and with it nothing else
    const out = drain(q);
    const reported = out.reduce((sum, d) => sum + (d.notice?.droppedCount ?? 0), 0);
    expect(seqs(out)).toEqual([4, 5]);
    expect(reported).toBe(3);
  });
});

describe("subscriber queue: no event is lost without a notice", () => {
  const kinds = fc.constantFrom<Kind>("terminal", "progress", "plain");
  const policies = fc.constantFrom(Policy.DROP_NON_TERMINAL, Policy.DROP_PROGRESS, Policy.SUMMARIZE_AND_CONTINUE, Policy.FAIL_SUBSCRIBER);

  it("accounts for every pushed event: delivered, summarised or reported dropped; in order; within capacity", () => {
    fc.assert(
      fc.property(policies, fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 8 }), fc.array(fc.oneof(kinds, fc.constant("shift" as const)), { maxLength: 80 }), (policy, capacity, reserve, steps) => {
        const q = queue(policy, capacity, Math.min(reserve, capacity - 1));
        let pushed = 0;
        let refused = 0;
        const delivered: Delivery<string>[] = [];
        // Events the queue answered "full" to, and every later one: the journal, which the
        // subscription catches up from once it has room (at most what fits, as replay does).
        const lagging: Array<QueuedFrame<string>> = [];
        const catchUp = () => {
          while (lagging.length > 0 && q.replayRoom > 0) expect(q.push(lagging.shift()!)).not.toBe("full");
        };
        const offer = (f: QueuedFrame<string>) => {
          if (lagging.length > 0 || q.push(f) === "full") lagging.push(f);
        };
        for (const step of steps) {
          if (step === "shift") {
            const d = q.shift();
            if (d) delivered.push(d);
            else catchUp();
          } else {
            // Once FAIL_SUBSCRIBER has failed, later events are refused outright (the stream ends).
            if (q.failed) refused++;
            offer(frame(pushed + 1, step));
            pushed++;
          }
          expect(q.size).toBeLessThanOrEqual(capacity);
        }
        for (let d = q.shift(); d || lagging.length > 0; d = q.shift()) {
          if (d) delivered.push(d);
          else catchUp();
        }
        delivered.push(...drain(q));
        const lateNotice = q.takeNotice();
        const reported = delivered.reduce((sum, d) => sum + (d.notice?.droppedCount ?? 0), 0) + (lateNotice?.droppedCount ?? 0);
        const individually = delivered.filter((d) => d.summarized === undefined).length;
        expect(individually + reported + refused).toBe(pushed);
        const order = seqs(delivered);
        expect(order).toEqual([...order].sort((a, b) => a - b));
        for (const d of delivered) if (d.notice) expect(d.notice.repairFrom).toBe(d.notice.gapStart - 1);
      }),
      { numRuns: 500 },
    );
  });
});
