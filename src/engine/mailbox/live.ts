/**
 * Live commands to a running run (seed: LiveRunCommand, deliver_live_to,
 * open_live_channel_for).
 *
 * An open channel is registered in the store (refreshed while open, expiring
 * if its instance dies), so DeliverLive on any instance can tell DELIVERED
 * from NO_SUBSCRIBER. A delivered command is stored; the instance holding
 * the channel receives it through its change feed (or at once, when it is
 * the same instance). Until the receiver acks it, a command is sent again to
 * every channel opened for its target, for `commandTtlMs`. When the change
 * feed had to reopen its stream, the commands stored meanwhile are read back
 * for the channels open here (`resync`): DeliverLive answered DELIVERED for
 * them, so they must arrive.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { LiveDeliveryOutcome, type LiveRunCommand, LiveRunCommandSchema, type LiveRunTarget } from "../../../gen/mailroom/v1/live_pb.js";
import type { Clock } from "../../domain/clock.js";
import { ErrorReason, MailroomError } from "../../domain/errors.js";
import { newId } from "../../domain/ids.js";
import { type Collection, type Doc, DuplicateKeyError, type Store } from "../../store/port.js";
import { PushQueue } from "../push-queue.js";
import type { ChangeFeed } from "../change-feed.js";
import type { Logger } from "../logger.js";

export const LIVE_CHANNELS = "live_channels";
export const LIVE_COMMANDS = "live_commands";

interface Target {
  thread_id: string;
  run_id: string;
  /** Empty when the channel or command is for any dispatch of the run. */
  dispatch_id: string;
}

interface ChannelDoc extends Doc, Target {
  _id: string;
  instance_id: string;
  expires_at: number;
}

interface CommandDoc extends Doc, Target {
  _id: string;
  command: Uint8Array;
  sent_at: number;
  expires_at: number;
  acked: boolean;
  acked_at?: number;
}

export interface LiveOptions {
  /** Identifies this server instance in the channel registry. */
  instanceId: string;
  /** A registration not refreshed for this long is considered gone (its instance died). */
  channelTtlMs?: number;
  /** Unacked commands are sent again to re-opened channels for this long. */
  commandTtlMs?: number;
}

/** How many targets a resync reads at once. */
const RESYNC_CONCURRENCY = 16;

function targetOf(target: LiveRunTarget): Target {
  return { thread_id: target.threadId, run_id: target.runId, dispatch_id: target.dispatchId };
}

/** An empty run or dispatch on either side stands for any (seed: deliver_live(thread), open_live_channel(thread)). */
function matches(channel: Target, command: Target): boolean {
  return channel.thread_id === command.thread_id && either(channel.run_id, command.run_id) && either(channel.dispatch_id, command.dispatch_id);
}

const either = (a: string, b: string) => a === "" || b === "" || a === b;

/** Store conditions for the other side of a target: equal, or empty (any); no condition when this side is empty. */
function anyOr(field: "run_id" | "dispatch_id", value: string): Record<string, unknown> {
  return value === "" ? {} : { [field]: { $in: ["", value] } };
}

/** One open channel in this process: commands for its target, in order, each once. */
export class LiveChannel {
  readonly queue = new PushQueue<LiveRunCommand>();
  private readonly sent = new Set<string>();

  constructor(
    readonly id: string,
    readonly target: Target,
    private readonly onClose: (channel: LiveChannel) => Promise<void>,
  ) {}

  offer(command: LiveRunCommand): void {
    if (this.queue.closed || this.sent.has(command.commandId)) return;
    this.sent.add(command.commandId);
    this.queue.push(command);
  }

  /** Unregisters the channel; idempotent. */
  async close(): Promise<void> {
    if (this.queue.closed) return;
    this.queue.close();
    await this.onClose(this);
  }
}

export class LiveCommands {
  private readonly channels: Collection<ChannelDoc>;
  private readonly commands: Collection<CommandDoc>;
  private readonly local = new Map<string, LiveChannel>();
  private readonly channelTtlMs: number;
  private readonly commandTtlMs: number;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly detach: Array<() => void> = [];

  constructor(
    store: Store,
    private readonly feed: ChangeFeed,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: LiveOptions,
  ) {
    this.channels = store.collection<ChannelDoc>(LIVE_CHANNELS);
    this.commands = store.collection<CommandDoc>(LIVE_COMMANDS);
    this.channelTtlMs = options.channelTtlMs ?? 30_000;
    this.commandTtlMs = options.commandTtlMs ?? 600_000;
  }

  async init(): Promise<void> {
    await this.channels.createIndexes([{ key: { thread_id: 1, run_id: 1, expires_at: 1 } }, { key: { expires_at: 1 } }]);
    await this.commands.createIndexes([{ key: { thread_id: 1, run_id: 1, acked: 1, sent_at: 1 } }, { key: { expires_at: 1 } }]);
  }

  /** Routes commands stored by other instances; call before the change feed starts. */
  attach(): void {
    this.detach.push(
      this.feed.on(LIVE_COMMANDS, (change) => {
        if (change.fullDocument) this.route(change.fullDocument as unknown as CommandDoc);
      }),
      this.feed.onResync(() => this.resync()),
    );
  }

