/**
 * Sizing answers against --max-message-bytes: in binary and in JSON, a
 * message fits only when both encodings do; large payloads are sized without
 * being encoded, never below their real size.
 */
import { create, equals, toBinary, toJsonString } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RunDispatchSchema } from "../../gen/mailroom/v1/dispatch_pb.js";
import { AnswerLimit, countThatFit } from "../../src/domain/answer-size.js";

const dispatch = (payload: number, text: string) => create(RunDispatchSchema, {
  dispatchId: "d-1", threadId: text, runId: "r", lastError: text, priority: 200,
  ...(payload > 0 ? { payload: { data: new Uint8Array(payload).fill(9), mediaType: "application/octet-stream" } } : {}),
});
const jsonBytes = (message: ReturnType<typeof dispatch>) => Buffer.byteLength(toJsonString(RunDispatchSchema, message));

describe("AnswerLimit", () => {
  it("sizes JSON with large payloads at least as large as the encoding, within a few bytes, and leaves the message as it was", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 50_000 }), fc.string({ maxLength: 40 }), (payload, text) => {
      const message = dispatch(payload, text);
      const before = structuredClone(message);
      const sized = new AnswerLimit(1 << 30).sizeIn(RunDispatchSchema, message, "json");
      expect(sized).toBeGreaterThanOrEqual(jsonBytes(message));
      expect(sized).toBeLessThanOrEqual(jsonBytes(message) + 8);
      expect(equals(RunDispatchSchema, message, before)).toBe(true);
    }), { numRuns: 200 });
  });

  it("says a message fits only when both its binary and its JSON encoding fit", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 4000 }), fc.string({ unit: "binary", maxLength: 200 }), fc.integer({ min: 200, max: 8000 }), (payload, text, max) => {
      const message = dispatch(payload, text);
      const fits = new AnswerLimit(max).fits(RunDispatchSchema, message);
      const both = toBinary(RunDispatchSchema, message).length <= max && jsonBytes(message) <= max;
      if (fits) expect(both).toBe(true);
      if (both) expect(fits).toBe(true);
    }), { numRuns: 300 });
  });

  it("refuses with RESOURCE_EXHAUSTED LIMIT_EXCEEDED naming the field and the limit", () => {
    const error = (() => {
      try {
        new AnswerLimit(100).require(RunDispatchSchema, dispatch(500, "t"), "the dispatch", "dispatch.payload.data");
      } catch (thrown) {
        return thrown as { code: string; details: { field?: string; metadata?: Record<string, string> } };
      }
      return undefined;
    })();
    expect(error?.code).toBe("resource_exhausted");
    expect(error?.details.field).toBe("dispatch.payload.data");
    expect(error?.details.metadata?.limit).toBe("max_message_bytes");
  });
});

describe("countThatFit", () => {
  it("counts the leading items whose sizes fit in the room, at least one when asked", () => {
    expect(countThatFit([3, 3, 3], 7, (n) => n)).toBe(2);
    expect(countThatFit([9, 1], 5, (n) => n)).toBe(0);
    expect(countThatFit([9, 1], 5, (n) => n, true)).toBe(1);
    expect(countThatFit([], 5, (n: number) => n, true)).toBe(0);
  });
});
