/**
 * PoolService: each handler checks its request (domain), calls the engine
 * (the use cases of its caller's namespace) and translates the answer. The
 * two record streams (a run's inbox and WatchPool) read the pool's kept
 * history.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { type AgentPoolMember, type AgentPoolRecord, type StoredMessage, type WakeRegistration, WakeRegistrationStatus } from "../../gen/mailroom/v1/pool_pb.js";
import {
  type AwaitWakeResponseSchema,
  InboxMessageSchema,
  type PoolService,
  type ReceiveMessagesResponseSchema,
  type SubscribePoolResponseSchema,
  type WatchPoolResponseSchema,
} from "../../gen/mailroom/v1/pool_service_pb.js";
import { type OutgoingMessage, parseMessage } from "../domain/pool/messages.js";
import { parsePoolList } from "../domain/pool/pages.js";
import { parseConfig, parseMember } from "../domain/pool/pool.js";
import { parseMaxMessages, parsePoolId, parsePoolStream, type PoolStreamCommand } from "../domain/pool/requests.js";
import { parseSubscribePool } from "../domain/pool/subscribe.js";
import { parseWakeCondition } from "../domain/pool/wakes.js";
import { heartbeatInterval, requireId } from "../domain/validate.js";
import type { Engine } from "../engine/engine.js";
import type { PoolRecordStream } from "../engine/pool/record-stream.js";
import { memberToDoc, memberToProto, poolRecordOf } from "../engine/pool/records.js";
import { PushQueue } from "../engine/push-queue.js";
import { formatOf, subscriptionFrame } from "./event-frames.js";
import { PoolAnswers } from "./pool-answers.js";
import { scopeOf } from "./principal.js";
import { heartbeat, type ServerStreams, type StreamSource } from "./streams.js";

export function poolService(engine: Engine, streams: ServerStreams, maxMessageBytes: number): ServiceImpl<typeof PoolService> {
  const answers = new PoolAnswers(maxMessageBytes);

  /** The pool's members, as ListMembers answers them (NOT_FOUND for an unknown pool). */
  async function members(context: HandlerContext, poolId: string): Promise<AgentPoolMember[]> {
    const { pools } = scopeOf(engine, context);
    await pools.get(poolId); // an unknown pool is NOT_FOUND, not empty
    return (await pools.members.list(poolId)).map((m) => memberToProto(memberToDoc(m)));
  }

  /** Before storing a message: refuses it when its delivery frames could not be served (see PoolAnswers). */
  async function checkMessage(context: HandlerContext, poolId: string, outgoing: OutgoingMessage, field: string): Promise<OutgoingMessage> {
    if (!answers.messageAlwaysFits(outgoing.message)) answers.checkMessage(outgoing.message, (await members(context, poolId)).map((m) => m.runId), field);
    return outgoing;
  }

  return {
    async openPool(request, context) {
      const { pools } = scopeOf(engine, context);
      const { pool, opened } = await pools.open(parsePoolId(request.poolId), parseConfig(request.config));
      return { snapshot: answers.fitSnapshot(await pools.snapshot(pool._id, parseMaxMessages(0)), formatOf(context)), opened };
    },

    async getPool(request, context) {
      return { snapshot: answers.fitSnapshot(await scopeOf(engine, context).pools.snapshot(parsePoolId(request.poolId), parseMaxMessages(request.maxMessages)), formatOf(context)) };
    },

    async joinRun(request, context) {
      const poolId = parsePoolId(request.poolId);
      const member = parseMember("member", request.member);
      const joining = memberToProto(memberToDoc(member));
      answers.checkMembers([...(await members(context, poolId)).filter((m) => m.runId !== member.runId), joining]);
      const joined = await scopeOf(engine, context).pools.join(poolId, member);
      return { member: memberToProto(memberToDoc(joined.member)), poolCreated: joined.poolCreated, cursor: BigInt(joined.seq) };
    },

    async leaveRun(request, context) {
      const poolId = parsePoolId(request.poolId);
      const left = await scopeOf(engine, context).pools.leave(poolId, requireId("run_id", request.runId));
      return { member: memberToProto(memberToDoc(left.member)), cursor: BigInt(left.seq) };
    },

    async listMembers(request, context) {
      return { members: await members(context, parsePoolId(request.poolId)) };
    },

    async send(request, context) {
      const poolId = parsePoolId(request.poolId);
      const outgoing = await checkMessage(context, poolId, parseMessage("message", request.message, poolId, false, engine.clock.now()), "message");
      return scopeOf(engine, context).messages.send(poolId, outgoing);
    },

    async respond(request, context) {
      const poolId = parsePoolId(request.poolId);
      const outgoing = await checkMessage(context, poolId, parseMessage("reply", request.reply, poolId, true, engine.clock.now()), "reply");
      return scopeOf(engine, context).messages.respond(poolId, outgoing, request.reply?.to !== undefined);
    },

    async cancelMessage(request, context) {
      const poolId = parsePoolId(request.poolId);
      return { receipt: await scopeOf(engine, context).messages.cancel(poolId, requireId("message_id", request.messageId), requireId("run_id", request.runId)) };
    },

    receiveMessages(request, context) {
      const command = parsePoolStream({ poolId: request.poolId, afterCursor: request.afterCursor, heartbeatInterval: request.heartbeatInterval });
      const runId = requireId("run_id", request.runId);
      return streams.serve(context, async () => {
        // NOT_FOUND and a refused cursor come before the first frame.
        const stream = await scopeOf(engine, context).pools.records(command.poolId, { ...command, recipient: runId });
        return poolRecords(stream, command, context, { frame: { case: "heartbeat", value: heartbeat() } }, (frame): ReceiveMessagesFrame | undefined => {
          if (frame.case === "heartbeat") return { frame };
          if (frame.value.record.case !== "message") return undefined;
          const stored: StoredMessage = frame.value.record.value;
          return { frame: { case: "message", value: create(InboxMessageSchema, { cursor: frame.value.cursor, message: stored.message, receipt: stored.receipt, sequence: frame.value.sequence }) } };
        });
      });
    },

    async suspendUntil(request, context) {
      const poolId = parsePoolId(request.poolId);
      const wake = parseWakeCondition(request.runId, request.condition);
      answers.checkWake(wake.condition);
      return scopeOf(engine, context).wakes.suspend(poolId, wake);
    },

    async pollWake(request, context) {
      return { registration: await scopeOf(engine, context).wakes.poll(parsePoolId(request.poolId), requireId("condition_id", request.conditionId)) };
    },

    async cancelWake(request, context) {
      return { registration: await scopeOf(engine, context).wakes.cancel(parsePoolId(request.poolId), requireId("condition_id", request.conditionId)) };
    },

    awaitWake(request, context) {
      const poolId = parsePoolId(request.poolId);
      const conditionId = requireId("condition_id", request.conditionId);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      return streams.serve(context, async (): Promise<StreamSource<AwaitWakeFrame>> => {
        const scope = scopeOf(engine, context);
        const settled = new PushQueue<WakeRegistration>(1);
        // Listen before reading, so a change between the two is not missed.
        const stopListening = engine.wakeMatcher.whenSettled(scope.namespace, poolId, conditionId, () => {
          scope.wakes.poll(poolId, conditionId).then((r) => settled.push(r), () => settled.close());
        });
        const close = () => {
          stopListening();
          settled.close();
        };
        let first: WakeRegistration;
        try {
          first = await scope.wakes.poll(poolId, conditionId);
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

    async deletePool(request, context) {
      const { cancelledWakes } = await scopeOf(engine, context).poolDeletion.delete(parsePoolId(request.poolId));
      return { cancelledWakeConditions: BigInt(cancelledWakes) };
    },

    async listMessages(request, context) {
      return scopeOf(engine, context).messages.list(parsePoolList(parsePoolId(request.poolId), request));
    },

    async listWakeConditions(request, context) {
      return scopeOf(engine, context).wakes.list(parsePoolList(parsePoolId(request.poolId), request));
    },

    subscribePool(request, context) {
      const command = parseSubscribePool(request);
      const wire = formatOf(context);
      return streams.serve(context, async (): Promise<StreamSource<SubscribePoolFrame>> => {
        // NOT_FOUND, RUN_NOT_MEMBER and a refused cursor come before the first frame.
        const subscription = await scopeOf(engine, context).poolSubscriptions.open(command);
        return {
          async next() {
            const frame = await subscription.next(command.heartbeatMs, context.signal);
            if (frame) return { frame: subscriptionFrame(frame, command.scope, subscription.payloadAccess, wire) };
            if (context.signal.aborted) throw context.signal.reason;
            return undefined;
          },
          close: () => subscription.close(),
        };
      });
    },

    watchPool(request, context) {
      const command = parsePoolStream(request);
      return streams.serve(context, async () => {
        const stream = await scopeOf(engine, context).pools.records(command.poolId, command);
        return poolRecords(stream, command, context, undefined, (frame): WatchPoolFrame => ({ frame: frame.case === "heartbeat" ? frame : { case: "record", value: frame.value } }));
      });
    },
  };
}

type ReceiveMessagesFrame = MessageInitShape<typeof ReceiveMessagesResponseSchema>;
type AwaitWakeFrame = MessageInitShape<typeof AwaitWakeResponseSchema>;
type WatchPoolFrame = MessageInitShape<typeof WatchPoolResponseSchema>;
type SubscribePoolFrame = MessageInitShape<typeof SubscribePoolResponseSchema>;

type PoolFrame = { case: "record"; value: AgentPoolRecord } | { case: "heartbeat"; value: ReturnType<typeof heartbeat> };

/**
 * A pool's kept records after the cursor, then live, each as `message` makes
 * it (undefined skips it); a heartbeat when caught up and when idle; `first`
 * before anything. Closes the record stream when the stream ends.
 */
function poolRecords<M>(
  stream: PoolRecordStream,
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
        const frame = await stream.next(command.heartbeatMs, context.signal);
        if (!frame) {
          if (context.signal.aborted) throw context.signal.reason;
          return undefined;
        }
        const made = message(frame.kind === "record" ? { case: "record", value: poolRecordOf(frame.record) } : { case: "heartbeat", value: heartbeat() });
        if (made !== undefined) return made;
      }
    },
    close: () => stream.close(),
  };
}
