/**
 * How much the memory backend holds, and where it stops: the approximate
 * size of every stored document (as BSON would take it), against a cap.
 * Without one, the process grows until the operating system ends it.
 *
 * New documents stop at 15/16 of the cap. The last sixteenth is kept for
 * updates of documents already stored (acks, cancels, outbox bookkeeping:
 * work in flight can finish and then be deleted by retention) and for small
 * documents (journal tombstones, thread and counter records), so a full
 * store never wedges the journal. Deletes always go through.
 */
import { StoreFullError } from "../port.js";

/** Documents at most this large may use the reserve. */
const SMALL_DOCUMENT = 1024;

/** Approximately the bytes BSON takes for a value (keys included for documents). */
export function approxBytes(value: unknown): number {
  if (value === null || value === undefined) return 1;
  switch (typeof value) {
    case "string":
      return 5 + value.length;
    case "number":
      return 8;
    case "boolean":
      return 1;
    case "object":
      break;
    default:
      return 8;
  }
  if (value instanceof Uint8Array) return 5 + value.length;
  if (value instanceof Date) return 8;
  let bytes = 5;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) bytes += 3 + approxBytes(value[i]);
    return bytes;
  }
  for (const key of Object.keys(value)) bytes += 2 + key.length + approxBytes((value as Record<string, unknown>)[key]);
  return bytes;
}

export class MemoryBudget {
  /** Approximate bytes of every stored document. */
  used = 0;

  constructor(public maxBytes = Number.POSITIVE_INFINITY) {}

  /**
   * Takes `grow` more bytes (negative frees), or throws StoreFullError and
   * takes nothing. `document` is the size of a new document (undefined for
   * an update of a stored one).
   */
  take(grow: number, document?: number): void {
    if (grow > 0) {
      const limit = document !== undefined && document > SMALL_DOCUMENT ? this.maxBytes - this.maxBytes / 16 : this.maxBytes;
      if (this.used + grow > limit) {
        throw new StoreFullError(
          this.maxBytes,
          `the in-memory store is full: it holds about ${this.used} bytes of documents and this write needs ${grow} more (limit ${this.maxBytes}, --memory-store-max-bytes)`,
        );
      }
    }
    this.used += grow;
  }
}
