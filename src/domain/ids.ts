/**
 * Identifiers: sortable UUIDv7 for entities the server names, and unguessable
 * claim tokens (a claim token is a capability: whoever holds it may ack).
 */
import { v7 as uuidv7 } from "uuid";

export function newId(): string {
  return uuidv7();
}

const TOKEN_BYTES = 16;
/** Random bytes drawn from the CSPRNG in blocks: one call per 256 claim tokens rather than one each. */
const pool = new Uint8Array(TOKEN_BYTES * 256);
let poolOffset = pool.length;
const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

export function newClaimToken(): string {
  if (poolOffset + TOKEN_BYTES > pool.length) {
    globalThis.crypto.getRandomValues(pool);
    poolOffset = 0;
  }
  let hex = "";
  for (let i = poolOffset; i < poolOffset + TOKEN_BYTES; i++) hex += HEX[pool[i]!];
  // Bytes once handed out are never handed out again.
  poolOffset += TOKEN_BYTES;
  return `ct_${hex}`;
}
