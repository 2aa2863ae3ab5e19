/**
 * Reading the mailbox: one dispatch, pages of dispatches, counts, queued
 * threads; and deleting old terminal dispatches.
 *
 * Pages are keyset pages: the token holds the last key returned (and which
 * query it belongs to), so a page never repeats or skips a dispatch when
 * others are added meanwhile. A page holds at most `pageSize` entries and,
 * given a byte budget, only as many as fit in it (at least one).
 */
import { createHash } from "node:crypto";
import type { Clock } from "../../domain/clock.js";
import type { ListQuery } from "../../domain/dispatch/commands.js";
import { ALL_STATUSES, type DispatchStatus, TERMINAL_STATUSES } from "../../domain/dispatch/state.js";
import { countThatFit } from "../../domain/answer-size.js";
import { EntityKind, invalidField, notFound } from "../../domain/errors.js";
import { hasLoneSurrogate } from "../../domain/order.js";
import type { Collection, Filter } from "../../store/port.js";
import { type DispatchDoc } from "./records.js";
import type { Threads } from "./threads.js";

interface PageKey {
  /** Which query the token belongs to (a digest of it, so a token stays short whatever the query's thread id). */
  q: string;
  /** The sort value of the last entry returned (0 where the order is by id alone). */
  v: number;
  /** Its id: with `v`, a position in a total order, so every page starts strictly after the last. */
  id: string;
}

const NOT_OURS = "is not a token this server issued";

function encodeToken(key: PageKey): string {
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

/** The longest next_page_token a listing issues after a dispatch with this id (answers are sized with it). */
export function pageTokenAfter(dispatchId: string): string {
  return encodeToken({ q: queryDigest(""), v: Number.MAX_SAFE_INTEGER, id: dispatchId });
}

/** The key a token holds; INVALID_ARGUMENT `page_token` for anything this server could not have issued. */
function decodeToken(token: string | undefined, query: string): PageKey | undefined {
  if (token === undefined) return undefined;
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidField("page_token", NOT_OURS);
  }
  if (typeof key !== "object" || key === null) throw invalidField("page_token", NOT_OURS);
  const { q, v, id } = key as Partial<Record<keyof PageKey, unknown>>;
  if (typeof id !== "string" || id === "" || hasLoneSurrogate(id) || typeof v !== "number" || !Number.isSafeInteger(v)) throw invalidField("page_token", NOT_OURS);
  if (q !== query) throw invalidField("page_token", "belongs to a different query (same thread_id and statuses are required)");
  return { q, v, id };
}

/**
 * The filter for "after (v, id)" in the order (field, _id) in one direction.
 * The outer range lets an index on (…, field, _id) start at `v`; the `$or`
 * skips what shares `v` up to and including `id`.
 */
function after(field: string, direction: 1 | -1, key: PageKey): Record<string, unknown> {
  const [strictly, from] = direction === 1 ? ["$gt", "$gte"] : ["$lt", "$lte"];
  return { [field]: { [from]: key.v }, $or: [{ [field]: { [strictly]: key.v } }, { [field]: key.v, _id: { [strictly]: key.id } }] };
}

/** Threads looked at per ListQueuedThreads call, in page sizes: the call ends there even when few of them were ready. */
const QUEUED_THREAD_ROUNDS = 4;

export interface Page<T> {
  items: T[];
  nextPageToken?: string;
}

/** How many bytes a page may hold, and what each entry takes of them. */
export interface PageBudget<T> {
  maxBytes: number;
  sizeOf: (item: T) => number;
}

/** The query a token belongs to, in a few bytes. */
function queryDigest(query: string): string {
  return createHash("sha256").update(query).digest("base64url").slice(0, 16);
}

export class MailboxQueries {
  constructor(
    private readonly dispatches: Collection<DispatchDoc>,
    private readonly threads: Threads,
    private readonly clock: Clock,
  ) {}

  async get(dispatchId: string): Promise<DispatchDoc> {
    const doc = await this.dispatches.findOne({ _id: dispatchId });
    if (!doc) throw notFound(EntityKind.DISPATCH, dispatchId);
    return doc;
  }

  /** Those of these ids that exist, in no particular order. */
  async getMany(dispatchIds: readonly string[]): Promise<DispatchDoc[]> {
    return this.dispatches.find({ _id: { $in: [...dispatchIds] } });
  }

