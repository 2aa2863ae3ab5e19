/**
 * Paging through a pool's messages and wake conditions: a page token says
 * where the previous page ended (the last entry's instant and a tie-breaking
 * id) and which pool it is of, so a token is never used with another pool.
 */
import { invalidField } from "../errors.js";
import { pageSize } from "../validate.js";

export const DEFAULT_LIST_PAGE = 100;
export const MAX_LIST_PAGE = 1000;

/** Where a page ended: entries after (at, key) come next. */
export interface PagePosition {
  at: number;
  key: string;
}

export interface ListCommand {
  poolId: string;
  pageSize: number;
  after?: PagePosition;
}

export function pageToken(poolId: string, position: PagePosition): string {
  return Buffer.from(JSON.stringify([poolId, position.at, position.key])).toString("base64url");
}

export function parsePoolList(poolId: string, request: { pageSize: number; pageToken: string }): ListCommand {
  return { poolId, pageSize: pageSize("page_size", request.pageSize, DEFAULT_LIST_PAGE, MAX_LIST_PAGE), after: parsePageToken(request.pageToken, poolId) };
}

function parsePageToken(token: string, poolId: string): PagePosition | undefined {
  if (token === "") return undefined;
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    decoded = undefined;
  }
  if (!Array.isArray(decoded) || decoded.length !== 3 || typeof decoded[1] !== "number" || typeof decoded[2] !== "string") {
    throw invalidField("page_token", "is not a page token of this listing; pass next_page_token as it came");
  }
  if (decoded[0] !== poolId) throw invalidField("page_token", "belongs to another pool's listing");
  return { at: decoded[1], key: decoded[2] };
}
