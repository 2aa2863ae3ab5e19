/**
 * EventService: each handler checks its request (domain), calls the engine
 * (the events of its caller's namespace) and translates the answer.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { parsePublishBatch } from "../domain/events/batch.js";
import { parsePublish } from "../domain/events/publish.js";
import { parseListEvents, parseSubscribe } from "../domain/events/requests.js";
import { cursor } from "../domain/events/scope.js";
import type { Engine } from "../engine/engine.js";
import { eventFrame, subscriptionFrame, wireFormatOf } from "./event-frames.js";
import { scopeOf } from "./principal.js";

export function eventService(engine: Engine): ServiceImpl<typeof EventService> {
  return {
    async publish(request, context) {
      return scopeOf(engine, context).events.publish(parsePublish(request.event, engine.clock.now()));
    },

    async publishBatch(request, context) {
      return scopeOf(engine, context).events.publishBatch(parsePublishBatch(request.events, engine.clock.now()));
    },

    async *subscribe(request, context) {
      const command = parseSubscribe(request);
      const subscription = await scopeOf(engine, context).events.subscribe(command);
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
      const page = await scopeOf(engine, context).events.list(command);
      return {
        frames: page.events.map((doc) => eventFrame(doc, command.scope, command.filter.payloadAccess)),
        nextCursor: cursor(command.scope, page.next),
        endOfRange: page.end,
      };
    },
  };
}
