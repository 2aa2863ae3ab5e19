/**
 * One server instance's engine: the use cases over one store, plus the
 * instance's single change feed, its journal tail and its background work.
 * Several engines (instances) may share one store; nothing in here assumes
 * it is alone.
 */
import { type Clock, systemClock } from "../domain/clock.js";
import { DEFAULT_NAMESPACE } from "../domain/auth/namespaces.js";
import { DEFAULT_MAILBOX_LIMITS, type MailboxLimits } from "../domain/dispatch/commands.js";
import { newId } from "../domain/ids.js";
import { DEFAULT_STORE_TIMEOUT_MS, withDeadline } from "../store/deadline.js";
import { NamespacedStore } from "../store/namespaced.js";
import type { Store } from "../store/port.js";
import { ChangeFeed, type ChangeFeedOptions } from "./change-feed.js";
import { DEFAULT_EVENTS_OPTIONS, type Events, type EventsOptions, JournalRetention } from "./events/events.js";
import { Journal } from "./journal/journal.js";
import { EVENTS } from "./journal/records.js";
import { holeTimeoutFor, JournalTail, type JournalTailOptions } from "./journal/tail.js";
import { type Logger, silentLogger } from "./logger.js";
import { DEFAULT_MAILBOX_TIMINGS, MailboxBackground, type MailboxTimings } from "./mailbox/background.js";
import { LiveCommands, type LiveOptions } from "./mailbox/live.js";
import type { Mailbox } from "./mailbox/mailbox.js";
import type { MailboxQueries } from "./mailbox/queries.js";
import { QueueQuotas } from "./mailbox/queue-quota.js";
import type { SignalReceipts } from "./mailbox/signal-receipts.js";
import type { Threads } from "./mailbox/threads.js";
import { WorkSignals } from "./mailbox/work-signals.js";
import { backfillNamespaces } from "./namespace-backfill.js";
import { Outbox, type OutboxOptions } from "./outbox.js";
import { DEFAULT_POOL_TIMINGS, PoolBackground, type PoolTimings } from "./pool/background.js";
import { ResponseDeadlines, UnfinishedDeletions, WakeSweeps } from "./pool/sweeps.js";
import type { PoolDeletion } from "./pool/deletion.js";
import { PoolHistory } from "./pool/history.js";
import type { PoolMessages } from "./pool/messages.js";
import type { Pools } from "./pool/pools.js";
import type { PoolSubscriptions } from "./pool/scoped-subscription.js";
import { WakeMatcher } from "./pool/wake-matcher.js";
import type { Wakes } from "./pool/wakes.js";
import { type NamespaceScope, ScopeCache } from "./scope.js";

export interface EngineOptions {
  /** Names this instance (live channel registry, logs); generated when omitted. */
  instanceId?: string;
  clock?: Clock;
  log?: Logger;
  mailboxLimits?: Partial<MailboxLimits>;
  mailboxTimings?: Partial<MailboxTimings>;
  /** Bound of every store call; past it the call answers UNAVAILABLE (default DEFAULT_STORE_TIMEOUT_MS). */
  storeTimeoutMs?: number;
  /** The journal tail; its hole timeout defaults to just above the store bound. */
  journal?: JournalTailOptions;
  changeFeed?: ChangeFeedOptions;
  live?: Omit<LiveOptions, "instanceId">;
  outbox?: OutboxOptions;
  events?: Partial<EventsOptions>;
  poolTimings?: Partial<PoolTimings>;
  /** A namespace's limit of QUEUED dispatches (undefined: none), read at each enqueue; see QueueQuotas. */
  maxQueuedDispatches?: (namespace: string) => number | undefined;
  /** How long a namespace's count of queued dispatches is used before it is counted again (default 1 s). */
  queueCountTtlMs?: number;
  /** Run sweepers and clocks on timers (default). Tests may turn this off and call them directly. */
  background?: boolean;
}

/** How long a namespace's count of queued dispatches is trusted by default. */
export const DEFAULT_QUEUE_COUNT_TTL_MS = 1_000;

/**
 * What the engine keeps once for every namespace lives here: the journal
 * (one sequence of positions) and its tail, the change feed, the outbox,
 * work signals, live channels, pool histories, and the sweepers, which find
 * their work across namespaces and act in each document's own. Use cases are
 * a namespace's (`scope(namespace)`); the fields named after them below are
 * the default namespace's, for callers with one namespace (tests, tools).
 */
export class Engine {
  readonly instanceId: string;
  /** The store as the engine uses it: every call bounded in time. */
  readonly store: Store;
  readonly clock: Clock;
  readonly mailboxLimits: MailboxLimits;
  readonly journal: Journal;
  readonly feed: ChangeFeed;
  readonly tail: JournalTail;
  readonly outbox: Outbox;
  readonly signals: WorkSignals;
  readonly live: LiveCommands;
  readonly history: PoolHistory;
  readonly retention: JournalRetention;
  readonly background: MailboxBackground;
  readonly wakeMatcher: WakeMatcher;
  readonly poolBackground: PoolBackground;
  private readonly scopes: ScopeCache;
  private readonly poolSweeps: ReadonlyArray<{ init(): Promise<void> }>;
  private readonly log: Logger;
  private readonly runBackground: boolean;

