/**
 * Namespaces isolate completely, end to end: the real server with an auth
 * file of two namespaces (tokens made here), and one scenario that calls
 * every RPC of MailboxService, PoolService and EventService, run step by step
 * in both namespaces with identical ids (dispatches, threads, runs, dedupe
 * keys, pools, messages, conditions, events, live commands), interleaved.
 *
 * No cross-talk is checked three ways: every response, stream frame and error
 * a namespace's client received is recorded, and none names the other
 * namespace (each namespace writes its name into payloads, bodies, tags and
 * reasons, and has entities of its own named after it); what both do with
 * the same ids succeeds in each as if it were alone (nothing deduplicated,
 * claimed or purged across); and the other namespace's own ids are NOT_FOUND
 * (never PERMISSION_DENIED). A coverage check fails when an RPC is added to
 * the contract and not to the scenario.
 *
 * Also: max_queued_dispatches refuses past a namespace's limit with
 * RESOURCE_EXHAUSTED (QUEUE_LIMIT) and leaves other namespaces alone.
 */
import { type DescService } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { beforeAll, describe, expect, it } from "vitest";
import { RunDispatchStatus, RunStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventFrameKind, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { LiveDeliveryOutcome } from "../../gen/mailroom/v1/live_pb.js";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { MessageStatus, WakeRegistrationStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { PoolService } from "../../gen/mailroom/v1/pool_service_pb.js";
import { Frames, LONG_LEASE, ms, signalOf } from "../support/mailbox.js";
import { body, toRun } from "../support/pools.js";
import { type ServerProcess, startServerProcess } from "../support/server-process.js";
import { TeamsFixture } from "../support/teams.js";

const NAMESPACES = ["alpha", "beta"] as const;
type Namespace = (typeof NAMESPACES)[number];
const SERVICES: DescService[] = [MailboxService, PoolService, EventService];

/** One namespace's clients, and everything they received. */
interface Side {
  /** The namespace its credential names. */
  ns: string;
  mailbox: Client<typeof MailboxService>;
  pools: Client<typeof PoolService>;
  events: Client<typeof EventService>;
  /** Clients whose calls are not recorded: for asking about the other namespace's ids on purpose (the refusals name them). */
  probe: { mailbox: Client<typeof MailboxService>; pools: Client<typeof PoolService> };
  /** Every response, stream frame and error text received, in order. */
  received: unknown[];
  /** Every procedure called. */
  called: Set<string>;
  /** What a step leaves for later steps. */
  state: Record<string, string>;
  streams: Array<Frames<unknown>>;
}

/** Records every call's procedure and everything it answers. */
function recording(side: Pick<Side, "received" | "called">): Interceptor {
  return (next) => async (request) => {
    side.called.add(`${request.service.typeName}/${request.method.name}`);
    try {
      const response = await next(request);
      if (!response.stream) {
        side.received.push(response.message);
        return response;
      }
      const frames = response.message;
      return {
        ...response,
        message: (async function* () {
          try {
            for await (const frame of frames) {
              side.received.push(frame);
              yield frame;
            }
          } catch (error) {
            side.received.push(String(error));
            throw error;
          }
        })(),
      };
    } catch (error) {
      side.received.push(String(error));
      throw error;
    }
  };
}

function sideOf(ns: string, url: string, token: string, sessions: Http2SessionManager[]): Side {
  const side = { ns, received: [] as unknown[], called: new Set<string>(), state: {} as Record<string, string>, streams: [] as Array<Frames<unknown>> };
  const sessionManager = new Http2SessionManager(url);
  sessions.push(sessionManager);
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  const transport: Transport = createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager, interceptors: [bearer, recording(side)] });
  const unrecorded: Transport = createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager, interceptors: [bearer] });
  return Object.assign(side, {
    mailbox: createClient(MailboxService, transport),
    pools: createClient(PoolService, transport),
    events: createClient(EventService, transport),
    probe: { mailbox: createClient(MailboxService, unrecorded), pools: createClient(PoolService, unrecorded) },
  });
}

