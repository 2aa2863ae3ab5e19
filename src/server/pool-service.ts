/**
 * PoolService: each handler checks its request (domain), calls the engine
 * and translates the answer. The two record streams (a run's inbox and
 * WatchPool) are journal subscriptions narrowed to the pool.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { type AgentPoolRecord, type StoredMessage, type WakeRegistration, WakeRegistrationStatus } from "../../gen/mailroom/v1/pool_pb.js";
import {
  type AwaitWakeResponseSchema,
  InboxMessageSchema,
  type PoolService,
  type ReceiveMessagesResponseSchema,
  type WatchPoolResponseSchema,
} from "../../gen/mailroom/v1/pool_service_pb.js";
import { EventFamily, EventKind, JournalCursorSchema, PayloadAccessMode } from "../../gen/mailroom/v1/event_pb.js";
import { parseMessage } from "../domain/pool/messages.js";
import { parseConfig, parseMember } from "../domain/pool/pool.js";
import { parseMaxMessages, parsePoolId, parsePoolStream, POOL_STREAM_QUEUE, type PoolStreamCommand } from "../domain/pool/requests.js";
import { parseWakeCondition } from "../domain/pool/wakes.js";
import type { FilterSpec } from "../domain/events/filter.js";
import { heartbeatInterval, requireId } from "../domain/validate.js";
import type { Engine } from "../engine/engine.js";
import type { Subscription } from "../engine/events/subscription.js";
import type { EventDoc } from "../engine/journal/records.js";
import { memberToDoc, memberToProto, poolRecordAt } from "../engine/pool/records.js";
import { PushQueue } from "../engine/push-queue.js";
import { heartbeat, type ServerStreams, type StreamSource } from "./streams.js";

export function poolService(engine: Engine, streams: ServerStreams): ServiceImpl<typeof PoolService> {
  return {
    async openPool(request) {
      const { pool, opened } = await engine.pools.open(parsePoolId(request.poolId), parseConfig(request.config));
      return { snapshot: await engine.pools.snapshot(pool._id, parseMaxMessages(0)), opened };
    },

    async getPool(request) {
      return { snapshot: await engine.pools.snapshot(parsePoolId(request.poolId), parseMaxMessages(request.maxMessages)) };
    },

    async joinRun(request) {
      const joined = await engine.pools.join(parsePoolId(request.poolId), parseMember("member", request.member));
      return { member: memberToProto(memberToDoc(joined.member)), poolCreated: joined.poolCreated, cursor: BigInt(joined.seq) };
    },

    async leaveRun(request) {
      const poolId = parsePoolId(request.poolId);
      const left = await engine.pools.leave(poolId, requireId("run_id", request.runId));
      return { member: memberToProto(memberToDoc(left.member)), cursor: BigInt(left.seq) };
    },

    async listMembers(request) {
      const pool = await engine.pools.get(parsePoolId(request.poolId));
      return { members: pool.members.map(memberToProto) };
    },

    async send(request) {
      const poolId = parsePoolId(request.poolId);
      return engine.messages.send(poolId, parseMessage("message", request.message, poolId, false));
    },

    async respond(request) {
      const poolId = parsePoolId(request.poolId);
      return engine.messages.respond(poolId, parseMessage("reply", request.reply, poolId, true), request.reply?.to !== undefined);
    },

    async cancelMessage(request) {
      const poolId = parsePoolId(request.poolId);
      return { receipt: await engine.messages.cancel(poolId, requireId("message_id", request.messageId), requireId("run_id", request.runId)) };
    },

    receiveMessages(request, context) {
      const command = parsePoolStream({ poolId: request.poolId, afterCursor: request.afterCursor, heartbeatInterval: request.heartbeatInterval });
      const runId = requireId("run_id", request.runId);
      const filter: FilterSpec = { poolIds: new Set([command.poolId]), kinds: new Set([EventKind.RUN_MESSAGE_DELIVERED]), recipients: new Set([runId]), payloadAccess: PayloadAccessMode.FULL };
      return streams.serve(context, async () => {
        // NOT_FOUND and a refused cursor come before the first frame.
        const subscription = await openPoolRecords(engine, command, filter);
        return poolRecords(subscription, command, context, { frame: { case: "heartbeat", value: heartbeat() } }, (frame): ReceiveMessagesFrame | undefined => {
          if (frame.case === "heartbeat") return { frame };
          if (frame.value.record.case !== "message") return undefined;
          const stored: StoredMessage = frame.value.record.value;
          return { frame: { case: "message", value: create(InboxMessageSchema, { cursor: frame.value.cursor, message: stored.message, receipt: stored.receipt }) } };
        });
      });
    },

    async suspendUntil(request) {
      const poolId = parsePoolId(request.poolId);
      return engine.wakes.suspend(poolId, parseWakeCondition(request.runId, request.condition));
    },

    async pollWake(request) {
      return { registration: await engine.wakes.poll(parsePoolId(request.poolId), requireId("condition_id", request.conditionId)) };
    },

    async cancelWake(request) {
      return { registration: await engine.wakes.cancel(parsePoolId(request.poolId), requireId("condition_id", request.conditionId)) };
    },

    awaitWake(request, context) {
      const poolId = parsePoolId(request.poolId);
      const conditionId = requireId("condition_id", request.conditionId);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      return streams.serve(context, async (): Promise<StreamSource<AwaitWakeFrame>> => {
        const settled = new PushQueue<WakeRegistration>(1);
        // Listen before reading, so a change between the two is not missed.
        const stopListening = engine.wakeMatcher.whenSettled(poolId, conditionId, () => {
          engine.wakes.poll(poolId, conditionId).then((r) => settled.push(r), () => settled.close());
        });
        const close = () => {
          stopListening();
          settled.close();
        };
        let first: WakeRegistration;
        try {
          first = await engine.wakes.poll(poolId, conditionId);
        } catch (error) {
          close();
          throw error;
        }
        // The registration first; then, while it is REGISTERED, heartbeats until it settles.
        let pending: WakeRegistration | undefined = first;
        let waiting = first.status === WakeRegistrationStatus.REGISTERED;
        return {
          async next() {
            if (pending) {
              const registration = pending;
              pending = undefined;
              return { frame: { case: "registration", value: registration } };
            }
            if (!waiting) return undefined;
            const next = await settled.next(heartbeatMs, context.signal);
            if ("value" in next) {
              waiting = false;
              return { frame: { case: "registration", value: next.value } };
            }
            if ("timeout" in next) return { frame: { case: "heartbeat", value: heartbeat() } };
            if (context.signal.aborted) throw context.signal.reason;
            return undefined;
          },
          close,
        };
      });
    },

    watchPool(request, context) {
      const command = parsePoolStream(request);
      const filter: FilterSpec = { poolIds: new Set([command.poolId]), families: new Set([EventFamily.AGENT_POOL]), payloadAccess: PayloadAccessMode.FULL };
      return streams.serve(context, async () => {
        const subscription = await openPoolRecords(engine, command, filter);
        return poolRecords(subscription, command, context, undefined, (frame): WatchPoolFrame => ({ frame: frame.case === "heartbeat" ? frame : { case: "record", value: frame.value } }));
      });
    },
  };
}

type ReceiveMessagesFrame = MessageInitShape<typeof ReceiveMessagesResponseSchema>;
type AwaitWakeFrame = MessageInitShape<typeof AwaitWakeResponseSchema>;
type WatchPoolFrame = MessageInitShape<typeof WatchPoolResponseSchema>;

type PoolFrame = { case: "record"; value: AgentPoolRecord } | { case: "heartbeat"; value: ReturnType<typeof heartbeat> };

/** Checks the pool (NOT_FOUND) and the cursor (OUT_OF_RANGE), and opens the journal subscription behind a pool stream. */
async function openPoolRecords(engine: Engine, command: PoolStreamCommand, filter: FilterSpec): Promise<Subscription> {
  await engine.pools.get(command.poolId);
  return engine.events.open({ filter, after: command.after, queue: POOL_STREAM_QUEUE });
}

