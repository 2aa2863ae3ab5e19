/**
 * Live wake matching on one server instance (seed: trigger_matching_wakes):
 * every journal event the tail delivers is matched against the wake
 * conditions still REGISTERED, which the matcher learns from their
 * WAKE_CONDITION_REGISTERED events (in journal order) and, at start, from
 * the store. Every instance runs one; a registration is triggered once
 * because the trigger is conditional (see Wakes).
 *
 * Conditions are indexed by the runs their scoped filter allows (a wake
 * filter always names its observable runs), so an event is matched only
 * against the conditions that can see its run. Runs and conditions are a
 * namespace's: an event is matched only against its own namespace's
 * conditions, and triggers them through that namespace's Wakes.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { AgentEventSchema, EventKind } from "../../../gen/mailroom/v1/event_pb.js";
import { type FilterSpec, fromPlainFilter, matches } from "../../domain/events/filter.js";
import { canWake } from "../../domain/pool/wakes.js";
import { namespaceOf, ownerOf } from "../../store/namespaced.js";
import type { Collection, Store } from "../../store/port.js";
import type { EventDoc } from "../journal/records.js";
import type { JournalTail } from "../journal/tail.js";
import { addKeyed } from "../listeners.js";
import type { Logger } from "../logger.js";
import { POOL_WAKES, type WakeDoc } from "./records.js";
import type { Wakes } from "./wakes.js";

interface Watched {
  namespace: string;
  /** The registration's _id in its namespace. */
  docId: string;
  filter: FilterSpec;
  afterSeq: number;
  /** Trigger attempts run one after another, so the earliest matching event wins. */
  attempts: Promise<void>;
  done: boolean;
}

/** Registered conditions read from the store at once while starting up. */
const START_PAGE = 1000;

const wakeDocId = (poolId: string, conditionId: string) => `${poolId}\u0000${conditionId}`;
/** A registration, or a run, as the matcher knows it: within its namespace. */
const inNamespace = (namespace: string, id: string) => `${namespace}\u0001${id}`;

export class WakeMatcher {
  private readonly byId = new Map<string, Watched>();
  private readonly byRun = new Map<string, Set<Watched>>();
  private readonly settledWaiters = new Map<string, Set<() => void>>();
  /** Events delivered while the registered conditions are being loaded. */
  private buffered: EventDoc[] | undefined = [];
  private unsubscribe: (() => void) | undefined;
  /** Every namespace's registrations, for start-up. */
  private readonly registrations: Collection<WakeDoc>;

  constructor(
    store: Store,
    private readonly tail: JournalTail,
    /** A namespace's wake conditions. */
    private readonly wakes: (namespace: string) => Wakes,
    private readonly log: Logger,
  ) {
    this.registrations = store.collection<WakeDoc>(POOL_WAKES);
  }

  async start(): Promise<void> {
    this.unsubscribe = this.tail.subscribe((events) => this.onEvents(events));
    await this.eachRegistered(async (namespace, doc) => this.watch(namespace, doc._id, fromPlainFilter(doc.filter), doc.after_seq));
    const buffered = this.buffered ?? [];
    this.buffered = undefined;
    this.onEvents(buffered);
    // Events journaled while no matcher was running are found in the journal, in the background.
    this.rechecked = this.recheck();
  }

  /** Resolves once the start-up recheck of registered conditions is done (for tests). */
  rechecked: Promise<void> = Promise.resolve();

  /** Every REGISTERED condition of every namespace, a page at a time (the store is read in bounded pages, in stored _id order). */
  private async eachRegistered(visit: (namespace: string, doc: WakeDoc) => Promise<void>): Promise<void> {
    for (let after = ""; ;) {
      const page = await this.registrations.find({ status: "REGISTERED", _id: { $gt: after } }, { sort: { _id: 1 }, limit: START_PAGE });
      for (const stored of page) {
        const { namespace, doc } = ownerOf<WakeDoc>(stored);
        await visit(namespace, doc);
      }
      if (page.length < START_PAGE) return;
      after = page[page.length - 1]!._id;
    }
  }