function text(values: unknown[]): string {
  return JSON.stringify(values, (_key, value: unknown) => {
    if (typeof value === "bigint") return value.toString();
    if (value instanceof Uint8Array) return Buffer.from(value).toString("utf8");
    return value;
  });
}

async function refusal(call: Promise<unknown>): Promise<{ code: Code; reason?: ErrorReason; metadata?: Record<string, string> }> {
  try {
    await call;
  } catch (error) {
    const connect = ConnectError.from(error);
    const [detail] = connect.findDetails(ErrorDetailSchema);
    return { code: connect.code, reason: detail?.reason, ...(detail && Object.keys(detail.metadata).length > 0 ? { metadata: detail.metadata } : {}) };
  }
  throw new Error("the call succeeded");
}

const stream = <T>(side: Side, open: (signal: AbortSignal) => AsyncIterable<T>): Frames<T> => {
  const frames = new Frames(open);
  side.streams.push(frames as Frames<unknown>);
  return frames;
};

/** A step of the scenario, run in one namespace; `other` is the other namespace's side (it runs the same step after or before). */
type Step = (me: Side, other: Side) => Promise<void>;

const payload = (me: Side) => ({ data: new TextEncoder().encode(`payload of ${me.ns}`), mediaType: "text/plain" });

const SCENARIO: Array<[string, Step]> = [
  ["open the streams that watch everything", async (me) => {
    const signals = stream(me, (signal) => me.mailbox.watchDispatchSignals({}, { signal }));
    expect((await signals.next("the first frame")).frame.case).toBe("heartbeat");
    const events = stream(me, (signal) => me.events.subscribe({ scope: { case: "all", value: {} } }, { signal }));
    await events.nextMatching((f) => (f.frame?.kind === EventFrameKind.CAUGHT_UP ? true : undefined), "caught up");
    me.state.signals = String(me.streams.indexOf(signals as Frames<unknown>));
    me.state.events = String(me.streams.indexOf(events as Frames<unknown>));
    // Live channels: one for a target both namespaces have, one for a target of the namespace's own.
    for (const threadId of ["live", `only-${me.ns}`]) {
      const channel = stream(me, (signal) => me.mailbox.openLiveChannel({ target: { threadId, runId: "r1" } }, { signal }));
      expect((await channel.next("the channel's first frame")).frame.case).toBe("heartbeat");
      me.state[`channel:${threadId}`] = String(me.streams.indexOf(channel as Frames<unknown>));
    }
  }],
  ["enqueue identical ids: none is a duplicate of the other namespace's", async (me) => {
    const first = await me.mailbox.enqueue({ dispatch: { dispatchId: "d1", threadId: "t1", runId: "r1", dedupeKey: "k1", payload: payload(me) } });
    expect(first.deduplicated).toBe(false);
    const batch = await me.mailbox.enqueueBatch({ dispatches: [{ dispatchId: "d2", threadId: "t1", runId: "r1", payload: payload(me) }, { dispatchId: "d3", threadId: "t2", runId: "r2", payload: payload(me) }] });
    expect(batch.results.map((r) => [r.dispatch?.dispatchId, r.deduplicated])).toEqual([["d2", false], ["d3", false]]);
    // Entities only this namespace has.
    await me.mailbox.enqueue({ dispatch: { dispatchId: `only-${me.ns}`, threadId: `only-${me.ns}`, runId: `only-${me.ns}`, payload: payload(me) } });
    expect((await me.mailbox.enqueue({ dispatch: { dispatchId: "d1", threadId: "t1", runId: "r1", dedupeKey: "k1" } })).deduplicated).toBe(true);
  }],
  ["read: each namespace sees its own, as if alone", async (me) => {
    expect(new TextDecoder().decode((await me.mailbox.getDispatch({ dispatchId: "d1" })).dispatch!.payload!.data)).toBe(`payload of ${me.ns}`);
    expect((await me.mailbox.listDispatches({ pageSize: 100 })).dispatches.map((d) => d.dispatchId).sort()).toEqual(["d1", "d2", "d3", `only-${me.ns}`]);
    expect((await me.mailbox.countDispatches({})).total).toBe(4n);
    expect((await me.mailbox.listQueuedThreads({})).threadIds.sort()).toEqual([`only-${me.ns}`, "t1", "t2"]);
    expect((await me.mailbox.getDispatchEpoch({ threadId: "t1" })).dispatchEpoch).toBe(0n);
  }],
  ["another namespace's ids are NOT_FOUND, never PERMISSION_DENIED", async (me, other) => {
    const theirs = `only-${other.ns}`;
    const notFound = { code: Code.NotFound, reason: ErrorReason.ENTITY_NOT_FOUND };
    const { mailbox } = me.probe;
    expect(await refusal(mailbox.getDispatch({ dispatchId: theirs }))).toMatchObject(notFound);
    expect(await refusal(mailbox.claimDispatch({ dispatchId: theirs, consumerId: "w", lease: LONG_LEASE }))).toMatchObject(notFound);
    expect(await refusal(mailbox.cancel({ dispatchId: theirs }))).toMatchObject(notFound);
    expect((await mailbox.listDispatches({ threadId: theirs })).dispatches).toEqual([]);
    expect((await mailbox.claim({ threadId: theirs, consumerId: "w", lease: LONG_LEASE, limit: 1 })).dispatches).toEqual([]);
  }],
  ["claim across threads: only the namespace's own work", async (me) => {
    const { dispatches } = await me.mailbox.claim({ consumerId: `worker of ${me.ns}`, lease: LONG_LEASE, limit: 10 });
    expect(dispatches.map((d) => d.dispatchId).sort()).toEqual(["d1", "d3", `only-${me.ns}`]);
    for (const d of dispatches) me.state[`token:${d.dispatchId}`] = d.claimToken;
  }],
  ["work a claim: start, result, lease, live commands, ack", async (me, other) => {
    const ref = { dispatchId: "d1", claimToken: me.state["token:d1"]! };
    await me.mailbox.recordDispatchStart({ ...ref, dispatchInstanceId: `instance of ${me.ns}` });
    await me.mailbox.recordRunResult({ ...ref, result: { runStatus: RunStatus.DONE, response: `response of ${me.ns}` } });
    await me.mailbox.extendLease({ ...ref, extension: LONG_LEASE });
    // The other namespace's token for the same dispatch id is no token here.
    if (other.state["token:d1"]) expect((await refusal(me.probe.mailbox.ack({ dispatchId: "d1", claimToken: other.state["token:d1"] }))).code).toBe(Code.FailedPrecondition);
    const target = { threadId: "live", runId: "r1" };
    const channel = me.streams[Number(me.state["channel:live"])] as Frames<{ frame: { case: string; value?: unknown } }>;
    expect((await me.mailbox.deliverLive({ target, command: { commandId: "cmd1", body: { case: "cancel", value: { reason: `stop ${me.ns}` } } } })).outcome).toBe(LiveDeliveryOutcome.DELIVERED);
    const command = await channel.nextMatching((f) => (f.frame.case === "command" ? (f.frame.value as { commandId: string; body: unknown }) : undefined), "the command");
    expect(command).toMatchObject({ commandId: "cmd1", body: { case: "cancel", value: { reason: `stop ${me.ns}` } } });
    expect((await me.mailbox.ackLiveCommand({ commandId: "cmd1" })).newlyAcked).toBe(true);
    // The other namespace's open channel is no channel here.
    expect((await me.probe.mailbox.deliverLive({ target: { threadId: `only-${other.ns}`, runId: "r1" }, command: { commandId: "cmd2", body: { case: "cancel", value: {} } } })).outcome).toBe(LiveDeliveryOutcome.NO_SUBSCRIBER);
    await me.mailbox.ack(ref);
    await me.mailbox.ackBatch({ claims: [{ dispatchId: "d3", claimToken: me.state["token:d3"]! }] });
  }],
  ["the other endings: nack, dead letter, supersede, cancel, interrupt, reclaim", async (me) => {
    let claimed = (await me.mailbox.claimDispatch({ dispatchId: "d2", consumerId: "w", lease: LONG_LEASE })).dispatch!;
    await me.mailbox.nack({ dispatchId: "d2", claimToken: claimed.claimToken, retry: { case: "delay", value: ms(0) }, error: `nacked in ${me.ns}` });
    claimed = (await me.mailbox.claimDispatch({ dispatchId: "d2", consumerId: "w", lease: LONG_LEASE })).dispatch!;
    await me.mailbox.deadLetter({ dispatchId: "d2", claimToken: claimed.claimToken, error: `dead in ${me.ns}` });
    await me.mailbox.enqueue({ dispatch: { dispatchId: "d4", threadId: "t3", runId: "r3" } });
    const [d4] = (await me.mailbox.claim({ threadId: "t3", consumerId: "w", lease: LONG_LEASE, limit: 1 })).dispatches;
    await me.mailbox.supersedeClaimed({ dispatchId: "d4", claimToken: d4!.claimToken, reason: `superseded in ${me.ns}` });
    await me.mailbox.enqueue({ dispatch: { dispatchId: "d5", threadId: "t4", runId: "r4" } });
    expect((await me.mailbox.cancel({ dispatchId: "d5", reason: `cancelled in ${me.ns}` })).changed).toBe(true);
    expect((await me.mailbox.interrupt({ threadId: "t4", detailed: true })).newDispatchEpoch).toBe(1n);
    await me.mailbox.reclaimExpiredLeases({});
    await me.mailbox.ack({ dispatchId: `only-${me.ns}`, claimToken: me.state[`token:only-${me.ns}`]! });
  }],
  ["terminal dispatches: listed and purged per namespace", async (me, other) => {
    const terminal = (side: Side) => side.mailbox.listTerminalDispatches({ pageSize: 100 });
    expect((await terminal(me)).dispatches.map((d) => d.dispatchId).sort()).toEqual(["d1", "d2", "d3", "d4", "d5", `only-${me.ns}`]);
    const othersBefore = (await other.mailbox.countDispatches({ statuses: [RunDispatchStatus.ACKED] })).total;
    // Far in the future: every terminal dispatch of the namespace, and of no other.
    expect((await me.mailbox.purgeTerminal({ completedBefore: timestampFromMs(Date.now() + 86_400_000) })).purgedCount).toBe(6n);
    expect((await other.mailbox.countDispatches({ statuses: [RunDispatchStatus.ACKED] })).total).toBe(othersBefore);
  }],
  ["pulled dispatch signals", async (me) => {
    await me.mailbox.enqueueBatch({ dispatches: [{ dispatchId: "d6", threadId: "t6", runId: "r6" }, { dispatchId: "d7", threadId: "t7", runId: "r7" }] });
    const { receipts } = await me.mailbox.pullDispatchSignals({ max: 10 });
    expect(receipts.map((r) => r.signal!.dispatchId).sort()).toEqual(["d6", "d7"]);
    expect((await me.mailbox.ackDispatchSignal({ receipt: receipts[0]!.receipt })).acked).toBe(true);
    expect((await me.mailbox.nackDispatchSignal({ receipt: receipts[1]!.receipt })).nacked).toBe(true);
  }],
  ["pools: open, join, send, respond, cancel, receive", async (me) => {
    const pool = "p1";
    expect((await me.pools.openPool({ poolId: pool })).opened).toBe(true);
    await me.pools.openPool({ poolId: `only-${me.ns}` });
    for (const runId of ["r1", "r2"]) await me.pools.joinRun({ poolId: pool, member: { runId, agentId: `agent of ${me.ns}` } });
    expect((await me.pools.listMembers({ poolId: pool })).members.map((m) => m.runId)).toEqual(["r1", "r2"]);
    const inbox = stream(me, (signal) => me.pools.receiveMessages({ poolId: pool, runId: "r2" }, { signal }));
    const sent = await me.pools.send({ poolId: pool, message: { messageId: "m1", idempotencyKey: "i1", fromRunId: "r1", to: toRun("r2"), body: body(`hello from ${me.ns}`), responseContract: { expectedResponses: 1, timeout: ms(60_000) } } });
    expect(sent).toMatchObject({ deduplicated: false, receipt: { status: MessageStatus.DELIVERED } });
    const message = await inbox.nextMatching((f) => (f.frame.case === "message" ? f.frame.value : undefined), "the message");
    expect(new TextDecoder().decode(message.message!.body!.data)).toBe(`hello from ${me.ns}`);
    await me.pools.respond({ poolId: pool, reply: { messageId: "m2", idempotencyKey: "i2", fromRunId: "r2", replyTo: "m1", body: body(`reply from ${me.ns}`) } });
    await me.pools.send({ poolId: pool, message: { messageId: "m3", idempotencyKey: "i3", fromRunId: "r1", to: toRun("r2"), responseContract: { expectedResponses: 1, timeout: ms(60_000) } } });
    await me.pools.cancelMessage({ poolId: pool, messageId: "m3", runId: "r1" });
    expect((await me.pools.listMessages({ poolId: pool })).messages.map((m) => m.message!.messageId)).toEqual(["m1", "m2", "m3"]);
  }],
  ["pools: wake conditions", async (me) => {
    const pool = "p1";
    const { registration, deduplicated } = await me.pools.suspendUntil({ poolId: pool, runId: "r1", condition: { conditionId: "c1", runId: "r1", idempotencyKey: "w1", filter: { runIds: ["r2"] } } });
    expect(deduplicated).toBe(false);
    expect((await me.pools.pollWake({ poolId: pool, conditionId: "c1" })).registration!.status).toBe(WakeRegistrationStatus.REGISTERED);
    const waiting = stream(me, (signal) => me.pools.awaitWake({ poolId: pool, conditionId: registration!.conditionId }, { signal }));
    expect((await waiting.next("the registration")).frame.case).toBe("registration");
    await me.pools.cancelWake({ poolId: pool, conditionId: "c1" });
    expect((await me.pools.listWakeConditions({ poolId: pool })).wakes.map((w) => w.condition!.conditionId)).toEqual(["c1"]);
  }],
  ["pools: the pool's history and a member's events, then leave and delete", async (me, other) => {
    const pool = "p1";
    const records = stream(me, (signal) => me.pools.watchPool({ poolId: pool }, { signal }));
    expect(await records.nextMatching((f) => (f.frame.case === "record" ? f.frame.value.sequence : undefined), "the first record")).toBe(1n);
    const scoped = stream(me, (signal) => me.pools.subscribePool({ poolId: pool, runId: "r1" }, { signal }));
    await scoped.nextMatching((f) => (f.frame?.kind === EventFrameKind.CAUGHT_UP ? true : undefined), "caught up");
    const snapshot = (await me.pools.getPool({ poolId: pool, maxMessages: 10 })).snapshot!;
    expect(snapshot.members.map((m) => m.runId)).toEqual(["r1", "r2"]);
    expect(snapshot.messages.map((m) => m.message!.messageId)).toEqual(["m1", "m2", "m3"]);
    expect(await refusal(me.probe.pools.getPool({ poolId: `only-${other.ns}` }))).toMatchObject({ code: Code.NotFound, reason: ErrorReason.ENTITY_NOT_FOUND });
    expect(await refusal(me.probe.pools.pollWake({ poolId: `only-${other.ns}`, conditionId: "c1" }))).toMatchObject({ code: Code.NotFound });
    await me.pools.leaveRun({ poolId: pool, runId: "r2" });
    expect((await me.pools.deletePool({ poolId: `only-${me.ns}` })).cancelledWakeConditions).toBe(0n);
  }],
  ["events: publish identical event ids; list and replay only the namespace's", async (me) => {
    const event = (eventId: string) => ({ envelope: { eventId, runId: "r1", kind: EventKind.USAGE_RECORDED, tags: [me.ns] }, payload: { case: "redactedSummary" as const, value: `event of ${me.ns}` } });
    expect((await me.events.publish({ event: event("e1") })).deduplicated).toBe(false);
    expect((await me.events.publishBatch({ events: [event("e2"), event(`only-${me.ns}`)] })).deduplicated).toBe(false);
    expect((await me.events.publish({ event: event("e1") })).deduplicated).toBe(true);
    const { frames } = await me.events.listEvents({ scope: { case: "runId", value: "r1" }, pageSize: 1000 });
    expect(frames.filter((f) => f.event?.envelope?.kind === EventKind.USAGE_RECORDED).map((f) => f.event!.envelope!.eventId)).toEqual(["e1", "e2", `only-${me.ns}`]);
  }],
  ["the streams opened first saw the namespace's own work and events, to the end", async (me) => {
    const signals = me.streams[Number(me.state.signals)] as Frames<Parameters<typeof signalOf>[0]>;
    await signals.nextMatching((f) => (signalOf(f)?.dispatchId === "d7" ? true : undefined), "the signal of d7");
    const events = me.streams[Number(me.state.events)] as Frames<{ frame?: { event?: { envelope?: { eventId: string } } } }>;
    await events.nextMatching((f) => (f.frame?.event?.envelope?.eventId === `only-${me.ns}` ? true : undefined), "the namespace's last event");
  }],
];

