/**
 * A dispatch's outbox entry becomes, at flush, the journal record that the
 * general path (pendingEvent of the built message) would make: same fields
 * for queries and filters, same event. And what a dispatch takes of a
 * response, as Claim counts it, is never less than it really takes.
 */
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AgentEventSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { ClaimResponseSchema } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { dispatchEvent } from "../../src/domain/dispatch/events.js";
import { pendingEvent } from "../../src/engine/journal/records.js";
import { dispatchEntry, materializeDispatchEvent } from "../../src/engine/mailbox/dispatch-events.js";
import { claimSizeBound, type DispatchDoc, runDispatchSizeBound, toRunDispatch } from "../../src/engine/mailbox/records.js";

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

describe("a dispatch's size bound", () => {
  const text = fc.string({ maxLength: 40, unit: "binary" });
  it("is never less than its encoded RunDispatch inside a response, claimed or about to be", () => {
    fc.assert(
      fc.property(text, text, text, fc.option(text, { nil: undefined }), text, fc.integer({ min: 0, max: 4096 }), fc.nat(), (id, thread, run, error, consumer, payload, ms) => {
        const claimed: DispatchDoc = {
          _id: id || "d", thread_id: thread || "t", run_id: run || "r", priority: 255, epoch: 2 ** 40, status: "CLAIMED", terminal: false,
          available_at: ms, attempt_count: 1000, max_attempts: 1000, created_at: ms, updated_at: ms, lease_until: ms, completed_at: ms,
          claimed_by: consumer, claim_token: `ct_${"f".repeat(32)}`, dispatch_instance_id: consumer,
          ...(error !== undefined ? { last_error: error, run_error: error, run_response: error, termination: { kind: 9, detail: error } } : {}),
          payload: { data: new Uint8Array(payload), media_type: "application/octet-stream" },
        };
        const encoded = toBinary(ClaimResponseSchema, create(ClaimResponseSchema, { dispatches: [toRunDispatch(claimed)] })).length;
        expect(runDispatchSizeBound(claimed)).toBeGreaterThanOrEqual(encoded);
        const { claim_token: _token, claimed_by: _by, lease_until: _lease, ...queued } = claimed;
        expect(runDispatchSizeBound({ ...queued, status: "QUEUED" }) + claimSizeBound(consumer)).toBeGreaterThanOrEqual(encoded);
      }),
      { numRuns: 500 },
    );
  });
});
