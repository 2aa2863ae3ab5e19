/**
 * MailboxService: each handler checks its request (domain), calls the engine
 * and translates the answer. Nothing else happens here.
 */
import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { DispatchSignalSchema, DispatchStatusCountSchema } from "../../gen/mailroom/v1/dispatch_pb.js";
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
  MAX_PAGE_TOKEN_BYTES,
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
import { boundedText, durationInRange, heartbeatInterval, intInRange, optionalId, pageSize, requireId, requirePresent, timestampToMs } from "../domain/validate.js";
import type { Engine } from "../engine/engine.js";
import type { EnqueueOutcome } from "../engine/mailbox/mailbox.js";
import { toRunDispatch } from "../engine/mailbox/records.js";
import { PushQueue } from "../engine/push-queue.js";
import type { WorkSignal } from "../engine/mailbox/work-signals.js";
import { DispatchAnswers, type DispatchText } from "./dispatch-answers.js";
import { itemError } from "./errors.js";
import { formatOf } from "./event-frames.js";
import { queueSource, type ServerStreams } from "./streams.js";

/** Signals a slow watcher has not read yet; older ones are dropped (they are hints). */
const SIGNAL_BUFFER = 10_000;

function enqueued(outcome: EnqueueOutcome, i: number) {
  if ("error" in outcome) return create(EnqueueResultSchema, { error: itemError(underField(outcome.error, `dispatches[${i}]`)) });
  return create(EnqueueResultSchema, { dispatch: toRunDispatch(outcome.dispatch), deduplicated: outcome.deduplicated });
}

