/**
 * Publish: a run records an event of its own (progress, lifecycle, custom).
 * The request is checked field by field; the server then fills in what it
 * owns (id if absent, family, schema version, recorded time, delivery).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EntityKind, type EntityRef, EntityRefSchema, SourceKind, SourceRefSchema } from "../../../gen/mailroom/v1/common_pb.js";
import { type AgentEvent, AgentEventSchema, EventDeliverySemantics, EventKind, type EventEnvelope } from "../../../gen/mailroom/v1/event_pb.js";
import { invalidField } from "../errors.js";
import { newId } from "../ids.js";
import { boundedList, boundedMap, boundedText, instantUpTo, optionalId, requireId, requirePresent } from "../validate.js";
import { familyOf, isKnownKind, isServerOwnedKind } from "./kinds.js";

export const MAX_EVENT_PAYLOAD_BYTES = 256 * 1024;
export const MAX_SUMMARY_BYTES = 4096;
const MAX_REFS = 64;
const MAX_TAGS = 32;
const MAX_POLICIES = 32;
const MAX_TEXT = 256;
/** How far ahead of the server's clock occurred_at may be (a publisher's clock may run a little ahead). */
export const MAX_OCCURRED_AHEAD_MS = 86_400_000;

const knownEntityKinds = new Set<EntityKind>(Object.values(EntityKind).filter((v): v is EntityKind => typeof v === "number" && v !== EntityKind.UNSPECIFIED));

function entityRef(field: string, ref: EntityRef): void {
  if (!knownEntityKinds.has(ref.kind)) throw invalidField(`${field}.kind`, "must be a known entity kind");
  requireId(`${field}.id`, ref.id);
}

/** A list of entity refs (at most 64), each of a known kind with an id. */
export function entityRefs(field: string, list: readonly EntityRef[]): void {
  boundedList(field, list, MAX_REFS).forEach((ref, i) => entityRef(`${field}[${i}]`, ref));
}

/** Fields only the server sets: a publisher leaving them set has misunderstood the contract. */
function refuseServerFields(envelope: EventEnvelope): void {
  const owned: Array<[string, boolean]> = [
    ["event.envelope.event_seq", envelope.eventSeq !== 0n],
    ["event.envelope.recorded_at", envelope.recordedAt !== undefined],
    ["event.envelope.journal_cursor", envelope.journalCursor !== undefined],
    ["event.envelope.schema_version", envelope.schemaVersion !== 0],
    ["event.envelope.delivery_semantics", envelope.deliverySemantics !== EventDeliverySemantics.UNSPECIFIED],
  ];
  for (const [field, set] of owned) if (set) throw invalidField(field, "is assigned by the server; leave it unset");
}

