/**
 * Live commands and pulled dispatch signals, checked as the contract limits
 * them (seed: LiveRunCommand, LiveRunTarget, pull_dispatch_signals).
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { LiveRunCommandSchema, LiveRunTargetSchema, ToolCallOutcome } from "../../gen/mailroom/v1/live_pb.js";
import { AckDispatchSignalRequestSchema, NackDispatchSignalRequestSchema, PullDispatchSignalsRequestSchema } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { parseLiveCommand, parseLiveTarget } from "../../src/domain/dispatch/live-commands.js";
import { newReceipt, parseAck, parseNack, parsePull, parseReceipt } from "../../src/domain/dispatch/signal-receipts.js";
import { MailroomError } from "../../src/domain/errors.js";

function refusedField(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    if (error instanceof MailroomError && error.code === "invalid_argument") return error.details.field;
    throw error;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

const command = (body: Record<string, unknown>) => create(LiveRunCommandSchema, { body } as never);
const messages = (count: number) => command({ case: "messages", value: { messages: Array.from({ length: count }, () => ({ role: "user", text: "hi" })) } });
const decisions = (count: number, outcome = ToolCallOutcome.APPROVE) =>
  command({ case: "decisions", value: { decisions: Array.from({ length: count }, (_, i) => ({ toolCallId: `call-${i}`, outcome })) } });

describe("a live command", () => {
  it("holds 1 to 100 messages: an empty LiveMessages is INVALID_ARGUMENT, as is the 101st", () => {
    expect(refusedField(() => parseLiveCommand("command", messages(0)))).toBe("command.messages.messages");
    expect(parseLiveCommand("command", messages(100)).body.case).toBe("messages");
    expect(refusedField(() => parseLiveCommand("command", messages(101)))).toBe("command.messages.messages");
  });

  it("holds 1 to 100 decisions, each naming its tool call and an outcome", () => {
    expect(refusedField(() => parseLiveCommand("command", decisions(0)))).toBe("command.decisions.decisions");
    expect(refusedField(() => parseLiveCommand("command", decisions(101)))).toBe("command.decisions.decisions");
    expect(parseLiveCommand("command", decisions(100)).body.case).toBe("decisions");
    expect(refusedField(() => parseLiveCommand("command", decisions(1, ToolCallOutcome.UNSPECIFIED)))).toBe("command.decisions.decisions[0].outcome");
  });

  it("keeps its texts within their limits and needs a body", () => {
    const long = command({ case: "messages", value: { messages: [{ role: "r".repeat(65), text: "" }] } });
    expect(refusedField(() => parseLiveCommand("command", long))).toBe("command.messages.messages[0].role");
    expect(refusedField(() => parseLiveCommand("command", command({ case: "cancel", value: { reason: "x".repeat(4097) } })))).toBe("command.cancel.reason");
    expect(refusedField(() => parseLiveCommand("command", create(LiveRunCommandSchema, {})))).toBe("command.body");
  });
});

describe("a live command's target", () => {
  it("needs a thread; an empty run means whatever runs in the thread", () => {
    expect(parseLiveTarget("target", create(LiveRunTargetSchema, { threadId: "t" })).runId).toBe("");
    expect(refusedField(() => parseLiveTarget("target", create(LiveRunTargetSchema, { runId: "r" })))).toBe("target.thread_id");
  });
});

describe("pulling dispatch signals", () => {
  it("pulls 1 to 100 (10 by default), leased 1 s to 1 h (30 s by default), waiting up to 60 s", () => {
    expect(parsePull(create(PullDispatchSignalsRequestSchema, {}))).toEqual({ max: 10, expiresMs: 30_000, waitMs: 0 });
    expect(refusedField(() => parsePull(create(PullDispatchSignalsRequestSchema, { max: 101 })))).toBe("max");
    expect(refusedField(() => parsePull(create(PullDispatchSignalsRequestSchema, { expires: { nanos: 999_000_000 } })))).toBe("expires");
    expect(refusedField(() => parsePull(create(PullDispatchSignalsRequestSchema, { wait: { seconds: 61n } })))).toBe("wait");
  });

  it("acknowledges with the receipt it got, which names the dispatch; anything else is INVALID_ARGUMENT", () => {
    const receipt = newReceipt("dispatch/1 ü");
    expect(parseReceipt(receipt.token)).toEqual(receipt);
    expect(newReceipt("d").token).not.toBe(newReceipt("d").token);
    expect(refusedField(() => parseAck(create(AckDispatchSignalRequestSchema, { receipt: "" })))).toBe("receipt");
    expect(refusedField(() => parseAck(create(AckDispatchSignalRequestSchema, { receipt: "ct_123" })))).toBe("receipt");
    expect(parseNack(create(NackDispatchSignalRequestSchema, { receipt: receipt.token, delay: { seconds: 2n } })).delayMs).toBe(2_000);
    expect(refusedField(() => parseNack(create(NackDispatchSignalRequestSchema, { receipt: receipt.token, delay: { seconds: 3601n } })))).toBe("delay");
  });
});