  private async recheck(): Promise<void> {
    let triggered = 0;
    try {
      await this.eachRegistered(async (namespace, doc) => {
        try {
          if (await this.wakes(namespace).recheck(doc)) triggered++;
        } catch (error) {
          this.log.warn({ wake_condition_id: doc.condition_id, error: error instanceof Error ? error.message : String(error) }, "could not recheck a wake condition at start-up; live events still match it");
        }
      });
    } catch (error) {
      this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "could not read the registered wake conditions to recheck them; live events still match them");
    }
    if (triggered > 0) this.log.info({ wake_conditions: triggered }, "triggered wake conditions by events journaled while no instance matched them");
  }

  stop(): void {
    this.unsubscribe?.();
    // Nothing settled: waiters are dropped, not called (their streams end when the server aborts them).
    this.settledWaiters.clear();
  }

  /** Calls `onSettled` once a WAKE_CONDITION event other than REGISTERED is journaled for the namespace's condition. */
  whenSettled(namespace: string, poolId: string, conditionId: string, onSettled: () => void): () => void {
    return addKeyed(this.settledWaiters, inNamespace(namespace, wakeDocId(poolId, conditionId)), onSettled);
  }

  /** How many conditions this instance is matching (for tests and metrics). */
  get watching(): number {
    return this.byId.size;
  }

  private onEvents(events: EventDoc[]): void {
    if (this.buffered) {
      this.buffered.push(...events);
      return;
    }
    for (const event of events) {
      if (!canWake(event.kind)) this.onWakeEvent(event);
      else this.match(event);
    }
  }

  private onWakeEvent(event: EventDoc): void {
    const envelope = fromBinary(AgentEventSchema, event.event).envelope;
    if (!envelope || !event.pool_id) return;
    const namespace = namespaceOf(event);
    const docId = wakeDocId(event.pool_id, envelope.wakeConditionId);
    if (event.kind === EventKind.WAKE_CONDITION_REGISTERED) {
      if (event.wake) this.watch(namespace, docId, fromPlainFilter(event.wake.filter), event.wake.after_seq);
      return;
    }
    const id = inNamespace(namespace, docId);
    this.unwatch(id);
    const waiters = this.settledWaiters.get(id);
    this.settledWaiters.delete(id);
    for (const wake of waiters ?? []) wake();
  }

  private match(event: EventDoc): void {
    if (!event.run_id) return;
    for (const watched of this.byRun.get(inNamespace(namespaceOf(event), event.run_id)) ?? []) {
      if (watched.done || event._id <= watched.afterSeq || !matches(watched.filter, event)) continue;
      watched.attempts = watched.attempts.then(async () => {
        if (watched.done) return;
        try {
          if (await this.wakes(watched.namespace).triggerLive(watched.docId, event)) watched.done = true;
        } catch (error) {
          this.log.warn({ wake_condition_id: watched.docId.split("\u0000")[1], event_seq: event._id, error: error instanceof Error ? error.message : String(error) }, "could not trigger a wake condition; the next matching event will try again");
        }
      });
    }
  }

  private watch(namespace: string, docId: string, filter: FilterSpec, afterSeq: number): void {
    const id = inNamespace(namespace, docId);
    if (this.byId.has(id) || !filter.runIds || filter.runIds.size === 0) return;
    const watched: Watched = { namespace, docId, filter, afterSeq, attempts: Promise.resolve(), done: false };
    this.byId.set(id, watched);
    for (const run of filter.runIds) {
      const key = inNamespace(namespace, run);
      const set = this.byRun.get(key) ?? new Set();
      set.add(watched);
      this.byRun.set(key, set);
    }
  }

  private unwatch(id: string): void {
    const watched = this.byId.get(id);
    if (!watched) return;
    watched.done = true;
    this.byId.delete(id);
    for (const run of watched.filter.runIds ?? []) {
      const key = inNamespace(watched.namespace, run);
      const set = this.byRun.get(key);
      set?.delete(watched);
      if (set?.size === 0) this.byRun.delete(key);
    }
  }
}
