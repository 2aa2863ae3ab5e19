/**
 * What of an event's payload a reader receives (seed: PayloadAccessMode).
 */
import { create } from "@bufbuild/protobuf";
import { type AgentEvent, AgentEventSchema, PayloadAccessMode } from "../../../gen/mailroom/v1/event_pb.js";

export function withPayloadAccess(event: AgentEvent, mode: PayloadAccessMode): AgentEvent {
  switch (mode) {
    case PayloadAccessMode.ENVELOPE_ONLY:
      return create(AgentEventSchema, { envelope: event.envelope });
    case PayloadAccessMode.REDACTED_SUMMARY:
      return event.payload.case === "full" ? create(AgentEventSchema, { envelope: event.envelope }) : event;
    default:
      return event;
  }
}

/** The seed's summary of progress events dropped under SUMMARIZE_AND_CONTINUE. */
export function progressSummary(last: AgentEvent, count: number): AgentEvent {
  return create(AgentEventSchema, {
    envelope: last.envelope,
    payload: { case: "redactedSummary", value: `redacted progress summary for ${count} dropped progress frames` },
  });
}
