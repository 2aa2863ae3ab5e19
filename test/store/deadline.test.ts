/**
 * The time bound every store call runs under (src/store/deadline.ts), on any
 * backend: past it the caller gets StoreUnavailableError; within it the call's
 * own outcome, untouched.
 */
import { describe, expect, it } from "vitest";
import { withDeadline } from "../../src/store/deadline.js";
import { MemoryStore } from "../../src/store/memory/store.js";
import { type Doc, DuplicateKeyError, StoreUnavailableError } from "../../src/store/port.js";
import { FaultStore } from "../support/fault-store.js";

describe("a store call past its deadline", () => {
  it("answers StoreUnavailableError naming the call, when the store never answers", async () => {
    const faults = new FaultStore(new MemoryStore(), { seed: 1 });
    faults.inject("things.findOne", "hang");
    const error = await withDeadline(faults, 30).collection<Doc>("things").findOne({ _id: "a" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toMatch(/things\.findOne did not complete within 30 ms/);
  });

  it("passes a call's result and its typed errors through unchanged when it answers in time", async () => {
    const store = withDeadline(new MemoryStore(), 5_000);
    const things = store.collection<Doc & { n: number }>("things");
    await things.insertOne({ _id: "a", n: 1 });
    expect(await things.findOne({ _id: "a" })).toEqual({ _id: "a", n: 1 });
    await expect(things.insertOne({ _id: "a", n: 2 })).rejects.toBeInstanceOf(DuplicateKeyError);
  });

  it("closes a change stream that opens after its caller gave up", async () => {
    const faults = new FaultStore(new MemoryStore(), { seed: 1 });
    const opening = faults.hold((call) => call.operation === "watch");
    // Opening a stream is held like any call; the deadline gives up on it first.
    const bounded = withDeadline(faults, 20);
    await expect(bounded.watch({ collections: ["things"] })).rejects.toBeInstanceOf(StoreUnavailableError);
    opening.release();
    await faults.settled();
    expect(faults.openStreams).toBe(0);
  });
});