/**
 * A pool's records after the cursor, then live, each as `message` makes it
 * (undefined skips it); a heartbeat when caught up and when idle; `first`
 * before anything. Closes the subscription when the stream ends.
 */
function poolRecords<M>(
  subscription: Subscription,
  command: PoolStreamCommand,
  context: HandlerContext,
  first: M | undefined,
  message: (frame: PoolFrame) => M | undefined,
): StreamSource<M> {
  let pending = first;
  return {
    async next() {
      if (pending !== undefined) {
        const frame = pending;
        pending = undefined;
        return frame;
      }
      for (;;) {
        const frame = await subscription.next(command.heartbeatMs, context.signal);
        if (!frame) {
          if (context.signal.aborted) throw context.signal.reason;
          return undefined;
        }
        const made = message(frame.kind === "event" ? { case: "record", value: recordOf(frame.delivery.frame.item) } : { case: "heartbeat", value: heartbeat() });
        if (made !== undefined) return made;
      }
    },
    close: () => subscription.close(),
  };
}

/** The journaled pool record, with its position and the journal cursor of the status it records. */
function recordOf(doc: EventDoc): AgentPoolRecord {
  const record = poolRecordAt(doc.record!, doc._id);
  const cursor = create(JournalCursorSchema, { eventSeq: BigInt(doc._id) });
  if (record.record.case === "message" && record.record.value.receipt) record.record.value.receipt.journalCursor = cursor;
  if (record.record.case === "wake" && record.record.value.registration) record.record.value.registration.journalCursor = cursor;
  return record;
}
