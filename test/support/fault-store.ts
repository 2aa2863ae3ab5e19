/**
 * A Store that wraps any backend and misbehaves the way a MongoDB deployment
 * does under trouble, deterministically from a seed (the same seed and the
 * same sequence of calls give the same faults):
 *
 * - delay: calls take a while (a slow majority commit);
 * - fail before: StoreUnavailableError, nothing applied (no primary, network);
 * - fail after: the call is applied, then StoreUnavailableError (a write a
 *   majority did not confirm in time: a write concern error, in bulk inserts
 *   too; a reply lost on the way back);
 * - hang: the call never answers (the engine's deadline must cut it);
 * - slow: the call is applied only after the deadline has cut it off;
 * - broken change streams: after a gap (changes that are never delivered),
 *   the stream fails as after an unresumable network error, with history
 *   lost (286), invalidated, or simply ends as when its cursor was killed.
 *
 * Random faults come from `FaultPlan`; a test can also aim one fault at the
 * next matching call (`inject`), hold calls until it releases them (`hold`),
 * or break every open stream at a moment it chooses (`streams`).
 */
import { InterceptedStore, type OperationCall } from "../../src/store/intercept.js";
import {
  type ChangeEvent,
  type ChangeStream,
  ChangeStreamHistoryLostError,
  ChangeStreamInvalidatedError,
  type Doc,
  type Store,
  StoreUnavailableError,
  type WatchOptions,
} from "../../src/store/port.js";

export type OperationFault = "fail-before" | "fail-after" | "hang" | "slow";
export type StreamFault = "resumable" | "history-lost" | "invalidate" | "killed-cursor";
export const STREAM_FAULTS: readonly StreamFault[] = ["resumable", "history-lost", "invalidate", "killed-cursor"];

export interface FaultPlan {
  seed: number;
  /** Share of calls delayed by up to `maxMs`. */
  delay?: { rate: number; maxMs: number };
  /** Share of calls refused before they run. */
  failBefore?: number;
  /** Share of calls that run, then report StoreUnavailableError. */
  failAfter?: number;
  /** Share of calls that never answer. */
  hang?: number;
  /** Share of calls that run only after `ms` (longer than the engine's store bound). */
  slow?: { rate: number; ms: number };
  /** Per change read from a stream: the chance it starts a gap of up to `maxGap` lost changes, then a break of one of `kinds`. */
  streamBreak?: { rate: number; maxGap: number; kinds?: readonly StreamFault[] };
  /** Which calls random faults may hit (default: all but index creation, so an engine can always start). */
  applies?: (collection: string, operation: string) => boolean;
}

/** A call as matchers see it: its collection, operation and arguments (filter first). */
export interface CallInfo {
  collection: string;
  operation: string;
  args: readonly unknown[];
}

/** Picks a call: by collection and operation ("events.insertMany"), or any predicate. */
export type CallMatcher = string | ((call: CallInfo) => boolean);

function matcherOf(match: CallMatcher): (call: CallInfo) => boolean {
  return typeof match === "string" ? (call) => `${call.collection}.${call.operation}` === match : match;
}

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** How long a stream in a random gap waits for more changes to lose before it breaks. */
const GAP_IDLE_MS = 20;
const never = () => new Promise<never>(() => undefined);

interface Held {
  matches: (call: CallInfo) => boolean;
  waiting: Array<() => void>;
  /** Resolves the first time a call is held. */
  reached: () => void;
}

export class FaultStore extends InterceptedStore {
  /** While false, random faults are off (aimed ones still apply). */
  enabled = true;
  /** What happened, for reports: "events.insertMany fail-after", "stream resumable after gap 2", ... */
  readonly log: string[] = [];
  private readonly next: () => number;
  private readonly aimed: Array<{ matches: (call: CallInfo) => boolean; fault: OperationFault; times: number; ms?: number }> = [];
  /** Calls not finished yet (hung ones excepted). */
  private readonly inFlight = new Set<{ running?: Promise<unknown> }>();
  private readonly held = new Set<Held>();
  private readonly open = new Set<FaultChangeStream<Doc>>();

  constructor(
    inner: Store,
    readonly plan: FaultPlan,
  ) {
    super(inner, {
      operation: (call) => this.run(call),
      watch: (options, open) => this.watchStream(options, open),
    });
    this.next = random(plan.seed);
  }

