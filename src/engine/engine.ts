/**
 * One server instance's engine: the use cases over one store, plus the
 * instance's single change feed, its journal tail and its background work.
 * Several engines (instances) may share one store; nothing in here assumes
 * it is alone.
 */
import { type Clock, systemClock } from "../domain/clock.js";
import { DEFAULT_MAILBOX_LIMITS, type MailboxLimits } from "../domain/dispatch/commands.js";
import { newId } from "../domain/ids.js";
import { DEFAULT_STORE_TIMEOUT_MS, withDeadline } from "../store/deadline.js";
import type { Store } from "../store/port.js";
import { ChangeFeed, type ChangeFeedOptions } from "./change-feed.js";
import { DEFAULT_EVENTS_OPTIONS, Events, type EventsOptions } from "./events/events.js";
import { Journal } from "./journal/journal.js";
import { EVENTS } from "./journal/records.js";
import { holeTimeoutFor, JournalTail, type JournalTailOptions } from "./journal/tail.js";
import { type Logger, silentLogger } from "./logger.js";
import { DEFAULT_MAILBOX_TIMINGS, MailboxBackground, type MailboxTimings } from "./mailbox/background.js";
import { LiveCommands, type LiveOptions } from "./mailbox/live.js";
import { Mailbox } from "./mailbox/mailbox.js";
import { MailboxQueries } from "./mailbox/queries.js";
import { SignalReceipts } from "./mailbox/signal-receipts.js";
import { Threads } from "./mailbox/threads.js";
import { WorkSignals } from "./mailbox/work-signals.js";
import { Outbox, type OutboxOptions } from "./outbox.js";
import { DEFAULT_POOL_TIMINGS, PoolBackground, type PoolTimings } from "./pool/background.js";
import { PoolDeletion } from "./pool/deletion.js";
import { PoolHistory } from "./pool/history.js";
import { PoolMessages } from "./pool/messages.js";
import { Pools } from "./pool/pools.js";
import { PoolSubscriptions } from "./pool/scoped-subscription.js";
import { WakeMatcher } from "./pool/wake-matcher.js";
import { Wakes } from "./pool/wakes.js";

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
  /** Run sweepers and clocks on timers (default). Tests may turn this off and call them directly. */
  background?: boolean;
}

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
  readonly threads: Threads;
  readonly signals: WorkSignals;
  readonly mailbox: Mailbox;
  readonly queries: MailboxQueries;
  readonly live: LiveCommands;
  readonly signalReceipts: SignalReceipts;
  readonly background: MailboxBackground;
  readonly events: Events;
  readonly pools: Pools;
  readonly messages: PoolMessages;
  readonly wakes: Wakes;
  readonly wakeMatcher: WakeMatcher;
  readonly poolDeletion: PoolDeletion;
  readonly poolSubscriptions: PoolSubscriptions;
  readonly poolBackground: PoolBackground;
  private readonly log: Logger;
  private readonly runBackground: boolean;

  private constructor(given: Store, options: EngineOptions) {
    const storeTimeoutMs = options.storeTimeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
    const store = (this.store = withDeadline(given, storeTimeoutMs));
    this.instanceId = options.instanceId ?? newId();
    this.clock = options.clock ?? systemClock;
    this.log = options.log ?? silentLogger;
    this.mailboxLimits = { ...DEFAULT_MAILBOX_LIMITS, ...options.mailboxLimits };
    this.runBackground = options.background ?? true;
    this.journal = new Journal(store, this.log, this.instanceId);
    this.feed = new ChangeFeed(store, this.log, options.changeFeed);
    // This instance delivers its own journal writes in process (JournalTail).
    this.feed.skipOwnInserts(EVENTS, "writer", this.instanceId);
    this.tail = new JournalTail(this.journal, this.feed, this.log, { holeTimeoutMs: holeTimeoutFor(storeTimeoutMs), ...options.journal });
    this.outbox = new Outbox(store, this.journal, this.clock, this.log, options.outbox);
    this.threads = new Threads(store, this.clock, this.log);
    this.signals = new WorkSignals();
    this.mailbox = new Mailbox({ store, limits: this.mailboxLimits, outbox: this.outbox, threads: this.threads, signals: this.signals, clock: this.clock, log: this.log });
    this.queries = new MailboxQueries(this.mailbox.dispatches, this.threads, this.clock);
    this.live = new LiveCommands(store, this.feed, this.clock, this.log, { ...options.live, instanceId: this.instanceId });
    this.events = new Events(this.journal, this.tail, this.clock, this.log, { ...DEFAULT_EVENTS_OPTIONS, ...options.events });
    this.pools = new Pools(store, this.journal, this.outbox, this.clock, new PoolHistory(store, this.journal, this.tail, this.log));
    this.events.holdPurgeAt(() => this.pools.history.position);
    this.messages = new PoolMessages(store, this.pools, this.journal, this.outbox, this.clock, this.log);
    this.wakes = new Wakes(store, this.pools, this.journal, this.outbox, this.clock, this.log, () => this.tail.position);
    this.wakeMatcher = new WakeMatcher(this.tail, this.wakes, this.log);
    this.poolSubscriptions = new PoolSubscriptions(this.pools, this.events);
    this.poolDeletion = new PoolDeletion(this.pools, this.messages, this.wakes, this.pools.history, this.log);
    this.poolBackground = new PoolBackground(this.messages, this.wakes, this.poolDeletion, this.tail, this.clock, this.log, { ...DEFAULT_POOL_TIMINGS, ...options.poolTimings });
    const mailboxTimings = { ...DEFAULT_MAILBOX_TIMINGS, ...options.mailboxTimings };
    this.signalReceipts = new SignalReceipts(store, this.signals, this.clock, this.log, { retentionMs: mailboxTimings.retentionMs });
    this.background = new MailboxBackground({
      mailbox: this.mailbox,
      queries: this.queries,
      threads: this.threads,
      outbox: this.outbox,
      signals: this.signals,
      tail: this.tail,
      dispatches: this.mailbox.dispatches,
      clock: this.clock,
      log: this.log,
      timings: mailboxTimings,
    });
  }

  /** Creates indexes, opens the change feed and starts the background work. */
  static async start(store: Store, options: EngineOptions = {}): Promise<Engine> {
    const engine = new Engine(store, options);
    await engine.journal.init();
    await engine.mailbox.init();
    await engine.live.init();
    await engine.signalReceipts.init();
    await engine.pools.init();
    await engine.messages.init();
    await engine.wakes.init();
    // Handlers register before the feed opens: it watches their collections.
    engine.tail.attach();
    engine.live.attach();
    await engine.feed.start();
    await engine.tail.start();
    await engine.pools.history.start();
    engine.signalReceipts.start({ timers: engine.runBackground });
    await engine.background.start({ timers: engine.runBackground });
    await engine.wakeMatcher.start();
    if (engine.runBackground) {
      engine.live.start();
      engine.events.start();
      await engine.poolBackground.start();
    }
    engine.log.debug({ instance_id: engine.instanceId }, "engine started");
    return engine;
  }

  async stop(): Promise<void> {
    this.background.stop();
    this.poolBackground.stop();
    this.wakeMatcher.stop();
    this.events.stop();
    await this.live.stop();
    this.signalReceipts.stop();
    await this.pools.history.stop();
    this.tail.stop();
    await this.feed.stop();
    await this.outbox.drain();
  }
}
