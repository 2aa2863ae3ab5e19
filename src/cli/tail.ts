/**
 * `mailroom tail`: follow the event journal (EventService.Subscribe), one
 * line per event, from the start of the retained journal, from now, or after
 * a cursor a previous tail printed; then live until Ctrl-C (or --limit, or
 * --until-caught-up). When it stops it prints the cursor to resume from.
 */
import { create, fromBinary, fromJsonString, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, InvalidArgumentError } from "commander";
import { AllEventsSchema, type EventCursor, EventCursorSchema, EventFamily, EventFilterSchema, EventFrameKind, EventFrameSchema, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { StartPosition, type SubscribeRequest, SubscribeRequestSchema } from "../../gen/mailroom/v1/event_service_pb.js";
import { type ConnectionOptions, parseCount, parseEnumList, parseList, withClients, withConnectionOptions } from "./connection.js";
import { eventLine } from "./format.js";

interface TailOptions extends ConnectionOptions {
  run?: string[];
  agent?: string[];
  thread?: string[];
  pool?: string[];
  kind?: EventKind[];
  family?: EventFamily[];
  after?: EventCursor;
  fromNow: boolean;
  untilCaughtUp: boolean;
  limit?: number;
}

/** A cursor as `tail` prints it: base64url of the EventCursor message. */
export function cursorToken(cursor: EventCursor): string {
  return Buffer.from(toBinary(EventCursorSchema, cursor)).toString("base64url");
}

/** Accepts a token printed by `tail`, or a cursor in proto3 JSON (as `--json` frames carry it). */
function parseCursor(text: string): EventCursor {
  try {
    return text.trim().startsWith("{") ? fromJsonString(EventCursorSchema, text) : fromBinary(EventCursorSchema, Buffer.from(text, "base64url"));
  } catch {
    throw new InvalidArgumentError("expected a cursor printed by tail (or a cursor in JSON)");
  }
}

/**
 * One run or one agent is a scope of its own; anything more is a filter. The
 * scope matters for resuming: a cursor is accepted back only by the same scope.
 */
function subscribeRequest(options: TailOptions): SubscribeRequest {
  const kinds = options.kind ?? [];
  const families = options.family ?? [];
  const runs = options.run ?? [];
  const agents = options.agent ?? [];
  const onlyOne = kinds.length + families.length + (options.thread?.length ?? 0) + (options.pool?.length ?? 0) === 0 && runs.length + agents.length <= 1;
  const scope: SubscribeRequest["scope"] = !onlyOne
    ? {
        case: "filter",
        value: create(EventFilterSchema, { runIds: runs, agentIds: agents, threadIds: options.thread ?? [], poolIds: options.pool ?? [], kinds, families }),
      }
    : runs[0] !== undefined
      ? { case: "runId", value: runs[0] }
      : agents[0] !== undefined
        ? { case: "agentId", value: agents[0] }
        : { case: "all", value: create(AllEventsSchema) };
  return create(SubscribeRequestSchema, {
    scope,
    after: options.after,
    start: options.fromNow ? StartPosition.LATEST : StartPosition.EARLIEST,
  });
}

export function addTailCommand(program: Command): void {
  withConnectionOptions(
    program
      .command("tail")
      .description(
        "Follow events, one line each: the retained journal first (or only what happens from now, or after --after), then live until Ctrl-C. " +
          "Filters combine with AND; a list option matches any of its values.",
      )
      .option("--run <ids>", "only these runs (comma-separated, repeatable)", parseList)
      .option("--agent <ids>", "only these agents", parseList)
      .option("--thread <ids>", "only these threads", parseList)
      .option("--pool <ids>", "only these pools", parseList)
      .option("--kind <kinds>", "only these kinds, e.g. dispatch_enqueued,dispatch_acked", parseEnumList(EventKind, "kind"))
      .option("--family <families>", "only these families, e.g. mailbox,agent_pool", parseEnumList(EventFamily, "family"))
      .option("--after <cursor>", "resume after this cursor (printed when a tail stops; same filters)", parseCursor)
      .option("--from-now", "skip the journal: only events recorded from now on", false)
      .option("--until-caught-up", "stop at the end of the journal instead of following it live", false)
      .option("--limit <n>", "stop after this many events", parseCount),
  ).action((options: TailOptions) =>
    withClients(options, async ({ events }, out) => {
      const request = subscribeRequest(options);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      let last = options.after;
      let seen = 0;
      try {
        for await (const { frame } of events.subscribe(request, { signal: stop.signal })) {
          if (!frame || frame.kind === EventFrameKind.HEARTBEAT) continue;
          if (frame.cursor) last = frame.cursor;
          if (out.json) out.message(EventFrameSchema, frame);
          if (frame.kind === EventFrameKind.CAUGHT_UP) {
            if (options.untilCaughtUp) break;
            if (!out.json) out.error(out.errorPaint.dim("-- caught up; following live (Ctrl-C to stop) --"));
          } else if (frame.overflow && !out.json) {
            out.error(out.errorPaint.yellow(`-- ${frame.overflow.droppedCount} events dropped; resume with --after ${frame.overflow.repairFrom ? cursorToken(frame.overflow.repairFrom) : "?"} to fetch them --`));
          } else if (frame.event?.envelope) {
            if (!out.json) out.line(eventLine(out.paint, frame.event.envelope));
            seen += 1;
            if (options.limit !== undefined && seen >= options.limit) break;
          }
        }
      } catch (error) {
        // Ctrl-C is how a tail ends: not an error.
        if (!(stop.signal.aborted && ConnectError.from(error).code === Code.Canceled)) throw error;
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
        if (last && !out.json) out.error(out.errorPaint.dim(`resume with: --after ${cursorToken(last)}`));
      }
    }),
  );
}