/** Checks a Publish request's event and returns it completed, ready to journal. */
export function parsePublish(input: AgentEvent | undefined, now: number): AgentEvent {
  const event = create(AgentEventSchema, requirePresent("event", input));
  const envelope = requirePresent("event.envelope", event.envelope);
  refuseServerFields(envelope);

  const kind = envelope.kind;
  if (kind === EventKind.UNSPECIFIED) throw invalidField("event.envelope.kind", "is required");
  if (!isKnownKind(kind)) throw invalidField("event.envelope.kind", `is not a known kind (${kind})`);
  if (isServerOwnedKind(kind)) {
    throw invalidField("event.envelope.kind", `${EventKind[kind]} is recorded by the server itself (mailbox and pool kinds); publish run, progress or CUSTOM kinds`);
  }
  if (envelope.family !== 0 && envelope.family !== familyOf(kind)) throw invalidField("event.envelope.family", "must be unset or the kind's own family");
  if (kind === EventKind.CUSTOM) {
    if (envelope.customKind === "") throw invalidField("event.envelope.custom_kind", "is required for EVENT_KIND_CUSTOM");
    boundedText("event.envelope.custom_kind", envelope.customKind, 128);
  } else if (envelope.customKind !== "") {
    throw invalidField("event.envelope.custom_kind", "must be empty unless kind is EVENT_KIND_CUSTOM");
  }

  requireId("event.envelope.run_id", envelope.runId);
  const ids: Array<[string, string]> = [
    ["event_id", envelope.eventId], ["session_id", envelope.sessionId], ["agent_id", envelope.agentId], ["turn_id", envelope.turnId],
    ["attempt_id", envelope.attemptId], ["message_id", envelope.messageId], ["context_item_id", envelope.contextItemId],
    ["trace_id", envelope.traceId], ["span_id", envelope.spanId], ["parent_event_id", envelope.parentEventId], ["caused_by", envelope.causedBy],
    ["thread_id", envelope.threadId], ["dispatch_id", envelope.dispatchId], ["pool_id", envelope.poolId], ["wake_condition_id", envelope.wakeConditionId],
    ["redaction_policy_id", envelope.redactionPolicyId],
  ];
  for (const [name, value] of ids) optionalId(`event.envelope.${name}`, value);
  for (const [name, value] of [["state_before", envelope.stateBefore], ["state_after", envelope.stateAfter], ["runtime_fingerprint", envelope.runtimeFingerprint]] as const) {
    boundedText(`event.envelope.${name}`, value, MAX_TEXT);
  }
  if (envelope.subjectRef) entityRef("event.envelope.subject_ref", envelope.subjectRef);
  entityRefs("event.envelope.related_refs", envelope.relatedRefs);
  entityRefs("event.envelope.causal_refs", envelope.causalRefs);
  boundedList("event.envelope.tags", envelope.tags, MAX_TAGS).forEach((tag, i) => {
    if (tag === "") throw invalidField(`event.envelope.tags[${i}]`, "must not be empty");
    boundedText(`event.envelope.tags[${i}]`, tag, 128);
  });
  boundedList("event.envelope.policy_refs", envelope.policyRefs, MAX_POLICIES).forEach((ref, i) => requireId(`event.envelope.policy_refs[${i}].id`, ref.id));
  if (envelope.correlation) {
    boundedText("event.envelope.correlation.correlation_id", envelope.correlation.correlationId, MAX_TEXT);
    boundedMap("event.envelope.correlation.keys", envelope.correlation.keys, 32, MAX_TEXT);
  }
  // Producer and destination names are identifiers: bounded, without control characters (no NUL or terminal escapes in logs and UIs).
  if (envelope.source) optionalId("event.envelope.source.id", envelope.source.id);
  if (envelope.destination) optionalId("event.envelope.destination.id", envelope.destination.id);
  const occurredAt = envelope.occurredAt ? instantUpTo("event.envelope.occurred_at", envelope.occurredAt, now, MAX_OCCURRED_AHEAD_MS) : now;

  if (event.payload.case === "full") {
    if (event.payload.value.data.length > MAX_EVENT_PAYLOAD_BYTES) {
      throw invalidField("event.full.data", `must be at most ${MAX_EVENT_PAYLOAD_BYTES} bytes (got ${event.payload.value.data.length})`);
    }
    boundedText("event.full.media_type", event.payload.value.mediaType, MAX_TEXT);
  } else if (event.payload.case === "redactedSummary") {
    boundedText("event.redacted_summary", event.payload.value, MAX_SUMMARY_BYTES);
  }

  envelope.eventId ||= newId();
  envelope.family = familyOf(kind);
  envelope.schemaVersion = 1;
  envelope.recordedAt = timestampFromMs(now);
  envelope.occurredAt = timestampFromMs(occurredAt);
  envelope.deliverySemantics = EventDeliverySemantics.JOURNAL_BACKED;
  envelope.source ??= create(SourceRefSchema, { kind: SourceKind.RUN, id: envelope.runId });
  envelope.subjectRef ??= create(EntityRefSchema, { kind: EntityKind.RUN, id: envelope.runId });
  return event;
}
