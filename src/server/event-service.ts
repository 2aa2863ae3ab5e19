/**
 * EventService: each handler checks its request (domain), calls the engine
 * and translates the answer.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { parsePublishBatch } from "../domain/events/batch.js";
import { parsePublish } from "../domain/events/publish.js";
import { parseListEvents, parseSubscribe } from "../domain/events/requests.js";
import { cursor } from "../domain/events/scope.js";
import type { Engine } from "../engine/engine.js";
import { EventAnswers } from "./event-answers.js";
import { eventFrame, formatOf, subscriptionFrame, wireFormatOf } from "./event-frames.js";

export function eventService(engine: Engine, maxMessageBytes: number): ServiceImpl<typeof EventService> {
  const answers = new EventAnswers(maxMessageBytes);
  return {
    async publish(request) {
      const event = parsePublish(request.event, engine.clock.now());
      answers.checkPublish(event);
      return engine.events.publish(event);
    },

    async publishBatch(request) {
      return engine.events.publishBatch(parsePublishBatch(request.events, engine.clock.now()));
    },

    async *subscribe(request, context) {
      const command = parseSubscribe(request);
      const subscription = await engine.events.subscribe(command);
      const wire = wireFormatOf(context.requestHeader.get("content-type"));
      try {
        for (;;) {
          const frame = await subscription.next(command.heartbeatMs, context.signal);
          if (!frame) break;
          yield { frame: subscriptionFrame(frame, command.scope, command.filter.payloadAccess, wire) };
        }
        if (context.signal.aborted) throw context.signal.reason;
      } finally {
        subscription.close();
      }
    },

    async listEvents(request, context) {
      const command = parseListEvents(request);
      const page = await engine.events.list(command);
      const frames = page.events.map((doc) => eventFrame(doc, command.scope, command.filter.payloadAccess));
      // A page holds only what fits in one answer; the next one starts after its last event.
      const fit = answers.framesThatFit(frames, formatOf(context));
      if (fit < frames.length) return { frames: frames.slice(0, fit), nextCursor: cursor(command.scope, page.events[fit - 1]!._id), endOfRange: false };
      return { frames, nextCursor: cursor(command.scope, page.next), endOfRange: page.end };
    },
  };
}
