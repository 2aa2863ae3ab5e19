/**
 * Which services the server answers, and with what.
 */
import type { ConnectRouter } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { PoolService } from "../../gen/mailroom/v1/pool_service_pb.js";
import { ServerReflection as ServerReflectionV1 } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { Engine } from "../engine/engine.js";
import { type HealthMonitor, healthService } from "./health.js";
import { eventService } from "./event-service.js";
import { mailboxService } from "./mailbox-service.js";
import { poolService } from "./pool-service.js";
import { DescriptorIndex, reflectionServices, reflectionV1, reflectionV1alpha } from "./reflection.js";
import { withRequestChecks } from "./request-checks.js";
import type { ServerStreams } from "./streams.js";

/** The services Health reports on, besides the server as a whole (""). */
export const mailroomServiceNames: readonly string[] = [MailboxService.typeName, PoolService.typeName, EventService.typeName];

export interface RouteDeps {
  health: HealthMonitor;
  engine: Engine;
  streams: ServerStreams;
  /** The largest message the server sends (--max-message-bytes): what is stored must fit in an answer. */
  maxMessageBytes: number;
}

export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(Health, healthService(deps.health, deps.streams));
    router.service(MailboxService, withRequestChecks(MailboxService, mailboxService(deps.engine, deps.streams, deps.maxMessageBytes)));
    router.service(PoolService, withRequestChecks(PoolService, poolService(deps.engine, deps.streams, deps.maxMessageBytes)));
    router.service(EventService, withRequestChecks(EventService, eventService(deps.engine, deps.streams, deps.maxMessageBytes)));
    const reflection = new DescriptorIndex([Health, MailboxService, PoolService, EventService, ...reflectionServices]);
    router.service(ServerReflectionV1, reflectionV1(reflection));
    router.service(ServerReflectionV1alpha, reflectionV1alpha(reflection));
  };
}
