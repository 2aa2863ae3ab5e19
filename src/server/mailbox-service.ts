/**
 * MailboxService: each handler checks its request (domain), calls the engine
 * (the use cases of its caller's namespace) and translates the answer.
 * Nothing else happens here.
 */
import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
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
import { scopeOf } from "./principal.js";
import { queueSource, type ServerStreams } from "./streams.js";

/** Signals a slow watcher has not read yet; older ones are dropped (they are hints). */
const SIGNAL_BUFFER = 10_000;

function enqueued(outcome: EnqueueOutcome, i: number) {
  if ("error" in outcome) return create(EnqueueResultSchema, { error: itemError(underField(outcome.error, `dispatches[${i}]`)) });
  return create(EnqueueResultSchema, { dispatch: toRunDispatch(outcome.dispatch), deduplicated: outcome.deduplicated });
}

export function mailboxService(engine: Engine, streams: ServerStreams, maxMessageBytes: number): ServiceImpl<typeof MailboxService> {
  const limits = engine.mailboxLimits;
  const answers = new DispatchAnswers(maxMessageBytes, limits);
  const mailboxOf = (context: HandlerContext) => scopeOf(engine, context).mailbox;
  const queriesOf = (context: HandlerContext) => scopeOf(engine, context).queries;

  /** Before a change adds text to a dispatch: refuses it when the dispatch could then not be served back. */
  async function checkChange(context: HandlerContext, dispatchId: string, text: DispatchText, field: string): Promise<void> {
    if (answers.changesAlwaysFit) return;
    answers.checkChange(await queriesOf(context).get(dispatchId), text, field);
  }

  return {
    async enqueue(request, context) {
      const command = parseNewDispatch("dispatch", request.dispatch, limits, engine.clock.now());
      answers.checkEnqueue([command], () => "dispatch");
      const [outcome] = await mailboxOf(context).enqueue([command]);
      if ("error" in outcome!) throw underField(outcome.error, "dispatch");
      return { dispatch: toRunDispatch(outcome!.dispatch), deduplicated: outcome!.deduplicated };
    },

    async enqueueBatch(request, context) {
      const commands = parseEnqueueBatch(request.dispatches, limits, engine.clock.now());
      answers.checkEnqueue(commands, (i) => `dispatches[${i}]`, formatOf(context));
      const outcomes = await mailboxOf(context).enqueue(commands);
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
      if (!answers.ackBatchAlwaysFits(refs.length)) answers.checkAckBatch(await queriesOf(context).getMany(refs.map((ref) => ref.dispatchId)), formatOf(context));
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
      await checkChange(context, request.dispatchId, { dispatchInstanceId: instance }, "dispatch_instance_id");
      return { dispatch: toRunDispatch(await mailboxOf(context).recordStart(parseClaimRef(request), instance)) };
    },

    async recordRunResult(request, context) {
      const ref = parseClaimRef(request);
      const result = parseRunResult(request.result);
      await checkChange(context, ref.dispatchId, { runResponse: result.response, runError: result.error, terminationDetail: result.termination?.detail }, "result");
      return { dispatch: toRunDispatch(await mailboxOf(context).recordResult(ref, result)) };
    },

    async nack(request, context) {
      const ref = parseClaimRef(request);
      const error = parseErrorText("error", request.error);
      const retry = parseRetry(request.retry, limits, engine.clock.now());
      await checkChange(context, ref.dispatchId, { lastError: error }, "error");
      const dispatch = await mailboxOf(context).nack(ref, retry, error);
      return { dispatch: toRunDispatch(dispatch) };
    },

    async deadLetter(request, context) {
      const ref = parseClaimRef(request);
      const error = parseErrorText("error", request.error);
      await checkChange(context, ref.dispatchId, { lastError: error }, "error");
      return { dispatch: toRunDispatch(await mailboxOf(context).deadLetter(ref, error)) };
    },

    async cancel(request, context) {
      const dispatchId = requireId("dispatch_id", request.dispatchId);
      const reason = parseReason("reason", request.reason);
      await checkChange(context, dispatchId, { lastError: reason }, "reason");
      const outcome = await mailboxOf(context).cancel(dispatchId, reason);
      return { dispatch: toRunDispatch(outcome.dispatch), changed: outcome.changed };
    },

    async extendLease(request, context) {
      const ref = parseClaimRef(request);
      const outcome = await mailboxOf(context).extendLease(ref, parseNewLease(request, limits.maxLeaseMs));
      return { dispatch: toRunDispatch(outcome.dispatch), interrupted: outcome.interrupted, threadEpoch: BigInt(outcome.threadEpoch) };
    },

    async interrupt(request, context) {
      const outcome = await mailboxOf(context).interrupt(requireId("thread_id", request.threadId), request.detailed);
      const answer = {
        newDispatchEpoch: BigInt(outcome.newEpoch),
        activeDispatch: outcome.active ? toRunDispatch(outcome.active) : undefined,
        supersededCount: BigInt(outcome.supersededCount),
      };
      // The interrupt is done: its details take only what fits beside the rest of the answer.
      const { dispatches, truncated } = answers.supersededThatFit(answer, outcome.superseded.map(toRunDispatch), formatOf(context));
      return { ...answer, supersededDispatches: dispatches, supersededDispatchesTruncated: truncated || dispatches.length < outcome.supersededCount };
    },

    async getDispatchEpoch(request, context) {
      return { dispatchEpoch: BigInt(await scopeOf(engine, context).threads.epoch(requireId("thread_id", request.threadId))) };
    },

    async supersedeClaimed(request, context) {
      const ref = parseClaimRef(request);
      const reason = parseReason("reason", request.reason);
      await checkChange(context, ref.dispatchId, { lastError: reason }, "reason");
      return { dispatch: toRunDispatch(await mailboxOf(context).supersedeClaimed(ref, reason)) };
    },

    async getDispatch(request, context) {
      return { dispatch: toRunDispatch(await queriesOf(context).get(requireId("dispatch_id", request.dispatchId))) };
    },

    async listDispatches(request, context) {
      const page = await queriesOf(context).list(parseList(request), answers.listBudget(formatOf(context)));
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
      const page = await queriesOf(context).listTerminal(parseList({ ...request, statuses: [] }), answers.listBudget(formatOf(context)));
      return { dispatches: page.items.map(toRunDispatch), nextPageToken: page.nextPageToken ?? "" };
    },

    async reclaimExpiredLeases(request, context) {
      const limit = request.limit === 0 ? 100 : intInRange("limit", request.limit, 1, 1000);
      // Reclaimed dispatches are answered: no more than surely fit (the rest are left to the next call or the sweeper).
      return { dispatches: (await mailboxOf(context).reclaimExpired(answers.surelyFitting(limit))).map(toRunDispatch) };
    },

    async purgeTerminal(request, context) {
      const before = timestampToMs("completed_before", requirePresent("completed_before", request.completedBefore));
      const limit = request.limit === 0 ? 10_000 : intInRange("limit", request.limit, 1, 100_000);
      return { purgedCount: BigInt(await queriesOf(context).purgeTerminal(before, limit)) };
    },

    async listQueuedThreads(request, context) {
      const size = pageSize("page_size", request.pageSize, 100, MAX_PAGE_SIZE);
      const page = await queriesOf(context).queuedThreads(size, request.pageToken === "" ? undefined : boundedText("page_token", request.pageToken, MAX_PAGE_TOKEN_BYTES));
      return { threadIds: page.items, nextPageToken: page.nextPageToken ?? "" };
    },

    watchDispatchSignals(request, context) {
      const threadId = optionalId("thread_id", request.threadId);
      const heartbeatMs = heartbeatInterval("heartbeat_interval", request.heartbeatInterval);
      return streams.serve(context, () => {
        const queue = new PushQueue<WorkSignal>();
        const stop = scopeOf(engine, context).signals.listen((signal) => {
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
        const channel = await scopeOf(engine, context).live.open(wanted);
        return queueSource(channel.queue, {
          heartbeatMs,
          signal: context.signal,
          frame: (command) => create(OpenLiveChannelResponseSchema, { frame: { case: "command", value: command } }),
          heartbeat: (beat) => create(OpenLiveChannelResponseSchema, { frame: { case: "heartbeat", value: beat } }),
          close: () => channel.close(),
        });
      });
    },

    async ackLiveCommand(request, context) {
      return { newlyAcked: await scopeOf(engine, context).live.ack(requireId("command_id", request.commandId)) };
    },

    async deliverLive(request, context) {
      const wanted = parseLiveTarget("target", request.target);
      const command = parseLiveCommand("command", request.command);
      answers.checkLiveCommand(command, wanted);
      const outcome = await scopeOf(engine, context).live.deliver(wanted, command);
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
