/**
 * What a client receives when a handler throws: asserted on the wire, through
 * Connect's in-memory router transport with the server's interceptors.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createContextValues, createRouterTransport, type ServiceImpl } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { EntityKind, EntityRefSchema } from "../../gen/mailroom/v1/common_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { EventService } from "../../gen/mailroom/v1/event_service_pb.js";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { MailroomError, notFound } from "../../src/domain/errors.js";
import { CallRecord, callLog } from "../../src/server/calls.js";
import { toConnectError } from "../../src/server/errors.js";
import { errorMappingInterceptor } from "../../src/server/interceptors.js";
import { ServerStreams } from "../../src/server/streams.js";
import { StoreUnavailableError } from "../../src/store/port.js";
import { captureLog } from "../support/log-capture.js";

/** A MailboxService whose Enqueue throws `thrown`, and a client for it. */
function mailboxThrowing(thrown: unknown) {
  const log = captureLog();
  const impl: Partial<ServiceImpl<typeof MailboxService>> = {
    enqueue() {
      throw thrown;
    },
  };
  const transport = createRouterTransport((router) => router.service(MailboxService, impl), {
    router: { interceptors: [errorMappingInterceptor(log.logger)] },
  });
  return { client: createClient(MailboxService, transport), log };
}

async function received(call: Promise<unknown>): Promise<ConnectError> {
  const error = await call.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  if (!(error instanceof ConnectError)) throw new Error(`expected the call to fail with a ConnectError, got ${String(error)}`);
  return error;
}

describe("an unexpected error reaches the client as INTERNAL with a reference, never its text", () => {
  const driverError = new Error("MongoServerError E11000 duplicate key error collection mailroom.dispatches index: thread_dedupe_1");

  it("hides the message, the stack, the collection and the index", async () => {
    const { client } = mailboxThrowing(driverError);
    const error = await received(client.enqueue({}));

    expect(error.code).toBe(Code.Internal);
    expect(error.rawMessage).toMatch(/^internal error \(reference [0-9a-f]+\)$/);
    const visible = JSON.stringify({ message: error.message, metadata: [...error.metadata], details: error.details });
    for (const secret of ["MongoServerError", "E11000", "mailroom.dispatches", "thread_dedupe_1", "    at "]) {
      expect(visible).not.toContain(secret);
    }
    expect(error.findDetails(ErrorDetailSchema)).toEqual([]);
  });

  it("logs the real error, stack included, under the same reference", async () => {
    const { client, log } = mailboxThrowing(driverError);
    const error = await received(client.enqueue({}));
    const reference = /reference ([0-9a-f]+)/.exec(error.rawMessage)?.[1];

    const logged = log.lines.find((line) => line.error_reference === reference);
    expect(logged?.level).toBe("error");
    expect(JSON.stringify(logged?.error)).toContain("E11000");
    expect(JSON.stringify(logged?.error)).toContain(driverError.stack?.split("\n")[1]?.trim());
  });

  it("counts as a warning in the call log", () => {
    const log = captureLog();
    const error = toConnectError(new Error("boom"), log.logger);
    const call = new CallRecord({ procedure: "mailroom.v1.MailboxService/Enqueue", stream: false }, [callLog(log.logger)]);
    call.watching(createContextValues());
    call.settle(error);
    call.end(true, 200);
    expect(log.lines).toContainEqual(expect.objectContaining({ level: "warn", msg: "call failed", procedure: "mailroom.v1.MailboxService/Enqueue", code: "internal" }));
  });

  it("while an INTERNAL answer to a client's protocol error is no server failure", () => {
    const log = captureLog("debug");
    const call = new CallRecord({ procedure: "grpc.health.v1.Health/Check", stream: false }, [callLog(log.logger)]);
    call.watching(createContextValues());
    call.settle(new ConnectError("protocol error: a message has the compressed flag set, but the request names no encoding (grpc-encoding)", Code.Internal));
    call.end(true, 200);
    expect(log.lines).toContainEqual(expect.objectContaining({ level: "debug", msg: "call", code: "internal" }));
  });
});

