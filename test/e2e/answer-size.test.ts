/**
 * A failing call keeps no changes: every answer is sized before anything is
 * committed. A write whose stored record could not be served back within
 * --max-message-bytes (in the protobuf binary format or in JSON) is refused
 * up front with RESOURCE_EXHAUSTED (LIMIT_EXCEEDED) and stores nothing, so
 * every stored record stays deliverable; answers holding many records take
 * only what fits.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { RunDispatchStatus as Status } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventFrameKind, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import type { ClientProtocol } from "../../src/client/index.js";
import type { MailroomClients } from "../../src/client/index.js";
import { claimOne, Frames, refusal, type Refusal, uid } from "../support/mailbox.js";
import { useServerProcess } from "../support/server-process.js";
import { testClients } from "../support/e2e-auth.js";

const bytes = (n: number) => new Uint8Array(n).fill(7);
const payload = (n: number) => ({ data: bytes(n), mediaType: "application/octet-stream" });

function expectLimitExceeded(refused: Refusal, field: string): void {
  expect([refused.code, refused.detail?.reason, refused.detail?.field]).toEqual([Code.ResourceExhausted, ErrorReason.LIMIT_EXCEEDED, field]);
  expect(refused.detail?.metadata.limit).toBe("max_message_bytes");
  expect(refused.message).toMatch(/nothing was changed/);
}

/** Clients over each protocol (binary) and over Connect with JSON, closed when the suite ends. */
function clientsFor(url: () => string): Array<[string, () => MailroomClients]> {
  const made = new Map<string, MailroomClients>();
  const get = (name: string, protocol: ClientProtocol, binary: boolean) => () => {
    let clients = made.get(name);
    if (!clients) made.set(name, (clients = testClients({ baseUrl: url(), protocol, binary })));
    return clients;
  };
  return [["gRPC", get("grpc", "grpc", true)], ["Connect JSON", get("json", "connect", false)]];
}

describe("with --max-message-bytes 1024", () => {
  const server = useServerProcess({ args: ["--max-message-bytes", "1024"] });

  describe.each(clientsFor(() => server().url))("over %s", (_name, clients) => {
    it("an Enqueue with a 600 B payload is refused with RESOURCE_EXHAUSTED and nothing is stored", async () => {
      const { mailbox } = clients();
      const thread = uid("too-big");
      expectLimitExceeded(await refusal(mailbox.enqueue({ dispatch: { threadId: thread, payload: payload(600) } })), "dispatch.payload.data");
      expect((await mailbox.listDispatches({ threadId: thread })).dispatches).toEqual([]);
      expect((await mailbox.countDispatches({ threadId: thread })).total).toBe(0n);
    });

    it("a small Enqueue is stored and served back", async () => {
      const { mailbox } = clients();
      const { dispatch } = await mailbox.enqueue({ dispatch: { threadId: uid("small"), payload: payload(16) } });
      expect((await mailbox.getDispatch({ dispatchId: dispatch!.dispatchId })).dispatch?.payload?.data).toEqual(bytes(16));
    });

    it("an EnqueueBatch whose answer would not fit is refused whole, and nothing is stored", async () => {
      const { mailbox } = clients();
      const thread = uid("batch");
      const refused = await refusal(mailbox.enqueueBatch({ dispatches: Array.from({ length: 3 }, () => ({ threadId: thread, payload: payload(40) })) }));
      expectLimitExceeded(refused, "dispatches");
      expect((await mailbox.listDispatches({ threadId: thread })).dispatches).toEqual([]);
    });

    it("a Nack whose error text would make the dispatch too large to serve is refused, and the dispatch stays claimed", async () => {
      const { mailbox } = clients();
      const thread = uid("nack");
      await mailbox.enqueue({ dispatch: { threadId: thread } });
      const claimed = await claimOne(mailbox, thread);
      expectLimitExceeded(await refusal(mailbox.nack({ dispatchId: claimed.dispatchId, claimToken: claimed.claimToken, error: "e".repeat(900) })), "error");
      expect((await mailbox.getDispatch({ dispatchId: claimed.dispatchId })).dispatch?.status).toBe(Status.CLAIMED);
      expect((await mailbox.nack({ dispatchId: claimed.dispatchId, claimToken: claimed.claimToken, error: "short" })).dispatch?.lastError).toBe("short");
    });
  });
});

