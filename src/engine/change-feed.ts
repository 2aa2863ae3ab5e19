/**
 * The one change stream a server instance opens (DESIGN.md: never one per
 * subscriber). It routes changes by collection to in-process handlers. When
 * the stream fails (network, ChangeStreamHistoryLost) it is opened afresh and
 * every handler is asked to catch up from the store, which covers whatever
 * happened in between: a handler never depends on resuming the stream itself.
 * A stream that had been delivering is reopened at once; one that keeps
 * failing is reopened with a growing pause.
 */
import { type ChangeEvent, type ChangeStream, type Doc, type Store, StoreUnavailableError } from "../store/port.js";
import type { Logger } from "./logger.js";

export type ChangeHandler = (change: ChangeEvent) => void;
/** Catches up from the store after the stream was (re)established. */
export type ResyncHandler = () => Promise<void>;

export interface ChangeFeedOptions {
  /** Pause before re-opening a stream that failed again without delivering anything (doubles up to 30 s). */
  retryDelayMs?: number;
}

const MAX_RETRY_DELAY_MS = 30_000;

export class ChangeFeed {
  private readonly handlers = new Map<string, Set<ChangeHandler>>();
  private readonly resyncHandlers = new Set<ResyncHandler>();
  /** Per collection, a field whose value marks inserts this instance does not want back (its own writes). */
  private readonly ownWrites = new Map<string, { field: string; value: string }>();
  private stream: ChangeStream | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wakeFromPause: (() => void) | undefined;
  private reopenWaiters: Array<() => void> = [];

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly options: ChangeFeedOptions = {},
  ) {}

  on(collection: string, handler: ChangeHandler): () => void {
    let set = this.handlers.get(collection);
    if (!set) this.handlers.set(collection, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /**
   * Leaves out of the stream the inserts into `collection` whose `field` is
   * `value`: this instance's own writes, which it delivers in process already
   * (so on MongoDB the server filters them, and nothing is copied twice).
   * Call before the feed starts.
   */
  skipOwnInserts(collection: string, field: string, value: string): void {
    this.ownWrites.set(collection, { field, value });
  }

  onResync(handler: ResyncHandler): () => void {
    this.resyncHandlers.add(handler);
    return () => this.resyncHandlers.delete(handler);
  }

  /** Opens the stream; resolves once it covers every later change. */
  async start(): Promise<void> {
    this.stream = await this.open();
    this.loop = this.consume();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeFromPause?.();
    await this.stream?.close().catch(() => undefined);
    await this.loop;
  }

  /** Resolves once the stream has next been reopened and every handler has caught up. */
  reopened(): Promise<void> {
    return new Promise((resolve) => this.reopenWaiters.push(resolve));
  }

  private open(): Promise<ChangeStream> {
    const match: Record<string, unknown>[] = [{ operationType: "insert" }];
    for (const [collection, { field, value }] of this.ownWrites) {
      match.push({ $or: [{ "ns.coll": { $ne: collection } }, { [`fullDocument.${field}`]: { $ne: value } }] });
    }
    return this.store.watch<Doc>({ collections: [...this.handlers.keys()], match });
  }

  private async consume(): Promise<void> {
    const base = this.options.retryDelayMs ?? 500;
    // Failures since the stream last delivered a change.
    let failures = 0;
    while (!this.stopped) {
      try {
        if (!this.stream) throw new StoreUnavailableError("the change stream is not open");
        for await (const change of this.stream) {
          this.dispatch(change);
          failures = 0;
        }
        if (this.stopped) return;
        throw new StoreUnavailableError("the change stream ended");
      } catch (error) {
        if (this.stopped) return;
        const delay = failures === 0 ? 0 : Math.min(base * 2 ** (failures - 1), MAX_RETRY_DELAY_MS);
        failures++;
        this.log.warn({ error: error instanceof Error ? error.message : String(error), retry_in_ms: delay }, "change stream failed; reopening it and catching up from the store");
        await this.stream?.close().catch(() => undefined);
        this.stream = undefined;
        await this.pause(delay);
        await this.reopen();
      }
    }
  }

  /** Opens a new stream, then lets every handler catch up; on failure nothing stays open. */
  private async reopen(): Promise<void> {
    if (this.stopped) return;
    let stream: ChangeStream | undefined;
    try {
      stream = await this.open();
      if (this.stopped) {
        await stream.close().catch(() => undefined);
        return;
      }
      this.stream = stream;
      await Promise.all([...this.resyncHandlers].map((resync) => resync()));
    } catch (error) {
      this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "reopening the change stream failed");
      await stream?.close().catch(() => undefined);
      this.stream = undefined;
      return;
    }
    for (const resolve of this.reopenWaiters.splice(0)) resolve();
  }

  private pause(ms: number): Promise<void> {
    if (ms <= 0 || this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeFromPause = done;
    });
  }

  private dispatch(change: ChangeEvent): void {
    for (const handler of this.handlers.get(change.collection) ?? []) {
      try {
        handler(change);
      } catch (error) {
        this.log.error({ error: error instanceof Error ? error.message : String(error), collection: change.collection }, "change handler failed");
      }
    }
  }
}