describe("two namespaces with identical ids on one server", () => {
  let fixture: TeamsFixture;
  let server: ServerProcess;
  const sessions: Http2SessionManager[] = [];
  let sides: Record<Namespace, Side>;

  beforeAll(async () => {
    fixture = await TeamsFixture.create();
    const path = fixture.write(fixture.file(
      [...NAMESPACES.map((ns) => ({ name: `${ns}-admin`, namespace: ns, roles: ["admin" as const] })), { name: "capped-producer", namespace: "capped", roles: ["producer" as const, "observer" as const] }],
      { jwt: false, limits: { capped: { max_queued_dispatches: 2 } } },
    ));
    server = await startServerProcess({ args: ["--auth-file", path] });
    sides = Object.fromEntries(NAMESPACES.map((ns) => [ns, sideOf(ns, server.url, fixture.token(`${ns}-admin`), sessions)])) as Record<Namespace, Side>;
    return async () => {
      for (const side of Object.values(sides)) for (const frames of side.streams) frames.close();
      for (const session of sessions) session.abort();
      await server.stop();
    };
  });

  describe("every RPC, step by step in both namespaces", () => {
    it.each(SCENARIO)("%s", async (_step, step) => {
      const [alpha, beta] = [sides.alpha, sides.beta];
      // Alternate which goes first, so each step also runs after the other namespace's.
      const order = SCENARIO.findIndex(([name]) => name === _step) % 2 === 0 ? [alpha, beta] : [beta, alpha];
      await step(order[0]!, order[1]!);
      await step(order[1]!, order[0]!);
    });

    it("no response, frame or error a namespace received names the other namespace", () => {
      for (const ns of NAMESPACES) {
        const seen = text(sides[ns].received);
        const other = NAMESPACES.find((n) => n !== ns)!;
        expect(seen).toContain(`payload of ${ns}`);
        expect(seen).toContain(`only-${ns}`);
        const at = seen.indexOf(other);
        expect(at, `${ns} received something of ${other}: ${seen.slice(Math.max(0, at - 200), at + 100)}`).toBe(-1);
      }
    });

    it("called every RPC of MailboxService, PoolService and EventService in both namespaces", () => {
      const every = SERVICES.flatMap((service) => service.methods.map((method) => `${service.typeName}/${method.name}`));
      for (const ns of NAMESPACES) expect(every.filter((procedure) => !sides[ns].called.has(procedure)), ns).toEqual([]);
    });
  });

  describe("max_queued_dispatches", () => {
    it("refuses an enqueue past the namespace's limit with RESOURCE_EXHAUSTED (QUEUE_LIMIT); other namespaces are unaffected", async () => {
      const capped = sideOf("capped", server.url, fixture.token("capped-producer"), sessions);
      await capped.mailbox.enqueueBatch({ dispatches: [{ threadId: "q", runId: "r" }, { threadId: "q", runId: "r" }] });
      const refused = await refusal(capped.mailbox.enqueue({ dispatch: { threadId: "q", runId: "r" } }));
      expect(refused).toEqual({ code: Code.ResourceExhausted, reason: ErrorReason.QUEUE_LIMIT, metadata: { namespace: "capped", limit: "2" } });
      expect((await capped.mailbox.countDispatches({})).total).toBe(2n);
      await sides.alpha.mailbox.enqueueBatch({ dispatches: Array.from({ length: 5 }, () => ({ threadId: "q", runId: "r" })) });
    });
  });
});
