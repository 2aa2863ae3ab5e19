/**
 * The dispatch state machine and its fencing rules, exhaustively: every
 * action from every status is either the seed's transition or refused.
 */
import { describe, expect, it } from "vitest";
import { fencingFailure } from "../../src/domain/dispatch/fencing.js";
import {
  ALL_ACTIONS,
  ALL_STATUSES,
  type DispatchAction,
  type DispatchStatus,
  TERMINAL_STATUSES,
  allowedFrom,
  attemptsSpent,
  isFenced,
  isTerminal,
  statusFromProto,
  statusToProto,
  transition,
} from "../../src/domain/dispatch/state.js";
import { ErrorReason } from "../../src/domain/errors.js";

/** The transitions of DESIGN.md and the seed, written out independently of the implementation's table. */
const expected: Record<DispatchAction, Partial<Record<DispatchStatus, DispatchStatus>>> = {
  claim: { QUEUED: "CLAIMED" },
  ack: { CLAIMED: "ACKED" },
  record_start: { CLAIMED: "CLAIMED" },
  record_result: { CLAIMED: "CLAIMED" },
  extend_lease: { CLAIMED: "CLAIMED" },
  nack_retry: { CLAIMED: "QUEUED" },
  nack_exhausted: { CLAIMED: "DEAD_LETTER" },
  dead_letter: { CLAIMED: "DEAD_LETTER" },
  cancel: { QUEUED: "CANCELLED", CLAIMED: "CANCELLED" },
  supersede_queued: { QUEUED: "SUPERSEDED" },
  supersede_claimed: { CLAIMED: "SUPERSEDED" },
  reclaim_retry: { CLAIMED: "QUEUED" },
  reclaim_exhausted: { CLAIMED: "DEAD_LETTER" },
};

describe("dispatch state machine", () => {
  describe("every action from every status", () => {
    for (const action of ALL_ACTIONS) {
      for (const status of ALL_STATUSES) {
        const to = expected[action][status];
        it(`${action} from ${status} ${to ? `leads to ${to}` : "is refused"}`, () => {
          expect(transition(status, action)).toBe(to);
        });
      }
    }
  });

  it("knows exactly the actions of the contract", () => {
    expect([...ALL_ACTIONS].sort()).toEqual(Object.keys(expected).sort());
  });

  it("refuses every action from a terminal status", () => {
    for (const status of TERMINAL_STATUSES) {
      for (const action of ALL_ACTIONS) expect(transition(status, action)).toBeUndefined();
    }
  });

  it("treats ACKED, CANCELLED, SUPERSEDED and DEAD_LETTER as terminal, and only those", () => {
    expect(ALL_STATUSES.filter(isTerminal)).toEqual(["ACKED", "CANCELLED", "SUPERSEDED", "DEAD_LETTER"]);
  });

  it("fences every worker action on the claim token, and not cancel, interrupt or the lease sweeper", () => {
    expect(ALL_ACTIONS.filter(isFenced).sort()).toEqual(
      ["ack", "dead_letter", "extend_lease", "nack_exhausted", "nack_retry", "record_result", "record_start", "supersede_claimed"].sort(),
    );
  });

  it("starts each action's conditional update from exactly its allowed statuses", () => {
    for (const action of ALL_ACTIONS) expect([...allowedFrom(action)].sort()).toEqual(Object.keys(expected[action]).sort());
  });

  it("spends attempts once attempt_count reaches max_attempts", () => {
    expect([attemptsSpent(4, 5), attemptsSpent(5, 5), attemptsSpent(6, 5), attemptsSpent(1, 1)]).toEqual([false, true, true, true]);
  });

  it("maps every status to the contract's enum and back", () => {
    for (const status of ALL_STATUSES) expect(statusFromProto(statusToProto(status))).toBe(status);
    expect(statusFromProto(0)).toBeUndefined();
  });
});

describe("fencing failures", () => {
  const now = 1_000_000;
  const claimed = { id: "d1", status: "CLAIMED" as const, claimToken: "mine", leaseUntil: now + 10 };

  it("is NOT_FOUND for an unknown dispatch", () => {
    expect(fencingFailure("d1", null, "mine", now).code).toBe("not_found");
  });

  it("is CLAIM_TOKEN_MISMATCH when another claim holds the dispatch", () => {
    expect(fencingFailure("d1", claimed, "old", now).details.reason).toBe(ErrorReason.CLAIM_TOKEN_MISMATCH);
  });

  it("is LEASE_EXPIRED when the token matches but the lease is over", () => {
    const error = fencingFailure("d1", { ...claimed, leaseUntil: now }, "mine", now);
    expect([error.code, error.details.reason]).toEqual(["failed_precondition", ErrorReason.LEASE_EXPIRED]);
  });

  it.each([
    ["CANCELLED", ErrorReason.DISPATCH_CANCELLED],
    ["SUPERSEDED", ErrorReason.DISPATCH_SUPERSEDED],
    ["QUEUED", ErrorReason.DISPATCH_NOT_CLAIMED],
    ["ACKED", ErrorReason.DISPATCH_NOT_CLAIMED],
    ["DEAD_LETTER", ErrorReason.DISPATCH_NOT_CLAIMED],
  ] as const)("is %s -> reason %s, naming the status", (status, reason) => {
    const error = fencingFailure("d1", { id: "d1", status }, "mine", now);
    expect(error.code).toBe("failed_precondition");
    expect(error.details.reason).toBe(reason);
    expect(error.details.metadata).toEqual({ status: `RUN_DISPATCH_STATUS_${status}` });
    expect(error.message).toContain('"d1"');
  });
});
