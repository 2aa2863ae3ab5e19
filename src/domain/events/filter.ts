/**
 * Event filters (seed: EventFilter / CompiledEventFilter): which events a
 * subscription, a listing or a wake condition sees. Within a list any entry
 * matches (OR); across lists every constrained list must match (AND).
 * An unconstrained list is `undefined`; an empty set matches nothing (a pool
 * scopes a wake filter to its member runs, which may be none).
 */
import { type EventFilter, PayloadAccessMode } from "../../../gen/mailroom/v1/event_pb.js";
import { invalidField } from "../errors.js";
import { boundedList, boundedText, requireId } from "../validate.js";
import { EventFamily, EventKind, isKnownKind } from "./kinds.js";

export { PayloadAccessMode };

export interface FilterSpec {
  runIds?: ReadonlySet<string>;
  agentIds?: ReadonlySet<string>;
  families?: ReadonlySet<EventFamily>;
  kinds?: ReadonlySet<EventKind>;
  customKinds?: ReadonlySet<string>;
  tags?: ReadonlySet<string>;
  threadIds?: ReadonlySet<string>;
  poolIds?: ReadonlySet<string>;
  /** Internal (inboxes): a run the event's message was delivered to. Not in the contract's filter. */
  recipients?: ReadonlySet<string>;
  /** What of each payload the reader receives (not part of the fingerprint). */
  payloadAccess: PayloadAccessMode;
}

/** The fields of an event a filter looks at (the journal stores them beside each event). */
export interface FilterableEvent {
  run_id?: string;
  agent_id?: string;
  family: number;
  kind: number;
  custom_kind?: string;
  tags?: string[];
  thread_id?: string;
  pool_id?: string;
  recipients?: string[];
}

export const MAX_FILTER_ENTRIES = 100;

export const EVERYTHING: FilterSpec = { payloadAccess: PayloadAccessMode.FULL };

const knownFamilies = new Set(Object.values(EventFamily).filter((v): v is EventFamily => typeof v === "number" && v !== EventFamily.UNSPECIFIED));

function ids(field: string, values: readonly string[]): ReadonlySet<string> | undefined {
  boundedList(field, values, MAX_FILTER_ENTRIES);
  return values.length === 0 ? undefined : new Set(values.map((value, i) => requireId(`${field}[${i}]`, value)));
}

function texts(field: string, values: readonly string[], maxBytes: number): ReadonlySet<string> | undefined {
  boundedList(field, values, MAX_FILTER_ENTRIES);
  return values.length === 0
    ? undefined
    : new Set(values.map((value, i) => {
      if (value === "") throw invalidField(`${field}[${i}]`, "must not be empty");
      return boundedText(`${field}[${i}]`, value, maxBytes);
    }));
}

function enums<T extends number>(field: string, values: readonly T[], known: (value: T) => boolean): ReadonlySet<T> | undefined {
  boundedList(field, values, MAX_FILTER_ENTRIES);
  return values.length === 0
    ? undefined
    : new Set(values.map((value, i) => {
      if (!known(value)) throw invalidField(`${field}[${i}]`, `is not a known value (${value})`);
      return value;
    }));
}

/** Checks a request's filter; `field` is its path (e.g. "filter"). */
export function parseEventFilter(field: string, filter: EventFilter | undefined): FilterSpec {
  if (!filter) return EVERYTHING;
  const payloadAccess = filter.payloadAccess === PayloadAccessMode.UNSPECIFIED ? PayloadAccessMode.FULL : filter.payloadAccess;
  if (!Object.values(PayloadAccessMode).includes(payloadAccess)) throw invalidField(`${field}.payload_access`, "is not a known mode");
  return {
    runIds: ids(`${field}.run_ids`, filter.runIds),
    agentIds: ids(`${field}.agent_ids`, filter.agentIds),
    families: enums(`${field}.families`, filter.families, (f) => knownFamilies.has(f)),
    kinds: enums(`${field}.kinds`, filter.kinds, isKnownKind),
    customKinds: texts(`${field}.custom_kinds`, filter.customKinds, 128),
    tags: texts(`${field}.tags`, filter.tags, 128),
    threadIds: ids(`${field}.thread_ids`, filter.threadIds),
    poolIds: ids(`${field}.pool_ids`, filter.poolIds),
    payloadAccess,
  };
}

function admits<T>(allowed: ReadonlySet<T> | undefined, value: T | undefined): boolean {
  return allowed === undefined || (value !== undefined && allowed.has(value));
}

export function matches(filter: FilterSpec, event: FilterableEvent): boolean {
  return (
    admits(filter.runIds, event.run_id) &&
    admits(filter.agentIds, event.agent_id) &&
    admits(filter.families, event.family) &&
    admits(filter.kinds, event.kind) &&
    admits(filter.customKinds, event.custom_kind) &&
    (filter.tags === undefined || (event.tags ?? []).some((tag) => filter.tags!.has(tag))) &&
    admits(filter.threadIds, event.thread_id) &&
    admits(filter.poolIds, event.pool_id) &&
    (filter.recipients === undefined || (event.recipients ?? []).some((run) => filter.recipients!.has(run)))
  );
}

/** The same filter always gets the same fingerprint, whatever the order of its lists. */
export function fingerprint(filter: FilterSpec): string {
  const canonical = JSON.stringify([
    filter.runIds, filter.agentIds, filter.families, filter.kinds, filter.customKinds, filter.tags, filter.threadIds, filter.poolIds, filter.recipients,
  ].map((set) => (set === undefined ? null : [...set].map(String).sort())));
  return `f1:${fnv1a64(canonical)}`;
}

/** FNV-1a, 64 bits: stable across processes and languages, good enough to tell filters apart. */
function fnv1a64(text: string): string {
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash.toString(16).padStart(16, "0");
}

/** A filter as plain data (stored, journaled): null for an unconstrained list; an empty list matches nothing. */
export interface PlainFilter {
  run_ids: string[] | null;
  agent_ids: string[] | null;
  families: number[] | null;
  kinds: number[] | null;
  custom_kinds: string[] | null;
  tags: string[] | null;
  thread_ids: string[] | null;
  pool_ids: string[] | null;
  payload_access: number;
}

const toList = <T>(values: ReadonlySet<T> | undefined): T[] | null => (values === undefined ? null : [...values]);
const toSet = <T>(values: T[] | null): ReadonlySet<T> | undefined => (values === null ? undefined : new Set(values));

export function toPlainFilter(f: FilterSpec): PlainFilter {
  return {
    run_ids: toList(f.runIds), agent_ids: toList(f.agentIds), families: toList(f.families), kinds: toList(f.kinds),
    custom_kinds: toList(f.customKinds), tags: toList(f.tags), thread_ids: toList(f.threadIds), pool_ids: toList(f.poolIds),
    payload_access: f.payloadAccess,
  };
}

export function fromPlainFilter(f: PlainFilter): FilterSpec {
  return {
    runIds: toSet(f.run_ids), agentIds: toSet(f.agent_ids), families: toSet(f.families), kinds: toSet(f.kinds),
    customKinds: toSet(f.custom_kinds), tags: toSet(f.tags), threadIds: toSet(f.thread_ids), poolIds: toSet(f.pool_ids),
    payloadAccess: f.payload_access,
  };
}
