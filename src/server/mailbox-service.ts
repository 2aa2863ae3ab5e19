/**
 * MailboxService: each handler checks its request (domain), calls the engine
 * and translates the answer. Nothing else happens here.
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { DispatchSignalSchema, DispatchStatusCountSchema } from "../../gen/mailroom/v1/dispatch_pb.js";
import { LiveRunCommandSchema, type LiveRunTarget } from "../../gen/mailroom/v1/live_pb.js";
import {
  AckBatchResponseSchema,
  AckResultSchema,
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
import { statusToProto } from "../domain/dispatch/state.js";
import { MailroomError, invalidField, underField } from "../domain/errors.js";
import { durationInRange, heartbeatInterval, intInRange, optionalId, pageSize, requireId, requirePresent, timestampToMs } from "../domain/validate.js";
import type { Engine } from "../engine/engine.js";
import type { EnqueueOutcome } from "../engine/mailbox/mailbox.js";
import { toRunDispatch } from "../engine/mailbox/records.js";
import { PushQueue } from "../engine/push-queue.js";
import type { WorkSignal } from "../engine/mailbox/work-signals.js";
import { itemError } from "./errors.js";
import { queueSource, type ServerStreams } from "./streams.js";

/** Signals a slow watcher has not read yet; older ones are dropped (they are hints). */
const SIGNAL_BUFFER = 10_000;

function target(field: string, value: LiveRunTarget | undefined): LiveRunTarget {
  const present = requirePresent(field, value);
  requireId(`${field}.thread_id`, present.threadId);
  requireId(`${field}.run_id`, present.runId);
  optionalId(`${field}.dispatch_id`, present.dispatchId);
  return present;
}

function enqueued(outcome: EnqueueOutcome, i: number) {
  if ("error" in outcome) return create(EnqueueResultSchema, { error: itemError(underField(outcome.error, `dispatches[${i}]`)) });
  return create(EnqueueResultSchema, { dispatch: toRunDispatch(outcome.dispatch), deduplicated: outcome.deduplicated });
}

