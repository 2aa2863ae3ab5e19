/**
 * PublishBatch (seed: publish_all): every event checked as Publish checks
 * one, before anything is recorded; a refusal names the entry
 * (`events[3].envelope.kind`). Event ids must differ within the batch.
 */
import type { AgentEvent } from "../../../gen/mailroom/v1/event_pb.js";
import { invalidField, MailroomError } from "../errors.js";
import { boundedList } from "../validate.js";
import { parsePublish } from "./publish.js";

export const MAX_PUBLISH_BATCH = 500;

export function parsePublishBatch(events: readonly AgentEvent[], now: number): AgentEvent[] {
  boundedList("events", events, MAX_PUBLISH_BATCH, 1);
  const seen = new Map<string, number>();
  return events.map((input, i) => {
    const event = entry(i, () => parsePublish(input, now));
    const id = event.envelope!.eventId;
    const first = seen.get(id);
    if (first !== undefined) throw invalidField(`events[${i}].envelope.event_id`, `repeats events[${first}].envelope.event_id (${JSON.stringify(id)}); each event of a batch needs its own id`);
    seen.set(id, i);
    return event;
  });
}

/** Runs Publish's check on entry `i`, its refusal renamed from `event...` to `events[i]...`. */
function entry<T>(i: number, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (!(error instanceof MailroomError) || !error.details.field?.startsWith("event")) throw error;
    const rename = (text: string) => text.replace(/^event(?=[.:]|$)/, `events[${i}]`);
    throw new MailroomError(error.code, rename(error.message), { ...error.details, field: rename(error.details.field) });
  }
}
