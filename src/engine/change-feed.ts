/**
 * The one change stream a server instance opens (DESIGN.md: never one per
 * subscriber). It routes changes by collection to in-process handlers. When
 * the stream fails (network, ChangeStreamHistoryLost) it is opened afresh and
 * every handler is asked to catch up from the store, which covers whatever
 * happened in between: a handler never depends on resuming the stream itself.
 */
import type { ChangeEvent, ChangeStream, Doc, Store } from "../store/port.js";
import type { Logger } from "./logger.js";

export type ChangeHandler = (change: ChangeEvent) => void;
/** Catches up from the store after the stream was (re)established. */
export type ResyncHandler = () => Promise<void>;

export interface ChangeFeedOptions {
  /** Pause before re-opening a failed stream (doubles up to 30 s). */
  retryDelayMs?: number;
}

export class ChangeFeed {
  private readonly handlers = new Map<string, Set<ChangeHandler>>();
  private readonly resyncHandlers = new Set<ResyncHandler>();
  /** Per collection, a field whose value marks inserts this instance does not want back (its own writes). */
  private readonly ownWrites = new Map<string, { field: string; value: string }>();
  private stream: ChangeStream | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;

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
    await this.stream?.close().catch(() => undefined);
    await this.loop;
  }

  private open(): Promise<ChangeStream> {
    const match: Record<string, unknown>[] = [{ operationType: "insert" }];
    for (const [collection, { field, value }] of this.ownWrites) {
      match.push({ $or: [{ "ns.coll": { $ne: collection } }, { [`fullDocument.${field}`]: { $ne: value } }] });
    }
    return this.store.watch<Doc>({ collections: [...this.handlers.keys()], match });
  }

  private async consume(): Promise<void> {
    let delay = this.options.retryDelayMs ?? 500;
    while (!this.stopped) {
      try {
        if (!this.stream) throw new Error("change stream is not open");
        for await (const change of this.stream) {
          this.dispatch(change);
          delay = this.options.retryDelayMs ?? 500;
        }
        if (this.stopped) return;
        throw new Error("change stream ended");
      } catch (error) {
        if (this.stopped) return;
        this.log.warn({ error: error instanceof Error ? error.message : String(error), retry_in_ms: delay }, "change stream failed; reopening it and catching up from the store");
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 30_000);
        try {
          await this.stream?.close().catch(() => undefined);
          if (this.stopped) return;
          this.stream = await this.open();
          await Promise.all([...this.resyncHandlers].map((resync) => resync()));
        } catch (reopenError) {
          this.log.warn({ error: reopenError instanceof Error ? reopenError.message : String(reopenError) }, "reopening the change stream failed");
          this.stream = undefined;
        }
      }
    }
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