export function mailboxService(engine: Engine, streams: ServerStreams): ServiceImpl<typeof MailboxService> {
  const { mailbox, queries, live, signals } = engine;
  const limits = engine.mailboxLimits;

  return {
    async enqueue(request) {
      const [outcome] = await mailbox.enqueue([parseNewDispatch("dispatch", request.dispatch, limits)]);
      if ("error" in outcome!) throw underField(outcome.error, "dispatch");
      return { dispatch: toRunDispatch(outcome!.dispatch), deduplicated: outcome!.deduplicated };
    },

    async enqueueBatch(request) {
      const outcomes = await mailbox.enqueue(parseEnqueueBatch(request.dispatches, limits));
      return create(EnqueueBatchResponseSchema, { results: outcomes.map(enqueued) });
    },

    async claim(request, context) {
      const claimed = await mailbox.claim(parseClaim(request, limits), context.signal);
      return { dispatches: claimed.map(toRunDispatch) };
    },

    async claimDispatch(request) {
      const dispatchId = requireId("dispatch_id", request.dispatchId);
      const consumerId = requireId("consumer_id", request.consumerId);
      return { dispatch: toRunDispatch(await mailbox.claimDispatch(dispatchId, consumerId, parseLease("lease", request.lease, limits))) };
    },

    async ack(request) {
      return { dispatch: toRunDispatch(await mailbox.ack(parseClaimRef(request))) };
    },

    async ackBatch(request) {
      const refs = parseAckBatch(request.claims, limits);
      const results = await mailbox.ackMany(refs);
      return create(AckBatchResponseSchema, {
        results: results.map((result, i) =>
          create(AckResultSchema, result instanceof MailroomError
            ? { dispatchId: refs[i]!.dispatchId, error: itemError(result) }
            : { dispatchId: result._id, dispatch: toRunDispatch(result) }),
        ),
      });
    },

    async recordDispatchStart(request) {
      const instance = requireId("dispatch_instance_id", request.dispatchInstanceId);
      return { dispatch: toRunDispatch(await mailbox.recordStart(parseClaimRef(request), instance)) };
    },

    async recordRunResult(request) {
      const ref = parseClaimRef(request);
      return { dispatch: toRunDispatch(await mailbox.recordResult(ref, parseRunResult(request.result))) };
    },

    async nack(request) {
      const ref = parseClaimRef(request);
      const dispatch = await mailbox.nack(ref, parseRetry(request.retry, limits), parseErrorText("error", request.error));
      return { dispatch: toRunDispatch(dispatch) };
    },

    async deadLetter(request) {
      const ref = parseClaimRef(request);
      return { dispatch: toRunDispatch(await mailbox.deadLetter(ref, parseErrorText("error", request.error))) };
    },

    async cancel(request) {
      const outcome = await mailbox.cancel(requireId("dispatch_id", request.dispatchId), parseReason("reason", request.reason));
      return { dispatch: toRunDispatch(outcome.dispatch), changed: outcome.changed };
    },

    async extendLease(request) {
      const ref = parseClaimRef(request);
      const extensionMs = durationInRange("extension", requirePresent("extension", request.extension), 1, limits.maxLeaseMs);
      const outcome = await mailbox.extendLease(ref, extensionMs);
      return { dispatch: toRunDispatch(outcome.dispatch), interrupted: outcome.interrupted, threadEpoch: BigInt(outcome.threadEpoch) };
    },

    async interrupt(request) {
      const outcome = await mailbox.interrupt(requireId("thread_id", request.threadId), request.detailed);
      return {
        newDispatchEpoch: BigInt(outcome.newEpoch),
        activeDispatch: outcome.active ? toRunDispatch(outcome.active) : undefined,
        supersededCount: BigInt(outcome.supersededCount),
        supersededDispatches: outcome.superseded.map(toRunDispatch),
      };
    },

    async getDispatchEpoch(request) {
      return { dispatchEpoch: BigInt(await engine.threads.epoch(requireId("thread_id", request.threadId))) };
    },

    async supersedeClaimed(request) {
      const ref = parseClaimRef(request);
      return { dispatch: toRunDispatch(await mailbox.supersedeClaimed(ref, parseReason("reason", request.reason))) };
    },

    async getDispatch(request) {
      return { dispatch: toRunDispatch(await queries.get(requireId("dispatch_id", request.dispatchId))) };
    },

    async listDispatches(request) {
      const page = await queries.list(parseList(request));
      return { dispatches: page.items.map(toRunDispatch), nextPageToken: page.nextPageToken ?? "" };
    },

    async countDispatches(request) {
      const counts = await queries.count(optionalId("thread_id", request.threadId), parseStatuses("statuses", request.statuses));
      return {
        counts: counts.map(({ status, count }) => create(DispatchStatusCountSchema, { status: statusToProto(status), count: BigInt(count) })),
        total: BigInt(counts.reduce((sum, c) => sum + c.count, 0)),
      };
    },

    async listTerminalDispatches(request) {
      const page = await queries.listTerminal(parseList({ ...request, statuses: [] }));
      return { dispatches: page.items.map(toRunDispatch), nextPageToken: page.nextPageToken ?? "" };
    },

    async reclaimExpiredLeases(request) {
      const limit = request.limit === 0 ? 100 : intInRange("limit", request.limit, 1, 1000);
      return { dispatches: (await mailbox.reclaimExpired(limit)).map(toRunDispatch) };
    },

    async purgeTerminal(request) {
      const before = timestampToMs("completed_before", requirePresent("completed_before", request.completedBefore));
      const limit = request.limit === 0 ? 10_000 : intInRange("limit", request.limit, 1, 100_000);
      return { purgedCount: BigInt(await queries.purgeTerminal(before, limit)) };
    },

    async listQueuedThreads(request) {
      const size = pageSize("page_size", request.pageSize, 100, MAX_PAGE_SIZE);
      const page = await queries.queuedThreads(size, request.pageToken === "" ? undefined : request.pageToken);
      return { threadIds: page.items, nextPageToken: page.nextPageToken ?? "" };
    },

    watchDispatchSignals(request, context) {
      const threadId = optionalId("thread_id", request.threadId);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      return streams.serve(context, () => {
        const queue = new PushQueue<WorkSignal>();
        const stop = signals.listen((signal) => {
          if (threadId !== undefined && signal.threadId !== threadId) return;
          if (queue.size >= SIGNAL_BUFFER) queue.shift();
          queue.push(signal);
        });
        return queueSource(queue, {
          heartbeatMs,
          signal: context.signal,
          frame: (signal) => create(WatchDispatchSignalsResponseSchema, { frame: { case: "signal", value: create(DispatchSignalSchema, signal) } }),
          heartbeat: (beat) => create(WatchDispatchSignalsResponseSchema, { frame: { case: "heartbeat", value: beat } }),
          close: stop,
        });
      });
    },

    openLiveChannel(request, context) {
      const wanted = target("target", request.target);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      return streams.serve(context, async () => {
        const channel = await live.open(wanted);
        return queueSource(channel.queue, {
          heartbeatMs,
          signal: context.signal,
          frame: (command) => create(OpenLiveChannelResponseSchema, { frame: { case: "command", value: command } }),
          heartbeat: (beat) => create(OpenLiveChannelResponseSchema, { frame: { case: "heartbeat", value: beat } }),
          close: () => channel.close(),
        });
      });
    },

    async ackLiveCommand(request) {
      return { newlyAcked: await live.ack(requireId("command_id", request.commandId)) };
    },

    async deliverLive(request) {
      const wanted = target("target", request.target);
      const command = requirePresent("command", request.command);
      if (command.body.case === undefined) throw invalidField("command.body", "is required: one of messages, cancel, decisions");
      optionalId("command.command_id", command.commandId);
      const outcome = await live.deliver(wanted, create(LiveRunCommandSchema, command));
      return { outcome: outcome.outcome, commandId: outcome.commandId };
    },
  };
}
