/**
 * Identifiers: sortable UUIDv7 for entities the server names, and unguessable
 * claim tokens (a claim token is a capability: whoever holds it may ack).
 *
 * Both draw their random bytes from one pool filled from the CSPRNG in
 * blocks (one call per 256 draws rather than one per id: at several ids a
 * job, the per-call cost showed in profiles). Bytes once handed out are
 * never handed out again.
 */
import { v7 as uuidv7 } from "uuid";

const DRAW_BYTES = 16;
const pool = new Uint8Array(DRAW_BYTES * 256);
let poolOffset = pool.length;

function draw(): Uint8Array {
  if (poolOffset + DRAW_BYTES > pool.length) {
    globalThis.crypto.getRandomValues(pool);
    poolOffset = 0;
  }
  const bytes = pool.subarray(poolOffset, poolOffset + DRAW_BYTES);
  poolOffset += DRAW_BYTES;
  return bytes;
}

/**
 * The monotonic state uuid keeps for itself when it draws its own bytes
 * (RFC 9562 method 1, a counter seeded randomly each millisecond): ids made
 * in one millisecond still sort in the order they were made, which keeps an
 * EnqueueBatch's dispatches in batch order where created_at ties.
 */
let lastMsecs = -Infinity;
let seq = 0;

export function newId(): string {
  const random = draw();
  const now = Date.now();
  if (now > lastMsecs) {
    seq = ((random[6]! & 0x7f) << 24) | (random[7]! << 16) | (random[8]! << 8) | random[9]!;
    lastMsecs = now;
  } else {
    seq = (seq + 1) | 0;
    if (seq === 0) lastMsecs++;
  }
  return uuidv7({ random, msecs: lastMsecs, seq });
}

const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

export function newClaimToken(): string {
  const bytes = draw();
  let hex = "";
  for (const byte of bytes) hex += HEX[byte]!;
  return `ct_${hex}`;
}
