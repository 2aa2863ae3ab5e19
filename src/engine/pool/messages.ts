/**
 * Run messages in a pool (seed: send, resolve_address, record_message_status):
 * a message is recorded once, with every status it went through (EXPIRED;
 * FAILED; or ACCEPTED then DELIVERED), each one a journal event; the
 * DELIVERED event is what the recipients' inboxes are read from. Response
 * contracts count replies (RESPONDED) or time out by a persisted deadline.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { DestinationKind } from "../../../gen/mailroom/v1/common_pb.js";
import { type MessageReceipt, MessageStatus, RunMessageSchema, type StoredMessage, StoredMessageSchema } from "../../../gen/mailroom/v1/pool_pb.js";
import type { Clock } from "../../domain/clock.js";
import { EntityKind, ErrorReason, MailroomError, failedPrecondition, notFound } from "../../domain/errors.js";
import { type MessageStatusName, type OutgoingMessage, STATUS_EVENT, STATUS_PROTO } from "../../domain/pool/messages.js";
import { type AddressTarget, type Member, missingRequiredPolicies, resolveRecipients } from "../../domain/pool/pool.js";
import { type ListCommand, pageToken } from "../../domain/pool/pages.js";
import { type Collection, DuplicateKeyError, type Filter, type Store } from "../../store/port.js";
import type { NamespaceJournal } from "../journal/journal.js";
import type { PendingEvent } from "../journal/records.js";
import { type NamespaceOutbox, initialOutbox, withEvents } from "../outbox.js";
import { recordEvent } from "./journaling.js";
import { notMemberError } from "./members.js";
import type { Pools } from "./pools.js";
import { configFromDoc, MESSAGE_INDEXES, type MessageDoc, messageOf, POOL_MESSAGES, receiptOf, storedMessageOf } from "./records.js";

const CONTENDED_ATTEMPTS = 16;
const AWAITING: MessageStatusName = "DELIVERED";

const destinationKinds: Record<AddressTarget["kind"], DestinationKind> = {
  run: DestinationKind.RUN,
  agent: DestinationKind.AGENT,
  topic: DestinationKind.TOPIC,
  pool: DestinationKind.AGENT_POOL,
};
const entityKinds: Record<AddressTarget["kind"], EntityKind> = {
  run: EntityKind.RUN,
  agent: EntityKind.AGENT,
  topic: EntityKind.TOPIC,
  pool: EntityKind.AGENT_POOL,
};

/** One namespace's run messages (its store is the namespace's view). */
export class PoolMessages {
  readonly messages: Collection<MessageDoc>;

  constructor(
    store: Store,
    private readonly pools: Pools,
    private readonly journal: NamespaceJournal,
    private readonly outbox: NamespaceOutbox,
    private readonly clock: Clock,
  ) {
    this.messages = store.collection<MessageDoc>(POOL_MESSAGES);
  }

  async init(): Promise<void> {
    await this.messages.createIndexes(MESSAGE_INDEXES);
    await this.outbox.register(POOL_MESSAGES);
  }

