/**
 * How the mongo backend maps driver errors, by class and server code (not by
 * labels alone): errors built the way driver 7.9 builds them, so this runs
 * without a MongoDB.
 */
import { createRequire } from "node:module";
import {
  type BulkWriteResult,
  MongoBulkWriteError,
  MongoInvalidArgumentError,
  MongoNetworkError,
  MongoNetworkTimeoutError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
  MongoWriteConcernError,
  type WriteConcernError,
} from "mongodb";
import { describe, expect, it } from "vitest";
import { partlyRefused, translateError, translateStreamError } from "../../src/store/mongo/errors.js";
import { ChangeStreamHistoryLostError, DocumentTooLargeError, DuplicateKeyError, StoreUnavailableError } from "../../src/store/port.js";

/** The driver's own bulk result classes, which it builds these errors from (it exports only their types). */
const driverBulk = createRequire(import.meta.url)("mongodb/lib/bulk/common.js") as {
  BulkWriteResult: new (raw: object, ordered: boolean) => BulkWriteResult;
  WriteConcernError: new (error: { code: number; errmsg: string }) => WriteConcernError;
};

function bulkResult(raw: { nInserted: number; writeErrors?: unknown[]; writeConcernErrors?: unknown[] }): BulkWriteResult {
  return new driverBulk.BulkWriteResult({ ok: 1, writeErrors: [], writeConcernErrors: [], insertedIds: [], nUpserted: 0, nMatched: 0, nModified: 0, nRemoved: 0, upserted: [], ...raw }, false);
}

function duplicateWriteError(index: number) {
  return { index, code: 11000, errmsg: `E11000 duplicate key error collection: db.events index: _id_ dup key: { _id: ${index} }`, errInfo: {}, op: {} };
}

