/**
 * Live commands (seed: LiveRunCommand, LiveRunTarget), checked as live.proto
 * bounds them: a target needs its thread (an empty run is "whatever runs in
 * the thread"); a command has exactly one body; messages and decisions come
 * 1 to 100 at a time. The command is stored (for the channel's replay) and
 * served back on OpenLiveChannel, so every field it keeps has a limit.
 */
import { create } from "@bufbuild/protobuf";
import { type LiveRunCommand, LiveRunCommandSchema, type LiveRunTarget, ToolCallOutcome } from "../../../gen/mailroom/v1/live_pb.js";
import { invalidField } from "../errors.js";
import { boundedList, boundedText, contentRef, inlinePayload, optionalId, requireId, requirePresent } from "../validate.js";

export const MAX_LIVE_ENTRIES = 100;
export const MAX_ROLE_BYTES = 64;
export const MAX_LIVE_TEXT_BYTES = 64 * 1024;
export const MAX_LIVE_REASON_BYTES = 4096;
export const MAX_DECISION_RESULT_BYTES = 64 * 1024;

export function parseLiveTarget(field: string, value: LiveRunTarget | undefined): LiveRunTarget {
  const present = requirePresent(field, value);
  requireId(`${field}.thread_id`, present.threadId);
  optionalId(`${field}.run_id`, present.runId);
  optionalId(`${field}.dispatch_id`, present.dispatchId);
  return present;
}

/**
 * Checks a command's body. What the server sets when it stores the command
 * (its target, from the request's `target`, and `sent_at`) is not taken from it.
 */
export function parseLiveCommand(field: string, value: LiveRunCommand | undefined): LiveRunCommand {
  const command = requirePresent(field, value);
  optionalId(`${field}.command_id`, command.commandId);
  const body = command.body;
  switch (body.case) {
    case "messages":
      boundedList(`${field}.messages.messages`, body.value.messages, MAX_LIVE_ENTRIES, 1).forEach((message, i) => {
        const at = `${field}.messages.messages[${i}]`;
        boundedText(`${at}.role`, message.role, MAX_ROLE_BYTES);
        boundedText(`${at}.text`, message.text, MAX_LIVE_TEXT_BYTES);
        if (message.contentRef) contentRef(`${at}.content_ref`, message.contentRef);
      });
      break;
    case "cancel":
      boundedText(`${field}.cancel.reason`, body.value.reason, MAX_LIVE_REASON_BYTES);
      break;
    case "decisions":
      boundedList(`${field}.decisions.decisions`, body.value.decisions, MAX_LIVE_ENTRIES, 1).forEach((decision, i) => {
        const at = `${field}.decisions.decisions[${i}]`;
        requireId(`${at}.tool_call_id`, decision.toolCallId);
        if (decision.outcome === ToolCallOutcome.UNSPECIFIED) throw invalidField(`${at}.outcome`, "is required: APPROVE, DENY or RESUME_WITH_RESULT");
        if (decision.result) inlinePayload(`${at}.result`, decision.result, MAX_DECISION_RESULT_BYTES);
        boundedText(`${at}.reason`, decision.reason, MAX_LIVE_REASON_BYTES);
      });
      break;
    default:
      throw invalidField(`${field}.body`, "is required: one of messages, cancel, decisions");
  }
  return create(LiveRunCommandSchema, { commandId: command.commandId, body });
}