  /** Oldest first: (created_at, dispatch_id). */
  async list(query: ListQuery, budget?: PageBudget<DispatchDoc>): Promise<Page<DispatchDoc>> {
    const fingerprint = queryDigest(`list|${query.threadId ?? ""}|${(query.statuses ?? []).join(",")}`);
    const filter: Filter<DispatchDoc> = {
      ...(query.threadId ? { thread_id: query.threadId } : {}),
      ...(query.statuses ? { status: { $in: query.statuses } } : {}),
    };
    return this.page(filter, "created_at", 1, query.pageSize, decodeToken(query.pageToken, fingerprint), fingerprint, budget);
  }

  /** Most recently completed first: (completed_at, dispatch_id) descending. */
  async listTerminal(query: ListQuery, budget?: PageBudget<DispatchDoc>): Promise<Page<DispatchDoc>> {
    const fingerprint = queryDigest(`terminal|${query.threadId ?? ""}`);
    const filter: Filter<DispatchDoc> = { ...(query.threadId ? { thread_id: query.threadId } : {}), terminal: true };
    return this.page(filter, "completed_at", -1, query.pageSize, decodeToken(query.pageToken, fingerprint), fingerprint, budget);
  }

  async count(threadId: string | undefined, statuses: DispatchStatus[] | undefined): Promise<Array<{ status: DispatchStatus; count: number }>> {
    const wanted = statuses ?? [...ALL_STATUSES];
    return Promise.all(
      wanted.map(async (status) => ({ status, count: await this.dispatches.countDocuments({ ...(threadId ? { thread_id: threadId } : {}), status }) })),
    );
  }

  /** Deletes up to `limit` terminal dispatches completed before `before`. */
  async purgeTerminal(before: number, limit: number): Promise<number> {
    const old = await this.dispatches.find({ terminal: true, completed_at: { $lt: before } }, { sort: { completed_at: -1, _id: -1 }, limit });
    if (old.length === 0) return 0;
    return this.dispatches.deleteMany({ _id: { $in: old.map((d) => d._id) }, status: { $in: [...TERMINAL_STATUSES] } });
  }

  /**
   * Threads with a dispatch Claim could return now, by thread id. The
   * readiness hint may promise too much, so each candidate is checked; at
   * most a few pages of candidates are looked at per call, so a page may
   * hold fewer threads than asked for (even none) and still have a next
   * token, which resumes after the last thread looked at.
   */
  async queuedThreads(pageSize: number, pageToken: string | undefined): Promise<Page<string>> {
    const fingerprint = queryDigest("queued-threads");
    const now = this.clock.now();
    const ready: string[] = [];
    let cursor = decodeToken(pageToken, fingerprint)?.id;
    for (let round = 0; round < QUEUED_THREAD_ROUNDS && ready.length < pageSize; round++) {
      const wanted = pageSize - ready.length;
      const candidates = await this.threads.readyAfter(now, cursor, wanted);
      const checks = await Promise.all(candidates.map(async (thread) => {
        const claimable = await this.dispatches.findOne({ thread_id: thread._id, status: "QUEUED", epoch: thread.epoch, available_at: { $lte: now } });
        return claimable ? thread._id : undefined;
      }));
      for (const id of checks) if (id) ready.push(id);
      if (candidates.length < wanted) return { items: ready };
      cursor = candidates[candidates.length - 1]!._id;
    }
    return { items: ready, nextPageToken: cursor === undefined ? undefined : encodeToken({ q: fingerprint, v: 0, id: cursor }) };
  }

  /** One page in the order (field, _id): a single bounded query starting strictly after the token's key. */
  private async page(
    filter: Filter<DispatchDoc>,
    field: "created_at" | "completed_at",
    direction: 1 | -1,
    size: number,
    from: PageKey | undefined,
    fingerprint: string,
    budget: PageBudget<DispatchDoc> | undefined,
  ): Promise<Page<DispatchDoc>> {
    const sort = { [field]: direction, _id: direction } as Record<string, 1 | -1>;
    const query = { ...filter, ...(from ? after(field, direction, from) : {}) } as Filter<DispatchDoc>;
    const found = await this.dispatches.find(query, { sort, limit: size + 1 });
    const firstPage = found.slice(0, size);
    const page = budget ? firstPage.slice(0, countThatFit(firstPage, budget.maxBytes, budget.sizeOf, true)) : firstPage;
    const last = page[page.length - 1];
    return { items: page, nextPageToken: found.length > page.length && last ? encodeToken({ q: fingerprint, v: last[field] as number, id: last._id }) : undefined };
  }
}

