/**
 * Which services the server answers, and with what. The mailroom services are
 * registered empty for now: Connect answers every RPC without an
 * implementation with UNIMPLEMENTED "<service>.<method> is not implemented".
 */
import type { ConnectRouter } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { PoolService } from "../../gen/mailroom/v1/pool_service_pb.js";
import { type HealthMonitor, healthService } from "./health.js";

/** The services Health reports on, besides the server as a whole (""). */
export const mailroomServiceNames: readonly string[] = [MailboxService.typeName, PoolService.typeName, EventService.typeName];

export interface RouteDeps {
  health: HealthMonitor;
}

export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(Health, healthService(deps.health));
    router.service(MailboxService, {});
    router.service(PoolService, {});
    router.service(EventService, {});
  };
}
