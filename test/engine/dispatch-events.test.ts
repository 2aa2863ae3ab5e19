/**
 * A dispatch's outbox entry becomes, at flush, the journal record that the
 * general path (pendingEvent of the built message) would make: same fields
 * for queries and filters, same event.
 */
import { equals, fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AgentEventSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { dispatchEvent } from "../../src/domain/dispatch/events.js";
import { pendingEvent } from "../../src/engine/journal/records.js";
import { dispatchEntry, materializeDispatchEvent } from "../../src/engine/mailbox/dispatch-events.js";
import type { DispatchDoc } from "../../src/engine/mailbox/records.js";

const dispatch = (agentId?: string): DispatchDoc => ({
  _id: "d1", thread_id: "t1", run_id: "r1", ...(agentId ? { agent_id: agentId } : {}), priority: 128, epoch: 0, status: "CLAIMED", terminal: false,
  available_at: 0, attempt_count: 1, max_attempts: 5, created_at: 0, updated_at: 0,
});

describe("dispatch events at flush", () => {
  for (const agentId of [undefined, "agent-7"]) {
    it(`make the record the general path makes (agent ${agentId ?? "unset"})`, () => {
      const doc = dispatch(agentId);
      const entry = dispatchEntry({ kind: EventKind.DISPATCH_CLAIMED, before: "QUEUED", after: "CLAIMED", summary: "claimed by w", now: 1_767_225_600_123, claimable: { reason: 1, at: 5 } });
      const fast = materializeDispatchEvent(doc, entry);
      const built = dispatchEvent({ dispatchId: "d1", threadId: "t1", runId: "r1", agentId }, { kind: entry.kind, before: "QUEUED", after: "CLAIMED", summary: "claimed by w", now: entry.at, eventId: entry.event_id });
      const general = pendingEvent(built, entry.at, { claimable: { reason: 1, at: 5 } });
      const { event: fastEvent, ...fastFields } = fast;
      const { event: generalEvent, ...generalFields } = general;
      expect(fastFields).toEqual(generalFields);
      expect(equals(AgentEventSchema, fromBinary(AgentEventSchema, fastEvent), fromBinary(AgentEventSchema, generalEvent))).toBe(true);
    });
  }
});