export function mailboxService(engine: Engine, streams: ServerStreams, maxMessageBytes: number): ServiceImpl<typeof MailboxService> {
  const { mailbox, queries, live, signals } = engine;
  const limits = engine.mailboxLimits;
  const answers = new DispatchAnswers(maxMessageBytes, limits);

  /** Before a change adds text to a dispatch: refuses it when the dispatch could then not be served back. */
  async function checkChange(dispatchId: string, text: DispatchText, field: string): Promise<void> {
    if (answers.changesAlwaysFit) return;
    answers.checkChange(await queries.get(dispatchId), text, field);
  }

  return {
    async enqueue(request) {
      const command = parseNewDispatch("dispatch", request.dispatch, limits, engine.clock.now());
      answers.checkEnqueue([command], () => "dispatch");
      const [outcome] = await mailbox.enqueue([command]);
      if ("error" in outcome!) throw underField(outcome.error, "dispatch");
      return { dispatch: toRunDispatch(outcome!.dispatch), deduplicated: outcome!.deduplicated };
    },

    async enqueueBatch(request, context) {
      const commands = parseEnqueueBatch(request.dispatches, limits, engine.clock.now());
      answers.checkEnqueue(commands, (i) => `dispatches[${i}]`, formatOf(context));
      const outcomes = await mailbox.enqueue(commands);
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

    async ackBatch(request, context) {
      const refs = parseAckBatch(request.claims, limits);
      if (!answers.ackBatchAlwaysFits(refs.length)) answers.checkAckBatch(await queries.getMany(refs.map((ref) => ref.dispatchId)), formatOf(context));
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
      await checkChange(request.dispatchId, { dispatchInstanceId: instance }, "dispatch_instance_id");
      return { dispatch: toRunDispatch(await mailbox.recordStart(parseClaimRef(request), instance)) };
    },

    async recordRunResult(request) {
      const ref = parseClaimRef(request);
      const result = parseRunResult(request.result);
      await checkChange(ref.dispatchId, { runResponse: result.response, runError: result.error, terminationDetail: result.termination?.detail }, "result");
      return { dispatch: toRunDispatch(await mailbox.recordResult(ref, result)) };
    },

    async nack(request) {
      const ref = parseClaimRef(request);
      const error = parseErrorText("error", request.error);
      const retry = parseRetry(request.retry, limits, engine.clock.now());
      await checkChange(ref.dispatchId, { lastError: error }, "error");
      const dispatch = await mailbox.nack(ref, retry, error);
      return { dispatch: toRunDispatch(dispatch) };
    },

    async deadLetter(request) {
      const ref = parseClaimRef(request);
      const error = parseErrorText("error", request.error);
      await checkChange(ref.dispatchId, { lastError: error }, "error");
      return { dispatch: toRunDispatch(await mailbox.deadLetter(ref, error)) };
    },

    async cancel(request) {
      const dispatchId = requireId("dispatch_id", request.dispatchId);
      const reason = parseReason("reason", request.reason);
      await checkChange(dispatchId, { lastError: reason }, "reason");
      const outcome = await mailbox.cancel(dispatchId, reason);
      return { dispatch: toRunDispatch(outcome.dispatch), changed: outcome.changed };
    },

    async extendLease(request) {
      const ref = parseClaimRef(request);
      const outcome = await mailbox.extendLease(ref, parseNewLease(request, limits.maxLeaseMs));
      return { dispatch: toRunDispatch(outcome.dispatch), interrupted: outcome.interrupted, threadEpoch: BigInt(outcome.threadEpoch) };
    },

    async interrupt(request, context) {
      const outcome = await mailbox.interrupt(requireId("thread_id", request.threadId), request.detailed);
      const answer = {
        newDispatchEpoch: BigInt(outcome.newEpoch),
        activeDispatch: outcome.active ? toRunDispatch(outcome.active) : undefined,
        supersededCount: BigInt(outcome.supersededCount),
      };
      // The interrupt is done: its details take only what fits beside the rest of the answer.
      const { dispatches, truncated } = answers.supersededThatFit(answer, outcome.superseded.map(toRunDispatch), formatOf(context));
      return { ...answer, supersededDispatches: dispatches, supersededDispatchesTruncated: truncated || dispatches.length < outcome.supersededCount };
    },

    async getDispatchEpoch(request) {
      return { dispatchEpoch: BigInt(await engine.threads.epoch(requireId("thread_id", request.threadId))) };
    },

    async supersedeClaimed(request) {
      const ref = parseClaimRef(request);
      const reason = parseReason("reason", request.reason);
      await checkChange(ref.dispatchId, { lastError: reason }, "reason");
      return { dispatch: toRunDispatch(await mailbox.supersedeClaimed(ref, reason)) };
    },

    async getDispatch(request) {
      return { dispatch: toRunDispatch(await queries.get(requireId("dispatch_id", request.dispatchId))) };
    },

    async listDispatches(request, context) {
      const page = await queries.list(parseList(request), answers.listBudget(formatOf(context)));
      return { dispatches: page.items.map(toRunDispatch), nextPageToken: page.nextPageToken ?? "" };
    },

    async countDispatches(request) {
      const counts = await queries.count(optionalId("thread_id", request.threadId), parseStatuses("statuses", request.statuses));
      return {
        counts: counts.map(({ status, count }) => create(DispatchStatusCountSchema, { status: statusToProto(status), count: BigInt(count) })),
        total: BigInt(counts.reduce((sum, c) => sum + c.count, 0)),
      };
    },

    async listTerminalDispatches(request, context) {
      const page = await queries.listTerminal(parseList({ ...request, statuses: [] }), answers.listBudget(formatOf(context)));
      return { dispatches: page.items.map(toRunDispatch), nextPageToken: page.nextPageToken ?? "" };
    },

    async reclaimExpiredLeases(request) {
      const limit = request.limit === 0 ? 100 : intInRange("limit", request.limit, 1, 1000);
      // Reclaimed dispatches are answered: no more than surely fit (the rest are left to the next call or the sweeper).
      return { dispatches: (await mailbox.reclaimExpired(answers.surelyFitting(limit))).map(toRunDispatch) };
    },

    async purgeTerminal(request) {
      const before = timestampToMs("completed_before", requirePresent("completed_before", request.completedBefore));
      const limit = request.limit === 0 ? 10_000 : intInRange("limit", request.limit, 1, 100_000);
      return { purgedCount: BigInt(await queries.purgeTerminal(before, limit)) };
    },

    async listQueuedThreads(request) {
      const size = pageSize("page_size", request.pageSize, 100, MAX_PAGE_SIZE);
      const page = await queries.queuedThreads(size, request.pageToken === "" ? undefined : boundedText("page_token", request.pageToken, MAX_PAGE_TOKEN_BYTES));
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
      const wanted = parseLiveTarget("target", request.target);
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
      const wanted = parseLiveTarget("target", request.target);
      const command = parseLiveCommand("command", request.command);
      answers.checkLiveCommand(command, wanted);
      const outcome = await live.deliver(wanted, command);
      return { outcome: outcome.outcome, commandId: outcome.commandId };
    },

    async pullDispatchSignals(request, context) {
      const pulled = await engine.signalReceipts.pull(parsePull(request), context.signal);
      return {
        receipts: pulled.map((p) => create(DispatchSignalReceiptSchema, {
          signal: create(DispatchSignalSchema, { threadId: p.threadId, dispatchId: p.dispatchId, reason: p.reason }),
          receipt: p.receipt,
          redeliveryAttempts: p.redeliveryAttempts,
          expiresAt: timestampFromMs(p.expiresAt),
        })),
      };
    },

    async ackDispatchSignal(request) {
      return { acked: await engine.signalReceipts.ack(parseAck(request)) };
    },

    async nackDispatchSignal(request) {
      const { receipt, delayMs } = parseNack(request);
      return { nacked: await engine.signalReceipts.nack(receipt, delayMs) };
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
