/**
 * A Claim answers within the response size limit (--max-message-bytes): it
 * takes only the dispatches that fit, best first, and leaves the rest queued
 * and untouched, so a claim never burns attempts on dispatches whose tokens
 * could not be delivered.
 */
import { ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { describe, expect, it, onTestFinished } from "vitest";
import { RunDispatchStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import { testClients } from "../support/e2e-auth.js";
import { LONG_LEASE } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

const KIB = 1024;

describe.each(serverBackends())("Claim within the response size limit ($name backend)", (backend) => {
  describe.skipIf(!backend.available)("with the default 4 MiB limit", () => {
    const server = useServerProcess({ backend });

    it("a Claim of 20 dispatches of 250 KiB each takes those that fit in one response, best first; the rest stay queued with no attempt spent", async () => {
      const clients = testClients({ baseUrl: server().url, protocol: "grpc" });
      onTestFinished(() => clients.close());
      const tag = randomUUID();
      const payload = { data: new Uint8Array(250 * KIB), mediaType: "application/octet-stream" };
      // One dispatch per thread (a thread gives one claim at a time), priorities 200 down to 181.
      for (let i = 0; i < 20; i++) {
        await clients.mailbox.enqueue({ dispatch: { threadId: `${tag}-${i}`, priority: 200 - i, payload } });
      }
      const first = await clients.mailbox.claim({ consumerId: "w", lease: LONG_LEASE, limit: 20 });
      const taken = first.dispatches.length;
      expect(taken).toBeGreaterThan(0);
      expect(taken).toBeLessThan(20);
      expect(first.dispatches.map((d) => d.priority)).toEqual(Array.from({ length: taken }, (_, i) => 200 - i));
      // The others were not touched: queued, no attempt spent, and the next claim takes them.
      for (let i = taken; i < 20; i++) {
        const { dispatches } = await clients.mailbox.listDispatches({ threadId: `${tag}-${i}` });
        expect(dispatches.map((d) => [d.status, d.attemptCount])).toEqual([[RunDispatchStatus.QUEUED, 0]]);
      }
      const second = await clients.mailbox.claim({ consumerId: "w", lease: LONG_LEASE, limit: 20 });
      expect(second.dispatches.map((d) => d.priority)).toEqual(Array.from({ length: 20 - taken }, (_, i) => 200 - taken - i));
    });
  });

  describe.skipIf(!backend.available)("with --max-message-bytes 64 KiB", () => {
    const server = useServerProcess({ backend, args: ["--max-message-bytes", String(64 * KIB)] });

    it("a long-polling Claim of many small dispatches still answers, with as many as fit", async () => {
      const clients = testClients({ baseUrl: server().url, protocol: "connect" });
      onTestFinished(() => clients.close());
      const tag = randomUUID();
      const payload = { data: new Uint8Array(20 * KIB), mediaType: "application/octet-stream" };
      for (let i = 0; i < 5; i++) await clients.mailbox.enqueue({ dispatch: { threadId: `${tag}-${i}`, payload } });
      const claimed = await clients.mailbox.claim({ consumerId: "w", lease: LONG_LEASE, limit: 5 }).catch((error: unknown) => ConnectError.from(error));
      expect(claimed).not.toBeInstanceOf(ConnectError);
      const { dispatches } = claimed as { dispatches: unknown[] };
      expect(dispatches.length).toBeGreaterThanOrEqual(1);
      expect(dispatches.length).toBeLessThan(5);
    });
  });
});