  private constructor(given: Store, options: EngineOptions) {
    const storeTimeoutMs = options.storeTimeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
    const store = (this.store = withDeadline(given, storeTimeoutMs));
    const namespaced = (namespace: string): Store => new NamespacedStore(store, namespace);
    this.instanceId = options.instanceId ?? newId();
    const clock = (this.clock = options.clock ?? systemClock);
    const log = (this.log = options.log ?? silentLogger);
    this.mailboxLimits = { ...DEFAULT_MAILBOX_LIMITS, ...options.mailboxLimits };
    this.runBackground = options.background ?? true;
    this.journal = new Journal(store, log, this.instanceId);
    this.feed = new ChangeFeed(store, log, options.changeFeed);
    // This instance delivers its own journal writes in process (JournalTail).
    this.feed.skipOwnInserts(EVENTS, "writer", this.instanceId);
    this.tail = new JournalTail(this.journal, this.feed, log, { holeTimeoutMs: holeTimeoutFor(storeTimeoutMs), ...options.journal });
    this.outbox = new Outbox(store, namespaced, this.journal, clock, log, options.outbox);
    this.signals = new WorkSignals();
    this.live = new LiveCommands(store, namespaced, this.feed, clock, log, { ...options.live, instanceId: this.instanceId });
    this.history = new PoolHistory(store, namespaced, this.journal, this.tail, log);
    this.retention = new JournalRetention(this.journal, this.tail, clock, log, { ...DEFAULT_EVENTS_OPTIONS, ...options.events });
    this.retention.holdPurgeAt(() => this.history.position);
    const quotas = new QueueQuotas({
      limitOf: options.maxQueuedDispatches ?? (() => undefined),
      count: (namespace) => this.scope(namespace).mailbox.dispatches.countDocuments({ status: "QUEUED" }),
      clock,
      ttlMs: options.queueCountTtlMs ?? DEFAULT_QUEUE_COUNT_TTL_MS,
    });
    this.scopes = new ScopeCache({
      store, journal: this.journal, tail: this.tail, outbox: this.outbox, signals: this.signals, live: this.live, history: this.history, quotas,
      expiredClaims: (namespace, now, limit) => this.background.expiredIn(namespace, now, limit),
      clock, log, mailboxLimits: this.mailboxLimits,
    });
    this.wakeMatcher = new WakeMatcher(store, this.tail, (namespace) => this.scope(namespace).wakes, log);
    const sweeps = { store, scope: (namespace: string) => this.scope(namespace), clock, log };
    const poolSweeps = [new ResponseDeadlines(sweeps), new WakeSweeps(sweeps), new UnfinishedDeletions(sweeps)] as const;
    this.poolSweeps = poolSweeps;
    this.poolBackground = new PoolBackground(...poolSweeps, this.tail, clock, log, { ...DEFAULT_POOL_TIMINGS, ...options.poolTimings });
    this.background = new MailboxBackground({
      store,
      scope: (namespace) => this.scope(namespace),
      outbox: this.outbox,
      signals: this.signals,
      tail: this.tail,
      clock,
      log,
      timings: { ...DEFAULT_MAILBOX_TIMINGS, ...options.mailboxTimings },
    });
  }

  /**
   * One namespace's use cases. @throws NamespaceScopeError for a namespace
   * no view can have (callers pass a principal's, which is always valid).
   */
  scope(namespace: string): NamespaceScope {
    return this.scopes.get(namespace);
  }

  // The default namespace's use cases.
  get mailbox(): Mailbox {
    return this.scopes.defaults.mailbox;
  }

  get queries(): MailboxQueries {
    return this.scopes.defaults.queries;
  }

  get threads(): Threads {
    return this.scopes.defaults.threads;
  }

  get signalReceipts(): SignalReceipts {
    return this.scopes.defaults.signalReceipts;
  }

  get events(): Events {
    return this.scopes.defaults.events;
  }

  get pools(): Pools {
    return this.scopes.defaults.pools;
  }

  get messages(): PoolMessages {
    return this.scopes.defaults.messages;
  }

  get wakes(): Wakes {
    return this.scopes.defaults.wakes;
  }

  get poolDeletion(): PoolDeletion {
    return this.scopes.defaults.poolDeletion;
  }

  get poolSubscriptions(): PoolSubscriptions {
    return this.scopes.defaults.poolSubscriptions;
  }

  /** Creates indexes, stamps data of before namespaces, opens the change feed and starts the background work. */
  static async start(store: Store, options: EngineOptions = {}): Promise<Engine> {
    const engine = new Engine(store, options);
    const defaults = engine.scopes.defaults;
    // Namespace-first indexes are every namespace's: created once, through any namespace's use cases.
    await engine.journal.init();
    await defaults.mailbox.init();
    await engine.background.init();
    await engine.live.init();
    await defaults.pools.init();
    await engine.history.init();
    await defaults.messages.init();
    await defaults.wakes.init();
    for (const sweep of engine.poolSweeps) await sweep.init();
    await backfillNamespaces(engine.store, engine.log);
    // Handlers register before the feed opens: it watches their collections.
    engine.tail.attach();
    engine.live.attach();
    await engine.feed.start();
    await engine.tail.start();
    await engine.history.start();
    await engine.background.start({ timers: engine.runBackground });
    await engine.wakeMatcher.start();
    if (engine.runBackground) {
      engine.live.start();
      engine.retention.start();
      await engine.poolBackground.start();
    }
    engine.log.debug({ instance_id: engine.instanceId, namespace: DEFAULT_NAMESPACE }, "engine started");
    return engine;
  }

  async stop(): Promise<void> {
    this.background.stop();
    this.poolBackground.stop();
    this.wakeMatcher.stop();
    this.retention.stop();
    await this.live.stop();
    await this.history.stop();
    this.tail.stop();
    await this.feed.stop();
    await this.outbox.drain();
  }
}
