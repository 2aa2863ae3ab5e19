/**
 * MailboxService answers sized before anything is committed (see
 * domain/answer-size.ts): a dispatch is only stored, and only changed, when
 * it can still be served back, alone in an answer, within
 * `--max-message-bytes`; answers holding several dispatches take only what
 * fits (list pages, Interrupt's details, ReclaimExpiredLeases) or, where the
 * request names every dispatch the answer holds (AckBatch, EnqueueBatch),
 * are refused up front.
 */
import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type RunDispatch, RunDispatchSchema, RunDispatchStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import {
  AckBatchResponseSchema,
  AckResultSchema,
  EnqueueBatchResponseSchema,
  ExtendLeaseResponseSchema,
  InterruptResponseSchema,
  ListDispatchesResponseSchema,
  OpenLiveChannelResponseSchema,
} from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { type LiveRunCommand, LiveRunCommandSchema, type LiveRunTarget } from "../../gen/mailroom/v1/live_pb.js";
import { AnswerLimit, countThatFit, type WireFormat } from "../domain/answer-size.js";
import { type EnqueueCommand, MAX_ERROR_BYTES, MAX_REASON_BYTES, type MailboxLimits } from "../domain/dispatch/commands.js";
import { MAX_ID_BYTES } from "../domain/validate.js";
import { pageTokenAfter } from "../engine/mailbox/queries.js";
import { type DispatchDoc, toRunDispatch } from "../engine/mailbox/records.js";

// Placeholders at their largest: ids of quotes (256 bytes, 512 escaped in JSON), the last instant a timestamp can name.
const WIDEST_ID = '"'.repeat(MAX_ID_BYTES);
const GENERATED_ID = "0".repeat(36);
/** The longest next_page_token a listing issues (after the widest id). */
const WIDEST_TOKEN = pageTokenAfter(WIDEST_ID);
/**
 * Room for what the server itself may write into last_error without a
 * client's say (e.g. "thread interrupted while enqueuing (epoch 3 -> 4)").
 * The lease sweeper's text names the consumer: a claim leaves room for it.
 */
const SERVER_TEXT = "x".repeat(128);
const LATEST = timestampFromMs(Date.UTC(9999, 11, 31, 23, 59, 59, 999));
const WIDEST_EPOCH = BigInt(Number.MAX_SAFE_INTEGER);
/** Per entry of a repeated field: its tag and length prefix, or JSON's comma. */
const ENTRY_FRAMING = 8;

/** Text a later call writes into a dispatch; undefined leaves the field as it is. */
export interface DispatchText {
  lastError?: string;
  runResponse?: string;
  runError?: string;
  terminationDetail?: string;
  dispatchInstanceId?: string;
}

/**
 * A dispatch as it can be served from now on without a client changing it:
 * what the server fills in or moves on its own (ids it generates, epoch,
 * status, attempts, timestamps, its own last_error) at their largest. Claim
 * fields and worker text are as given: each call that adds them sizes its
 * own change.
 */
function asServed(init: MessageInitShape<typeof RunDispatchSchema>): RunDispatch {
  const dispatch = create(RunDispatchSchema, init);
  dispatch.dispatchId ||= GENERATED_ID;
  dispatch.runId ||= GENERATED_ID;
  dispatch.lastError ||= SERVER_TEXT;
  dispatch.dispatchEpoch = WIDEST_EPOCH;
  dispatch.status = RunDispatchStatus.DEAD_LETTER;
  dispatch.attemptCount = 1000;
  dispatch.maxAttempts = 1000;
  for (const field of ["availableAt", "completedAt", "createdAt", "updatedAt"] as const) dispatch[field] = LATEST;
  if (dispatch.claimToken) dispatch.leaseUntil = LATEST;
  return dispatch;
}

function withText(dispatch: RunDispatch, text: DispatchText): RunDispatch {
  const next = clone(RunDispatchSchema, dispatch);
  if (text.lastError !== undefined) next.lastError = text.lastError;
  if (text.runResponse !== undefined) next.runResponse = text.runResponse;
  if (text.runError !== undefined) next.runError = text.runError;
  if (text.dispatchInstanceId !== undefined) next.dispatchInstanceId = text.dispatchInstanceId;
  if (text.terminationDetail !== undefined) next.termination = { $typeName: "mailroom.v1.TerminationReason", kind: 0, ...next.termination, detail: text.terminationDetail };
  return next;
}

/** JSON's worst case for text: every UTF-16 unit escaped as \uXXXX; binary takes at most 3 bytes a unit. */
const TEXT_FACTOR = 6;

/** Bytes JSON takes for bytes at most (base64), binary at most their length. */
function bytesBound(length: number): number {
  return 4 * Math.ceil(length / 3);
}

function textBound(...texts: Array<string | undefined>): number {
  let units = 0;
  for (const text of texts) units += text?.length ?? 0;
  return TEXT_FACTOR * units;
}

