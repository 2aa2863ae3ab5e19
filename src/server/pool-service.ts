/**
 * PoolService: each handler checks its request (domain), calls the engine
 * (the use cases of its caller's namespace) and translates the answer. The two record streams (a run's inbox and
 * WatchPool) read the pool's kept history.
 */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { type AgentPoolRecord, type StoredMessage, type WakeRegistration, WakeRegistrationStatus } from "../../gen/mailroom/v1/pool_pb.js";
import { InboxMessageSchema, type PoolService } from "../../gen/mailroom/v1/pool_service_pb.js";
import { parseMessage } from "../domain/pool/messages.js";
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
import { subscriptionFrame, wireFormatOf } from "./event-frames.js";
import { scopeOf } from "./principal.js";
import { heartbeat } from "./streams.js";

export function poolService(engine: Engine): ServiceImpl<typeof PoolService> {
  return {
    async openPool(request, context) {
      const { pools } = scopeOf(engine, context);
      const { pool, opened } = await pools.open(parsePoolId(request.poolId), parseConfig(request.config));
      return { snapshot: await pools.snapshot(pool._id, parseMaxMessages(0)), opened };
    },

    async getPool(request, context) {
      return { snapshot: await scopeOf(engine, context).pools.snapshot(parsePoolId(request.poolId), parseMaxMessages(request.maxMessages)) };
    },

    async joinRun(request, context) {
      const joined = await scopeOf(engine, context).pools.join(parsePoolId(request.poolId), parseMember("member", request.member));
      return { member: memberToProto(memberToDoc(joined.member)), poolCreated: joined.poolCreated, cursor: BigInt(joined.seq) };
    },

    async leaveRun(request, context) {
      const poolId = parsePoolId(request.poolId);
      const left = await scopeOf(engine, context).pools.leave(poolId, requireId("run_id", request.runId));
      return { member: memberToProto(memberToDoc(left.member)), cursor: BigInt(left.seq) };
    },

    async listMembers(request, context) {
      const poolId = parsePoolId(request.poolId);
      const { pools } = scopeOf(engine, context);
      await pools.get(poolId); // an unknown pool is NOT_FOUND, not empty
      return { members: (await pools.members.list(poolId)).map((m) => memberToProto(memberToDoc(m))) };
    },

    async send(request, context) {
      const poolId = parsePoolId(request.poolId);
      return scopeOf(engine, context).messages.send(poolId, parseMessage("message", request.message, poolId, false));
    },

    async respond(request, context) {
      const poolId = parsePoolId(request.poolId);
      return scopeOf(engine, context).messages.respond(poolId, parseMessage("reply", request.reply, poolId, true), request.reply?.to !== undefined);
    },

    async cancelMessage(request, context) {
      const poolId = parsePoolId(request.poolId);
      return { receipt: await scopeOf(engine, context).messages.cancel(poolId, requireId("message_id", request.messageId), requireId("run_id", request.runId)) };
    },

    async *receiveMessages(request, context) {
      const command = parsePoolStream({ poolId: request.poolId, afterCursor: request.afterCursor, heartbeatInterval: request.heartbeatInterval });
      const runId = requireId("run_id", request.runId);
      // NOT_FOUND and a refused cursor come before the first frame.
      const stream = await scopeOf(engine, context).pools.records(command.poolId, { ...command, recipient: runId });
      try {
        yield { frame: { case: "heartbeat", value: heartbeat() } };
        for await (const frame of poolRecords(stream, command, context)) {
          if (frame.case === "heartbeat") {
            yield { frame };
          } else if (frame.value.record.case === "message") {
            const stored: StoredMessage = frame.value.record.value;
            yield { frame: { case: "message", value: create(InboxMessageSchema, { cursor: frame.value.cursor, message: stored.message, receipt: stored.receipt, sequence: frame.value.sequence }) } };
          }
        }
      } finally {
        stream.close(); // also when the client leaves at the first frame
      }
    },

    async suspendUntil(request, context) {
      const poolId = parsePoolId(request.poolId);
      return scopeOf(engine, context).wakes.suspend(poolId, parseWakeCondition(request.runId, request.condition));
    },

    async pollWake(request, context) {
      return { registration: await scopeOf(engine, context).wakes.poll(parsePoolId(request.poolId), requireId("condition_id", request.conditionId)) };
    },

    async cancelWake(request, context) {
      return { registration: await scopeOf(engine, context).wakes.cancel(parsePoolId(request.poolId), requireId("condition_id", request.conditionId)) };
    },

    async *awaitWake(request, context) {
      const poolId = parsePoolId(request.poolId);
      const conditionId = requireId("condition_id", request.conditionId);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      const settled = new PushQueue<WakeRegistration>(1);
      // Listen before reading, so a change between the two is not missed.
      const scope = scopeOf(engine, context);
      const stopListening = engine.wakeMatcher.whenSettled(scope.namespace, poolId, conditionId, () => {
        scope.wakes.poll(poolId, conditionId).then((r) => settled.push(r), () => settled.close());
      });
      try {
        const current = await scope.wakes.poll(poolId, conditionId);
        yield { frame: { case: "registration", value: current } };
        if (current.status !== WakeRegistrationStatus.REGISTERED) return;
        for (;;) {
          const next = await settled.next(heartbeatMs, context.signal);
          if ("value" in next) return yield { frame: { case: "registration", value: next.value } };
          if ("timeout" in next) yield { frame: { case: "heartbeat", value: heartbeat() } };
          else if (context.signal.aborted) throw context.signal.reason;
          else return;
        }
      } finally {
        stopListening();
      }
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

    async *subscribePool(request, context) {
      const command = parseSubscribePool(request);
      // NOT_FOUND, RUN_NOT_MEMBER and a refused cursor come before the first frame.
      const subscription = await scopeOf(engine, context).poolSubscriptions.open(command);
      const wire = wireFormatOf(context.requestHeader.get("content-type"));
      try {
        for (;;) {
          const frame = await subscription.next(command.heartbeatMs, context.signal);
          if (!frame) break;
          yield { frame: subscriptionFrame(frame, command.scope, subscription.payloadAccess, wire) };
        }
        if (context.signal.aborted) throw context.signal.reason;
      } finally {
        subscription.close();
      }
    },

    async *watchPool(request, context) {
      const command = parsePoolStream(request);
      const stream = await scopeOf(engine, context).pools.records(command.poolId, command);
      for await (const frame of poolRecords(stream, command, context)) {
        yield { frame: frame.case === "heartbeat" ? frame : { case: "record", value: frame.value } };
      }
    },
  };
}

type PoolFrame = { case: "record"; value: AgentPoolRecord } | { case: "heartbeat"; value: ReturnType<typeof heartbeat> };

/** A pool's kept records after the cursor, then live; a heartbeat when caught up and when idle. Closes the stream when it ends. */
async function* poolRecords(stream: PoolRecordStream, command: PoolStreamCommand, context: HandlerContext): AsyncGenerator<PoolFrame> {
  try {
    for (;;) {
      const frame = await stream.next(command.heartbeatMs, context.signal);
      if (!frame) break;
      if (frame.kind === "record") yield { case: "record", value: poolRecordOf(frame.record) };
      else yield { case: "heartbeat", value: heartbeat() };
    }
    if (context.signal.aborted) throw context.signal.reason;
  } finally {
    stream.close();
  }
}
