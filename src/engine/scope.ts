/**
 * One namespace's engine: every use case of the mailbox, pools and events,
 * over the namespace's view of the store (NamespacedStore: every document it
 * writes carries the namespace, every query and every index starts with it,
 * string ids are its own) and the namespace's views of what the engine keeps
 * once for all of them (the journal, its tail, the outbox, work signals, live
 * channels, pool histories). A handler acts through the scope of its caller's
 * namespace, so an id of another namespace is simply not there (NOT_FOUND),
 * and nothing it reads or waits for is another namespace's.
 *
 * Scopes are cheap objects without background work, made on first use and
 * kept in a bounded cache: concurrent calls of a namespace share its scope,
 * and with it its batches (the mailbox coalesces calls per namespace).
 */
import type { Clock } from "../domain/clock.js";
import { DEFAULT_NAMESPACE } from "../domain/auth/namespaces.js";
import type { MailboxLimits } from "../domain/dispatch/commands.js";
import { NamespacedStore } from "../store/namespaced.js";
import type { Store } from "../store/port.js";
import { Events } from "./events/events.js";
import { type Journal, NamespaceJournal } from "./journal/journal.js";
import type { JournalTail, NamespaceTail } from "./journal/tail.js";
import type { Logger } from "./logger.js";
import type { LiveCommands, NamespaceLive } from "./mailbox/live.js";
import { Mailbox } from "./mailbox/mailbox.js";
import type { DispatchDoc } from "./mailbox/records.js";
import { MailboxQueries } from "./mailbox/queries.js";
import type { QueueQuotas } from "./mailbox/queue-quota.js";
import { SignalReceipts } from "./mailbox/signal-receipts.js";
import { Threads } from "./mailbox/threads.js";
import type { NamespaceSignals, WorkSignals } from "./mailbox/work-signals.js";
import type { NamespaceOutbox, Outbox } from "./outbox.js";
import { PoolDeletion } from "./pool/deletion.js";
import type { PoolHistory } from "./pool/history.js";
import { PoolMessages } from "./pool/messages.js";
import { Pools } from "./pool/pools.js";
import { PoolSubscriptions } from "./pool/scoped-subscription.js";
import { Wakes } from "./pool/wakes.js";

/** What the engine keeps once for every namespace, which each scope sees through its own views. */
export interface SharedParts {
  /** The store itself (every call bounded in time). */
  store: Store;
  journal: Journal;
  tail: JournalTail;
  outbox: Outbox;
  signals: WorkSignals;
  live: LiveCommands;
  history: PoolHistory;
  quotas: QueueQuotas;
  /** A namespace's claims whose lease expired (see MailboxBackground.expiredIn). */
  expiredClaims: (namespace: string, now: number, limit: number) => Promise<DispatchDoc[]>;
  clock: Clock;
  log: Logger;
  mailboxLimits: MailboxLimits;
}

export class NamespaceScope {
  readonly store: NamespacedStore;
  readonly journal: NamespaceJournal;
  readonly tail: NamespaceTail;
  readonly outbox: NamespaceOutbox;
  readonly signals: NamespaceSignals;
  readonly threads: Threads;
  readonly mailbox: Mailbox;
  readonly queries: MailboxQueries;
  readonly live: NamespaceLive;
  readonly signalReceipts: SignalReceipts;
  readonly events: Events;
  readonly pools: Pools;
  readonly messages: PoolMessages;
  readonly wakes: Wakes;
  readonly poolDeletion: PoolDeletion;
  readonly poolSubscriptions: PoolSubscriptions;

  /** @throws NamespaceScopeError for a namespace no view can have (empty, or with U+0000 or U+0001). */
  constructor(
    readonly namespace: string,
    shared: SharedParts,
  ) {
    const { clock, log } = shared;
    const store = (this.store = new NamespacedStore(shared.store, namespace));
    this.journal = new NamespaceJournal(shared.journal, namespace);
    this.tail = shared.tail.in(namespace);
    this.outbox = shared.outbox.in(namespace);
    this.signals = shared.signals.in(namespace);
    this.threads = new Threads(store, clock, log);
    this.mailbox = new Mailbox({ store, limits: shared.mailboxLimits, outbox: this.outbox, threads: this.threads, signals: this.signals, quota: shared.quotas.in(namespace), expiredClaims: (now, limit) => shared.expiredClaims(namespace, now, limit), clock, log });
    this.queries = new MailboxQueries(this.mailbox.dispatches, this.threads, clock);
    this.live = shared.live.in(namespace);
    this.signalReceipts = new SignalReceipts(store, this.signals, clock);
    this.events = new Events(this.journal, this.tail, clock, log);
    this.pools = new Pools(store, this.journal, this.outbox, clock, shared.history.in(namespace));
    this.messages = new PoolMessages(store, this.pools, this.journal, this.outbox, clock);
    this.wakes = new Wakes(store, this.pools, this.journal, this.outbox, clock, () => shared.tail.position);
    this.poolSubscriptions = new PoolSubscriptions(this.pools, this.events);
    this.poolDeletion = new PoolDeletion(this.pools, this.messages, this.wakes, this.pools.history);
  }
}

/** Scopes kept besides the default namespace's (JWTs can bring any number of namespaces). */
const CACHED_SCOPES = 1_000;

/**
 * The scopes in use, least recently used dropped first (the default
 * namespace's is kept). A dropped scope still serves the calls holding it;
 * a later call gets a new one. Two scopes of one namespace at once are as
 * safe as two server instances (every transition is conditional in the
 * store); they only batch apart, and a pull waiting on one is not woken by
 * a nack through the other before its next check.
 */
export class ScopeCache {
  private readonly scopes = new Map<string, NamespaceScope>();
  readonly defaults: NamespaceScope;

  constructor(private readonly shared: SharedParts) {
    this.defaults = new NamespaceScope(DEFAULT_NAMESPACE, shared);
  }

  get(namespace: string): NamespaceScope {
    if (namespace === DEFAULT_NAMESPACE) return this.defaults;
    let scope = this.scopes.get(namespace);
    if (scope) {
      // Most recently used last.
      this.scopes.delete(namespace);
    } else {
      scope = new NamespaceScope(namespace, this.shared);
      if (this.scopes.size >= CACHED_SCOPES) this.scopes.delete(this.scopes.keys().next().value!);
    }
    this.scopes.set(namespace, scope);
    return scope;
  }
}
