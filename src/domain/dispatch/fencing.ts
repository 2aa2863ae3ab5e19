/**
 * Why a claim-token-fenced call was refused. The update itself is conditional
 * (status CLAIMED, this token, lease not expired); when it matches nothing,
 * the dispatch as it is now says which rule refused it.
 */
import { EntityKind, ErrorReason, type MailroomError, failedPrecondition, notFound } from "../errors.js";
import { type DispatchStatus, statusName } from "./state.js";

export interface FencedDispatch {
  id: string;
  status: DispatchStatus;
  claimToken?: string;
  leaseUntil?: number;
}

export function fencingFailure(id: string, current: FencedDispatch | null, token: string, now: number): MailroomError {
  if (!current) return notFound(EntityKind.DISPATCH, id);
  const entity = { kind: EntityKind.DISPATCH, id };
  const metadata = { status: statusName(current.status) };
  const quoted = JSON.stringify(id);
  switch (current.status) {
    case "CLAIMED":
      if (current.claimToken !== token) {
        return failedPrecondition(
          ErrorReason.CLAIM_TOKEN_MISMATCH,
          `dispatch ${quoted} is claimed under a different claim token: your claim's lease expired and it was claimed again; stop working on it`,
          { entity, metadata },
        );
      }
      return failedPrecondition(
        ErrorReason.LEASE_EXPIRED,
        `the lease on dispatch ${quoted} expired at ${new Date(current.leaseUntil ?? now).toISOString()}; it will be redelivered, so stop working on it (extend leases before they expire)`,
        { entity, metadata },
      );
    case "CANCELLED":
      return failedPrecondition(ErrorReason.DISPATCH_CANCELLED, `dispatch ${quoted} was cancelled; stop working on it`, { entity, metadata });
    case "SUPERSEDED":
      return failedPrecondition(ErrorReason.DISPATCH_SUPERSEDED, `dispatch ${quoted} was superseded; stop working on it`, { entity, metadata });
    case "QUEUED":
      return failedPrecondition(
        ErrorReason.DISPATCH_NOT_CLAIMED,
        `dispatch ${quoted} is queued again: the claim this token belonged to is gone (its lease expired or it was nacked)`,
        { entity, metadata },
      );
    case "ACKED":
    case "DEAD_LETTER":
      return failedPrecondition(
        ErrorReason.DISPATCH_NOT_CLAIMED,
        `dispatch ${quoted} is already ${current.status === "ACKED" ? "acked" : "dead-lettered"}${current.claimToken === token ? "" : " under another claim"}`,
        { entity, metadata },
      );
  }
}
