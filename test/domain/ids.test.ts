import { describe, expect, it } from "vitest";
import { newClaimToken, newId } from "../../src/domain/ids.js";

describe("claim tokens", () => {
  it("are 128 random bits in hex, never repeated across refills of the random pool", () => {
    const tokens = Array.from({ length: 2_000 }, () => newClaimToken());
    for (const token of tokens) expect(token).toMatch(/^ct_[0-9a-f]{32}$/);
    expect(new Set(tokens).size).toBe(tokens.length);
    // Every hex digit shows up in every position eventually: the bytes are not a fixed pattern.
    for (let position = 3; position < 35; position++) {
      expect(new Set(tokens.map((token) => token[position])).size).toBe(16);
    }
  });
});

describe("ids", () => {
  it("are UUIDv7 and sort in creation order", () => {
    const ids = Array.from({ length: 1_000 }, () => newId());
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
  });
});

describe("ids made within one millisecond", () => {
  it("sort in the order they were made", () => {
    const ids: string[] = [];
    // Many ids per millisecond: the sequence counter, not the clock, orders them.
    while (ids.length < 50_000) ids.push(newId());
    expect(new Set(ids).size).toBe(ids.length);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
  });
});
