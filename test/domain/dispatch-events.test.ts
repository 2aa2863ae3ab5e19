/**
 * Dispatch transition events: the encoder that writes them directly decodes
 * to exactly the message `dispatchEvent` builds, for any dispatch and
 * transition.
 */
import { equals, fromBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AgentEventSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { dispatchEvent, encodeDispatchEvent } from "../../src/domain/dispatch/events.js";
import { ALL_STATUSES } from "../../src/domain/dispatch/state.js";

const id = fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.uuid(), fc.constant("ünïcødé-😀"));
const facts = fc.record({ dispatchId: id, threadId: id, runId: id, agentId: fc.option(id, { nil: undefined }) });
const transition = fc.record({
  kind: fc.constantFrom(...Object.values(EventKind).filter((k): k is EventKind => typeof k === "number")),
  before: fc.option(fc.constantFrom(...ALL_STATUSES), { nil: undefined }),
  after: fc.constantFrom(...ALL_STATUSES),
  summary: fc.string({ maxLength: 80 }),
  // Whole and fractional seconds, before and after 1970, and zero.
  now: fc.oneof(fc.integer({ min: -86_400_000, max: 4_102_444_800_000 }), fc.constant(0), fc.constant(1_767_225_600_000)),
  eventId: fc.uuid(),
});

describe("dispatch events", () => {
  it("encodes to exactly the message dispatchEvent builds", () => {
    fc.assert(
      fc.property(facts, transition, (f, t) => {
        const decoded = fromBinary(AgentEventSchema, encodeDispatchEvent(f, t));
        const built = dispatchEvent(f, t);
        if (!equals(AgentEventSchema, decoded, built)) expect(decoded).toEqual(built);
      }),
      { numRuns: 2000 },
    );
  });
});