  /** Keeps this instance's registrations alive and drops expired ones. */
  start(): void {
    const refreshEvery = Math.max(50, Math.floor(this.channelTtlMs / 3));
    this.refreshTimer = setInterval(() => {
      this.refresh().catch((error) => this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "could not refresh live channel registrations"));
    }, refreshEvery);
    this.refreshTimer.unref?.();
  }

  async stop(): Promise<void> {
    clearInterval(this.refreshTimer);
    for (const undo of this.detach.splice(0)) undo();
    await Promise.all([...this.local.values()].map((channel) => channel.close()));
  }

  /**
   * Opens a channel for a target. When this resolves the channel is
   * registered: DeliverLive to the target reports DELIVERED from then on, and
   * unacked earlier commands are already queued on it.
   */
  async open(target: LiveRunTarget): Promise<LiveChannel> {
    const id = newId();
    const channel = new LiveChannel(id, targetOf(target), (closing) => this.unregister(closing));
    // Listen locally before registering, so nothing routed after the registration is missed.
    this.local.set(id, channel);
    const now = this.clock.now();
    await this.channels.insertOne({ _id: id, ...channel.target, instance_id: this.options.instanceId, expires_at: now + this.channelTtlMs });
    for (const doc of await this.unacked(channel.target, now)) if (matches(channel.target, doc)) channel.offer(this.decode(doc));
    return channel;
  }

  /**
   * After the change feed reopened its stream: commands another instance
   * stored while it was down never came through it. Reads the unacked
   * commands of every target with a channel open here and routes them (a
   * channel skips those it has already sent). One query per distinct target.
   */
  async resync(): Promise<void> {
    const now = this.clock.now();
    const targets = new Map<string, Target>();
    for (const { target } of this.local.values()) targets.set(JSON.stringify([target.thread_id, target.run_id]), target);
    const pending = [...targets.values()];
    for (let i = 0; i < pending.length; i += RESYNC_CONCURRENCY) {
      const found = await Promise.all(pending.slice(i, i + RESYNC_CONCURRENCY).map((target) => this.unacked(target, now)));
      for (const doc of found.flat()) this.route(doc);
    }
  }

  /** The unexpired, unacked commands for a target's thread and run, oldest first. */
  private unacked(target: Target, now: number): Promise<CommandDoc[]> {
    return this.commands.find(
      { thread_id: target.thread_id, ...anyOr("run_id", target.run_id), acked: false, expires_at: { $gt: now } },
      { sort: { sent_at: 1, _id: 1 } },
    );
  }

  async deliver(target: LiveRunTarget, command: LiveRunCommand): Promise<{ outcome: LiveDeliveryOutcome; commandId: string }> {
    const now = this.clock.now();
    const wanted = targetOf(target);
    const open = await this.channels.findOne({ thread_id: wanted.thread_id, ...anyOr("run_id", wanted.run_id), expires_at: { $gt: now }, ...anyOr("dispatch_id", wanted.dispatch_id) });
    const commandId = command.commandId || newId();
    if (!open) return { outcome: LiveDeliveryOutcome.NO_SUBSCRIBER, commandId };
    const stored = create(LiveRunCommandSchema, { ...command, commandId, target, sentAt: timestampFromMs(now) });
    const doc: CommandDoc = { _id: commandId, ...wanted, command: toBinary(LiveRunCommandSchema, stored), sent_at: now, expires_at: now + this.commandTtlMs, acked: false };
    try {
      await this.commands.insertOne(doc);
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
      // The same command id for the same target: it was delivered already (a retried call).
      // For another target it would never reach that target: refuse it rather than report DELIVERED.
      const existing = await this.commands.findOne({ _id: commandId });
      if (existing && (existing.thread_id !== wanted.thread_id || existing.run_id !== wanted.run_id || existing.dispatch_id !== wanted.dispatch_id)) {
        throw new MailroomError("already_exists", `command_id ${JSON.stringify(commandId)} is already used by a command for another target; leave it empty to have one generated`, {
          reason: ErrorReason.INVALID_FIELD,
          field: "command.command_id",
          metadata: { command_id: commandId },
        });
      }
      return { outcome: LiveDeliveryOutcome.DELIVERED, commandId };
    }
    this.route(doc);
    return { outcome: LiveDeliveryOutcome.DELIVERED, commandId };
  }

  /** The receiver's receipt; true when this call acked it, false when it was acked before. */
  async ack(commandId: string): Promise<boolean> {
    const result = await this.commands.updateOne({ _id: commandId, acked: false }, { $set: { acked: true, acked_at: this.clock.now() } });
    if (result.matchedCount === 1) return true;
    if (await this.commands.findOne({ _id: commandId })) return false;
    throw new MailroomError("not_found", `live command ${JSON.stringify(commandId)} not found (unknown, or expired ${this.commandTtlMs / 60_000} minutes after it was sent)`, {
      reason: ErrorReason.ENTITY_NOT_FOUND,
      metadata: { command_id: commandId },
    });
  }

  /** Deletes expired registrations and commands. */
  async purge(): Promise<void> {
    const now = this.clock.now();
    await Promise.all([this.channels.deleteMany({ expires_at: { $lt: now } }), this.commands.deleteMany({ expires_at: { $lt: now } })]);
  }

  private async refresh(): Promise<void> {
    const ids = [...this.local.keys()];
    if (ids.length > 0) await this.channels.updateMany({ _id: { $in: ids } }, { $set: { expires_at: this.clock.now() + this.channelTtlMs } });
    await this.purge();
  }

  private route(doc: CommandDoc): void {
    let command: LiveRunCommand | undefined;
    for (const channel of this.local.values()) {
      if (!matches(channel.target, doc)) continue;
      command ??= this.decode(doc);
      channel.offer(command);
    }
  }

  private decode(doc: CommandDoc): LiveRunCommand {
    return fromBinary(LiveRunCommandSchema, doc.command);
  }

  private async unregister(channel: LiveChannel): Promise<void> {
    this.local.delete(channel.id);
    await this.channels.deleteOne({ _id: channel.id }).catch((error: unknown) => {
      // It expires on its own; DeliverLive may report DELIVERED until then.
      this.log.warn({ error: error instanceof Error ? error.message : String(error), channel_id: channel.id }, "could not unregister a live channel");
    });
  }
}
