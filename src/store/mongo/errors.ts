/**
 * How driver errors become the port's typed errors. Decided by error class and
 * server code, never by labels alone: the driver labels only some retryable
 * write errors, so a read that failed again after its one retry (10107,
 * 11602, 189, 91, ...) or a write-concern failure inside a bulk insert
 * carries no label, and would otherwise reach a client as INTERNAL.
 */
import {
  MongoBulkWriteError,
  MongoError,
  MongoInvalidArgumentError,
  MongoNetworkError,
  MongoNotConnectedError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
  MongoWriteConcernError,
} from "mongodb";
import { type BulkWriteResult, ChangeStreamHistoryLostError, DocumentTooLargeError, DuplicateKeyError, type InsertManyResult, StoreUnavailableError } from "../port.js";

const DUPLICATE_KEY = 11000;

/**
 * Server codes meaning "not now": the node cannot serve (stepping down, shutting
 * down, not primary), the network failed, or a time limit passed (ours:
 * maxTimeMS, wtimeout). Retrying later may succeed; a write may or may not
 * have been applied.
 */
export const UNAVAILABLE_CODES: ReadonlySet<number> = new Set([
  6, // HostUnreachable
  7, // HostNotFound
  43, // CursorNotFound (the cursor died with its node)
  50, // MaxTimeMSExpired (our --store-timeout-ms, server side)
  64, // WriteConcernTimeout / WriteConcernFailed (our wtimeout)
  89, // NetworkTimeout
  91, // ShutdownInProgress
  133, // FailedToSatisfyReadPreference
  134, // ReadConcernMajorityNotAvailableYet
  189, // PrimarySteppedDown
  202, // NetworkInterfaceExceededTimeLimit
  262, // ExceededTimeLimit
  9001, // SocketException
  10058, // LegacyNotPrimary
  10107, // NotWritablePrimary
  11600, // InterruptedAtShutdown
  11602, // InterruptedDueToReplStateChange
  13435, // NotPrimaryNoSecondaryOk
  13436, // NotPrimaryOrSecondary
]);

/** Labels the server or driver puts on errors worth retrying. */
const UNAVAILABLE_LABELS = ["RetryableWriteError", "TransientTransactionError", "ResumableChangeStreamError", "RetryableError", "SystemOverloadedError"];

/** Change stream errors after which resuming is impossible. */
const HISTORY_LOST_CODES: ReadonlySet<number> = new Set([286 /* ChangeStreamHistoryLost */, 280 /* ChangeStreamFatalError */, 260 /* InvalidResumeToken */]);

/** Server codes for a document above the 16 MiB BSON limit (insert: BSONObjectTooLarge; update: its result). */
const TOO_LARGE_CODES: ReadonlySet<number> = new Set([10334, 17419, 17420]);

/** Driver error classes that say the deployment could not be reached or the client cannot talk to it now. */
const UNAVAILABLE_CLASSES = ["PoolClosedError", "WaitQueueTimeoutError", "MongoOperationTimeoutError"];

function codeOf(value: unknown): number | undefined {
  const code = (value as { code?: unknown } | null | undefined)?.code;
  // Number(): a code is a BSON Int32 when values are not promoted.
  return code === undefined || code === null ? undefined : Number(code);
}

/** The write-concern error an error carries, if any (a write that was applied but not confirmed by a majority in time). */
export function writeConcernErrorOf(error: unknown): { code?: number } | undefined {
  if (error instanceof MongoWriteConcernError) return { code: codeOf(error) };
  if (error instanceof MongoBulkWriteError) {
    const wce = error.err ?? error.result?.getWriteConcernError?.();
    if (wce) return { code: codeOf(wce) };
  }
  if (error instanceof MongoServerError && error.writeConcernError) return { code: codeOf(error.writeConcernError) };
  return undefined;
}

/** Whether the operation failed because the deployment is (for now) unable to serve it. */
export function isUnavailable(error: unknown): boolean {
  if (
    error instanceof MongoNetworkError ||
    error instanceof MongoServerSelectionError ||
    error instanceof MongoTopologyClosedError ||
    error instanceof MongoNotConnectedError
  ) {
    return true;
  }
  if (!(error instanceof MongoError)) return false;
  if (UNAVAILABLE_CLASSES.includes(error.name)) return true;
  if (UNAVAILABLE_LABELS.some((label) => error.hasErrorLabel(label))) return true;
  if (writeConcernErrorOf(error)) return true;
  const code = codeOf(error);
  if (code !== undefined && UNAVAILABLE_CODES.has(code)) return true;
  // A bulk write whose documents failed for "not now" reasons.
  if (error instanceof MongoBulkWriteError) {
    const writeErrors = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors];
    return writeErrors.some((w) => UNAVAILABLE_CODES.has(Number(w.code)));
  }
  return false;
}

