/**
 * Representative use of every service, through the contract, on a given
 * store: what a query-shape recording needs to see every kind of query the
 * engine issues. Two in-process server instances share the store (the second
 * starts after the first has data, so start-up queries run against it) on a
 * clock the flows move by hand; sweeps that run on timers in production are
 * run here directly.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ManualClock } from "../../src/domain/clock.js";
import { RunDispatchStatus as Status, RunStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { createMailroomClients, type MailroomClients } from "../../src/client/index.js";
import { resolveServerConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server/server.js";
import type { Store } from "../../src/store/port.js";
import { publish } from "./events.js";
import { captureLog } from "./log-capture.js";
import { Frames, ms, say } from "./mailbox.js";
import { body, toAgent, toPool, toRun, toTopic } from "./pools.js";

const LEASE = ms(30_000);

async function startInstance(store: Store, clock: ManualClock): Promise<{ server: RunningServer; clients: MailroomClients }> {
  const server = await startServer(resolveServerConfig({ port: 0 }), {
    store,
    logger: captureLog("warn").logger,
    closeStore: false,
    engine: { clock, background: false, journal: { holeTimeoutMs: 50 } },
  });
  return { server, clients: createMailroomClients({ baseUrl: server.url, protocol: "connect" }) };
}

/** Reads the first frames of a stream (up to `count`, or what comes within a moment), then closes it. */
async function firstFrames<T>(open: (signal: AbortSignal) => AsyncIterable<T>, count: number): Promise<T[]> {
  const frames = new Frames(open);
  const read: T[] = [];
  try {
    while (read.length < count) read.push(await frames.next("a frame", 2_000).catch(() => undefined as T));
  } finally {
    frames.close();
  }
  return read.filter((frame) => frame !== undefined);
}

