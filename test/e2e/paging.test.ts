/**
 * Paging end to end: page tokens are keyset cursors over a total order (the
 * sort value, then the id), so a page always starts strictly after the last
 * one, however many entries share a sort value; a token the server did not
 * issue is refused or answered with an ordinary page, and the server stays
 * responsive throughout.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { RunDispatchStatus as Status } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { isolated, type Mailbox, refusal, uid, useClients } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

/** Every page of a listing, following next_page_token; fails past `maxPages` (a token that does not advance). */
async function allPages<T>(fetch: (token: string) => Promise<{ items: T[]; next: string }>, maxPages = 50): Promise<T[][]> {
  const pages: T[][] = [];
  let token = "";
  do {
    const { items, next } = await fetch(token);
    pages.push(items);
    expect(pages.length, "pages before the listing ended").toBeLessThanOrEqual(maxPages);
    token = next;
  } while (token !== "");
  return pages;
}

const listThread = (mailbox: Mailbox, threadId: string, pageSize: number) => (pageToken: string) =>
  mailbox.listDispatches({ threadId, pageSize, pageToken }).then((r) => ({ items: r.dispatches, next: r.nextPageToken }));

const handMade = (key: object) => Buffer.from(JSON.stringify(key)).toString("base64url");
/** A real token's fields (its query digest, to forge tokens for the same query). */
const fieldsOf = (token: string) => JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { q: string; v: number; id: string };

describe.each(serverBackends())("paging on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });
    const { mailbox, health } = useClients(() => server().url, "grpc");

    async function batchOf(threadId: string, count: number): Promise<string[]> {
      const { results } = await mailbox.enqueueBatch({ dispatches: Array.from({ length: count }, () => ({ threadId })) });
      return results.map((r) => r.dispatch!.dispatchId);
    }

    describe("ListDispatches", () => {
      it("returns each of 201 dispatches sharing one created_at exactly once, 100 a page, and the server answers Health.Check right after", async () => {
        const thread = uid("same-instant");
        const ids = await batchOf(thread, 201);
        const created = new Set((await mailbox.listDispatches({ threadId: thread, pageSize: 1000 })).dispatches.map((d) => timestampMs(d.createdAt!)));
        expect(created.size, "one EnqueueBatch stamps one created_at").toBe(1);

        const pages = await allPages(listThread(mailbox, thread, 100));
        expect(pages.map((p) => p.length)).toEqual([100, 100, 1]);
        const listed = pages.flat().map((d) => d.dispatchId);
        expect(new Set(listed).size).toBe(201);
        expect([...listed].sort()).toEqual([...ids].sort());
        expect((await health.check({})).status).toBe(ServingStatus.SERVING);
      });

      it("pages one at a time through entries sharing a sort value, with a status filter too", async () => {
        const thread = uid("one-by-one");
        const ids = await batchOf(thread, 7);
        const pages = await allPages((pageToken) =>
          mailbox.listDispatches({ threadId: thread, statuses: [Status.QUEUED], pageSize: 1, pageToken }).then((r) => ({ items: r.dispatches, next: r.nextPageToken })));
        expect(pages.flat().map((d) => d.dispatchId).sort()).toEqual([...ids].sort());
        expect(pages.every((p) => p.length === 1)).toBe(true);
      });

      it("refuses a token that does not decode, or that another query issued, with INVALID_ARGUMENT page_token", async () => {
        const thread = uid("tokens");
        await batchOf(thread, 3);
        const { nextPageToken } = await mailbox.listDispatches({ threadId: thread, pageSize: 1 });
        const { q } = fieldsOf(nextPageToken);
        for (const pageToken of ["%%%", handMade({ q: 5 }), handMade({ q, v: "x", id: "d" }), handMade({ q, v: 1, id: "" }), handMade({ q, v: 1, id: "\uD800" })]) {
          const refused = await refusal(mailbox.listDispatches({ threadId: thread, pageToken }));
          expect([refused.code, refused.detail?.field], pageToken).toEqual([Code.InvalidArgument, "page_token"]);
        }
        const other = await refusal(mailbox.listDispatches({ threadId: uid("elsewhere"), pageToken: nextPageToken }));
        expect([other.code, other.detail?.reason, other.detail?.field]).toEqual([Code.InvalidArgument, ErrorReason.INVALID_FIELD, "page_token"]);
      });

      it("answers a well-formed hand-made token with an ordinary page, and the server stays responsive", async () => {
        const thread = uid("forged");
        const ids = await batchOf(thread, 5);
        const { q } = fieldsOf((await mailbox.listDispatches({ threadId: thread, pageSize: 1 })).nextPageToken);
        const fromStart = await mailbox.listDispatches({ threadId: thread, pageSize: 10, pageToken: handMade({ q, v: 0, id: "\u0001" }) });
        expect(fromStart.dispatches.map((d) => d.dispatchId).sort()).toEqual([...ids].sort());
        const pastEnd = await mailbox.listDispatches({ threadId: thread, pageSize: 10, pageToken: handMade({ q, v: Number.MAX_SAFE_INTEGER, id: "\u{10FFFF}" }) });
        expect([pastEnd.dispatches, pastEnd.nextPageToken]).toEqual([[], ""]);
        expect((await health.check({})).status).toBe(ServingStatus.SERVING);
      });
    });

    describe("ListTerminalDispatches", () => {
      it("returns each of 201 dispatches completed at one instant exactly once (an Interrupt supersedes them together)", async () => {
        const thread = uid("superseded-together");
        const ids = await batchOf(thread, 201);
        const { supersededCount } = await mailbox.interrupt({ threadId: thread });
        expect(supersededCount).toBe(201n);
        const pages = await allPages((pageToken) =>
          mailbox.listTerminalDispatches({ threadId: thread, pageSize: 100, pageToken }).then((r) => ({ items: r.dispatches, next: r.nextPageToken })));
        expect(pages.map((p) => p.length)).toEqual([100, 100, 1]);
        expect(pages.flat().map((d) => d.dispatchId).sort()).toEqual([...ids].sort());
        expect((await health.check({})).status).toBe(ServingStatus.SERVING);
      });
    });

    describe("ListQueuedThreads", () => {
      it("pages through ready threads one at a time, each exactly once, and refuses a token that does not decode", async () => {
        const prefix = uid("ready");
        const threads = [`${prefix}-a`, `${prefix}-b`, `${prefix}-c`];
        for (const threadId of threads) await mailbox.enqueue({ dispatch: { threadId } });
        const pages = await allPages((pageToken) => mailbox.listQueuedThreads({ pageSize: 1, pageToken }).then((r) => ({ items: r.threadIds, next: r.nextPageToken })), 10_000);
        const listed = pages.flat();
        expect(new Set(listed).size).toBe(listed.length);
        expect(pages.length, "each page advances").toBeLessThanOrEqual(listed.length + 1);
        expect(listed.filter((t) => t.startsWith(prefix))).toEqual(threads);
        const refused = await refusal(mailbox.listQueuedThreads({ pageToken: "not-a-token" }));
        expect([refused.code, refused.detail?.field]).toEqual([Code.InvalidArgument, "page_token"]);
      });
    });
  });
});