  async send(poolId: string, out: OutgoingMessage): Promise<{ receipt: MessageReceipt; deduplicated: boolean }> {
    const repeat = await this.repeat(poolId, out.message.idempotencyKey);
    if (repeat) return { receipt: repeat, deduplicated: true };
    const pool = await this.pools.get(poolId);
    const members = await this.pools.members.list(poolId);
    const sender = members.find((m) => m.runId === out.message.fromRunId) ?? notMemberError(poolId, out.message.fromRunId);
    const config = configFromDoc(pool.config);
    const missing = missingRequiredPolicies(config, out.policies);
    if (missing.length > 0) {
      throw failedPrecondition(ErrorReason.SENDER_POLICY_MISSING, `agent pool ${JSON.stringify(poolId)} requires every message to carry policy ${missing.map((p) => JSON.stringify(p)).join(", ")}`, {
        metadata: { policy: missing[0]! },
      });
    }
    const now = this.clock.now();
    const expired = out.expiresAt !== undefined && out.expiresAt <= now;
    const recipients = expired ? [] : resolveRecipients(out.target, sender.runId, out.policies, members, config);
    const statuses: MessageStatusName[] = expired ? ["EXPIRED"] : recipients.length === 0 ? ["FAILED"] : ["ACCEPTED", "DELIVERED"];
    const final = statuses[statuses.length - 1]!;
    const deadline = final === AWAITING && out.expectedResponses !== undefined && out.responseTimeoutMs !== undefined ? now + out.responseTimeoutMs : undefined;

    const doc: MessageDoc = {
      _id: `${poolId}\u0000${out.message.messageId}`,
      pool_id: poolId,
      message_id: out.message.messageId,
      idempotency_key: out.message.idempotencyKey,
      from_run_id: sender.runId,
      from_agent_id: sender.agentId,
      message: toBinary(RunMessageSchema, out.message),
      status: final,
      delivered_to: recipients,
      response_count: 0,
      first_receipt: { status: final, delivered_to: recipients, event_id: "" },
      status_event_id: "",
      created_at: now,
      updated_at: now,
    };
    if (out.message.replyTo) doc.reply_to = out.message.replyTo;
    if (out.expectedResponses !== undefined) doc.expected_responses = out.expectedResponses;
    if (deadline !== undefined) doc.deadline_at = deadline;
    const events = statuses.map((status) => this.statusEvent(doc, status, sender, out.target, now, status === "DELIVERED" ? recipients : [], deadline));
    const last = events[events.length - 1]!;
    doc.first_receipt.event_id = doc.status_event_id = last.event_id;
    Object.assign(doc, initialOutbox(events, now));
    try {
      await this.messages.insertOne(doc);
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
      const raced = await this.repeat(poolId, out.message.idempotencyKey);
      if (raced) return { receipt: raced, deduplicated: true };
      throw new MailroomError("already_exists", `message_id ${JSON.stringify(out.message.messageId)} is already used in agent pool ${JSON.stringify(poolId)} (with another idempotency key)`, {
        reason: ErrorReason.INVALID_FIELD,
        field: "message.message_id",
        entity: { kind: EntityKind.MESSAGE, id: out.message.messageId },
      });
    }
    const positions = await this.outbox.flush(POOL_MESSAGES, [doc]);
    return { receipt: receiptOf(doc, positions.get(last.event_id), true), deduplicated: false };
  }

  /** Sends a reply and counts it toward the original's response contract. */
  async respond(poolId: string, out: OutgoingMessage, targetGiven: boolean): Promise<{ receipt: MessageReceipt; original: MessageReceipt; deduplicated: boolean }> {
    const original = await this.messages.findOne({ pool_id: poolId, message_id: out.message.replyTo });
    if (!original) throw notFound(EntityKind.MESSAGE, out.message.replyTo, `no such message in agent pool ${JSON.stringify(poolId)}`);
    // A repeat returns the first receipt, whatever became of the original since (a retried reply must not fail).
    const repeat = await this.repeat(poolId, out.message.idempotencyKey);
    if (repeat) {
      // Counting is idempotent per reply: a retry after a crash between recording and counting still counts it once.
      const counted = await this.countIfDelivered(original, out.message.fromRunId, repeat);
      return { receipt: repeat, original: await this.currentReceipt(counted), deduplicated: true };
    }
    const from = out.message.fromRunId;
    if (from === original.from_run_id) {
      throw new MailroomError("invalid_argument", `run ${JSON.stringify(from)} sent message ${JSON.stringify(original.message_id)} and cannot respond to it`, {
        reason: ErrorReason.REPLY_LOOP,
        field: "reply.from_run_id",
      });
    }
    if (!original.delivered_to.includes(from)) {
      throw failedPrecondition(ErrorReason.NOT_MESSAGE_RECIPIENT, `message ${JSON.stringify(original.message_id)} was not delivered to run ${JSON.stringify(from)}; only its recipients may respond`, {
        entity: { kind: EntityKind.MESSAGE, id: original.message_id },
      });
    }
    if (["CANCELLED", "TIMED_OUT", "EXPIRED", "FAILED"].includes(original.status)) throw alreadyTerminal(original);
    if (!targetGiven) {
      out.message.to = { $typeName: "mailroom.v1.RunAddress", target: { case: "runId", value: original.from_run_id }, relatedRefs: [] };
      out.target = { kind: "run", id: original.from_run_id };
    }
    const sent = await this.send(poolId, out);
    const counted = await this.countIfDelivered(original, from, sent.receipt);
    return { ...sent, original: await this.currentReceipt(counted) };
  }