describe("with --max-message-bytes 4096, events", () => {
  // A server of its own: the journal holds only what these tests publish. (At
  // 1 KiB no event fits in JSON with the fields the server fills in.)
  const server = useServerProcess({ args: ["--max-message-bytes", "4096"] });

  describe.each(clientsFor(() => server().url))("over %s", (_name, clients) => {
    it("a near-limit Publish is refused and not journaled; what was journaled is delivered by ListEvents and Subscribe(all)", async () => {
      const { events, health } = clients();
      const runId = uid("near-limit");
      const small = await events.publish({ event: { envelope: { runId, kind: EventKind.CUSTOM, customKind: "small" }, payload: { case: "full", value: payload(8) } } });
      const refused = await refusal(events.publish({ event: { envelope: { runId, kind: EventKind.CUSTOM, customKind: "big" }, payload: { case: "full", value: payload(2800) } } }));
      expectLimitExceeded(refused, "event.full.data");
      const listed = await events.listEvents({ scope: { case: "runId", value: runId } });
      expect(listed.frames.map((f) => f.event?.envelope?.customKind)).toEqual(["small"]);
      expect((await events.listEvents({ scope: { case: "all", value: {} } })).frames.length).toBeGreaterThan(0);
      const subscription = new Frames((signal) => events.subscribe({ scope: { case: "all", value: {} } }, { signal }));
      try {
        const seen = await subscription.nextMatching((r) => (r.frame?.kind === EventFrameKind.EVENT && r.frame.event?.envelope?.eventId === small.envelope!.eventId ? true : undefined), "the small event");
        expect(seen).toBe(true);
        await subscription.nextMatching((r) => (r.frame?.kind === EventFrameKind.CAUGHT_UP ? true : undefined), "the caught-up frame");
      } finally {
        subscription.close();
      }
      expect((await health.check({})).status).toBe(ServingStatus.SERVING);
    });
  });
});

describe("with --max-message-bytes 16384, answers holding many records take only what fits", () => {
  const server = useServerProcess({ args: ["--max-message-bytes", "16384"] });

  describe.each(clientsFor(() => server().url))("over %s", (_name, clients) => {
    it("ListDispatches pages hold fewer than page_size when the dispatches are large, and every dispatch is reached once", async () => {
      const { mailbox } = clients();
      const thread = uid("large-pages");
      const { results } = await mailbox.enqueueBatch({ dispatches: Array.from({ length: 4 }, () => ({ threadId: thread, payload: payload(1500) })) });
      for (let i = 0; i < 3; i++) await mailbox.enqueueBatch({ dispatches: Array.from({ length: 4 }, () => ({ threadId: thread, payload: payload(1500) })) }).then((r) => results.push(...r.results));
      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await mailbox.listDispatches({ threadId: thread, pageSize: 100, pageToken });
        expect(page.dispatches.length).toBeGreaterThan(0);
        seen.push(...page.dispatches.map((d) => d.dispatchId));
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken !== "" && pages < 50);
      expect(pages).toBeGreaterThan(1);
      expect(seen.sort()).toEqual(results.map((r) => r.dispatch!.dispatchId).sort());
    });

    it("pages of many small dispatches are sized in the answer's own encoding (JSON is several times binary)", async () => {
      const { mailbox } = clients();
      const thread = uid("small-pages");
      const results = [];
      for (let i = 0; i < 6; i++) results.push(...(await mailbox.enqueueBatch({ dispatches: Array.from({ length: 10 }, () => ({ threadId: thread, payload: payload(100) })) })).results);
      const seen: string[] = [];
      let pageToken = "";
      do {
        const page = await mailbox.listDispatches({ threadId: thread, pageSize: 1000, pageToken });
        seen.push(...page.dispatches.map((d) => d.dispatchId));
        pageToken = page.nextPageToken;
      } while (pageToken !== "" && seen.length <= 60);
      expect(seen.sort()).toEqual(results.map((r) => r.dispatch!.dispatchId).sort());
    });

    it("a detailed Interrupt answers the superseded dispatches that fit and says the list is truncated", async () => {
      const { mailbox } = clients();
      const thread = uid("interrupt");
      for (let i = 0; i < 4; i++) await mailbox.enqueueBatch({ dispatches: Array.from({ length: 4 }, () => ({ threadId: thread, payload: payload(1500) })) });
      const answer = await mailbox.interrupt({ threadId: thread, detailed: true });
      expect(answer.supersededCount).toBe(16n);
      expect(answer.supersededDispatches.length).toBeGreaterThan(0);
      expect(answer.supersededDispatches.length).toBeLessThan(16);
      expect(answer.supersededDispatchesTruncated).toBe(true);
      expect(Number((await mailbox.countDispatches({ threadId: thread, statuses: [Status.SUPERSEDED] })).total)).toBe(16);
    });

    it("ListEvents pages hold only the events that fit, and next_cursor reaches every event once", async () => {
      const { events } = clients();
      const runId = uid("large-events");
      for (let i = 0; i < 12; i++) await events.publish({ event: { envelope: { runId, kind: EventKind.CUSTOM, customKind: `e${i}` }, payload: { case: "full", value: payload(1500) } } });
      const kinds: string[] = [];
      let after = undefined as Awaited<ReturnType<typeof events.listEvents>>["nextCursor"];
      let pages = 0;
      for (;;) {
        const page = await events.listEvents({ scope: { case: "runId", value: runId }, after, pageSize: 1000 });
        kinds.push(...page.frames.map((f) => f.event!.envelope!.customKind));
        pages++;
        if (page.endOfRange || pages > 50) break;
        after = page.nextCursor;
      }
      expect(pages).toBeGreaterThan(1);
      expect(kinds).toEqual(Array.from({ length: 12 }, (_, i) => `e${i}`));
    });
  });
});

