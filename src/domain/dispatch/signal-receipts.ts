/**
 * Pulled dispatch signals (seed: pull_dispatch_signals, DispatchSignalReceipt):
 * the requests, checked, and the receipt a signal is acknowledged with. A
 * receipt names its dispatch (so it is found without an index) and a lease
 * (so an old receipt no longer holds once the signal was pulled again).
 */
import type { AckDispatchSignalRequest, NackDispatchSignalRequest, PullDispatchSignalsRequest } from "../../../gen/mailroom/v1/mailbox_service_pb.js";
import { invalidField } from "../errors.js";
import { newClaimToken } from "../ids.js";
import { durationInRange, pageSize } from "../validate.js";

export const DEFAULT_PULL = 10;
export const MAX_PULL = 100;
export const DEFAULT_SIGNAL_LEASE_MS = 30_000;
export const MIN_SIGNAL_LEASE_MS = 1_000;
export const MAX_SIGNAL_LEASE_MS = 3_600_000;
export const MAX_PULL_WAIT_MS = 60_000;
export const MAX_NACK_DELAY_MS = 3_600_000;

export interface PullCommand {
  max: number;
  expiresMs: number;
  waitMs: number;
}

export function parsePull(request: PullDispatchSignalsRequest): PullCommand {
  return {
    max: pageSize("max", request.max, DEFAULT_PULL, MAX_PULL),
    expiresMs: request.expires ? durationInRange("expires", request.expires, MIN_SIGNAL_LEASE_MS, MAX_SIGNAL_LEASE_MS) : DEFAULT_SIGNAL_LEASE_MS,
    waitMs: request.wait ? durationInRange("wait", request.wait, 0, MAX_PULL_WAIT_MS) : 0,
  };
}

/** A receipt: `sr_<lease>_<dispatch id, base64url>`. */
export interface Receipt {
  token: string;
  dispatchId: string;
}

export function newReceipt(dispatchId: string): Receipt {
  return { token: `sr_${newClaimToken().slice(3)}_${Buffer.from(dispatchId).toString("base64url")}`, dispatchId };
}

export function parseReceipt(token: string): Receipt {
  const match = /^sr_[0-9a-f]{32}_([A-Za-z0-9_-]+)$/.exec(token);
  if (!match) throw invalidField("receipt", token === "" ? "is required" : "is not a dispatch signal receipt; pass it as PullDispatchSignals returned it");
  return { token, dispatchId: Buffer.from(match[1]!, "base64url").toString("utf8") };
}

export function parseAck(request: AckDispatchSignalRequest): Receipt {
  return parseReceipt(request.receipt);
}

export function parseNack(request: NackDispatchSignalRequest): { receipt: Receipt; delayMs: number } {
  return { receipt: parseReceipt(request.receipt), delayMs: request.delay ? durationInRange("delay", request.delay, 0, MAX_NACK_DELAY_MS) : 0 };
}