  private async currentReceipt(doc: MessageDoc): Promise<MessageReceipt> {
    const positions = await this.journal.positionsOf([doc.status_event_id]);
    return receiptOf(doc, positions.get(doc.status_event_id));
  }

  /** A page of the pool's messages (any status), in the order they were sent. */
  async list(command: ListCommand): Promise<{ messages: StoredMessage[]; nextPageToken: string }> {
    const { poolId, pageSize, after } = command;
    await this.pools.get(poolId); // an unknown pool is NOT_FOUND, not empty
    const filter = after === undefined
      ? { pool_id: poolId }
      : { pool_id: poolId, $or: [{ created_at: { $gt: after.at } }, { created_at: after.at, "first_receipt.event_id": { $gt: after.key } }] };
    const docs = await this.messages.find(filter as Filter<MessageDoc>, { sort: { created_at: 1, "first_receipt.event_id": 1 }, limit: pageSize + 1 });
    const page = docs.slice(0, pageSize);
    const positions = await this.journal.positionsOf(page.map((doc) => doc.status_event_id));
    const last = page[page.length - 1];
    return {
      messages: page.map((doc) => storedMessageOf(doc, positions.get(doc.status_event_id))),
      nextPageToken: docs.length > pageSize && last ? pageToken(poolId, { at: last.created_at, key: last.first_receipt.event_id }) : "",
    };
  }

