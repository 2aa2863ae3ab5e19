/**
 * Every enum field of a request holds a defined value: protobuf enums are
 * open, so a request may carry any number.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RecordRunResultRequestSchema, ListDispatchesRequestSchema } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { PublishRequestSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { MailroomError } from "../../src/domain/errors.js";
import { requireDefinedEnums } from "../../src/domain/enum-values.js";

function refusedField(run: () => void): string | undefined {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(MailroomError);
    return (error as MailroomError).details.field;
  }
  return undefined;
}

// Any number: what a binary request can carry in an enum field.
const undefinedValue = (n: number) => n as never;

describe("requireDefinedEnums", () => {
  it("accepts defined values, zero (UNSPECIFIED) included", () => {
    const request = create(ListDispatchesRequestSchema, { statuses: [1, 2] });
    expect(refusedField(() => requireDefinedEnums(ListDispatchesRequestSchema, request))).toBeUndefined();
    expect(refusedField(() => requireDefinedEnums(PublishRequestSchema, create(PublishRequestSchema, { event: { envelope: { privacy: 0 } } })))).toBeUndefined();
  });

  it.each([
    ["a singular field deep in a message", create(PublishRequestSchema, { event: { envelope: { privacy: undefinedValue(12345) } } }), PublishRequestSchema, "event.envelope.privacy"],
    ["content_capture", create(PublishRequestSchema, { event: { envelope: { contentCapture: undefinedValue(777) } } }), PublishRequestSchema, "event.envelope.content_capture"],
    ["a nested ref's kind", create(PublishRequestSchema, { event: { envelope: { destination: { kind: undefinedValue(99), id: "d" } } } }), PublishRequestSchema, "event.envelope.destination.kind"],
    ["an entry of a list of messages", create(PublishRequestSchema, { event: { envelope: { relatedRefs: [{ kind: 1, id: "a" }, { kind: undefinedValue(42), id: "b" }] } } }), PublishRequestSchema, "event.envelope.related_refs[1].kind"],
    ["an entry of a list of enums", create(ListDispatchesRequestSchema, { statuses: [1, undefinedValue(7)] }), ListDispatchesRequestSchema, "statuses[1]"],
    ["run_status", create(RecordRunResultRequestSchema, { result: { runStatus: undefinedValue(99) } }), RecordRunResultRequestSchema, "result.run_status"],
    ["termination.kind", create(RecordRunResultRequestSchema, { result: { runStatus: 1, termination: { kind: undefinedValue(777) } } }), RecordRunResultRequestSchema, "result.termination.kind"],
  ] as const)("refuses an undefined value in %s, naming the field", (_name, request, schema, field) => {
    expect(refusedField(() => requireDefinedEnums(schema, request))).toBe(field);
  });
});
