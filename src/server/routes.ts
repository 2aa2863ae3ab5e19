/**
 * Which services the server answers, and with what.
 */
import type { ConnectRouter } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { PoolService } from "../../gen/mailroom/v1/pool_service_pb.js";
import type { Engine } from "../engine/engine.js";
import { type HealthMonitor, healthService } from "./health.js";
import { eventService, type EventServiceLimits } from "./event-service.js";
import { mailboxService } from "./mailbox-service.js";
import { poolService } from "./pool-service.js";
import type { ServerStreams } from "./streams.js";

/** The services Health reports on, besides the server as a whole (""). */
export const mailroomServiceNames: readonly string[] = [MailboxService.typeName, PoolService.typeName, EventService.typeName];

export interface RouteDeps {
  health: HealthMonitor;
  engine: Engine;
  streams: ServerStreams;
  events: EventServiceLimits;
}

export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(Health, healthService(deps.health, deps.streams));
    router.service(MailboxService, mailboxService(deps.engine, deps.streams));
    router.service(PoolService, poolService(deps.engine, deps.streams));
    router.service(EventService, eventService(deps.engine, deps.streams, deps.events));
  };
}
