/**
 * A member's view of the journal, scoped by its pool (seed: AgentPool::
 * subscribe, scope_filter): events of observable member runs only (members
 * holding every policy of the pool), envelopes only when the pool says so,
 * and none carrying a policy the member does not hold.
 *
 * It is a journal subscription (Events) whose filter names the observable
 * runs, opened again whenever membership changes who they are. A change
 * applies from its own record on: before a frame at or after a change's
 * position goes out, the change is applied and, when it changed the
 * observable runs, the subscription is opened again just before the change,
 * so every later event is judged by the membership of its time. (The
 * pool's history announces each membership record; it has kept every record
 * up to a position once its follower has passed that position.)
 */
import { fromBinary } from "@bufbuild/protobuf";
import { AgentEventSchema } from "../../../gen/mailroom/v1/event_pb.js";
import { AgentPoolRecordSchema } from "../../../gen/mailroom/v1/pool_pb.js";
import { EntityKind, notFound } from "../../domain/errors.js";
import { type FilterSpec, PayloadAccessMode } from "../../domain/events/filter.js";
import { holdsAll, type Member, observableRuns, type PoolConfig } from "../../domain/pool/pool.js";
import type { SubscribePoolCommand } from "../../domain/pool/subscribe.js";
import { scopeWakeFilter } from "../../domain/pool/wakes.js";
import type { Events } from "../events/events.js";
import type { Subscription, SubscriptionFrame } from "../events/subscription.js";
import type { EventDoc } from "../journal/records.js";
import type { PoolHistoryView } from "./history.js";
import { notMember, notMemberError } from "./members.js";
import type { Pools } from "./pools.js";
import { configFromDoc, type RecordDoc } from "./records.js";

type MembershipChange = { seq: number } & ({ joined: Member } | { left: string });

export class PoolSubscriptions {
  constructor(
    private readonly pools: Pools,
    private readonly events: Events,
  ) {}

  /**
   * Opens a member's scoped subscription.
   * @throws NOT_FOUND (pool), FAILED_PRECONDITION RUN_NOT_MEMBER, OUT_OF_RANGE for a refused cursor.
   */
  async open(command: SubscribePoolCommand): Promise<ScopedPoolSubscription> {
    const pool = await this.pools.get(command.poolId);
    const scoped = new ScopedPoolSubscription(this.events, this.pools.history, command, configFromDoc(pool.config));
    try {
      // Listening before reading the members: a change made meanwhile is heard (applying one twice changes nothing).
      await scoped.start(await this.pools.members.list(command.poolId));
      return scoped;
    } catch (error) {
      scoped.close();
      throw error;
    }
  }
}

export class ScopedPoolSubscription {
  private subscription: Subscription | undefined;
  private readonly members = new Map<string, Member>();
  private observable = "";
  private readonly changes: MembershipChange[] = [];
  private deleted = false;
  private caughtUpSent = false;
  private readonly stopListening: () => void;

  constructor(
    private readonly events: Events,
    private readonly history: PoolHistoryView,
    private readonly command: SubscribePoolCommand,
    private readonly config: PoolConfig,
  ) {
    this.stopListening = history.listen(command.poolId, (change) => {
      if (change.kind === "deleted") this.deleted = true;
      else this.hear(change.record);
    });
  }

  /** What of each payload the member receives: envelopes only when the pool says so. */
  get payloadAccess(): PayloadAccessMode {
    return this.config.envelopeOnly ? PayloadAccessMode.ENVELOPE_ONLY : this.command.filter.payloadAccess;
  }

  async start(members: Member[]): Promise<void> {
    for (const member of members) this.members.set(member.runId, member);
    if (!this.members.has(this.command.runId)) notMemberError(this.command.poolId, this.command.runId);
    this.observable = this.observableKey();
    const { command } = this;
    this.subscription = await this.events.subscribe({ scope: command.scope, filter: this.scopedFilter(), after: command.after, start: command.start, queue: command.queue, heartbeatMs: command.heartbeatMs, maxFramesPerMessage: 1 });
  }

