/**
 * EventService: each handler checks its request (domain), calls the engine
 * and translates the answer.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { parsePublish } from "../domain/events/publish.js";
import { parseListEvents, parseSubscribe } from "../domain/events/requests.js";
import { cursor } from "../domain/events/scope.js";
import type { Engine } from "../engine/engine.js";
import { eventFrame, subscriptionFrame, wireFormatOf } from "./event-frames.js";
import type { ServerStreams } from "./streams.js";

export function eventService(engine: Engine, streams: ServerStreams): ServiceImpl<typeof EventService> {
  return {
    async publish(request) {
      return engine.events.publish(parsePublish(request.event, engine.clock.now()));
    },

    subscribe(request, context) {
      const command = parseSubscribe(request);
      const wire = wireFormatOf(context.requestHeader.get("content-type"));
      return streams.serve(context, async () => {
        const subscription = await engine.events.subscribe(command);
        return {
          async next() {
            const frame = await subscription.next(command.heartbeatMs, context.signal);
            if (!frame) {
              if (context.signal.aborted) throw context.signal.reason;
              return undefined;
            }
            return { frame: subscriptionFrame(frame, command.scope, command.filter.payloadAccess, wire) };
          },
          close: () => subscription.close(),
        };
      });
    },

    async listEvents(request) {
      const command = parseListEvents(request);
      const page = await engine.events.list(command);
      return {
        frames: page.events.map((doc) => eventFrame(doc, command.scope, command.filter.payloadAccess)),
        nextCursor: cursor(command.scope, page.next),
        endOfRange: page.end,
      };
    },
  };
}
