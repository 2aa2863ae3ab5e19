/**
 * The pool deadline timer (PoolBackground) on its own, with fake timers and
 * scripted deadline stores: a deadline learned from the journal fires at its
 * time, whatever the periodic sweep does meanwhile.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Clock } from "../../src/domain/clock.js";
import type { EventDoc } from "../../src/engine/journal/records.js";
import type { JournalTail } from "../../src/engine/journal/tail.js";
import type { Logger } from "../../src/engine/logger.js";
import { PoolBackground } from "../../src/engine/pool/background.js";
import type { ResponseDeadlines, UnfinishedDeletions, WakeSweeps } from "../../src/engine/pool/sweeps.js";

const SWEEP_MS = 10_000;

/** Wake deadlines as the store holds them; `nextDeadline` can be held to stand for a slow query. */
class ScriptedWakes {
  pending: number[] = [];
  fired: Array<{ deadline: number; at: number }> = [];
  held: { release: (value: number | undefined) => void } | undefined;
  holdNextQuery = false;

  constructor(private readonly clock: Clock) {}

  async timeOutDue(): Promise<number> {
    const due = this.pending.filter((at) => at <= this.clock.now());
    this.pending = this.pending.filter((at) => at > this.clock.now());
    this.fired.push(...due.map((deadline) => ({ deadline, at: this.clock.now() })));
    return due.length;
  }

  async nextDeadline(): Promise<number | undefined> {
    const answer = this.pending.length === 0 ? undefined : Math.min(...this.pending);
    if (!this.holdNextQuery) return answer;
    this.holdNextQuery = false;
    // The query has run (and found `answer`); its reply is late.
    return new Promise((resolve) => (this.held = { release: () => resolve(answer) }));
  }

  async repairUnscanned(): Promise<number> {
    return 0;
  }
}

describe("PoolBackground: a deadline learned from the journal fires at its time", () => {
  let background: PoolBackground | undefined;
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    background?.stop();
    vi.useRealTimers();
  });

  it("even when it arrives while a sweep is reading the next deadline, and a later deadline arrives after that sweep", async () => {
    const clock: Clock = { now: () => Date.now() };
    const wakes = new ScriptedWakes(clock);
    const messages = { timeOutDue: async () => 0, nextDeadline: async () => undefined };
    let deliver: (events: EventDoc[]) => void = () => undefined;
    const tail = { subscribe: (listener: (events: EventDoc[]) => void) => ((deliver = listener), () => undefined) };
    const log = { info: () => undefined, warn: () => undefined };
    const deletion = { resume: async () => 0 };
    background = new PoolBackground(messages as unknown as ResponseDeadlines, wakes as unknown as WakeSweeps, deletion as unknown as UnfinishedDeletions, tail as unknown as JournalTail, clock, log as unknown as Logger, { sweepMs: SWEEP_MS });
    await background.start();

    // A sweep reads the next deadline (there is none yet)...
    wakes.holdNextQuery = true;
    await vi.advanceTimersByTimeAsync(SWEEP_MS);
    expect(wakes.held).toBeDefined();
    // ...then a registration with a 200 ms timeout is stored and journaled...
    const soon = clock.now() + 200;
    wakes.pending.push(soon);
    deliver([{ due_at: soon } as EventDoc]);
    // ...then the sweep's answer (no deadline) arrives...
    wakes.held!.release(undefined);
    await vi.advanceTimersByTimeAsync(0);
    // ...then a registration with a longer timeout.
    const later = clock.now() + 5_000;
    wakes.pending.push(later);
    deliver([{ due_at: later } as EventDoc]);

    await vi.advanceTimersByTimeAsync(250);
    expect(wakes.fired).toEqual([{ deadline: soon, at: soon }]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(wakes.fired).toEqual([{ deadline: soon, at: soon }, { deadline: later, at: later }]);
  });
});
