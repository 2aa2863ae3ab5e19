/**
 * Reading the mailbox: one dispatch, pages of dispatches, counts, queued
 * threads; and deleting old terminal dispatches.
 *
 * Pages are keyset pages: the token holds the last key returned (and which
 * query it belongs to), so a page never repeats or skips a dispatch when
 * others are added meanwhile.
 */
import type { Clock } from "../../domain/clock.js";
import type { ListQuery } from "../../domain/dispatch/commands.js";
import { ALL_STATUSES, type DispatchStatus, TERMINAL_STATUSES } from "../../domain/dispatch/state.js";
import { EntityKind, invalidField, notFound } from "../../domain/errors.js";
import type { Collection, Filter } from "../../store/port.js";
import { type DispatchDoc } from "./records.js";
import type { Threads } from "./threads.js";

interface PageKey {
  /** Which query the token belongs to. */
  q: string;
  /** The sort value of the last entry returned. */
  v: number | string;
  /** Its id. */
  id: string;
}

function encodeToken(key: PageKey): string {
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

function decodeToken(token: string | undefined, query: string): PageKey | undefined {
  if (token === undefined) return undefined;
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidField("page_token", "is not a token this server issued");
  }
  const candidate = key as Partial<PageKey>;
  if (typeof candidate !== "object" || candidate === null || typeof candidate.id !== "string" || (typeof candidate.v !== "number" && typeof candidate.v !== "string")) {
    throw invalidField("page_token", "is not a token this server issued");
  }
  if (candidate.q !== query) throw invalidField("page_token", "belongs to a different query (same thread_id and statuses are required)");
  return candidate as PageKey;
}

export interface Page<T> {
  items: T[];
  nextPageToken?: string;
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

  /** Oldest first: (created_at, dispatch_id). */
  async list(query: ListQuery): Promise<Page<DispatchDoc>> {
    const fingerprint = `list|${query.threadId ?? ""}|${(query.statuses ?? []).join(",")}`;
    const filter: Filter<DispatchDoc> = {
      ...(query.threadId ? { thread_id: query.threadId } : {}),
      ...(query.statuses ? { status: { $in: query.statuses } } : {}),
    };
    return this.page(filter, "created_at", 1, query.pageSize, decodeToken(query.pageToken, fingerprint), fingerprint);
  }

  /** Most recently completed first: (completed_at, dispatch_id) descending. */
  async listTerminal(query: ListQuery): Promise<Page<DispatchDoc>> {
    const fingerprint = `terminal|${query.threadId ?? ""}`;
    const filter: Filter<DispatchDoc> = { ...(query.threadId ? { thread_id: query.threadId } : {}), terminal: true };
    return this.page(filter, "completed_at", -1, query.pageSize, decodeToken(query.pageToken, fingerprint), fingerprint);
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

  /** Threads with a dispatch Claim could return now, by thread id. */
  async queuedThreads(pageSize: number, pageToken: string | undefined): Promise<Page<string>> {
    const fingerprint = "queued-threads";
    const after = decodeToken(pageToken, fingerprint)?.id;
    const now = this.clock.now();
    const ready: string[] = [];
    let cursor = after;
    let exhausted = false;
    while (ready.length < pageSize) {
      // The readiness hint may promise too much; each thread is checked.
      const candidates = await this.threads.readyAfter(now, cursor, pageSize * 2);
      const checks = await Promise.all(candidates.map(async (thread) => {
        const claimable = await this.dispatches.findOne({ thread_id: thread._id, status: "QUEUED", epoch: thread.epoch, available_at: { $lte: now } });
        return claimable ? thread._id : undefined;
      }));
      for (const id of checks) if (id && ready.length < pageSize) ready.push(id);
      if (candidates.length < pageSize * 2) {
        exhausted = true;
        break;
      }
      cursor = candidates[candidates.length - 1]!._id;
    }
    const last = ready[ready.length - 1];
    return { items: ready, nextPageToken: !exhausted && last ? encodeToken({ q: fingerprint, v: 0, id: last }) : undefined };
  }

  private async page(filter: Filter<DispatchDoc>, field: "created_at" | "completed_at", direction: 1 | -1, size: number, from: PageKey | undefined, fingerprint: string): Promise<Page<DispatchDoc>> {
    const sort = { [field]: direction, _id: direction } as Record<string, 1 | -1>;
    const items: DispatchDoc[] = [];
    let key = from;
    for (;;) {
      // Everything at the last key's value is fetched again and filtered here,
      // which keeps the filter a simple range the indexes can answer.
      const bound = key ? { [field]: direction === 1 ? { $gte: key.v } : { $lte: key.v } } : {};
      const batch = await this.dispatches.find({ ...filter, ...bound } as Filter<DispatchDoc>, { sort, limit: size + 1 + (key ? 100 : 0) });
      const fresh = batch.filter((doc) => !key || (doc[field] as number) !== key.v || (direction === 1 ? doc._id > key.id : doc._id < key.id));
      items.push(...fresh.slice(0, size + 1 - items.length));
      if (items.length > size || batch.length < size + 1 + (key ? 100 : 0)) break;
      const last = batch[batch.length - 1]!;
      key = { q: fingerprint, v: last[field] as number, id: last._id };
    }
    const more = items.length > size;
    const page = items.slice(0, size);
    const last = page[page.length - 1];
    return { items: page, nextPageToken: more && last ? encodeToken({ q: fingerprint, v: last[field] as number, id: last._id }) : undefined };
  }
}
