/**
 * Nothing a request carries beyond what the contract defines and bounds is
 * stored: unknown fields are dropped, enum values the contract does not
 * define, oversized or control-character ids, and instants out of range are
 * refused with INVALID_ARGUMENT naming the field, and the refused call
 * changes nothing.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { WireType } from "@bufbuild/protobuf/wire";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { type PrivacyClass, type DestinationKind } from "../../gen/mailroom/v1/common_pb.js";
import { type RunStatus, type TerminationKind, RunDispatchStatus as Status } from "../../gen/mailroom/v1/dispatch_pb.js";
import { AgentEventSchema, type ContentCaptureMode, EventKind, PayloadAccessMode } from "../../gen/mailroom/v1/event_pb.js";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { NewDispatchSchema } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { claimOne, enqueue, isolated, refusal, uid, useClients } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

const undefinedValue = <T>(n: number) => n as unknown as T;
/** An unknown length-delimited field, as a newer (or hostile) client would send it. */
const unknownField = (bytes: number) => [{ no: 999, wireType: WireType.LengthDelimited, data: new Uint8Array([...lengthPrefix(bytes), ...new Uint8Array(bytes).fill(0x41)]) }];

function lengthPrefix(n: number): number[] {
  const out: number[] = [];
  for (let v = n; ; v >>>= 7) {
    if (v < 0x80) return [...out, v];
    out.push((v & 0x7f) | 0x80);
  }
}

describe.each(serverBackends())("request checks on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });
    const { mailbox, events } = useClients(() => server().url, "grpc");

    const customEvent = (runId: string, envelope: Record<string, unknown> = {}) => create(AgentEventSchema, {
      envelope: { runId, kind: EventKind.CUSTOM, customKind: "probe", ...envelope },
      payload: { case: "full", value: { data: new Uint8Array([1, 2, 3]), mediaType: "application/octet-stream" } },
    });

    const journaled = async (runId: string) => (await events.listEvents({ scope: { case: "runId", value: runId } })).frames;

    describe("unknown fields are never stored", () => {
      it("a Publish whose envelope carries 1 MiB of unknown fields journals the event without them, for every reader", async () => {
        const runId = uid("unknown-fields");
        const event = customEvent(runId);
        event.envelope!.$unknown = unknownField(1 << 20);
        const { envelope } = await events.publish({ event });
        expect(envelope!.$unknown ?? []).toEqual([]);
        for (const payloadAccess of [PayloadAccessMode.FULL, PayloadAccessMode.ENVELOPE_ONLY]) {
          const { frames } = await events.listEvents({ scope: { case: "filter", value: { runIds: [runId], payloadAccess } } });
          expect(frames).toHaveLength(1);
          const stored = frames[0]!.event!;
          expect(stored.envelope!.$unknown ?? []).toEqual([]);
          expect(toBinary(AgentEventSchema, stored).length).toBeLessThan(4096);
        }
      });

      it("an Enqueue whose dispatch carries unknown fields stores the dispatch without them", async () => {
        const dispatch = create(NewDispatchSchema, { threadId: uid("unknown-dispatch") });
        dispatch.$unknown = unknownField(1024);
        const { dispatch: stored } = await mailbox.enqueue({ dispatch });
        const { dispatch: read } = await mailbox.getDispatch({ dispatchId: stored!.dispatchId });
        expect(read!.$unknown ?? []).toEqual([]);
      });
    });

    describe("enum fields hold values the contract defines", () => {
      it.each([
        ["privacy 12345", { privacy: undefinedValue<PrivacyClass>(12345) }, "event.envelope.privacy"],
        ["content_capture 777", { contentCapture: undefinedValue<ContentCaptureMode>(777) }, "event.envelope.content_capture"],
        ["destination.kind 99", { destination: { kind: undefinedValue<DestinationKind>(99), id: "d" } }, "event.envelope.destination.kind"],
      ])("Publish with %s is refused naming the field, and nothing is journaled", async (_name, envelope, field) => {
        const runId = uid("enum");
        const refused = await refusal(events.publish({ event: customEvent(runId, envelope) }));
        expect([refused.code, refused.detail?.reason, refused.detail?.field]).toEqual([Code.InvalidArgument, ErrorReason.INVALID_FIELD, field]);
        expect(await journaled(runId)).toEqual([]);
      });

      it.each([
        ["run_status 99", { runStatus: undefinedValue<RunStatus>(99) }, "result.run_status"],
        ["termination.kind 777", { runStatus: 1, termination: { kind: undefinedValue<TerminationKind>(777), detail: "" } }, "result.termination.kind"],
      ])("RecordRunResult with %s is refused naming the field, and the dispatch is unchanged", async (_name, result, field) => {
        const thread = uid("run-result");
        await enqueue(mailbox, thread);
        const claimed = await claimOne(mailbox, thread);
        const refused = await refusal(mailbox.recordRunResult({ dispatchId: claimed.dispatchId, claimToken: claimed.claimToken, result }));
        expect([refused.code, refused.detail?.field]).toEqual([Code.InvalidArgument, field]);
        const { dispatch } = await mailbox.getDispatch({ dispatchId: claimed.dispatchId });
        expect([dispatch!.status, dispatch!.runStatus, dispatch!.termination]).toEqual([Status.CLAIMED, 0, undefined]);
      });
    });

    describe("strings have the limits the contract states", () => {
      it.each([
        ["1 MiB", "s".repeat(1 << 20)],
        ["NUL and terminal escapes", "run\u0000\u001b[31mred"],
      ])("Publish with a source.id of %s is refused naming event.envelope.source.id", async (_name, id) => {
        const runId = uid("source");
        const refused = await refusal(events.publish({ event: customEvent(runId, { source: { kind: 3, id } }) }));
        expect([refused.code, refused.detail?.field]).toEqual([Code.InvalidArgument, "event.envelope.source.id"]);
        expect(await journaled(runId)).toEqual([]);
      });

      it("DeliverLive refuses a message text above 64 KiB, naming it", async () => {
        const target = { threadId: uid("live"), runId: "r" };
        const refused = await refusal(mailbox.deliverLive({ target, command: { body: { case: "messages", value: { messages: [{ role: "user", text: "x".repeat(64 * 1024 + 1) }] } } } }));
        expect([refused.code, refused.detail?.field]).toEqual([Code.InvalidArgument, "command.messages.messages[0].text"]);
      });
    });

    describe("instants are within a stated range", () => {
      it("Enqueue with available_at in year 9999 is refused naming dispatch.available_at, and nothing is stored", async () => {
        const thread = uid("far-future");
        const refused = await refusal(mailbox.enqueue({ dispatch: { threadId: thread, schedule: { case: "availableAt", value: timestampFromMs(Date.UTC(9999, 0, 1)) } } }));
        expect([refused.code, refused.detail?.field]).toEqual([Code.InvalidArgument, "dispatch.available_at"]);
        expect(refused.message).toMatch(/365d after the server's clock/);
        expect((await mailbox.listDispatches({ threadId: thread })).dispatches).toEqual([]);
      });
    });
  });
});
