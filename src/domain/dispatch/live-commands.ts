/**
 * Live commands (seed: LiveRunCommand, LiveRunTarget), checked as the
 * contract limits them: a target needs its thread (an empty run is "whatever
 * runs in the thread"); a command has exactly one body; messages and
 * decisions come 1 to 100 at a time, each within its size limits.
 */
import { type LiveRunCommand, type LiveRunTarget, ToolCallOutcome } from "../../../gen/mailroom/v1/live_pb.js";
import { invalidField } from "../errors.js";
import { boundedList, boundedText, optionalId, requireId, requirePresent } from "../validate.js";

export const MAX_LIVE_ENTRIES = 100;
const MAX_ROLE_BYTES = 64;
const MAX_TEXT_BYTES = 64 * 1024;
const MAX_REASON_BYTES = 4096;

export function parseLiveTarget(field: string, value: LiveRunTarget | undefined): LiveRunTarget {
  const present = requirePresent(field, value);
  requireId(`${field}.thread_id`, present.threadId);
  optionalId(`${field}.run_id`, present.runId);
  optionalId(`${field}.dispatch_id`, present.dispatchId);
  return present;
}

export function parseLiveCommand(field: string, value: LiveRunCommand | undefined): LiveRunCommand {
  const command = requirePresent(field, value);
  optionalId(`${field}.command_id`, command.commandId);
  const body = command.body;
  switch (body.case) {
    case "messages":
      boundedList(`${field}.messages.messages`, body.value.messages, MAX_LIVE_ENTRIES, 1).forEach((message, i) => {
        const at = `${field}.messages.messages[${i}]`;
        boundedText(`${at}.role`, message.role, MAX_ROLE_BYTES);
        boundedText(`${at}.text`, message.text, MAX_TEXT_BYTES);
        if (message.contentRef) {
          boundedText(`${at}.content_ref.uri`, message.contentRef.uri, 2048);
          boundedText(`${at}.content_ref.media_type`, message.contentRef.mediaType, 256);
          boundedText(`${at}.content_ref.digest`, message.contentRef.digest, 256);
        }
      });
      break;
    case "cancel":
      boundedText(`${field}.cancel.reason`, body.value.reason, MAX_REASON_BYTES);
      break;
    case "decisions":
      boundedList(`${field}.decisions.decisions`, body.value.decisions, MAX_LIVE_ENTRIES, 1).forEach((decision, i) => {
        const at = `${field}.decisions.decisions[${i}]`;
        requireId(`${at}.tool_call_id`, decision.toolCallId);
        if (!Object.values(ToolCallOutcome).includes(decision.outcome) || decision.outcome === ToolCallOutcome.UNSPECIFIED) {
          throw invalidField(`${at}.outcome`, "is required: APPROVE, DENY or RESUME_WITH_RESULT");
        }
        if (decision.result) {
          if (decision.result.data.length > MAX_TEXT_BYTES) throw invalidField(`${at}.result.data`, `must be at most ${MAX_TEXT_BYTES} bytes (got ${decision.result.data.length})`);
          boundedText(`${at}.result.media_type`, decision.result.mediaType, 256);
        }
        boundedText(`${at}.reason`, decision.reason, MAX_REASON_BYTES);
      });
      break;
    default:
      throw invalidField(`${field}.body`, "is required: one of messages, cancel, decisions");
  }
  return command;
}
