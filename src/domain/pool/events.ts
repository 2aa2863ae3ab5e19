/**
 * The journal event recorded for each pool record (seed:
 * publish_agent_pool_event): the run that caused it, the pool, what it is
 * about, and a redacted summary rather than content.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type DestinationKind, type EntityKind, PrivacyClass, SourceKind } from "../../../gen/mailroom/v1/common_pb.js";
import { type AgentEvent, AgentEventSchema, ContentCaptureMode, EventDeliverySemantics, EventFamily, type EventKind } from "../../../gen/mailroom/v1/event_pb.js";
import { newId } from "../ids.js";

interface Ref<K> {
  kind: K;
  id: string;
}

export interface PoolEventFacts {
  kind: EventKind;
  poolId: string;
  runId: string;
  agentId: string;
  subject: Ref<EntityKind>;
  related?: Ref<EntityKind>[];
  destination?: Ref<DestinationKind>;
  policyRefs?: string[];
  messageId?: string;
  wakeConditionId?: string;
  summary: string;
  now: number;
}

export function poolEvent(facts: PoolEventFacts): AgentEvent {
  return create(AgentEventSchema, {
    envelope: {
      schemaVersion: 1,
      eventId: newId(),
      kind: facts.kind,
      family: EventFamily.AGENT_POOL,
      occurredAt: timestampFromMs(facts.now),
      recordedAt: timestampFromMs(facts.now),
      runId: facts.runId,
      agentId: facts.agentId,
      poolId: facts.poolId,
      messageId: facts.messageId ?? "",
      wakeConditionId: facts.wakeConditionId ?? "",
      subjectRef: facts.subject,
      relatedRefs: facts.related ?? [],
      source: { kind: SourceKind.SERVER, id: "mailroom.pool" },
      destination: facts.destination,
      policyRefs: (facts.policyRefs ?? []).map((id) => ({ id })),
      tags: ["feature:agent_pool"],
      deliverySemantics: EventDeliverySemantics.JOURNAL_BACKED,
      privacy: PrivacyClass.CONTENT_REFS_ONLY,
      contentCapture: ContentCaptureMode.OFF,
      redactionPolicyId: "redaction.agent_pool.default",
    },
    payload: { case: "redactedSummary", value: facts.summary },
  });
}