describe("with --max-message-bytes 16384, pools", () => {
  const server = useServerProcess({ args: ["--max-message-bytes", "16384"] });
  const clients = () => testClients({ baseUrl: server().url, protocol: "grpc" });

  async function poolOf(pools: MailroomClients["pools"], runs: string[]): Promise<string> {
    const poolId = uid("pool");
    await pools.openPool({ poolId });
    for (const runId of runs) await pools.joinRun({ poolId, member: { runId, agentId: `agent-${runId}` } });
    return poolId;
  }

  it("a Send whose delivery would not fit is refused and stores nothing; GetPool takes only the newest messages that fit", async () => {
    const { pools, close } = clients();
    try {
      const poolId = await poolOf(pools, ["a", "b"]);
      const body = (n: number) => ({ data: bytes(n), mediaType: "application/octet-stream" });
      expectLimitExceeded(await refusal(pools.send({ poolId, message: { fromRunId: "a", to: { target: { case: "runId", value: "b" } }, body: body(15_000) } })), "message.body.data");
      expect((await pools.getPool({ poolId })).snapshot?.messages).toEqual([]);
      const sent: string[] = [];
      for (let i = 0; i < 12; i++) sent.push((await pools.send({ poolId, message: { fromRunId: "a", to: { target: { case: "runId", value: "b" } }, body: body(1500) } })).receipt!.messageId);
      const { snapshot } = await pools.getPool({ poolId, maxMessages: 100 });
      const kept = snapshot!.messages.map((m) => m.message!.messageId);
      expect(snapshot!.messagesTruncated).toBe(true);
      expect(kept.length).toBeGreaterThan(0);
      expect(kept).toEqual(sent.slice(sent.length - kept.length));
    } finally {
      close();
    }
  });

  it("a JoinRun after which the members would not fit in ListMembers or GetPool is refused, and the pool is unchanged", async () => {
    const { pools, close } = clients();
    try {
      const poolId = await poolOf(pools, []);
      const topics = (run: number) => Array.from({ length: 64 }, (_, i) => `topic-${run}-${i}-${"t".repeat(80)}`);
      let refused: Refusal | undefined;
      let joined = 0;
      for (let run = 0; run < 10 && !refused; run++) {
        const outcome = await refusal(pools.joinRun({ poolId, member: { runId: `run-${run}`, agentId: "agent", topics: topics(run) } })).catch(() => undefined);
        if (outcome) refused = outcome;
        else joined++;
      }
      expect(refused, "a join refused before 10 members").toBeDefined();
      expectLimitExceeded(refused!, "member");
      expect((await pools.listMembers({ poolId })).members).toHaveLength(joined);
      expect((await pools.getPool({ poolId })).snapshot?.members).toHaveLength(joined);
    } finally {
      close();
    }
  });
});
