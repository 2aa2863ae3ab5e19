/**
 * MailboxService: each handler checks its request (domain), calls the engine
 * (the use cases of its caller's namespace) and translates the answer.
 * Nothing else happens here.
 */
import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { DispatchSignalSchema, DispatchStatusCountSchema } from "../../gen/mailroom/v1/dispatch_pb.js";
import { LiveRunCommandSchema } from "../../gen/mailroom/v1/live_pb.js";
import {
  AckBatchResponseSchema,
  AckResultSchema,
  DispatchSignalReceiptSchema,
  EnqueueBatchResponseSchema,
  EnqueueResultSchema,
  MailboxService,
  OpenLiveChannelResponseSchema,
  WatchDispatchSignalsResponseSchema,
} from "../../gen/mailroom/v1/mailbox_service_pb.js";
import {
  MAX_PAGE_SIZE,
  parseAckBatch,
  parseClaim,
  parseClaimRef,
  parseEnqueueBatch,
  parseErrorText,
  parseLease,
  parseList,
  parseNewDispatch,
  parseReason,
  parseRetry,
  parseRunResult,
  parseStatuses,
} from "../domain/dispatch/commands.js";
import { parseLiveCommand, parseLiveTarget } from "../domain/dispatch/live-commands.js";
import { parseAck, parseNack, parsePull } from "../domain/dispatch/signal-receipts.js";
import { statusToProto } from "../domain/dispatch/state.js";
import { MailroomError, invalidField, underField } from "../domain/errors.js";
import { durationInRange, heartbeatInterval, intInRange, optionalId, pageSize, requireId, requirePresent, timestampToMs } from "../domain/validate.js";
import type { Engine } from "../engine/engine.js";
import type { EnqueueOutcome } from "../engine/mailbox/mailbox.js";
import { toRunDispatch } from "../engine/mailbox/records.js";
import { PushQueue } from "../engine/push-queue.js";
import type { WorkSignal } from "../engine/mailbox/work-signals.js";
import { itemError } from "./errors.js";
import { scopeOf } from "./principal.js";
import { heartbeatStream } from "./streams.js";

/** Signals a slow watcher has not read yet; older ones are dropped (they are hints). */
const SIGNAL_BUFFER = 10_000;

function enqueued(outcome: EnqueueOutcome, i: number) {
  if ("error" in outcome) return create(EnqueueResultSchema, { error: itemError(underField(outcome.error, `dispatches[${i}]`)) });
  return create(EnqueueResultSchema, { dispatch: toRunDispatch(outcome.dispatch), deduplicated: outcome.deduplicated });
}

