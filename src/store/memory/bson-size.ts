/**
 * MongoDB's 16 MiB limit on a document's BSON size, for the memory backend.
 * Most documents are far below it, so a quick upper bound settles them; only
 * a document whose bound reaches the limit is measured exactly (as the driver
 * does, with the bson library).
 */
import { BSON } from "mongodb";

/** An upper bound of the BSON size of a value (without its key). */
function boundOf(value: unknown): number {
  switch (typeof value) {
    case "string":
      // int32 length + at most 3 UTF-8 bytes per UTF-16 unit + NUL.
      return 5 + 3 * value.length;
    case "number":
    case "bigint":
      return 8;
    case "boolean":
      return 1;
    case "undefined":
      return 0;
    case "object":
      break;
    default:
      return 16;
  }
  if (value === null) return 0;
  if (value instanceof Uint8Array) return 5 + value.byteLength;
  if (value instanceof Date) return 8;
  let size = 5;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) size += 2 + String(i).length + boundOf(value[i]);
    return size;
  }
  for (const key in value) size += 2 + 3 * key.length + boundOf((value as Record<string, unknown>)[key]);
  return size;
}

/** The document's BSON size when it may be `limit` bytes or more; otherwise any number below `limit`. */
export function bsonSizeNear(doc: object, limit: number): number {
  const bound = boundOf(doc);
  return bound < limit ? bound : BSON.calculateObjectSize(doc as BSON.Document, { ignoreUndefined: true });
}