export class DispatchAnswers {
  private readonly limit: AnswerLimit;
  /**
   * At least the size of a served dispatch with every text field empty and
   * every other field at its widest, in either encoding: with textBound and
   * bytesBound of what a dispatch holds, a bound of its size that needs no
   * encoding (the exact measure runs only when the bound does not fit).
   */
  private readonly bareBound: number;
  /** Whether any dispatch, with any text a later call may add, fits alone in an answer: then no change needs a look first. */
  private readonly anyDispatchFits: boolean;
  /** The largest a listed dispatch can be (for the answers that take only what fits). */
  private readonly widestListed: number;
  /** What the largest single-dispatch answer adds to its dispatch (see aloneSize). */
  private readonly aloneOverhead: number;

  constructor(maxMessageBytes: number, limits: MailboxLimits) {
    this.limit = new AnswerLimit(maxMessageBytes);
    const empty = create(RunDispatchSchema);
    this.aloneOverhead = ENTRY_FRAMING + Math.max(
      this.limit.largestSize(ExtendLeaseResponseSchema, create(ExtendLeaseResponseSchema, { dispatch: empty, interrupted: true, threadEpoch: WIDEST_EPOCH })),
      this.limit.largestSize(ListDispatchesResponseSchema, create(ListDispatchesResponseSchema, { dispatches: [empty], nextPageToken: pageTokenAfter("") })),
    );
    const largest = asServed({
      dispatchId: WIDEST_ID,
      threadId: WIDEST_ID,
      runId: WIDEST_ID,
      agentId: WIDEST_ID,
      dedupeKey: WIDEST_ID,
      claimToken: `ct_${"0".repeat(32)}`,
      claimedBy: WIDEST_ID,
      dispatchInstanceId: WIDEST_ID,
      lastError: "x".repeat(MAX_ERROR_BYTES),
      runResponse: "x".repeat(MAX_ERROR_BYTES),
      runError: "x".repeat(MAX_ERROR_BYTES),
      termination: { kind: 1, detail: "x".repeat(MAX_REASON_BYTES) },
      payload: { data: new Uint8Array(limits.maxPayloadBytes), mediaType: WIDEST_ID },
    });
    this.anyDispatchFits = this.limit.measure(RunDispatchSchema, largest, this.aloneOverhead + WIDEST_TOKEN.length).fits;
    // Field names, framing and the widest numbers, timestamps and token, with no text: ids as one character each.
    this.bareBound = this.limit.largestSize(RunDispatchSchema, asServed({ dispatchId: "x", threadId: "x", runId: "x", claimToken: `ct_${"0".repeat(32)}`, termination: { kind: 1 }, payload: { data: new Uint8Array(0) } })) + ENTRY_FRAMING;
    this.widestListed = this.limit.largestSize(RunDispatchSchema, largest) + ENTRY_FRAMING;
  }

  /**
   * Refuses commands whose dispatch could not be served back (RESOURCE_EXHAUSTED
   * naming the entry's payload, or the entry), and a batch whose answer would
   * not fit in the call's encoding (`batch`, undefined for Enqueue); `field(i)`
   * names entry i ("dispatch", "dispatches[3]").
   */
  checkEnqueue(commands: readonly EnqueueCommand[], field: (i: number) => string, batch?: WireFormat): void {
    // Surely fitting, without encoding anything (the common case): each alone, and all in one answer.
    const bounds = commands.map((command) => this.bareBound + textBound(command.dispatchId ?? GENERATED_ID, command.threadId, command.runId ?? GENERATED_ID, command.agentId, command.dedupeKey, SERVER_TEXT, command.payload?.mediaType) + bytesBound(command.payload?.data.length ?? 0));
    const aloneFits = bounds.every((bound) => bound + this.aloneOverhead + WIDEST_TOKEN.length <= this.limit.maxBytes);
    if (aloneFits && (batch === undefined || bounds.reduce((a, b) => a + b, 64) <= this.limit.maxBytes)) return;
    const results = commands.map((command, i) => {
      const served = asServed({
        ...(command.dispatchId ? { dispatchId: command.dispatchId } : {}),
        ...(command.runId ? { runId: command.runId } : {}),
        threadId: command.threadId,
        agentId: command.agentId ?? "",
        priority: command.priority,
        dedupeKey: command.dedupeKey ?? "",
        maxAttempts: command.maxAttempts,
        payload: command.payload,
      });
      this.requireAlone(served, `the dispatch of ${field(i)}, served back with its server-set fields`, command.payload ? `${field(i)}.payload.data` : field(i));
      return { dispatch: served, deduplicated: false };
    });
    if (batch === undefined) return;
    const size = this.limit.sizeIn(EnqueueBatchResponseSchema, create(EnqueueBatchResponseSchema, { results }), batch);
    if (size > this.limit.maxBytes) throw this.limit.exceeded("the EnqueueBatch answer (every dispatch, as stored); enqueue fewer at once,", size, "dispatches");
  }