describe("mongo backend: driver errors become the port's typed errors", () => {
  it.each([
    [6, "HostUnreachable"], [7, "HostNotFound"], [50, "MaxTimeMSExpired"], [64, "WriteConcernTimeout"], [89, "NetworkTimeout"],
    [91, "ShutdownInProgress"], [189, "PrimarySteppedDown"], [262, "ExceededTimeLimit"], [9001, "SocketException"],
    [10107, "NotWritablePrimary"], [11600, "InterruptedAtShutdown"], [11602, "InterruptedDueToReplStateChange"],
    [13435, "NotPrimaryNoSecondaryOk"], [13436, "NotPrimaryOrSecondary"], [134, "ReadConcernMajorityNotAvailableYet"],
  ])("a server error with code %i (%s) and no label is UNAVAILABLE, as a read that failed again after its retry is", (code, codeName) => {
    const error = new MongoServerError({ code, codeName, errmsg: `${codeName}: failed` });
    expect(error.hasErrorLabel("RetryableWriteError")).toBe(false);
    expect(translateError("dispatches", error)).toBeInstanceOf(StoreUnavailableError);
  });

  it("network, server selection, timeouts and a closed client are UNAVAILABLE", () => {
    for (const error of [
      new MongoNetworkError("connection reset"),
      new MongoNetworkTimeoutError("timed out"),
      new MongoServerSelectionError("no primary", { type: "ReplicaSetNoPrimary" } as never),
      new MongoTopologyClosedError(),
    ]) {
      expect(translateError("dispatches", error), error.name).toBeInstanceOf(StoreUnavailableError);
    }
  });

  it("a write whose majority confirmation timed out (write concern error) is UNAVAILABLE, not a success or INTERNAL", () => {
    const error = new MongoWriteConcernError({ ok: 1, writeConcernError: { code: 64, errmsg: "waiting for replication timed out" } } as never);
    expect(translateError("threads", error)).toBeInstanceOf(StoreUnavailableError);
    const onServerError = new MongoServerError({ ok: 1, code: 11000, errmsg: "E11000 dup", writeConcernError: { code: 64, errmsg: "timed out" } });
    expect(translateError("threads", onServerError), "a refusal a majority has not confirmed").toBeInstanceOf(StoreUnavailableError);
  });

  it("a bulk insert with a write concern error is UNAVAILABLE, though its write errors are only duplicates", () => {
    const wce = new driverBulk.WriteConcernError({ code: 64, errmsg: "waiting for replication timed out" });
    const result = bulkResult({ nInserted: 1, writeErrors: [duplicateWriteError(1)], writeConcernErrors: [wce] });
    const error = new MongoBulkWriteError({ message: "E11000 duplicate key", code: 11000, writeErrors: result.getWriteErrors() }, result);
    expect(partlyRefused(error)).toBeUndefined();
    expect(translateError("events", error)).toBeInstanceOf(StoreUnavailableError);
    const onlyConcern = new MongoBulkWriteError(wce, bulkResult({ nInserted: 2, writeConcernErrors: [wce] }));
    expect(partlyRefused(onlyConcern)).toBeUndefined();
    expect(translateError("events", onlyConcern)).toBeInstanceOf(StoreUnavailableError);
  });

  it("a bulk insert refused in part by unique indexes only reports what was refused", () => {
    const result = bulkResult({ nInserted: 1, writeErrors: [duplicateWriteError(2), duplicateWriteError(0)] });
    const error = new MongoBulkWriteError({ message: "E11000 duplicate key", code: 11000, writeErrors: result.getWriteErrors() }, result);
    expect(partlyRefused(error)).toEqual({ insertedCount: 1, duplicates: [{ position: 0, index: "_id_" }, { position: 2, index: "_id_" }] });
  });

  it("a bulk insert whose documents failed because the primary stepped down is UNAVAILABLE", () => {
    const result = bulkResult({ nInserted: 0, writeErrors: [{ index: 0, code: 189, errmsg: "primary stepped down", errInfo: {}, op: {} }] });
    const error = new MongoBulkWriteError({ message: "primary stepped down", code: 189, writeErrors: result.getWriteErrors() }, result);
    expect(translateError("events", error)).toBeInstanceOf(StoreUnavailableError);
  });

  it("a duplicate key names its index; an oversized document is DocumentTooLargeError", () => {
    const duplicate = translateError("dispatches", new MongoServerError({ code: 11000, errmsg: "E11000 duplicate key error collection: m.dispatches index: dedupe_key_per_thread dup key: { }" }));
    expect(duplicate).toBeInstanceOf(DuplicateKeyError);
    expect((duplicate as DuplicateKeyError).index).toBe("dedupe_key_per_thread");
    expect(translateError("pools", new MongoServerError({ code: 17419, errmsg: "Resulting document after update is larger than 16777216" }))).toBeInstanceOf(DocumentTooLargeError);
    expect(translateError("pools", new MongoServerError({ code: 10334, errmsg: "object to insert too large" }))).toBeInstanceOf(DocumentTooLargeError);
    expect(translateError("pools", new MongoInvalidArgumentError("Document is larger than the maximum size 16777216"))).toBeInstanceOf(DocumentTooLargeError);
  });

  it("leaves any other error as it is (a bug: INTERNAL)", () => {
    const badValue = new MongoServerError({ code: 2, codeName: "BadValue", errmsg: "unknown operator" });
    expect(translateError("dispatches", badValue)).toBe(badValue);
  });

  it("a change stream that lost its history cannot resume; one that lost its server is UNAVAILABLE", () => {
    expect(translateStreamError(new MongoServerError({ code: 286, errmsg: "ChangeStreamHistoryLost" }))).toBeInstanceOf(ChangeStreamHistoryLostError);
    expect(translateStreamError(new MongoServerSelectionError("no primary", { type: "ReplicaSetNoPrimary" } as never))).toBeInstanceOf(StoreUnavailableError);
    expect(translateStreamError(new MongoServerError({ code: 91, errmsg: "shutting down" }))).toBeInstanceOf(StoreUnavailableError);
  });
});