export function mailboxService(engine: Engine): ServiceImpl<typeof MailboxService> {
  const limits = engine.mailboxLimits;
  const mailboxOf = (context: HandlerContext) => scopeOf(engine, context).mailbox;
  const queriesOf = (context: HandlerContext) => scopeOf(engine, context).queries;

  return {
    async enqueue(request, context) {
      const [outcome] = await mailboxOf(context).enqueue([parseNewDispatch("dispatch", request.dispatch, limits)]);
      if ("error" in outcome!) throw underField(outcome.error, "dispatch");
      return { dispatch: toRunDispatch(outcome!.dispatch), deduplicated: outcome!.deduplicated };
    },

    async enqueueBatch(request, context) {
      const outcomes = await mailboxOf(context).enqueue(parseEnqueueBatch(request.dispatches, limits));
      return create(EnqueueBatchResponseSchema, { results: outcomes.map(enqueued) });
    },

    async claim(request, context) {
      const claimed = await mailboxOf(context).claim(parseClaim(request, limits), context.signal);
      return { dispatches: claimed.map(toRunDispatch) };
    },

    async claimDispatch(request, context) {
      const dispatchId = requireId("dispatch_id", request.dispatchId);
      const consumerId = requireId("consumer_id", request.consumerId);
      return { dispatch: toRunDispatch(await mailboxOf(context).claimDispatch(dispatchId, consumerId, parseLease("lease", request.lease, limits))) };
    },

    async ack(request, context) {
      return { dispatch: toRunDispatch(await mailboxOf(context).ack(parseClaimRef(request))) };
    },

    async ackBatch(request, context) {
      const refs = parseAckBatch(request.claims, limits);
      const results = await mailboxOf(context).ackMany(refs);
      return create(AckBatchResponseSchema, {
        results: results.map((result, i) =>
          create(AckResultSchema, result instanceof MailroomError
            ? { dispatchId: refs[i]!.dispatchId, error: itemError(result) }
            : { dispatchId: result._id, dispatch: toRunDispatch(result) }),
        ),
      });
    },

    async recordDispatchStart(request, context) {
      const instance = requireId("dispatch_instance_id", request.dispatchInstanceId);
      return { dispatch: toRunDispatch(await mailboxOf(context).recordStart(parseClaimRef(request), instance)) };
    },

    async recordRunResult(request, context) {
      const ref = parseClaimRef(request);
      return { dispatch: toRunDispatch(await mailboxOf(context).recordResult(ref, parseRunResult(request.result))) };
    },

    async nack(request, context) {
      const ref = parseClaimRef(request);
      const dispatch = await mailboxOf(context).nack(ref, parseRetry(request.retry, limits), parseErrorText("error", request.error));
      return { dispatch: toRunDispatch(dispatch) };
    },

    async deadLetter(request, context) {
      const ref = parseClaimRef(request);
      return { dispatch: toRunDispatch(await mailboxOf(context).deadLetter(ref, parseErrorText("error", request.error))) };
    },

    async cancel(request, context) {
      const outcome = await mailboxOf(context).cancel(requireId("dispatch_id", request.dispatchId), parseReason("reason", request.reason));
      return { dispatch: toRunDispatch(outcome.dispatch), changed: outcome.changed };
    },

    async extendLease(request, context) {
      const ref = parseClaimRef(request);
      const outcome = await mailboxOf(context).extendLease(ref, parseNewLease(request, limits.maxLeaseMs));
      return { dispatch: toRunDispatch(outcome.dispatch), interrupted: outcome.interrupted, threadEpoch: BigInt(outcome.threadEpoch) };
    },

    async interrupt(request, context) {
      const outcome = await mailboxOf(context).interrupt(requireId("thread_id", request.threadId), request.detailed);
      return {
        newDispatchEpoch: BigInt(outcome.newEpoch),
        activeDispatch: outcome.active ? toRunDispatch(outcome.active) : undefined,
        supersededCount: BigInt(outcome.supersededCount),
        supersededDispatches: outcome.superseded.map(toRunDispatch),
      };
    },

    async getDispatchEpoch(request, context) {
      return { dispatchEpoch: BigInt(await scopeOf(engine, context).threads.epoch(requireId("thread_id", request.threadId))) };
    },

    async supersedeClaimed(request, context) {
      const ref = parseClaimRef(request);
      return { dispatch: toRunDispatch(await mailboxOf(context).supersedeClaimed(ref, parseReason("reason", request.reason))) };
    },

    async getDispatch(request, context) {
      return { dispatch: toRunDispatch(await queriesOf(context).get(requireId("dispatch_id", request.dispatchId))) };
    },

    async listDispatches(request, context) {
      const page = await queriesOf(context).list(parseList(request));
      return { dispatches: page.items.map(toRunDispatch), nextPageToken: page.nextPageToken ?? "" };
    },

    async countDispatches(request, context) {
      const counts = await queriesOf(context).count(optionalId("thread_id", request.threadId), parseStatuses("statuses", request.statuses));
      return {
        counts: counts.map(({ status, count }) => create(DispatchStatusCountSchema, { status: statusToProto(status), count: BigInt(count) })),
        total: BigInt(counts.reduce((sum, c) => sum + c.count, 0)),
      };
    },

    async listTerminalDispatches(request, context) {
      const page = await queriesOf(context).listTerminal(parseList({ ...request, statuses: [] }));
      return { dispatches: page.items.map(toRunDispatch), nextPageToken: page.nextPageToken ?? "" };
    },

    async reclaimExpiredLeases(request, context) {
      const limit = request.limit === 0 ? 100 : intInRange("limit", request.limit, 1, 1000);
      return { dispatches: (await mailboxOf(context).reclaimExpired(limit)).map(toRunDispatch) };
    },

    async purgeTerminal(request, context) {
      const before = timestampToMs("completed_before", requirePresent("completed_before", request.completedBefore));
      const limit = request.limit === 0 ? 10_000 : intInRange("limit", request.limit, 1, 100_000);
      return { purgedCount: BigInt(await queriesOf(context).purgeTerminal(before, limit)) };
    },

    async listQueuedThreads(request, context) {
      const size = pageSize("page_size", request.pageSize, 100, MAX_PAGE_SIZE);
      const page = await queriesOf(context).queuedThreads(size, request.pageToken === "" ? undefined : request.pageToken);
      return { threadIds: page.items, nextPageToken: page.nextPageToken ?? "" };
    },

    async *watchDispatchSignals(request, context) {
      const threadId = optionalId("thread_id", request.threadId);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      const queue = new PushQueue<WorkSignal>();
      const stop = scopeOf(engine, context).signals.listen((signal) => {
        if (threadId !== undefined && signal.threadId !== threadId) return;
        if (queue.size >= SIGNAL_BUFFER) queue.shift();
        queue.push(signal);
      });
      try {
        yield* heartbeatStream(queue, {
          heartbeatMs,
          signal: context.signal,
          frame: (signal) => create(WatchDispatchSignalsResponseSchema, { frame: { case: "signal", value: create(DispatchSignalSchema, signal) } }),
          heartbeat: (beat) => create(WatchDispatchSignalsResponseSchema, { frame: { case: "heartbeat", value: beat } }),
        });
      } finally {
        stop();
      }
    },

    async *openLiveChannel(request, context) {
      const wanted = parseLiveTarget("target", request.target);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      const channel = await scopeOf(engine, context).live.open(wanted);
      try {
        yield* heartbeatStream(channel.queue, {
          heartbeatMs,
          signal: context.signal,
          frame: (command) => create(OpenLiveChannelResponseSchema, { frame: { case: "command", value: command } }),
          heartbeat: (beat) => create(OpenLiveChannelResponseSchema, { frame: { case: "heartbeat", value: beat } }),
        });
      } finally {
        await channel.close();
      }
    },

    async ackLiveCommand(request, context) {
      return { newlyAcked: await scopeOf(engine, context).live.ack(requireId("command_id", request.commandId)) };
    },

    async deliverLive(request, context) {
      const wanted = parseLiveTarget("target", request.target);
      const command = parseLiveCommand("command", request.command);
      const outcome = await scopeOf(engine, context).live.deliver(wanted, create(LiveRunCommandSchema, command));
      return { outcome: outcome.outcome, commandId: outcome.commandId };
    },

    async pullDispatchSignals(request, context) {
      const pulled = await scopeOf(engine, context).signalReceipts.pull(parsePull(request), context.signal);
      return {
        receipts: pulled.map((p) => create(DispatchSignalReceiptSchema, {
          signal: create(DispatchSignalSchema, { threadId: p.threadId, dispatchId: p.dispatchId, reason: p.reason }),
          receipt: p.receipt,
          redeliveryAttempts: p.redeliveryAttempts,
          expiresAt: timestampFromMs(p.expiresAt),
        })),
      };
    },

    async ackDispatchSignal(request, context) {
      return { acked: await scopeOf(engine, context).signalReceipts.ack(parseAck(request)) };
    },

    async nackDispatchSignal(request, context) {
      const { receipt, delayMs } = parseNack(request);
      return { nacked: await scopeOf(engine, context).signalReceipts.nack(receipt, delayMs) };
    },
  };
}

/** ExtendLease's new lease: `lease` (named as in Claim) or `extension`, its first name; both mean the same. */
function parseNewLease(request: { lease?: Duration; extension?: Duration }, maxLeaseMs: number): number {
  const lease = request.lease && durationInRange("lease", request.lease, 1, maxLeaseMs);
  const extension = request.extension && durationInRange("extension", request.extension, 1, maxLeaseMs);
  if (lease !== undefined && extension !== undefined && lease !== extension) {
    throw invalidField("lease", "differs from extension (the same field's first name): set one of them");
  }
  return lease ?? extension ?? requirePresent<number>("lease", undefined);
}