  /** Whether a change that adds `text` can go ahead without looking at the dispatch first. */
  get changesAlwaysFit(): boolean {
    return this.anyDispatchFits;
  }

  /** Refuses a change whose dispatch, with `text`, could not be served back; `field` names the request field adding the text. */
  checkChange(current: DispatchDoc, text: DispatchText, field: string): void {
    this.requireAlone(withText(asServed(toRunDispatch(current)), text), `the dispatch with this ${field}, served back`, field);
  }

  /** Whether `count` acked dispatches surely fit in one AckBatch answer (else look at them with checkAckBatch). */
  ackBatchAlwaysFits(count: number): boolean {
    return count * (this.widestListed + ENTRY_FRAMING + MAX_ID_BYTES) + 64 <= this.limit.maxBytes;
  }

  /** Refuses an AckBatch whose answer, holding these dispatches acked, would not fit in the call's encoding. */
  checkAckBatch(dispatches: readonly DispatchDoc[], format: WireFormat): void {
    let bound = 64;
    for (const doc of dispatches) {
      bound += ENTRY_FRAMING + textBound(doc._id) + this.bareBound + bytesBound(doc.payload?.data.length ?? 0) +
        textBound(doc._id, doc.thread_id, doc.run_id, doc.agent_id, doc.dedupe_key, doc.last_error, doc.claimed_by, doc.dispatch_instance_id, doc.run_response, doc.run_error, doc.termination?.detail, doc.payload?.media_type);
    }
    if (bound <= this.limit.maxBytes) return;
    const results = dispatches.map((doc) => create(AckResultSchema, {
      dispatchId: doc._id,
      dispatch: asServed(toRunDispatch(doc)),
    }));
    const size = this.limit.sizeIn(AckBatchResponseSchema, create(AckBatchResponseSchema, { results }), format);
    if (size > this.limit.maxBytes) throw this.limit.exceeded("the AckBatch answer (every dispatch, acked); ack fewer at once,", size, "claims");
  }

  /** How many dispatches surely fit in one answer (ReclaimExpiredLeases), at least one and at most `wanted`. */
  surelyFitting(wanted: number): number {
    const room = this.limit.maxBytes - 64;
    return Math.max(1, Math.min(wanted, Math.floor(room / this.widestListed)));
  }

  /** The superseded dispatches Interrupt can answer with: the first ones, as many as fit beside the rest of its answer. */
  supersededThatFit(base: MessageInitShape<typeof InterruptResponseSchema>, superseded: readonly RunDispatch[], format: WireFormat): { dispatches: RunDispatch[]; truncated: boolean } {
    const room = this.limit.maxBytes - this.limit.sizeIn(InterruptResponseSchema, create(InterruptResponseSchema, { ...base, supersededDispatchesTruncated: true }), format);
    const kept = superseded.slice(0, countThatFit(superseded, room, (dispatch) => this.limit.sizeIn(RunDispatchSchema, dispatch, format) + ENTRY_FRAMING));
    return { dispatches: kept, truncated: kept.length < superseded.length };
  }

  /** Refuses a live command that could not be served on a live channel (with the target and time the server stores with it). */
  checkLiveCommand(command: LiveRunCommand, target: LiveRunTarget): void {
    const stored = create(LiveRunCommandSchema, { ...command, commandId: command.commandId || GENERATED_ID, target, sentAt: LATEST });
    const frame = create(OpenLiveChannelResponseSchema, { frame: { case: "command", value: stored } });
    this.limit.require(OpenLiveChannelResponseSchema, frame, "the command, as a live channel delivers it", "command");
  }

  /** A list page's budget in the call's encoding: its bytes, and each dispatch's share of them. */
  listBudget(format: WireFormat): { maxBytes: number; sizeOf: (doc: DispatchDoc) => number } {
    const overhead = this.limit.sizeIn(ListDispatchesResponseSchema, create(ListDispatchesResponseSchema, { nextPageToken: WIDEST_TOKEN }), format);
    return {
      maxBytes: this.limit.maxBytes - overhead,
      sizeOf: (doc) => this.limit.sizeIn(RunDispatchSchema, toRunDispatch(doc), format) + ENTRY_FRAMING,
    };
  }

  /**
   * Refuses a dispatch whose single answers would not fit: alone with the
   * most beside it (ExtendLease), or alone on a list page with the longest
   * next token (the dispatch sized once, the answers' own fields added).
   */
  private requireAlone(dispatch: RunDispatch, what: string, field: string): void {
    // The next token names the dispatch: longer ids make it longer.
    const token = pageTokenAfter(dispatch.dispatchId).length - pageTokenAfter("").length;
    this.limit.require(RunDispatchSchema, dispatch, what, field, this.aloneOverhead + token);
  }
}