  /** The next `times` calls matching get this fault ("slow": run after `ms`, default the plan's). */
  inject(match: CallMatcher, fault: OperationFault, options: { times?: number; ms?: number } = {}): void {
    this.aimed.push({ matches: matcherOf(match), fault, times: options.times ?? 1, ms: options.ms });
  }

  /** Calls matching wait (unanswered) until `release()`; a deadline may cut them meanwhile. `reached` resolves once one waits. */
  hold(match: CallMatcher): { release(): void; readonly reached: Promise<void> } {
    let reached: () => void = () => undefined;
    const held: Held = { matches: matcherOf(match), waiting: [], reached: () => reached() };
    const first = new Promise<void>((resolve) => (reached = resolve));
    this.held.add(held);
    return {
      release: () => {
        this.held.delete(held);
        for (const go of held.waiting.splice(0)) go();
      },
      reached: first,
    };
  }

  /** Resolves once every call started so far has finished on the wrapped store (those that hang never do, and are not waited for). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight].map((call) => call.running));
  }

  /** Change streams opened through this store and not yet closed. */
  get openStreams(): number {
    return this.open.size;
  }

  /** Control over the change streams open right now. */
  readonly streams = {
    /** From now on, every open stream silently loses what it reads, until it breaks. */
    gap: () => {
      for (const stream of this.open) stream.startGap();
    },
    /** Every open stream fails now (after what its gap lost). */
    break: (fault: StreamFault = "resumable") => {
      for (const stream of this.open) stream.breakNow(fault);
    },
  };

  private chance(rate: number | undefined): boolean {
    return rate !== undefined && rate > 0 && this.next() < rate;
  }

  private pickFault(call: CallInfo): { fault: OperationFault | "delay"; ms?: number } | undefined {
    const { collection, operation } = call;
    const aimed = this.aimed.find((a) => a.matches(call));
    if (aimed) {
      if (--aimed.times <= 0) this.aimed.splice(this.aimed.indexOf(aimed), 1);
      return { fault: aimed.fault, ms: aimed.ms };
    }
    const { plan } = this;
    const applies = plan.applies ?? ((_c: string, op: string) => op !== "createIndexes");
    if (!this.enabled || !applies(collection, operation)) return undefined;
    // One draw a call, whatever the plan: the sequence depends only on the seed and the calls.
    const draw = this.next();
    const bands: Array<[OperationFault | "delay", number | undefined]> = [
      ["fail-before", plan.failBefore], ["fail-after", plan.failAfter], ["hang", plan.hang], ["slow", plan.slow?.rate], ["delay", plan.delay?.rate],
    ];
    let edge = 0;
    for (const [fault, rate] of bands) {
      edge += rate ?? 0;
      if (draw < edge) return { fault };
    }
    return undefined;
  }

  /** Runs `work`, counting it in flight until it finishes (or says it never will). */
  private track<R>(work: (hung: () => void) => Promise<R>): Promise<R> {
    const tracked: { running?: Promise<unknown> } = {};
    this.inFlight.add(tracked);
    const done = () => void this.inFlight.delete(tracked);
    const running = work(done);
    tracked.running = running;
    running.then(done, done);
    return running;
  }

  private async waitWhileHeld(call: CallInfo): Promise<void> {
    for (const held of this.held) {
      if (!held.matches(call)) continue;
      const released = new Promise<void>((resolve) => held.waiting.push(resolve));
      held.reached();
      await released;
    }
  }

  private run<R>(call: OperationCall<R>): Promise<R> {
    return this.track((hung) => this.misbehave(call, hung));
  }

  /** Runs the call with the fault it draws; `hung` says it will never finish. */
  private async misbehave<R>(call: OperationCall<R>, hung: () => void): Promise<R> {
    const { collection, operation } = call;
    await this.waitWhileHeld(call);
    const { fault, ms } = this.pickFault(call) ?? {};
    if (fault && fault !== "delay") this.log.push(`${collection}.${operation} ${fault}`);
    switch (fault) {
      case "fail-before":
        throw new StoreUnavailableError(`injected fault: ${collection}.${operation} refused before it ran`);
      case "fail-after":
        await call.run();
        throw new StoreUnavailableError(`injected fault: ${collection}.${operation} applied, but not confirmed in time`);
      case "hang":
        hung();
        return never();
      case "slow":
        await sleep(ms ?? this.plan.slow?.ms ?? 1_000);
        return call.run();
      case "delay":
        await sleep(Math.floor(this.next() * ((this.plan.delay?.maxMs ?? 0) + 1)));
        return call.run();
      default:
        return call.run();
    }
  }

