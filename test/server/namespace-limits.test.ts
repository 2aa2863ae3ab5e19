/**
 * Per-namespace limits on one server instance: a token bucket of requests a
 * second (one second of burst) and a count of open streams, each namespace on
 * its own; callers without credentials share one stream cap.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { NamespaceLimiter } from "../../src/server/namespace-limits.js";

function refusal(call: () => void): { code: Code; reason?: ErrorReason; metadata?: Record<string, string> } | undefined {
  try {
    call();
    return undefined;
  } catch (error) {
    const connect = ConnectError.from(error);
    const [detail] = connect.findDetails(ErrorDetailSchema);
    return { code: connect.code, reason: detail?.reason, metadata: detail?.metadata };
  }
}

describe("requests per second", () => {
  it("allow a second's worth at once, then one more per 1/rate seconds, per namespace", () => {
    let now = 0;
    const limiter = new NamespaceLimiter(1, () => now);
    for (let i = 0; i < 3; i++) expect(refusal(() => limiter.takeRequest("a", 3))).toBeUndefined();
    expect(refusal(() => limiter.takeRequest("a", 3))).toEqual({
      code: Code.ResourceExhausted,
      reason: ErrorReason.RATE_LIMITED,
      metadata: { namespace: "a", limit: "3", retry_after_ms: "334" },
    });
    expect(refusal(() => limiter.takeRequest("b", 3))).toBeUndefined(); // another namespace is unaffected
    now += 334;
    expect(refusal(() => limiter.takeRequest("a", 3))).toBeUndefined();
    expect(refusal(() => limiter.takeRequest("a", 3))?.reason).toBe(ErrorReason.RATE_LIMITED);
    expect(refusal(() => limiter.takeRequest("a", undefined))).toBeUndefined(); // no limit
  });

  it("keeps a bounded number of buckets: idle (full) ones are dropped, which changes nothing", () => {
    let now = 0;
    const limiter = new NamespaceLimiter(1, () => now);
    for (let i = 0; i < 5000; i++) limiter.takeRequest(`ns-${i}`, 1);
    now += 1000;
    expect(refusal(() => limiter.takeRequest("ns-0", 1))).toBeUndefined();
  });
});

describe("open streams", () => {
  it("hold a slot until the call's signal aborts; the limit is per namespace", () => {
    const limiter = new NamespaceLimiter(1);
    const calls = [new AbortController(), new AbortController()];
    for (const call of calls) limiter.openStream("a", 2, call.signal);
    expect(refusal(() => limiter.openStream("a", 2, new AbortController().signal))).toEqual({
      code: Code.ResourceExhausted,
      reason: ErrorReason.STREAM_LIMIT,
      metadata: { namespace: "a", limit: "2" },
    });
    expect(refusal(() => limiter.openStream("b", 2, new AbortController().signal))).toBeUndefined();
    calls[0]!.abort();
    expect(limiter.openStreams("a")).toBe(1);
    expect(refusal(() => limiter.openStream("a", 2, new AbortController().signal))).toBeUndefined();
  });

  it("callers without credentials share the fixed cap, whatever limit is passed", () => {
    const limiter = new NamespaceLimiter(1);
    limiter.openStream(undefined, undefined, new AbortController().signal);
    expect(refusal(() => limiter.openStream(undefined, 100, new AbortController().signal))?.metadata).toEqual({ namespace: "", limit: "1" });
  });

  it("gives back at once the slot of a call that had already ended", () => {
    const limiter = new NamespaceLimiter(1);
    limiter.openStream("a", 1, AbortSignal.abort());
    expect(limiter.openStreams("a")).toBe(0);
  });
});
