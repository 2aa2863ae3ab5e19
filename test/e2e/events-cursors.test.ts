/**
 * EventService cursors and heartbeats, end to end through the real server
 * process over every protocol: a cursor is only valid for the scope it was
 * issued for, and an idle stream's heartbeats carry the current cursor, from
 * which a resume misses nothing and repeats nothing.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it, onTestFinished } from "vitest";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { StartPosition } from "../../gen/mailroom/v1/event_service_pb.js";
import { type EventCursor, EventFrameKind, EventKind, PayloadAccessMode } from "../../gen/mailroom/v1/event_pb.js";
import { type Events, EventStream, PROGRESS, publish, type SubscribeInit, seqOf } from "../support/events.js";
import { drainStream, isolated, ms, protocols, refusal, uid, useClients } from "../support/mailbox.js";
import { serverBackends, useServerProcess } from "../support/server-process.js";

type Scope = NonNullable<SubscribeInit["scope"]>;

/** A cursor issued by a Subscribe on `scope`, after one event of `runId` was published. */
async function cursorOf(events: Events, scope: Scope, runId: string): Promise<EventCursor> {
  await publish(events, { runId, kind: PROGRESS, tags: ["cursor-test"] });
  const stream = new EventStream(events, { scope, start: StartPosition.LATEST });
  try {
    return (await stream.next("the first frame")).cursor!;
  } finally {
    stream.close();
  }
}

describe.each(serverBackends())("EventService cursors and heartbeats on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("one server process", () => {
    const server = useServerProcess({ backend: isolated(backend) });

    describe.each(protocols)("over %s", (protocol) => {
      const { events } = useClients(() => server().url, protocol);

      describe("a cursor is only valid for its own scope", () => {
        const mismatch = { code: Code.InvalidArgument, detail: { reason: ErrorReason.CURSOR_SCOPE_MISMATCH, field: "after.scope" } };

        it("Subscribe and ListEvents with a cursor from another run's stream get INVALID_ARGUMENT (CURSOR_SCOPE_MISMATCH)", async () => {
          const [mine, theirs] = [uid("run"), uid("run")];
          const theirCursor = await cursorOf(events, { case: "runId", value: theirs }, theirs);
          expect(await refusal(drainStream(events.subscribe({ scope: { case: "runId", value: mine }, after: theirCursor })))).toMatchObject(mismatch);
          expect(await refusal(events.listEvents({ scope: { case: "runId", value: mine }, after: theirCursor }))).toMatchObject(mismatch);
        });

        it("a cursor of the whole journal, of an agent or of another filter gets INVALID_ARGUMENT (CURSOR_SCOPE_MISMATCH) from a filter's stream", async () => {
          const runId = uid("run");
          const target: Scope = { case: "filter", value: { runIds: [runId], kinds: [PROGRESS] } };
          const others: Scope[] = [
            { case: "all", value: {} },
            { case: "agentId", value: uid("agent") },
            { case: "filter", value: { runIds: [runId] } },
            { case: "filter", value: { runIds: [runId], kinds: [EventKind.RUN_COMPLETED] } },
          ];
          for (const other of others) {
            const cursor = await cursorOf(events, other, runId);
            expect(await refusal(drainStream(events.subscribe({ scope: target, after: cursor }))), `a cursor of ${other.case}`).toMatchObject(mismatch);
          }
        });

        it("the same filter with another payload access is the same scope: its cursor resumes it", async () => {
          const runId = uid("run");
          const filter = { runIds: [runId], tags: ["cursor-test"] };
          const cursor = await cursorOf(events, { case: "filter", value: { ...filter, payloadAccess: PayloadAccessMode.FULL } }, runId);
          const next = await publish(events, { runId, kind: PROGRESS, tags: ["cursor-test"] });
          const resumed = new EventStream(events, { scope: { case: "filter", value: { ...filter, payloadAccess: PayloadAccessMode.ENVELOPE_ONLY } }, after: cursor });
          onTestFinished(() => resumed.close());
          const frame = await resumed.next("the event after the cursor");
          expect(frame).toMatchObject({ kind: EventFrameKind.EVENT, cursor: { eventSeq: next.eventSeq } });
          expect(frame.event!.payload.case).toBeUndefined();
        });

        it("a cursor ahead of the journal gets OUT_OF_RANGE (CURSOR_AHEAD)", async () => {
          const runId = uid("run");
          const cursor = await cursorOf(events, { case: "runId", value: runId }, runId);
          const ahead = { ...cursor, eventSeq: cursor.eventSeq + 1_000_000n };
          expect(await refusal(drainStream(events.subscribe({ scope: { case: "runId", value: runId }, after: ahead })))).toMatchObject({
            code: Code.OutOfRange,
            detail: { reason: ErrorReason.CURSOR_AHEAD },
          });
        });
      });

      describe("heartbeats", () => {
        it("an idle stream sends heartbeats carrying the current cursor, past events of other scopes; resuming after one misses nothing and repeats nothing", async () => {
          const [mine, other] = [uid("run"), uid("run")];
          const stream = new EventStream(events, { scope: { case: "runId", value: mine }, heartbeatInterval: ms(1000) });
          onTestFinished(() => stream.close());
          expect((await stream.next("CAUGHT_UP")).kind).toBe(EventFrameKind.CAUGHT_UP);
          const seen = await publish(events, { runId: mine, kind: PROGRESS });
          expect(await stream.next("the run's event")).toMatchObject({ kind: EventFrameKind.EVENT, cursor: { eventSeq: seen.eventSeq } });

          // Only other runs' events from here: the stream is idle, yet its cursor moves past them.
          const elsewhere = await publish(events, { runId: other, kind: PROGRESS });
          let beat = await stream.next("a heartbeat", 5_000);
          for (let beats = 1; beat.kind === EventFrameKind.HEARTBEAT && beat.cursor!.eventSeq < elsewhere.eventSeq && beats < 5; beats++) {
            beat = await stream.next("a heartbeat past the other run's event", 5_000);
          }
          expect(beat).toMatchObject({ kind: EventFrameKind.HEARTBEAT, cursor: { scope: { scope: { case: "runId", value: mine } } } });
          expect(beat.cursor!.eventSeq).toBeGreaterThanOrEqual(elsewhere.eventSeq);
          stream.close();

          const missed = await publish(events, { runId: mine, kind: PROGRESS });
          const resumed = new EventStream(events, { scope: { case: "runId", value: mine }, after: beat.cursor });
          onTestFinished(() => resumed.close());
          const first = await resumed.next("the first frame after resuming");
          expect(first).toMatchObject({ kind: EventFrameKind.EVENT, cursor: { eventSeq: missed.eventSeq } });
          expect(seqOf(first.event!.envelope!)).toBe(seqOf(missed));
        });

        it("a heartbeat interval below 1 s gets INVALID_ARGUMENT", async () => {
          expect(await refusal(drainStream(events.subscribe({ scope: { case: "runId", value: uid("run") }, heartbeatInterval: ms(200) })))).toMatchObject({
            code: Code.InvalidArgument,
            detail: { field: "heartbeat_interval" },
          });
        });
      });
    });
  });
});