  /**
   * The next frame, as EventService.Subscribe's; undefined once closed or aborted.
   * @throws NOT_FOUND once the pool was deleted; FAILED_PRECONDITION RUN_NOT_MEMBER once the member left;
   *   what Subscription.next throws.
   */
  async next(heartbeatMs: number, signal: AbortSignal): Promise<SubscriptionFrame | undefined> {
    for (;;) {
      const frame = await this.subscription!.next(heartbeatMs, signal);
      if (!frame) return undefined;
      const position = frame.kind === "event" ? frame.delivery.frame.item._id : frame.position;
      if (!(await this.knownThrough(position, signal))) return undefined;
      if (this.deleted) throw notFound(EntityKind.AGENT_POOL, this.command.poolId, "it was deleted");
      const reopenAfter = this.applyChangesThrough(position);
      if (reopenAfter !== undefined) {
        await this.reopen(reopenAfter);
        continue;
      }
      if (frame.kind === "caught_up") {
        // A subscription opened again says it again; the client heard it once.
        if (this.caughtUpSent) return { kind: "heartbeat", position: frame.position, notice: frame.notice };
        this.caughtUpSent = true;
        return frame;
      }
      if (frame.kind === "event" && !this.allowed(frame.delivery.frame.item)) {
        if (frame.delivery.notice) return { kind: "heartbeat", position, notice: frame.delivery.notice };
        continue;
      }
      return frame;
    }
  }

  close(): void {
    this.stopListening();
    this.subscription?.close();
  }

  private hear(record: RecordDoc): void {
    const body = fromBinary(AgentPoolRecordSchema, record.record).record;
    if (body.case === "memberJoined") {
      const m = body.value;
      this.changes.push({ seq: record.journal_seq, joined: { runId: m.runId, agentId: m.agentId, policyRefs: m.policyRefs.map((ref) => ref.id), topics: m.topics } });
    } else if (body.case === "memberLeft") {
      this.changes.push({ seq: record.journal_seq, left: body.value.runId });
    }
  }

  /** Waits until the history has announced every record up to `position` (false when aborted). */
  private knownThrough(position: number, signal: AbortSignal): Promise<boolean> {
    if (this.history.position >= position) return Promise.resolve(true);
    return new Promise((resolve) => {
      const onAbort = () => resolve(false);
      signal.addEventListener("abort", onAbort, { once: true });
      void this.history.follower.waitFor(position).then(() => {
        signal.removeEventListener("abort", onAbort);
        resolve(!signal.aborted);
      });
    });
  }

  /**
   * Applies the membership changes at or before `position`, one at a time;
   * at the first that changes the observable runs, returns where to open
   * the subscription again (just before that change).
   */
  private applyChangesThrough(position: number): number | undefined {
    while (this.changes.length > 0 && this.changes[0]!.seq <= position) {
      const change = this.changes.shift()!;
      if ("joined" in change) this.members.set(change.joined.runId, change.joined);
      else this.members.delete(change.left);
      if (!this.members.has(this.command.runId)) throw notMember(this.command.poolId, this.command.runId);
      const observable = this.observableKey();
      if (observable !== this.observable) {
        this.observable = observable;
        return change.seq - 1;
      }
    }
    return undefined;
  }

  private async reopen(after: number): Promise<void> {
    this.subscription!.close();
    this.subscription = await this.events.open({ filter: this.scopedFilter(), after, queue: this.command.queue });
  }

  private scopedFilter(): FilterSpec {
    const filter = scopeWakeFilter(this.command.filter, observableRuns([...this.members.values()], this.config), this.config);
    // Payload access is applied when frames are written (see payloadAccess); it is not part of what matches.
    return { ...filter, payloadAccess: this.payloadAccess };
  }

  private observableKey(): string {
    return observableRuns([...this.members.values()], this.config).sort().join("\u0000");
  }

  /** An event carrying a policy the member does not hold is not for it (as a message is not). */
  private allowed(doc: EventDoc): boolean {
    const refs = fromBinary(AgentEventSchema, doc.event).envelope?.policyRefs ?? [];
    return refs.length === 0 || holdsAll(this.members.get(this.command.runId)!, refs.map((ref) => ref.id));
  }
}