  /** Opening a stream: held like a call; a drawn failure refuses it (nothing is left open). */
  private watchStream<T extends Doc>(options: WatchOptions | undefined, open: () => Promise<ChangeStream<T>>): Promise<ChangeStream<T>> {
    return this.track(async () => {
      const call: CallInfo = { collection: "(change stream)", operation: "watch", args: [options] };
      await this.waitWhileHeld(call);
      const fault = this.pickFault(call)?.fault;
      if (fault === "fail-before" || fault === "fail-after") {
        this.log.push(`watch ${fault}`);
        throw new StoreUnavailableError("injected fault: the change stream could not be opened");
      }
      const stream = new FaultChangeStream<T>(await open(), this);
      this.open.add(stream as unknown as FaultChangeStream<Doc>);
      return stream;
    });
  }

  /** @internal For FaultChangeStream. */
  streamClosed(stream: FaultChangeStream<Doc>): void {
    this.open.delete(stream);
  }

  /** @internal For FaultChangeStream: after a change was read, whether to start a gap, and how long. */
  randomGap(): { length: number; then: StreamFault } | undefined {
    const plan = this.plan.streamBreak;
    if (!this.enabled || !plan || !this.chance(plan.rate)) return undefined;
    const kinds = plan.kinds ?? STREAM_FAULTS;
    return { length: Math.floor(this.next() * (plan.maxGap + 1)), then: kinds[Math.floor(this.next() * kinds.length)]! };
  }
}

class FaultChangeStream<T extends Doc> implements ChangeStream<T> {
  private closed = false;
  private breakWith: StreamFault | undefined;
  /** Changes still to lose before breaking (Infinity: until told to break). */
  private gapLeft: number | undefined;
  private gapThen: StreamFault | undefined;
  private interrupt: (() => void) | undefined;

  constructor(
    private readonly inner: ChangeStream<T>,
    private readonly owner: FaultStore,
  ) {}

  get resumeToken() {
    return this.inner.resumeToken;
  }

  startGap(): void {
    this.gapLeft ??= Infinity;
  }

  breakNow(fault: StreamFault): void {
    this.breakWith = fault;
    this.interrupt?.();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.owner.streamClosed(this as unknown as FaultChangeStream<Doc>);
    this.interrupt?.();
    await this.inner.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChangeEvent<T>> {
    const changes = this.inner[Symbol.asyncIterator]();
    let pending: Promise<IteratorResult<ChangeEvent<T>>> | undefined;
    try {
      for (;;) {
        if (this.closed) return;
        if (this.breakWith === "killed-cursor") {
          // The cursor is gone and the stream simply ends.
          this.owner.log.push("stream broke: killed-cursor");
          return;
        }
        if (this.breakWith) this.fail(this.breakWith);
        pending ??= changes.next();
        const interrupted = new Promise<"interrupted">((resolve) => (this.interrupt = () => resolve("interrupted")));
        // A stream does not lose changes quietly for long: a random gap ends in its break once nothing more comes.
        const idle = this.gapThen ? sleep(GAP_IDLE_MS).then(() => "idle" as const) : never();
        const next = await Promise.race([pending, interrupted, idle]);
        this.interrupt = undefined;
        if (next === "interrupted") continue;
        if (next === "idle") {
          this.breakWith = this.gapThen;
          continue;
        }
        pending = undefined;
        if (next.done) return;
        if (this.gapLeft === undefined) {
          const gap = this.owner.randomGap();
          if (gap) {
            this.gapLeft = gap.length;
            this.gapThen = gap.then;
          }
        }
        if (this.gapLeft !== undefined) {
          if (this.gapLeft > 0) {
            this.gapLeft--;
            this.owner.log.push(`stream lost a change to ${next.value.collection}`);
            continue;
          }
          this.breakWith = this.gapThen ?? "resumable";
          continue;
        }
        yield next.value;
      }
    } finally {
      await this.close();
    }
  }

  private fail(fault: Exclude<StreamFault, "killed-cursor">): never {
    this.owner.log.push(`stream broke: ${fault}`);
    switch (fault) {
      case "resumable":
        throw new StoreUnavailableError("injected fault: the change stream failed and could not resume");
      case "history-lost":
        throw new ChangeStreamHistoryLostError("injected fault: change stream history lost (286)");
      case "invalidate":
        throw new ChangeStreamInvalidatedError("injected fault: change stream invalidated");
    }
  }
}
