/**
 * One reader of a pool's history (WatchPool, or a run's inbox): the kept
 * records after its position, a "caught up" once those are read, then each
 * record as it is kept, in order, each once.
 *
 * The reader listens to the history before its first read, so a record kept
 * after that read arrives by the listener; one kept before it is in the
 * read. Listened records not past the position are skipped; a gap in the
 * numbers (or more buffered than `BUFFER`) sends the reader back to the store.
 */
import { EntityKind, notFound } from "../../domain/errors.js";
import { waitForWake } from "../wake.js";
import type { PoolHistoryView } from "./history.js";
import type { RecordDoc } from "./records.js";

export type RecordFrame = { kind: "record"; record: RecordDoc } | { kind: "caught_up" } | { kind: "heartbeat" };

export interface RecordStreamSpec {
  poolId: string;
  incarnation: string;
  /** Only the records delivering a message to this run (its inbox). */
  recipient?: string;
  /** Start after this record number... */
  afterSeq: number;
  /** ...and after this journal position. */
  afterCursor: number;
}

const PAGE = 100;
const BUFFER = 1000;

export class PoolRecordStream {
  private lastSeq: number;
  private lastCursor: number;
  private page: RecordDoc[] = [];
  private heard: RecordDoc[] = [];
  private readFromStore = true;
  private caughtUpSent = false;
  private deleted = false;
  private closed = false;
  private wake: (() => void) | undefined;
  private readonly stopListening: () => void;

  constructor(
    private readonly history: PoolHistoryView,
    private readonly spec: RecordStreamSpec,
  ) {
    this.lastSeq = spec.afterSeq;
    this.lastCursor = spec.afterCursor;
    this.stopListening = history.listen(spec.poolId, (change) => {
      if (change.kind === "deleted") this.deleted = true;
      else if (change.record.incarnation === spec.incarnation && this.wanted(change.record)) this.hear(change.record);
      this.wake?.();
    });
  }

  /**
   * The next frame; undefined once closed or aborted.
   * @throws MailroomError NOT_FOUND once the pool was deleted.
   */
  async next(heartbeatMs: number, signal: AbortSignal): Promise<RecordFrame | undefined> {
    for (;;) {
      if (this.closed || signal.aborted) return undefined;
      const read = this.take(this.page);
      if (read) return { kind: "record", record: read };
      if (this.deleted) throw notFound(EntityKind.AGENT_POOL, this.spec.poolId, "it was deleted");
      if (this.readFromStore) {
        await this.read();
        continue;
      }
      if (!this.caughtUpSent) {
        this.caughtUpSent = true;
        return { kind: "caught_up" };
      }
      const live = this.takeHeard();
      if (live) return { kind: "record", record: live };
      if (this.readFromStore) continue;
      if (!(await this.waitForRecords(heartbeatMs, signal))) {
        if (this.closed || signal.aborted) return undefined;
        return { kind: "heartbeat" };
      }
    }
  }

  close(): void {
    this.closed = true;
    this.stopListening();
    this.wake?.();
  }

  private wanted(record: RecordDoc): boolean {
    return this.spec.recipient === undefined || (record.recipients ?? []).includes(this.spec.recipient);
  }

  private hear(record: RecordDoc): void {
    if (this.heard.length >= BUFFER) {
      // A slow reader: forget what was heard and read the store again.
      this.heard = [];
      this.readFromStore = true;
      return;
    }
    this.heard.push(record);
  }

  private async read(): Promise<void> {
    const { incarnation, recipient } = this.spec;
    this.page = recipient === undefined
      ? await this.history.after(incarnation, this.lastSeq, PAGE)
      : await this.history.inboxAfter(incarnation, recipient, this.lastCursor, PAGE);
    // Everything kept before the read is in it (or in later pages); what is kept after, the listener hears.
    if (this.page.length < PAGE) this.readFromStore = false;
  }

  /** The next record of `list` past the position (skipping those at or before it). */
  private take(list: RecordDoc[]): RecordDoc | undefined {
    for (let record = list.shift(); record; record = list.shift()) {
      if (record.journal_seq <= this.lastCursor) {
        this.lastSeq = Math.max(this.lastSeq, record.seq);
        continue;
      }
      this.lastSeq = record.seq;
      this.lastCursor = record.journal_seq;
      return record;
    }
    return undefined;
  }

  private takeHeard(): RecordDoc | undefined {
    while (this.heard.length > 0 && this.heard[0]!.journal_seq <= this.lastCursor) this.lastSeq = Math.max(this.lastSeq, this.heard.shift()!.seq);
    const next = this.heard[0];
    // A whole history's reader expects the very next number; anything else means one was missed.
    if (next && this.spec.recipient === undefined && next.seq !== this.lastSeq + 1) {
      this.readFromStore = true;
      return undefined;
    }
    return this.take(this.heard);
  }

  /** True when something may have been heard; false after `ms` without. */
  private waitForRecords(ms: number, signal: AbortSignal): Promise<boolean> {
    return waitForWake(ms, signal, (wake) => (this.wake = wake));
  }
}