describe("a MailroomError keeps its code, message and ErrorDetail", () => {
  it("carries reason, field, entity and metadata in the error details", async () => {
    const thrown = new MailroomError("failed_precondition", "dispatch d-1 is ACKED, not CLAIMED", {
      reason: ErrorReason.DISPATCH_NOT_CLAIMED,
      field: "claim_token",
      entity: { kind: EntityKind.DISPATCH, id: "d-1" },
      metadata: { status: "RUN_DISPATCH_STATUS_ACKED" },
    });
    const { client } = mailboxThrowing(thrown);
    const error = await received(client.enqueue({}));

    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toBe("dispatch d-1 is ACKED, not CLAIMED");
    expect(error.findDetails(ErrorDetailSchema)).toEqual([
      create(ErrorDetailSchema, {
        reason: ErrorReason.DISPATCH_NOT_CLAIMED,
        field: "claim_token",
        entity: create(EntityRefSchema, { kind: EntityKind.DISPATCH, id: "d-1" }),
        metadata: { status: "RUN_DISPATCH_STATUS_ACKED" },
      }),
    ]);
  });

  it("maps each domain code to the Connect code of the same name", async () => {
    const { client } = mailboxThrowing(notFound(EntityKind.THREAD, "t-9"));
    const error = await received(client.enqueue({}));
    expect(error.code).toBe(Code.NotFound);
    expect(error.rawMessage).toBe('thread "t-9" not found');
    expect(error.findDetails(ErrorDetailSchema)[0]?.reason).toBe(ErrorReason.ENTITY_NOT_FOUND);
  });
});

describe("a store outage is UNAVAILABLE with reason STORE_UNAVAILABLE and a generic message", () => {
  it("does not pass on what the store said", async () => {
    const { client } = mailboxThrowing(new StoreUnavailableError("MongoDB unavailable during an operation on dispatches"));
    const error = await received(client.enqueue({}));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.rawMessage).not.toContain("dispatches");
    expect(error.findDetails(ErrorDetailSchema)[0]?.reason).toBe(ErrorReason.STORE_UNAVAILABLE);
  });
});

describe("a ConnectError passes through unchanged", () => {
  it("keeps code and message", async () => {
    const { client } = mailboxThrowing(new ConnectError("slow down", Code.ResourceExhausted));
    const error = await received(client.enqueue({}));
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(error.rawMessage).toBe("slow down");
  });
});

describe("errors thrown in the middle of a server stream are mapped too", () => {
  it("delivers the messages before the failure, then INTERNAL without the error's text, and logs it with a reference", async () => {
    const log = captureLog();
    const streams = new ServerStreams({ maxStreams: 10, maxMessageBytes: 1024 }, log.logger);
    const impl: Partial<ServiceImpl<typeof EventService>> = {
      subscribe(_request, context) {
        let sent = false;
        return streams.serve(context, () => ({
          async next() {
            if (sent) throw new Error("cursor on collection mailroom.events died");
            sent = true;
            return {};
          },
          close() {},
        }));
      },
    };
    const transport = createRouterTransport((router) => router.service(EventService, impl), {
      router: { interceptors: [errorMappingInterceptor(log.logger)] },
    });
    const received: unknown[] = [];
    const error = await (async () => {
      for await (const frame of createClient(EventService, transport).subscribe({})) received.push(frame);
    })().then(
      () => undefined,
      (thrown: unknown) => thrown,
    );

    expect(received).toHaveLength(1);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Internal);
    expect((error as ConnectError).message).not.toContain("mailroom.events");
    const reference = /reference ([0-9a-f]+)/.exec((error as ConnectError).rawMessage)?.[1];
    expect(log.lines).toContainEqual(expect.objectContaining({ level: "error", error_reference: reference }));
    expect(streams.openOf("mailroom.v1.EventService/Subscribe")).toBe(0);
  });
});
