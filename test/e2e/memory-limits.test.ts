/**
 * The memory backend is bounded by configuration, not by luck: past
 * --memory-store-max-bytes a write gets RESOURCE_EXHAUSTED (LIMIT_EXCEEDED,
 * limit "memory_store_max_bytes") and stores nothing, and the server keeps
 * answering and delivering what it holds. (A memory-backend feature: MongoDB
 * bounds its own storage.)
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventFrameKind, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { Frames, refusal, type Refusal, uid, useClients } from "../support/mailbox.js";
import { memoryBackend, useServerProcess } from "../support/server-process.js";

describe("the memory backend with --memory-store-max-bytes 4 MiB", () => {
  const server = useServerProcess({ backend: memoryBackend, args: ["--memory-store-max-bytes", String(4 * 1024 * 1024)] });
  const { events, health } = useClients(() => server().url, "grpc");

  it("refuses a Publish once the store is full, and still answers, lists and delivers what it holds", async () => {
    const runId = uid("filling");
    const publish = (i: number) => events.publish({ event: { envelope: { runId, kind: EventKind.CUSTOM, customKind: `e${i}` }, payload: { case: "full", value: { data: new Uint8Array(200 * 1024), mediaType: "application/octet-stream" } } } });
    let refused: Refusal | undefined;
    let journaled = 0;
    for (let i = 0; i < 40 && !refused; i++) {
      const failure = await publish(i).then(() => undefined, (error: unknown) => error);
      if (failure) refused = await refusal(Promise.reject(failure));
      else journaled++;
    }
    expect(refused, "a Publish refused before 8 MiB were written").toBeDefined();
    expect([refused!.code, refused!.detail?.reason, refused!.detail?.metadata.limit]).toEqual([Code.ResourceExhausted, ErrorReason.LIMIT_EXCEEDED, "memory_store_max_bytes"]);
    expect(journaled).toBeGreaterThan(5);

    expect((await health.check({})).status).toBe(ServingStatus.SERVING);
    let listed = 0;
    let after = undefined as Awaited<ReturnType<typeof events.listEvents>>["nextCursor"];
    for (let page = 0; page < 100; page++) {
      const answer = await events.listEvents({ scope: { case: "runId", value: runId }, after });
      listed += answer.frames.length;
      if (answer.endOfRange) break;
      after = answer.nextCursor;
    }
    expect(listed).toBe(journaled);
    const subscription = new Frames((signal) => events.subscribe({ scope: { case: "runId", value: runId } }, { signal }));
    try {
      let delivered = 0;
      await subscription.nextMatching((r) => {
        if (r.frame?.kind === EventFrameKind.EVENT) delivered++;
        return r.frame?.kind === EventFrameKind.CAUGHT_UP ? true : undefined;
      }, "the caught-up frame");
      expect(delivered).toBe(journaled);
    } finally {
      subscription.close();
    }
    expect(server().logs.some((line) => line.msg.includes("in-memory store is full"))).toBe(true);
  });
});