  /** Sender only: a message awaiting replies -> CANCELLED. */
  async cancel(poolId: string, messageId: string, runId: string): Promise<MessageReceipt> {
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const doc = await this.messages.findOne({ pool_id: poolId, message_id: messageId });
      if (!doc) throw notFound(EntityKind.MESSAGE, messageId, `no such message in agent pool ${JSON.stringify(poolId)}`);
      if (doc.from_run_id !== runId) {
        throw failedPrecondition(ErrorReason.NOT_MESSAGE_SENDER, `only the sender (${JSON.stringify(doc.from_run_id)}) may cancel message ${JSON.stringify(messageId)}`, {
          entity: { kind: EntityKind.MESSAGE, id: messageId },
        });
      }
      if (doc.status !== AWAITING || doc.expected_responses === undefined) throw alreadyTerminal(doc);
      const updated = await this.transition(doc, "CANCELLED");
      if (updated) return updated;
    }
    throw contended(messageId);
  }

  /** Times out a response contract whose deadline passed (the deadline sweep found it); false when it had already left DELIVERED. */
  async timeOut(doc: MessageDoc): Promise<boolean> {
    return (await this.transition(doc, "TIMED_OUT")) !== undefined;
  }

  /** Only a reply that reached someone counts toward a response contract (an EXPIRED or FAILED one does not). */
  private async countIfDelivered(original: MessageDoc, responder: string, reply: MessageReceipt): Promise<MessageDoc> {
    if (reply.status !== MessageStatus.DELIVERED) return (await this.messages.findOne({ _id: original._id }))!;
    return this.count(original, responder, reply.messageId);
  }

  private async count(original: MessageDoc, responder: string, replyId: string): Promise<MessageDoc> {
    for (let attempt = 0; attempt < CONTENDED_ATTEMPTS; attempt++) {
      const current = (await this.messages.findOne({ _id: original._id }))!;
      if (current.status !== AWAITING || current.counted_replies?.includes(replyId)) return current;
      const count = current.response_count + 1;
      const met = current.expected_responses !== undefined && count >= current.expected_responses;
      const now = this.clock.now();
      let update = { $inc: { response_count: 1 }, $set: { updated_at: now }, $push: { counted_replies: replyId } } as Record<string, Record<string, unknown>>;
      if (met) {
        const event = this.statusEvent({ ...current, response_count: count }, "RESPONDED", this.senderOf(current), undefined, now, [], undefined, responder);
        update = withEvents<MessageDoc>({ ...update, $set: { ...update.$set, status: "RESPONDED", status_event_id: event.event_id }, $unset: { deadline_at: "" } }, [event], now) as never;
      }
      const updated = await this.messages.findOneAndUpdate({ _id: current._id, status: AWAITING, response_count: current.response_count }, update);
      if (!updated) continue;
      if (met) await this.outbox.flush(POOL_MESSAGES, [updated]);
      return updated;
    }
    throw contended(original.message_id);
  }

  private async transition(doc: MessageDoc, status: "CANCELLED" | "TIMED_OUT"): Promise<MessageReceipt | undefined> {
    const now = this.clock.now();
    const event = this.statusEvent(doc, status, this.senderOf(doc), undefined, now, []);
    const updated = await this.messages.findOneAndUpdate(
      { _id: doc._id, status: AWAITING },
      withEvents<MessageDoc>({ $set: { status, status_event_id: event.event_id, updated_at: now }, $unset: { deadline_at: "" } }, [event], now),
    );
    if (!updated) return undefined;
    const positions = await this.outbox.flush(POOL_MESSAGES, [updated]);
    return receiptOf(updated, positions.get(event.event_id));
  }

  /** The first receipt of a message already sent with this idempotency key. */
  private async repeat(poolId: string, idempotencyKey: string): Promise<MessageReceipt | undefined> {
    const existing = await this.messages.findOne({ pool_id: poolId, idempotency_key: idempotencyKey });
    if (!existing) return undefined;
    const positions = await this.journal.positionsOf([existing.first_receipt.event_id]);
    return receiptOf(existing, positions.get(existing.first_receipt.event_id), true);
  }

  private senderOf(doc: MessageDoc): Member {
    return { runId: doc.from_run_id, agentId: doc.from_agent_id, policyRefs: [], topics: [] };
  }

  /** The seed's event for one status of a message, with the stored message as the pool record. */
  private statusEvent(
    doc: MessageDoc,
    status: MessageStatusName,
    sender: Member,
    target: AddressTarget | undefined,
    now: number,
    recipients: string[],
    deadline?: number,
    responder?: string,
  ): PendingEvent {
    const message = messageOf(doc);
    const to = target ?? { kind: "run" as const, id: "" };
    const related = [
      ...(message.to?.relatedRefs ?? []).map((ref) => ({ kind: ref.kind, id: ref.id })),
      ...(target ? [{ kind: entityKinds[to.kind], id: to.id }] : []),
      ...(status === "DELIVERED" ? recipients : doc.delivered_to).map((run) => ({ kind: EntityKind.RUN, id: run })),
      ...(responder ? [{ kind: EntityKind.RUN, id: responder }] : []),
    ].filter((ref, i, all) => all.findIndex((r) => r.kind === ref.kind && r.id === ref.id) === i)
      .sort((a, b) => a.kind - b.kind || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const destination = message.to?.destinationRef ?? (target ? { kind: destinationKinds[to.kind], id: to.id } : undefined);
    const stored = create(StoredMessageSchema, {
      message,
      receipt: { messageId: doc.message_id, status: STATUS_PROTO[status], deliveredTo: doc.delivered_to, responseCount: doc.response_count },
    });
    return recordEvent(
      {
        kind: STATUS_EVENT[status].kind,
        poolId: doc.pool_id,
        runId: sender.runId,
        agentId: sender.agentId,
        subject: { kind: EntityKind.MESSAGE, id: doc.message_id },
        related,
        destination: destination ? { kind: destination.kind, id: destination.id } : undefined,
        policyRefs: message.policyRefs.map((ref) => ref.id),
        messageId: doc.message_id,
        summary: STATUS_EVENT[status].summary,
        now,
      },
      { case: "message", value: stored },
      { ...(status === "DELIVERED" ? { recipients } : {}), ...(deadline !== undefined ? { due_at: deadline } : {}) },
    );
  }
}


function alreadyTerminal(doc: MessageDoc): MailroomError {
  return failedPrecondition(ErrorReason.ALREADY_TERMINAL, `message ${JSON.stringify(doc.message_id)} is ${doc.status}${doc.expected_responses === undefined && doc.status === "DELIVERED" ? " and expects no replies" : ""}`, {
    entity: { kind: EntityKind.MESSAGE, id: doc.message_id },
    metadata: { status: `MESSAGE_STATUS_${doc.status}` },
  });
}

function contended(messageId: string): MailroomError {
  return new MailroomError("unavailable", `message ${JSON.stringify(messageId)} kept changing under this call; retry`, { reason: ErrorReason.STORE_UNAVAILABLE });
}
