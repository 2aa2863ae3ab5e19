/**
 * The coalescer: concurrent calls share batches, each call gets its own
 * outcome, and no more batches run at once than allowed.
 */
import { describe, expect, it } from "vitest";
import { Coalescer, type Outcome } from "../../src/engine/coalescer.js";

/** A batch runner that records its batches and answers when released. */
function recorder<I>() {
  const batches: I[][] = [];
  const pending: Array<() => void> = [];
  let running = 0;
  let mostRunning = 0;
  const run = async (inputs: I[]): Promise<Array<Outcome<string>>> => {
    batches.push(inputs);
    running++;
    mostRunning = Math.max(mostRunning, running);
    await new Promise<void>((resolve) => pending.push(resolve));
    running--;
    return inputs.map((input) => (String(input).startsWith("bad") ? { error: new Error(`refused ${String(input)}`) } : { value: `done ${String(input)}` }));
  };
  return { run, batches, releaseAll: () => pending.splice(0).forEach((release) => release()), mostRunning: () => mostRunning };
}

/** Resolves after the event loop turn in which it is called (batches start then). */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("Coalescer", () => {
  it("puts the calls made in one event loop turn in one batch, each answered with its own outcome", async () => {
    const r = recorder<string>();
    const coalescer = new Coalescer(r.run, { maxInFlight: 1, maxWeight: 100 });
    const calls = ["a", "bad-b", "c"].map((input) => coalescer.submit(input).then((v) => v, (e: Error) => e.message));
    await nextTurn();
    expect(r.batches).toEqual([["a", "bad-b", "c"]]);
    r.releaseAll();
    expect(await Promise.all(calls)).toEqual(["done a", "refused bad-b", "done c"]);
  });

  it("collects what arrives while a batch is in flight into the next batch, never running more than allowed", async () => {
    const r = recorder<string>();
    const coalescer = new Coalescer(r.run, { maxInFlight: 1, maxWeight: 100 });
    const first = coalescer.submit("1");
    await nextTurn();
    const later = ["2", "3", "4"].map((input) => coalescer.submit(input));
    await nextTurn();
    expect(r.batches).toEqual([["1"]]);
    r.releaseAll();
    await first;
    await nextTurn();
    expect(r.batches).toEqual([["1"], ["2", "3", "4"]]);
    r.releaseAll();
    expect(await Promise.all(later)).toEqual(["done 2", "done 3", "done 4"]);
    expect(r.mostRunning()).toBe(1);
  });

  it("caps a batch by weight, keeping each input whole (one heavier than the cap runs alone)", async () => {
    const r = recorder<string>();
    const coalescer = new Coalescer(r.run, { maxInFlight: 3, maxWeight: 5, weight: (input) => input.length });
    const calls = ["aaa", "bb", "c", "dddddddd", "e"].map((input) => coalescer.submit(input));
    await nextTurn();
    r.releaseAll();
    await Promise.all(calls.slice(0, 2));
    await nextTurn();
    r.releaseAll();
    await Promise.all(calls);
    expect(r.batches).toEqual([["aaa", "bb"], ["c"], ["dddddddd"], ["e"]]);
    expect(r.mostRunning()).toBeLessThanOrEqual(3);
  });

  it("fails every call of a batch whose run throws, and keeps serving later calls", async () => {
    let fail = true;
    const coalescer = new Coalescer<string, string>(async (inputs) => {
      if (fail) throw new Error("store down");
      return inputs.map((input) => ({ value: input }));
    }, { maxInFlight: 1, maxWeight: 10 });
    const failed = await Promise.allSettled([coalescer.submit("a"), coalescer.submit("b")]);
    expect(failed.map((f) => f.status)).toEqual(["rejected", "rejected"]);
    fail = false;
    expect(await coalescer.submit("c")).toBe("c");
  });
});