async function mailboxFlows({ mailbox }: MailroomClients, clock: ManualClock, server: RunningServer): Promise<void> {
  const threads = ["flow-a", "flow-b", "flow-c"];
  await mailbox.enqueueBatch({
    dispatches: threads.flatMap((threadId, t) => [
      { threadId, runId: `run-${t}`, priority: 200, dedupeKey: `k-${t}-1` },
      { threadId, runId: `run-${t}`, priority: 100 },
      { threadId, runId: `run-${t}`, priority: 50, delay: ms(60_000) },
    ]),
  });
  await mailbox.enqueue({ dispatch: { threadId: "flow-a", runId: "run-0", dedupeKey: "k-0-1" } });
  await mailbox.enqueue({ dispatch: { threadId: "flow-d", dispatchId: "flow-d-1", runId: "run-d" } });
  await mailbox.listQueuedThreads({ pageSize: 2 });
  await mailbox.listDispatches({ threadId: "flow-a", statuses: [Status.QUEUED], pageSize: 2 });
  await mailbox.listDispatches({ pageSize: 2 });
  await mailbox.countDispatches({ threadId: "flow-a" });
  await mailbox.countDispatches({ statuses: [Status.QUEUED, Status.CLAIMED] });

  // Claim across threads, then work each claim a different way.
  const { dispatches: claimed } = await mailbox.claim({ consumerId: "w1", lease: LEASE, limit: 3 });
  const [first, second, third] = claimed;
  if (first) {
    await mailbox.recordDispatchStart({ dispatchId: first.dispatchId, claimToken: first.claimToken, dispatchInstanceId: "i-1" });
    await mailbox.extendLease({ dispatchId: first.dispatchId, claimToken: first.claimToken, extension: LEASE });
    await mailbox.recordRunResult({ dispatchId: first.dispatchId, claimToken: first.claimToken, result: { runStatus: RunStatus.DONE, response: "done" } });
    await mailbox.ack({ dispatchId: first.dispatchId, claimToken: first.claimToken });
  }
  if (second) await mailbox.nack({ dispatchId: second.dispatchId, claimToken: second.claimToken, retry: { case: "delay", value: ms(1_000) }, error: "try again" });
  if (third) await mailbox.supersedeClaimed({ dispatchId: third.dispatchId, claimToken: third.claimToken, reason: "newer work" });
  const { dispatches: inThread } = await mailbox.claim({ threadId: "flow-a", consumerId: "w2", lease: LEASE, limit: 1 });
  if (inThread[0]) await mailbox.deadLetter({ dispatchId: inThread[0].dispatchId, claimToken: inThread[0].claimToken, error: "poison" });
  const named = await mailbox.claimDispatch({ dispatchId: "flow-d-1", consumerId: "w3", lease: ms(1_000) });
  await mailbox.interrupt({ threadId: "flow-b", detailed: true });
  await mailbox.getDispatchEpoch({ threadId: "flow-b" });
  await mailbox.getDispatch({ dispatchId: "flow-d-1" });
  await mailbox.cancel({ dispatchId: "flow-d-1", reason: "not needed" });

  // Time passes: leases expire, delays come due.
  clock.advance(120_000);
  await mailbox.reclaimExpiredLeases({});
  await server.engine.background.sweepLeases();
  await server.engine.background.checkAvailability();
  const { dispatches: later } = await mailbox.claim({ consumerId: "w4", lease: LEASE, limit: 5 });
  if (later.length > 0) await mailbox.ackBatch({ claims: later.map((d) => ({ dispatchId: d.dispatchId, claimToken: d.claimToken })) });
  if (named.dispatch) await mailbox.ack({ dispatchId: named.dispatch.dispatchId, claimToken: named.dispatch.claimToken }).catch(() => undefined);
  await mailbox.listTerminalDispatches({ pageSize: 2 });
  await mailbox.listTerminalDispatches({ threadId: "flow-a", pageSize: 2 });
  await firstFrames((signal) => mailbox.watchDispatchSignals({ heartbeatInterval: ms(60_000) }, { signal }), 1);
  await firstFrames((signal) => mailbox.watchDispatchSignals({ threadId: "flow-c", heartbeatInterval: ms(60_000) }, { signal }), 1);

  // Live commands: a channel, a delivery, an ack; and one delivered to nobody.
  const target = { threadId: "flow-live", runId: "run-live" };
  const channel = new Frames((signal) => mailbox.openLiveChannel({ target }, { signal }));
  await channel.next("the channel's first frame");
  const sent = await mailbox.deliverLive({ target, command: say("hello") });
  await channel.next("the command");
  await mailbox.ackLiveCommand({ commandId: sent.commandId });
  channel.close();
  await mailbox.deliverLive({ target: { threadId: "nobody", runId: "nobody" }, command: say("lost") });

  // Retention.
  clock.advance(8 * 86_400_000);
  await mailbox.purgeTerminal({ completedBefore: timestampFromMs(clock.now()) });
  await server.engine.background.purge();
  await server.engine.background.repair();
  await server.engine.live.purge();
}

async function eventFlows({ events }: MailroomClients): Promise<void> {
  for (let i = 0; i < 5; i++) await publish(events, { kind: EventKind.RUN_STARTED, runId: `ev-run-${i % 2}`, agentId: "ev-agent", tags: ["flow"] });
  await publish(events, { kind: EventKind.CUSTOM, customKind: "flow.custom", runId: "ev-run-0" });
  await events.listEvents({ scope: { case: "all", value: {} }, pageSize: 3 });
  await events.listEvents({ scope: { case: "runId", value: "ev-run-1" }, pageSize: 3 });
  await events.listEvents({ scope: { case: "agentId", value: "ev-agent" }, pageSize: 3 });
  for (const filter of [{ runIds: ["ev-run-0", "ev-run-1"] }, { kinds: [EventKind.RUN_STARTED] }, { tags: ["flow"] }, { customKinds: ["flow.custom"] }, { threadIds: ["flow-a"] }, { poolIds: ["p"] }]) {
    await events.listEvents({ scope: { case: "filter", value: filter }, pageSize: 3 });
  }
  await firstFrames((signal) => events.subscribe({ scope: { case: "runId", value: "ev-run-0" }, after: { eventSeq: 1n } }, { signal }), 4);
  await firstFrames((signal) => events.subscribe({ scope: { case: "all", value: {} } }, { signal }), 3);
}

