/**
 * How server streams wait without a timer or listener per frame: deadlines on
 * one timer wheel, a StreamWaiter per stream, and the PushQueue built on it.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { PushQueue } from "../../src/engine/push-queue.js";
import { StreamWaiter } from "../../src/engine/stream-waiter.js";
import { TimerWheel } from "../../src/engine/timer-wheel.js";

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date", "performance"] });
});
afterEach(() => {
  vi.useRealTimers();
});

const wheelOf = (resolutionMs = 100) => new TimerWheel(resolutionMs, () => Date.now());

describe("a timer wheel", () => {
  it("fires a deadline at its time or within two resolutions after, never before", async () => {
    const wheel = wheelOf(100);
    const fired: number[] = [];
    const start = Date.now();
    wheel.schedule(wheel.entry(() => fired.push(Date.now() - start)), start + 250);
    await vi.advanceTimersByTimeAsync(240);
    expect(fired).toEqual([]);
    await vi.advanceTimersByTimeAsync(220);
    expect(fired).toHaveLength(1);
    expect(fired[0]).toBeGreaterThanOrEqual(250);
    expect(fired[0]).toBeLessThanOrEqual(450);
  });

  it("moves a deadline when scheduled again; scheduleBy keeps an earlier one", async () => {
    const wheel = wheelOf(100);
    let fired = 0;
    const entry = wheel.entry(() => fired++);
    const start = Date.now();
    wheel.schedule(entry, start + 1000);
    wheel.schedule(entry, start + 300);
    wheel.scheduleBy(entry, start + 2000);
    await vi.advanceTimersByTimeAsync(450);
    expect(fired).toBe(1);
    await vi.advanceTimersByTimeAsync(3000);
    expect(fired).toBe(1);
  });

  it("never fires a cancelled deadline, and runs no timer while nothing is scheduled", async () => {
    const wheel = wheelOf(100);
    let fired = 0;
    const entry = wheel.entry(() => fired++);
    wheel.schedule(entry, Date.now() + 200);
    expect(vi.getTimerCount()).toBe(1);
    wheel.cancel(entry);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(fired).toBe(0);
    expect(wheel.size).toBe(0);
  });
});

describe("a stream waiter", () => {
  it("answers idle once nothing was sent for the interval, ready when woken, ended once its signal aborts", async () => {
    const wheel = wheelOf(100);
    const waiter = new StreamWaiter(1000, wheel);
    const abort = new AbortController();
    waiter.bind(abort.signal);

    const idle = waiter.wait();
    await vi.advanceTimersByTimeAsync(1100);
    expect(await idle).toBe("idle");

    waiter.sent();
    const woken = waiter.wait();
    waiter.wake();
    expect(await woken).toBe("ready");

    const ended = waiter.wait();
    abort.abort();
    expect(await ended).toBe("ended");
    expect(await waiter.wait()).toBe("ended");
    expect(wheel.size).toBe(0);
  });

  it("counts the interval from the last send: a stream that keeps sending never idles, and its deadline moves only when it comes due", async () => {
    const wheel = wheelOf(100);
    const waiter = new StreamWaiter(1000, wheel);
    let outcome: string | undefined;
    for (let i = 0; i < 20; i++) {
      const waiting = waiter.wait().then((woken) => (outcome = woken));
      await vi.advanceTimersByTimeAsync(300);
      waiter.wake();
      await waiting;
      expect(outcome).toBe("ready");
      waiter.sent();
    }
    // One deadline at a time, the whole while.
    expect(wheel.size).toBeLessThanOrEqual(1);
  });

  it("registers its signal once, however many times it waits", async () => {
    const waiter = new StreamWaiter(1000, wheelOf());
    const abort = new AbortController();
    const add = vi.spyOn(abort.signal, "addEventListener");
    for (let i = 0; i < 10; i++) {
      waiter.bind(abort.signal);
      const waiting = waiter.wait();
      waiter.wake();
      await waiting;
    }
    expect(add).toHaveBeenCalledTimes(1);
  });
});

describe("a push queue", () => {
  it("hands out items in order, a timeout when idle, then closed once closed and empty", async () => {
    const queue = new PushQueue<number>();
    queue.push(1);
    queue.push(2);
    expect(await queue.next(1000)).toEqual({ value: 1 });
    expect(await queue.next(1000)).toEqual({ value: 2 });

    const idle = queue.next(1000);
    await vi.advanceTimersByTimeAsync(1200);
    expect(await idle).toEqual({ timeout: true });

    const later = queue.next(1000);
    queue.push(3);
    expect(await later).toEqual({ value: 3 });
    queue.push(4);
    queue.close();
    expect(queue.push(5)).toBe(false);
    expect(await queue.next(1000)).toEqual({ value: 4 });
    expect(await queue.next(1000)).toEqual({ closed: true });
  });

  it("answers closed once the signal aborts, also to a pull already waiting", async () => {
    const queue = new PushQueue<number>();
    const abort = new AbortController();
    const waiting = queue.next(60_000, abort.signal);
    abort.abort();
    expect(await waiting).toEqual({ closed: true });
  });

  it("keeps its bound: a full queue refuses, and taking makes room", () => {
    const queue = new PushQueue<number>(2);
    expect([queue.push(1), queue.push(2), queue.push(3)]).toEqual([true, true, false]);
    expect(queue.shift()).toBe(1);
    expect(queue.push(3)).toBe(true);
    expect([queue.shift(), queue.shift(), queue.shift()]).toEqual([2, 3, undefined]);
  });
});
