/**
 * Identifiers: sortable UUIDv7 for entities the server names, and unguessable
 * claim tokens (a claim token is a capability: whoever holds it may ack).
 */
import { v7 as uuidv7 } from "uuid";

export function newId(): string {
  return uuidv7();
}

const TOKEN_BYTES = 16;

export function newClaimToken(): string {
  const bytes = new Uint8Array(TOKEN_BYTES);
  globalThis.crypto.getRandomValues(bytes);
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return `ct_${hex}`;
}