export function isTooLarge(error: unknown): boolean {
  if (error instanceof MongoInvalidArgumentError && /larger than the maximum size/.test(error.message)) return true;
  const code = codeOf(error);
  return error instanceof MongoServerError && code !== undefined && TOO_LARGE_CODES.has(code);
}

/** Which index a duplicate key error names (server message: "... index: name dup key: ..."). */
export function duplicateIndex(error: { errmsg?: string; message?: string }): string {
  const text = error.errmsg || error.message || "";
  return /index: (\S+)/.exec(text)?.[1] ?? "unknown";
}

/**
 * An unordered bulk insert that only unique indexes refused in part: what was
 * inserted and what was refused. Undefined for any other failure, and when a
 * majority did not confirm the rest (that is UNAVAILABLE). Checked before
 * translateError(): a bulk error carries the code of its first write error.
 */
export function partlyRefused(error: unknown): InsertManyResult | undefined {
  if (!(error instanceof MongoBulkWriteError) || writeConcernErrorOf(error)) return undefined;
  const writeErrors = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors];
  if (writeErrors.length === 0 || !writeErrors.every((w) => Number(w.code) === DUPLICATE_KEY)) return undefined;
  const duplicates = writeErrors.map((w) => ({ position: w.index, index: duplicateIndex({ errmsg: w.errmsg }) }));
  return { insertedCount: error.result.insertedCount, duplicates: duplicates.sort((a, b) => a.position - b.position) };
}

/**
 * The same for an unordered or ordered bulk write of updates: the counts of
 * what applied, and each update unique indexes refused, by position.
 */
export function partlyRefusedUpdates(error: unknown): Omit<BulkWriteResult, "attempted"> | undefined {
  if (!(error instanceof MongoBulkWriteError) || writeConcernErrorOf(error)) return undefined;
  const writeErrors = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors];
  if (writeErrors.length === 0 || !writeErrors.every((w) => Number(w.code) === DUPLICATE_KEY)) return undefined;
  const duplicates = writeErrors.map((w) => ({ position: w.index, index: duplicateIndex({ errmsg: w.errmsg }) }));
  return {
    matchedCount: error.result.matchedCount,
    modifiedCount: error.result.modifiedCount,
    upsertedCount: error.result.upsertedCount,
    duplicates: duplicates.sort((a, b) => a.position - b.position),
  };
}

/** A dropIndex error that means there was nothing to drop: IndexNotFound (27), NamespaceNotFound (26). */
export function isNothingToDrop(error: unknown): boolean {
  return error instanceof MongoServerError && (codeOf(error) === 27 || codeOf(error) === 26);
}

/** Translates a driver error from an operation on `collection` into the port's typed errors. */
export function translateError(collection: string, error: unknown): unknown {
  // A write concern error beats a duplicate key: even the refusal is not confirmed by a majority.
  if (writeConcernErrorOf(error)) {
    return new StoreUnavailableError(`MongoDB did not confirm a write to ${collection} with a majority in time`, { cause: error });
  }
  if (error instanceof MongoServerError && codeOf(error) === DUPLICATE_KEY) {
    return new DuplicateKeyError(collection, duplicateIndex(error), { cause: error });
  }
  if (isTooLarge(error)) return new DocumentTooLargeError(collection, { cause: error });
  if (isUnavailable(error)) return new StoreUnavailableError(`MongoDB unavailable during an operation on ${collection}`, { cause: error });
  return error;
}

/** Translates an error from reading or opening a change stream. */
export function translateStreamError(error: unknown): unknown {
  const code = codeOf(error);
  if (error instanceof MongoServerError && code !== undefined && HISTORY_LOST_CODES.has(code)) {
    return new ChangeStreamHistoryLostError("change stream cannot resume: its position is no longer in the oplog", { cause: error });
  }
  if (isUnavailable(error)) return new StoreUnavailableError("MongoDB unavailable while reading a change stream", { cause: error });
  return error;
}
