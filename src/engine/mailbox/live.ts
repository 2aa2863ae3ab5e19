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
 *
 * Channels and commands belong to a namespace: each is stored through its
 * namespace's view (so the same command id in two namespaces is two
 * commands), and routed only to channels of its namespace. One registry of
 * this instance's open channels, and one change feed, serve every namespace.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { LiveDeliveryOutcome, type LiveRunCommand, LiveRunCommandSchema, type LiveRunTarget } from "../../../gen/mailroom/v1/live_pb.js";
import type { Clock } from "../../domain/clock.js";
import { ErrorReason, MailroomError } from "../../domain/errors.js";
import { newId } from "../../domain/ids.js";
import { DEFAULT_NAMESPACE, namespaceOf } from "../../store/namespaced.js";
import { type Collection, type Doc, DuplicateKeyError, type IndexSpec, type Store } from "../../store/port.js";
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

/** A namespace's indexes (through its view). */
export const CHANNEL_INDEXES: IndexSpec[] = [{ key: { thread_id: 1, run_id: 1, expires_at: 1 } }];
export const COMMAND_INDEXES: IndexSpec[] = [{ key: { thread_id: 1, run_id: 1, acked: 1, sent_at: 1 } }];
/** The store-wide index of the expiry sweep. */
const EXPIRY_INDEXES: IndexSpec[] = [{ key: { expires_at: 1 } }];

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
    readonly namespace: string,
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
  /** Every namespace's, for the expiry sweep. */
  private readonly channels: Collection<ChannelDoc>;
  private readonly commands: Collection<CommandDoc>;
  private readonly local = new Map<string, LiveChannel>();
  private readonly channelTtlMs: number;
  private readonly commandTtlMs: number;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly detach: Array<() => void> = [];

  constructor(
    store: Store,
    /** A namespace's view of the store. */
    private readonly namespaced: (namespace: string) => Store,
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
    const { channels, commands } = this.collectionsOf(DEFAULT_NAMESPACE);
    await channels.createIndexes(CHANNEL_INDEXES);
    await commands.createIndexes(COMMAND_INDEXES);
    await this.channels.createIndexes(EXPIRY_INDEXES);
    await this.commands.createIndexes(EXPIRY_INDEXES);
  }

  /** One namespace's live commands. */
  in(namespace: string): NamespaceLive {
    return new NamespaceLive(this, namespace);
  }

  /** Routes commands stored by other instances; call before the change feed starts. */
  attach(): void {
    this.detach.push(
      this.feed.on(LIVE_COMMANDS, (change) => {
        // Routing reads only the target fields (the stored _id is not needed).
        if (change.fullDocument) this.route(namespaceOf(change.fullDocument), change.fullDocument as unknown as CommandDoc);
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
  async open(namespace: string, target: LiveRunTarget): Promise<LiveChannel> {
    const id = newId();
    const channel = new LiveChannel(id, namespace, targetOf(target), (closing) => this.unregister(closing));
    // Listen locally before registering, so nothing routed after the registration is missed.
    this.local.set(id, channel);
    const now = this.clock.now();
    await this.collectionsOf(namespace).channels.insertOne({ _id: id, ...channel.target, instance_id: this.options.instanceId, expires_at: now + this.channelTtlMs });
    for (const doc of await this.unacked(namespace, channel.target, now)) if (matches(channel.target, doc)) channel.offer(this.decode(doc));
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
    const targets = new Map<string, { namespace: string; target: Target }>();
    for (const { namespace, target } of this.local.values()) targets.set(JSON.stringify([namespace, target.thread_id, target.run_id]), { namespace, target });
    const pending = [...targets.values()];
    for (let i = 0; i < pending.length; i += RESYNC_CONCURRENCY) {
      const batch = pending.slice(i, i + RESYNC_CONCURRENCY);
      const found = await Promise.all(batch.map(({ namespace, target }) => this.unacked(namespace, target, now)));
      found.forEach((docs, j) => {
        for (const doc of docs) this.route(batch[j]!.namespace, doc);
      });
    }
  }

  /** The unexpired, unacked commands for a target's thread and run in its namespace, oldest first. */
  private unacked(namespace: string, target: Target, now: number): Promise<CommandDoc[]> {
    return this.collectionsOf(namespace).commands.find(
      { thread_id: target.thread_id, ...anyOr("run_id", target.run_id), acked: false, expires_at: { $gt: now } },
      { sort: { sent_at: 1, _id: 1 } },
    );
  }

  async deliver(namespace: string, target: LiveRunTarget, command: LiveRunCommand): Promise<{ outcome: LiveDeliveryOutcome; commandId: string }> {
    const now = this.clock.now();
    const wanted = targetOf(target);
    const { channels, commands } = this.collectionsOf(namespace);
    const open = await channels.findOne({ thread_id: wanted.thread_id, ...anyOr("run_id", wanted.run_id), expires_at: { $gt: now }, ...anyOr("dispatch_id", wanted.dispatch_id) });
    const commandId = command.commandId || newId();
    if (!open) return { outcome: LiveDeliveryOutcome.NO_SUBSCRIBER, commandId };
    const stored = create(LiveRunCommandSchema, { ...command, commandId, target, sentAt: timestampFromMs(now) });
    const doc: CommandDoc = { _id: commandId, ...wanted, command: toBinary(LiveRunCommandSchema, stored), sent_at: now, expires_at: now + this.commandTtlMs, acked: false };
    try {
      await commands.insertOne(doc);
    } catch (error) {
      if (!(error instanceof DuplicateKeyError)) throw error;
      // The same command id for the same target: it was delivered already (a retried call).
      // For another target it would never reach that target: refuse it rather than report DELIVERED.
      const existing = await commands.findOne({ _id: commandId });
      if (existing && (existing.thread_id !== wanted.thread_id || existing.run_id !== wanted.run_id || existing.dispatch_id !== wanted.dispatch_id)) {
        throw new MailroomError("already_exists", `command_id ${JSON.stringify(commandId)} is already used by a command for another target; leave it empty to have one generated`, {
          reason: ErrorReason.INVALID_FIELD,
          field: "command.command_id",
          metadata: { command_id: commandId },
        });
      }
      return { outcome: LiveDeliveryOutcome.DELIVERED, commandId };
    }
    this.route(namespace, doc);
    return { outcome: LiveDeliveryOutcome.DELIVERED, commandId };
  }

  /** The receiver's receipt; true when this call acked it, false when it was acked before. */
  async ack(namespace: string, commandId: string): Promise<boolean> {
    const { commands } = this.collectionsOf(namespace);
    const result = await commands.updateOne({ _id: commandId, acked: false }, { $set: { acked: true, acked_at: this.clock.now() } });
    if (result.matchedCount === 1) return true;
    if (await commands.findOne({ _id: commandId })) return false;
    throw new MailroomError("not_found", `live command ${JSON.stringify(commandId)} not found (unknown, or expired ${this.commandTtlMs / 60_000} minutes after it was sent)`, {
      reason: ErrorReason.ENTITY_NOT_FOUND,
      metadata: { command_id: commandId },
    });
  }

  /** Deletes expired registrations and commands, of every namespace. */
  async purge(): Promise<void> {
    const now = this.clock.now();
    await Promise.all([this.channels.deleteMany({ expires_at: { $lt: now } }), this.commands.deleteMany({ expires_at: { $lt: now } })]);
  }

  private async refresh(): Promise<void> {
    const byNamespace = new Map<string, string[]>();
    for (const channel of this.local.values()) byNamespace.set(channel.namespace, [...(byNamespace.get(channel.namespace) ?? []), channel.id]);
    const expiresAt = this.clock.now() + this.channelTtlMs;
    for (const [namespace, ids] of byNamespace) await this.collectionsOf(namespace).channels.updateMany({ _id: { $in: ids } }, { $set: { expires_at: expiresAt } });
    await this.purge();
  }

  private route(namespace: string, doc: Target & Pick<CommandDoc, "command">): void {
    let command: LiveRunCommand | undefined;
    for (const channel of this.local.values()) {
      if (channel.namespace !== namespace || !matches(channel.target, doc)) continue;
      command ??= this.decode(doc);
      channel.offer(command);
    }
  }

  private decode(doc: Pick<CommandDoc, "command">): LiveRunCommand {
    return fromBinary(LiveRunCommandSchema, doc.command);
  }

  private collectionsOf(namespace: string): { channels: Collection<ChannelDoc>; commands: Collection<CommandDoc> } {
    const store = this.namespaced(namespace);
    return { channels: store.collection<ChannelDoc>(LIVE_CHANNELS), commands: store.collection<CommandDoc>(LIVE_COMMANDS) };
  }

  private async unregister(channel: LiveChannel): Promise<void> {
    this.local.delete(channel.id);
    await this.collectionsOf(channel.namespace).channels.deleteOne({ _id: channel.id }).catch((error: unknown) => {
      // It expires on its own; DeliverLive may report DELIVERED until then.
      this.log.warn({ error: error instanceof Error ? error.message : String(error), channel_id: channel.id }, "could not unregister a live channel");
    });
  }
}

/** One namespace's live commands: what its handlers use. */
export class NamespaceLive {
  constructor(
    private readonly live: LiveCommands,
    readonly namespace: string,
  ) {}

  open(target: LiveRunTarget): Promise<LiveChannel> {
    return this.live.open(this.namespace, target);
  }

  deliver(target: LiveRunTarget, command: LiveRunCommand): Promise<{ outcome: LiveDeliveryOutcome; commandId: string }> {
    return this.live.deliver(this.namespace, target, command);
  }

  ack(commandId: string): Promise<boolean> {
    return this.live.ack(this.namespace, commandId);
  }
}
