/**
 * Mailbox commands: enqueue, claim, ack, nack, cancel, interrupt, and the
 * inspections get, list and count.
 */
import type { Command } from "commander";
import { type RunDispatch, RunDispatchSchema, RunDispatchStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import {
  CountDispatchesResponseSchema,
  EnqueueResponseSchema,
  InterruptResponseSchema,
  ListDispatchesResponseSchema,
} from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { type ConnectionOptions, parseCount, parseDuration, parseEnumList, withClients, withConnectionOptions } from "./connection.js";
import { dispatchLine, statusName } from "./format.js";
import type { Output } from "./output.js";

type Duration = ReturnType<typeof parseDuration>;

const parseStatuses = parseEnumList(RunDispatchStatus, "status");

export function addMailboxCommands(program: Command): void {
  withConnectionOptions(
    program
      .command("enqueue")
      .description("Add a dispatch to a thread; prints it (a repeated --dedupe-key prints the original, flagged deduplicated).")
      .requiredOption("--thread <id>", "thread id")
      .option("--run <id>", "run id (empty: generated)")
      .option("--agent <id>", "agent id")
      .option("--dispatch-id <id>", "your own dispatch id, for idempotent retries (empty: generated)")
      .option("--priority <0-255>", "higher is claimed first (default 128)", parseCount)
      .option("--dedupe-key <key>", "a repeat with the same key in the thread returns the original dispatch")
      .option("--max-attempts <n>", "attempts before DEAD_LETTER (default 5)", parseCount)
      .option("--delay <duration>", "claimable only after this long, e.g. 30s", parseDuration)
      .option("--payload <text>", "inline payload (UTF-8 text)")
      .option("--media-type <type>", "the payload's media type", "application/json"),
  ).action(
    (options: ConnectionOptions & {
      thread: string;
      run?: string;
      agent?: string;
      dispatchId?: string;
      priority?: number;
      dedupeKey?: string;
      maxAttempts?: number;
      delay?: Duration;
      payload?: string;
      mediaType: string;
    }) =>
      withClients(options, async ({ mailbox }, out) => {
        const reply = await mailbox.enqueue({
          dispatch: {
            threadId: options.thread,
            runId: options.run ?? "",
            agentId: options.agent ?? "",
            dispatchId: options.dispatchId ?? "",
            priority: options.priority,
            dedupeKey: options.dedupeKey ?? "",
            maxAttempts: options.maxAttempts,
            schedule: options.delay ? { case: "delay", value: options.delay } : { case: undefined },
            payload: options.payload === undefined ? undefined : { data: new TextEncoder().encode(options.payload), mediaType: options.mediaType },
          },
        });
        if (out.json) return out.message(EnqueueResponseSchema, reply);
        out.line(`${reply.dispatch ? dispatchLine(out.paint, reply.dispatch) : ""}${reply.deduplicated ? out.paint.yellow(" (deduplicated)") : ""}`);
      }),
  );

  withConnectionOptions(
    program
      .command("claim")
      .description("Claim claimable dispatches with a lease; prints each with its claim token (nothing, and a note on stderr, when there is none).")
      .option("--thread <id>", "only this thread (default: any thread)")
      .option("--consumer <id>", "who claims (recorded as claimed_by)", "mailroom-cli")
      .option("--lease <duration>", "how long the claim holds", parseDuration, parseDuration("30s"))
      .option("--limit <n>", "at most this many (1 to 100)", parseCount, 1)
      .option("--wait <duration>", "long-poll up to this long for work (at most 60s)", parseDuration),
  ).action((options: ConnectionOptions & { thread?: string; consumer: string; lease: Duration; limit: number; wait?: Duration }) =>
    withClients(options, async ({ mailbox }, out) => {
      const { dispatches } = await mailbox.claim({
        threadId: options.thread ?? "",
        consumerId: options.consumer,
        lease: options.lease,
        limit: options.limit,
        wait: options.wait,
      });
      for (const dispatch of dispatches) {
        if (out.json) out.message(RunDispatchSchema, dispatch);
        else out.line(dispatchLine(out.paint, dispatch));
      }
      if (dispatches.length === 0) out.error("no claimable dispatch");
    }),
  );

  withConnectionOptions(
    program.command("ack").description("Complete a claimed dispatch (CLAIMED -> ACKED).").argument("<dispatch-id>").argument("<claim-token>"),
  ).action((dispatchId: string, claimToken: string, options: ConnectionOptions) =>
    withClients(options, async ({ mailbox }, out) => printDispatch(out, (await mailbox.ack({ dispatchId, claimToken })).dispatch)),
  );

  withConnectionOptions(
    program
      .command("nack")
      .description("Give a claimed dispatch back for a retry (DEAD_LETTER once its attempts are spent).")
      .argument("<dispatch-id>")
      .argument("<claim-token>")
      .option("--delay <duration>", "retry after this long (default: at once)", parseDuration)
      .option("--error <text>", "why, recorded as last_error", ""),
  ).action((dispatchId: string, claimToken: string, options: ConnectionOptions & { delay?: Duration; error: string }) =>
    withClients(options, async ({ mailbox }, out) => {
      const retry = options.delay ? { case: "delay" as const, value: options.delay } : { case: undefined };
      printDispatch(out, (await mailbox.nack({ dispatchId, claimToken, retry, error: options.error })).dispatch);
    }),
  );

  withConnectionOptions(
    program.command("cancel").description("Cancel a QUEUED or CLAIMED dispatch (a terminal one is printed unchanged).").argument("<dispatch-id>").option("--reason <text>", "why", ""),
  ).action((dispatchId: string, options: ConnectionOptions & { reason: string }) =>
    withClients(options, async ({ mailbox }, out) => {
      const reply = await mailbox.cancel({ dispatchId, reason: options.reason });
      printDispatch(out, reply.dispatch);
      if (!reply.changed && !out.json) out.error("already terminal: unchanged");
    }),
  );

  withConnectionOptions(
    program
      .command("interrupt")
      .description("Interrupt a thread: bump its epoch and supersede its queued dispatches of older epochs.")
      .argument("<thread-id>")
      .option("--detailed", "also list the superseded dispatches", false),
  ).action((threadId: string, options: ConnectionOptions & { detailed: boolean }) =>
    withClients(options, async ({ mailbox }, out) => {
      const reply = await mailbox.interrupt({ threadId, detailed: options.detailed });
      if (out.json) return out.message(InterruptResponseSchema, reply);
      out.line(`thread ${out.paint.bold(threadId)} interrupted: epoch=${reply.newDispatchEpoch} superseded=${reply.supersededCount}`);
      if (reply.activeDispatch) out.line(`active ${dispatchLine(out.paint, reply.activeDispatch)}`);
      for (const dispatch of reply.supersededDispatches) out.line(`superseded ${dispatchLine(out.paint, dispatch)}`);
    }),
  );

  withConnectionOptions(program.command("get").description("Show one dispatch.").argument("<dispatch-id>")).action((dispatchId: string, options: ConnectionOptions) =>
    withClients(options, async ({ mailbox }, out) => printDispatch(out, (await mailbox.getDispatch({ dispatchId })).dispatch)),
  );

  withConnectionOptions(
    program
      .command("list")
      .description("List a thread's dispatches, oldest first (one page; --page-token for the next).")
      .requiredOption("--thread <id>", "thread id")
      .option("--status <statuses>", "only these statuses, e.g. queued,claimed (repeatable)", parseStatuses)
      .option("--page-size <n>", "1 to 1000 (default 100)", parseCount)
      .option("--page-token <token>", "from the previous page"),
  ).action((options: ConnectionOptions & { thread: string; status?: RunDispatchStatus[]; pageSize?: number; pageToken?: string }) =>
    withClients(options, async ({ mailbox }, out) => {
      const reply = await mailbox.listDispatches({
        threadId: options.thread,
        statuses: options.status ?? [],
        pageSize: options.pageSize ?? 0,
        pageToken: options.pageToken ?? "",
      });
      if (out.json) return out.message(ListDispatchesResponseSchema, reply);
      for (const dispatch of reply.dispatches) out.line(dispatchLine(out.paint, dispatch));
      if (reply.nextPageToken) out.error(`more: --page-token ${reply.nextPageToken}`);
    }),
  );

  withConnectionOptions(
    program
      .command("count")
      .description("Count dispatches by status (every status asked for is printed, zeros included).")
      .option("--thread <id>", "only this thread (default: every thread)")
      .option("--status <statuses>", "only these statuses, e.g. queued,claimed (repeatable; default all)", parseStatuses),
  ).action((options: ConnectionOptions & { thread?: string; status?: RunDispatchStatus[] }) =>
    withClients(options, async ({ mailbox }, out) => {
      const asked = options.status ?? [];
      const reply = await mailbox.countDispatches({ threadId: options.thread ?? "", statuses: asked });
      if (out.json) return out.message(CountDispatchesResponseSchema, reply);
      const counted = new Map(reply.counts.map((entry) => [entry.status, entry.count]));
      const shown = asked.length > 0 ? asked : allStatuses;
      for (const status of shown) out.line(`${statusName(status)} ${counted.get(status) ?? 0n}`);
      out.line(`total ${reply.total}`);
    }),
  );
}

const allStatuses = Object.values(RunDispatchStatus).filter((value): value is RunDispatchStatus => typeof value === "number" && value !== 0);

function printDispatch(out: Output, dispatch: RunDispatch | undefined): void {
  if (!dispatch) return;
  if (out.json) out.message(RunDispatchSchema, dispatch);
  else out.line(dispatchLine(out.paint, dispatch));
}