async function poolFlows({ pools, events }: MailroomClients, clock: ManualClock, server: RunningServer): Promise<void> {
  const poolId = "flow-pool";
  await pools.openPool({ poolId });
  const member = (runId: string, agentId: string, topics: string[] = []) => pools.joinRun({ poolId, member: { runId, agentId, topics } });
  await member("writer", "writer-agent", ["drafts"]);
  await member("critic", "critic-agent", ["drafts"]);
  await member("leaver", "leaver-agent");
  await pools.listMembers({ poolId });
  const inbox = new Frames((signal) => pools.receiveMessages({ poolId, runId: "critic", heartbeatInterval: ms(60_000) }, { signal }));
  await inbox.next("the inbox's first frame");
  const asked = await pools.send({ poolId, message: { fromRunId: "writer", to: toRun("critic"), body: body("review?"), idempotencyKey: "ask-1", responseContract: { expectedResponses: 1, timeout: ms(60_000) } } });
  await pools.send({ poolId, message: { fromRunId: "writer", to: toRun("critic"), idempotencyKey: "ask-1" } });
  await pools.send({ poolId, message: { fromRunId: "writer", to: toAgent("critic-agent") } });
  await pools.send({ poolId, message: { fromRunId: "writer", to: toTopic("drafts") } });
  const broadcast = await pools.send({ poolId, message: { fromRunId: "critic", to: toPool(poolId), responseContract: { expectedResponses: 2, timeout: ms(1_000) } } });
  await inbox.next("a message");
  inbox.close();
  await pools.respond({ poolId, reply: { fromRunId: "critic", to: toRun("writer"), replyTo: asked.receipt!.messageId, body: body("ok") } });
  await pools.cancelMessage({ poolId, messageId: broadcast.receipt!.messageId, runId: "critic" }).catch(() => undefined);

  const wake = await pools.suspendUntil({ poolId, runId: "critic", condition: { runId: "critic", filter: { runIds: ["writer"], kinds: [EventKind.RUN_COMPLETED] }, timeout: ms(60_000), idempotencyKey: "wake-1" } });
  const conditionId = wake.registration!.conditionId;
  await pools.pollWake({ poolId, conditionId });
  const awaiting = firstFrames((signal) => pools.awaitWake({ poolId, conditionId }, { signal }), 2);
  await publish(events, { kind: EventKind.RUN_COMPLETED, runId: "writer" });
  await awaiting;
  const timed = await pools.suspendUntil({ poolId, runId: "writer", condition: { runId: "writer", filter: { runIds: ["critic"] }, timeout: ms(1_000) } });
  const cancelled = await pools.suspendUntil({ poolId, runId: "writer", condition: { runId: "writer", filter: { runIds: ["leaver"] }, timeout: ms(600_000) } });
  await pools.cancelWake({ poolId, conditionId: cancelled.registration!.conditionId });
  await pools.getPool({ poolId });
  await firstFrames((signal) => pools.watchPool({ poolId }, { signal }), 3);
  await pools.leaveRun({ poolId, runId: "leaver" });

  clock.advance(120_000);
  await server.engine.poolBackground.runDue();
  await server.engine.poolBackground.wakes.repairUnscanned();
  await pools.pollWake({ poolId, conditionId: timed.registration!.conditionId });
  await server.engine.retention.purge();
}

/**
 * Runs every flow through servers on `store` (which must be empty). The
 * second instance starts once the first has written everything, so its
 * start-up queries see data.
 */
export async function runRepresentativeFlows(store: Store): Promise<void> {
  const clock = new ManualClock();
  const first = await startInstance(store, clock);
  try {
    await mailboxFlows(first.clients, clock, first.server);
    await eventFlows(first.clients);
    await poolFlows(first.clients, clock, first.server);
  } finally {
    first.clients.close();
    await first.server.close();
  }
  const second = await startInstance(store, clock);
  try {
    await second.clients.mailbox.claim({ consumerId: "restarted", lease: LEASE, limit: 1 });
  } finally {
    second.clients.close();
    await second.server.close();
  }
}
