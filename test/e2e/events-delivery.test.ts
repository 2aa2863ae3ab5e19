/**
 * EventService delivery under concurrency, end to end through the real server
 * process: many publishers at once, many subscribers over every protocol
 * (generated clients over gRPC, gRPC-Web and Connect, and @grpc/grpc-js),
 * each of which disconnects at random points and resumes after the cursor of
 * the last frame it saw. The contract: a subscriber resuming after the cursor
 * of the last frame it saw receives every later matching event exactly once,
 * in journal order.
 *
 * The scenario runs once (beforeAll); each test checks one rule of it.
 */
import type { EventCursor, EventFrame } from "../../gen/mailroom/v1/event_pb.js";
import { EventFamily, EventFrameKind, EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { beforeAll, describe, expect, it } from "vitest";
import { testClients } from "../support/e2e-auth.js";
import { type EnvelopeInit, publish, type SubscribeInit, within } from "../support/events.js";
import { type GrpcJsCursor, type GrpcJsFrame, grpcJsEvents } from "../support/events-grpc-js.js";
import { isolated, ms, uid } from "../support/mailbox.js";
import { type ServerProcess, serverBackends, useServerProcess } from "../support/server-process.js";

const PUBLISHERS = 10;
const EVENTS_PER_PUBLISHER = 1_000;
/** A subscriber reads a random number of events, 0 to this many, on each connection before it disconnects. */
const MAX_EVENTS_PER_CONNECTION = 800;
/** max_frames_per_message of the subscribers that ask for batches. */
const BATCH = 50;
/** Idle heartbeats (1 s apart) after publishing ended that mean a subscriber will never get what it still misses. */
const STALLED_AFTER_HEARTBEATS = 5;

type Protocol = "grpc" | "grpc-web" | "connect" | "grpc-js";
const SUBSCRIBER_PROTOCOLS: Protocol[] = ["grpc", "connect", "grpc-web", "grpc-js"];
const PUBLISHER_PROTOCOLS: Protocol[] = ["grpc", "connect", "grpc-web"];
const KINDS = [EventKind.MODEL_STREAM_DELTA, EventKind.USAGE_RECORDED, EventKind.CUSTOM];

/** What a published event was, by publisher and position in its publish order. */
interface Attributes {
  eventId: string;
  publisher: number;
  index: number;
  runId: string;
  agentId: string;
  kind: EventKind;
  tags: string[];
}

interface Published extends Attributes {
  seq: number;
}

type Scope = Exclude<NonNullable<SubscribeInit["scope"]>, { case: undefined }>;
type FilterInit = Extract<Scope, { case: "filter" }>["value"];

interface SubscriberSpec {
  name: string;
  scope: Scope;
  /** Which of the scenario's events the scope matches. */
  matches: (event: Attributes) => boolean;
  /** The scope also matches events of other tests (scope ALL). */
  unbounded?: boolean;
}

/** One frame, whatever client read it. */
interface SeenFrame {
  kind: "event" | "caught_up" | "heartbeat";
  seq: number;
  /** The case of the cursor's scope (runId, agentId, filterFingerprint, all). */
  cursorScope: string;
  eventId: string;
  /** To send back as `after`. */
  cursor: unknown;
}

interface Connection {
  next(): Promise<SeenFrame | undefined>;
  disconnect(): void;
}

interface Followed {
  spec: SubscriberSpec;
  protocol: Protocol;
  /** max_frames_per_message it asked for (0: single frames). */
  batch: number;
  /** The most frames one response carried. */
  largestBatch: number;
  /** The scenario's events received, in order of arrival. */
  received: Array<{ seq: number; eventId: string }>;
  /** Events of the scope from outside the scenario (possible only for scope ALL). */
  foreign: number;
  cursorScopes: Set<string>;
  connections: number;
}

/** A small seeded generator, so a failing run can be told apart from another (the seed is in the messages). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const frameKinds: Record<number, SeenFrame["kind"]> = {
  [EventFrameKind.EVENT]: "event",
  [EventFrameKind.CAUGHT_UP]: "caught_up",
  [EventFrameKind.HEARTBEAT]: "heartbeat",
};

/**
 * Subscribe through a generated client; each connection is dropped one of
 * three ways. With `batch` it asks for batches of up to that many frames and
 * hands them out one at a time, so it may leave in the middle of a batch
 * (resuming after the last frame it handled, as the contract says).
 */
function connectSubscriber(url: string, protocol: Exclude<Protocol, "grpc-js">, scope: SubscriberSpec["scope"], random: () => number, batch: number, sizes: { largest: number }) {
  let clients = testClients({ baseUrl: url, protocol });
  return {
    open(after: unknown): Connection {
      const controller = new AbortController();
      const request = { scope, after: after as EventCursor | undefined, heartbeatInterval: ms(1000), maxFramesPerMessage: batch };
      const iterator = clients.events.subscribe(request, { signal: controller.signal })[Symbol.asyncIterator]();
      const pending: EventFrame[] = [];
      return {
        async next() {
          if (pending.length === 0) {
            const result = await within(iterator.next(), 10_000, "a frame");
            if (result.done) return undefined;
            const frames = batch > 1 ? result.value.frames : [result.value.frame!];
            if (batch > 1 && result.value.frame) throw new Error("a batched subscription got a single `frame`");
            sizes.largest = Math.max(sizes.largest, frames.length);
            pending.push(...frames);
          }
          const frame = pending.shift()!;
          return {
            kind: frameKinds[frame.kind]!,
            seq: Number(frame.cursor!.eventSeq),
            cursorScope: frame.cursor!.scope?.scope.case ?? "none",
            eventId: frame.event?.envelope?.eventId ?? "",
            cursor: frame.cursor,
          };
        },
        disconnect() {
          const how = random();
          if (how < 1 / 3) {
            // Cancel the call (RST_STREAM).
            controller.abort();
          } else if (how < 2 / 3) {
            // Drop the whole connection; the next call connects again.
            clients.close();
            clients = testClients({ baseUrl: url, protocol });
          }
          // Otherwise just stop iterating, which also cancels the call.
          void iterator.return?.().catch(() => undefined);
        },
      };
    },
    close: () => clients.close(),
  };
}

/** The scope in @grpc/proto-loader's words. */
function grpcJsScope(scope: SubscriberSpec["scope"]): object {
  switch (scope.case) {
    case "all":
      return { all: {} };
    case "runId":
      return { run_id: scope.value };
    case "agentId":
      return { agent_id: scope.value };
    case "filter": {
      const f = scope.value;
      return {
        filter: {
          run_ids: f.runIds ?? [],
          agent_ids: f.agentIds ?? [],
          families: (f.families ?? []).map((family) => `EVENT_FAMILY_${EventFamily[family]}`),
          kinds: (f.kinds ?? []).map((kind) => `EVENT_KIND_${EventKind[kind]}`),
          custom_kinds: f.customKinds ?? [],
          tags: f.tags ?? [],
        },
      };
    }
  }
}

function grpcJsSubscriber(port: number, scope: SubscriberSpec["scope"]) {
  const client = grpcJsEvents(`127.0.0.1:${port}`);
  const kinds: Record<string, SeenFrame["kind"]> = { EVENT_FRAME_KIND_EVENT: "event", EVENT_FRAME_KIND_CAUGHT_UP: "caught_up", EVENT_FRAME_KIND_HEARTBEAT: "heartbeat" };
  return {
    open(after: unknown): Connection {
      const call = client.subscribe({ ...grpcJsScope(scope), after: after ?? null, heartbeat_interval: { seconds: 1 } });
      // The cancellation we cause surfaces as an error event; real failures surface through the iterator.
      call.on("error", () => undefined);
      const iterator = (call as AsyncIterable<{ frame: GrpcJsFrame | null }>)[Symbol.asyncIterator]();
      return {
        async next() {
          const result = await within(iterator.next(), 10_000, "a frame");
          if (result.done) return undefined;
          const frame = result.value.frame!;
          const cursor: GrpcJsCursor = frame.cursor!;
          return {
            kind: kinds[frame.kind]!,
            seq: Number(cursor.event_seq),
            cursorScope: String(cursor.scope?.scope ?? "none").replace(/_(\w)/g, (_m, c: string) => c.toUpperCase()),
            eventId: frame.event?.envelope?.event_id ?? "",
            cursor,
          };
        },
        disconnect() {
          call.cancel();
        },
      };
    },
    close: () => client.close(),
  };
}

/**
 * Reads the scope until `expected` of the scenario's events arrived, dropping
 * the connection after a random number of events each time and resuming
 * after the cursor of the last frame read.
 */
async function follow(
  spec: SubscriberSpec,
  protocol: Protocol,
  batch: number,
  sizes: { largest: number },
  source: { open(after: unknown): Connection },
  random: () => number,
  ours: (eventId: string) => boolean,
  expected: number,
  publishingDone: () => boolean,
): Promise<Followed> {
  const followed: Followed = { spec, protocol, batch, largestBatch: 0, received: [], foreign: 0, cursorScopes: new Set(), connections: 0 };
  let after: unknown;
  while (followed.received.length < expected) {
    followed.connections++;
    const budget = Math.floor(random() * (MAX_EVENTS_PER_CONNECTION + 1));
    const connection = source.open(after);
    let read = 0;
    let idle = 0;
    for (;;) {
      const frame = await connection.next();
      if (!frame) throw new Error(`${spec.name} over ${protocol}: the server ended the stream`);
      after = frame.cursor;
      followed.cursorScopes.add(frame.cursorScope);
      if (frame.kind === "event") {
        read++;
        idle = 0;
        if (ours(frame.eventId)) followed.received.push({ seq: frame.seq, eventId: frame.eventId });
        else followed.foreign++;
      } else if (frame.kind === "heartbeat" && publishingDone() && ++idle >= STALLED_AFTER_HEARTBEATS) {
        connection.disconnect();
        throw new Error(`${spec.name} over ${protocol}: idle with ${followed.received.length} of ${expected} events received`);
      }
      if (followed.received.length >= expected || read >= budget) {
        connection.disconnect();
        break;
      }
    }
  }
  followed.largestBatch = sizes.largest;
  return followed;
}

interface Scenario {
  published: Published[];
  followed: Followed[];
  seed: number;
}

async function runScenario(server: ServerProcess): Promise<Scenario> {
  const test = uid("load");
  const run = (r: number) => `${test}-run-${r}`;
  const agent = (a: number) => `${test}-agent-${a}`;
  const runs = [0, 1, 2, 3].map(run);
  const agents = [0, 1, 2, 3, 4].map(agent);
  const testTag = `test:${test}`;
  const publisherTag = (p: number) => `${test}:publisher-${p}`;
  const customKind = `${test}.note`;

  const attributes = (publisher: number, index: number): Attributes => ({
    eventId: `${test}-p${publisher}-${index}`,
    publisher,
    index,
    runId: runs[(publisher + index) % runs.length]!,
    agentId: agents[publisher % agents.length]!,
    kind: KINDS[index % KINDS.length]!,
    tags: [testTag, publisherTag(publisher)],
  });
  const filter = (value: FilterInit): Scope => ({ case: "filter", value });
  const runScope = (r: number): SubscriberSpec => ({ name: `run ${r}`, scope: { case: "runId", value: run(r) }, matches: (e) => e.runId === run(r) });
  const agentScope = (a: number): SubscriberSpec => ({ name: `agent ${a}`, scope: { case: "agentId", value: agent(a) }, matches: (e) => e.agentId === agent(a) });
  const specs: SubscriberSpec[] = [
    runScope(0),
    runScope(1),
    runScope(2),
    runScope(3),
    agentScope(0),
    agentScope(1),
    { name: "publishers 1 and 2", scope: filter({ tags: [publisherTag(1), publisherTag(2)] }), matches: (e) => e.publisher === 1 || e.publisher === 2 },
    { name: "the whole journal", scope: { case: "all", value: {} }, matches: () => true, unbounded: true },
    { name: "runs 0 and 1", scope: filter({ runIds: [run(0), run(1)] }), matches: (e) => e.runId === run(0) || e.runId === run(1) },
    { name: "model deltas", scope: filter({ kinds: [EventKind.MODEL_STREAM_DELTA], tags: [testTag] }), matches: (e) => e.kind === EventKind.MODEL_STREAM_DELTA },
    { name: "the usage family", scope: filter({ families: [EventFamily.USAGE], runIds: runs }), matches: (e) => e.kind === EventKind.USAGE_RECORDED },
    { name: "the custom kind", scope: filter({ customKinds: [customKind] }), matches: (e) => e.kind === EventKind.CUSTOM },
    { name: "publishers 3 and 7", scope: filter({ tags: [publisherTag(3), publisherTag(7)] }), matches: (e) => e.publisher === 3 || e.publisher === 7 },
    {
      name: "run 2, custom or usage",
      scope: filter({ runIds: [run(2)], kinds: [EventKind.CUSTOM, EventKind.USAGE_RECORDED] }),
      matches: (e) => e.runId === run(2) && (e.kind === EventKind.CUSTOM || e.kind === EventKind.USAGE_RECORDED),
    },
    runScope(0),
    runScope(1),
    { name: "publisher 0", scope: filter({ tags: [publisherTag(0)] }), matches: (e) => e.publisher === 0 },
    { name: "publisher 5", scope: filter({ tags: [publisherTag(5)] }), matches: (e) => e.publisher === 5 },
    {
      name: "agent 1, custom",
      scope: filter({ agentIds: [agent(1)], kinds: [EventKind.CUSTOM] }),
      matches: (e) => e.agentId === agent(1) && e.kind === EventKind.CUSTOM,
    },
    { name: "run 3 deltas", scope: filter({ runIds: [run(3)], kinds: [EventKind.MODEL_STREAM_DELTA] }), matches: (e) => e.runId === run(3) && e.kind === EventKind.MODEL_STREAM_DELTA },
  ];

  const everything: Attributes[] = [];
  for (let p = 0; p < PUBLISHERS; p++) for (let i = 0; i < EVENTS_PER_PUBLISHER; i++) everything.push(attributes(p, i));
  const ours = (eventId: string) => eventId.startsWith(`${test}-p`);
  const seed = Math.floor(Math.random() * 2 ** 31);

  let publishingDone = false;
  const sources = specs.map((spec, s) => {
    const protocol = SUBSCRIBER_PROTOCOLS[s % SUBSCRIBER_PROTOCOLS.length]!;
    const random = mulberry32(seed + s);
    // Half the generated clients of each protocol ask for batches.
    const batch = protocol !== "grpc-js" && s % (2 * SUBSCRIBER_PROTOCOLS.length) < SUBSCRIBER_PROTOCOLS.length ? BATCH : 0;
    const sizes = { largest: 0 };
    const source = protocol === "grpc-js" ? grpcJsSubscriber(server.port, spec.scope) : connectSubscriber(server.url, protocol, spec.scope, random, batch, sizes);
    return { spec, protocol, random, source, batch, sizes };
  });
  try {
    const following = sources.map(({ spec, protocol, random, source, batch, sizes }) =>
      follow(spec, protocol, batch, sizes, source, random, ours, everything.filter(spec.matches).length, () => publishingDone).catch((error: unknown) => {
        throw new Error(`seed ${seed}: ${error instanceof Error ? error.message : String(error)}`);
      }),
    );
    const publishing = Array.from({ length: PUBLISHERS }, async (_, p) => {
      const clients = testClients({ baseUrl: server.url, protocol: PUBLISHER_PROTOCOLS[p % PUBLISHER_PROTOCOLS.length] as Exclude<Protocol, "grpc-js"> });
      try {
        const published: Published[] = [];
        for (let i = 0; i < EVENTS_PER_PUBLISHER; i++) {
          const a = attributes(p, i);
          const envelope: EnvelopeInit = { eventId: a.eventId, runId: a.runId, agentId: a.agentId, kind: a.kind, tags: a.tags };
          if (a.kind === EventKind.CUSTOM) envelope.customKind = customKind;
          published.push({ ...a, seq: Number((await publish(clients.events, envelope, `publisher ${p}, #${i}`)).eventSeq) });
        }
        return published;
      } finally {
        clients.close();
      }
    });
    const published = (await Promise.all(publishing)).flat();
    publishingDone = true;
    return { published, followed: await Promise.all(following), seed };
  } finally {
    for (const { source } of sources) source.close();
  }
}

/** How a received sequence differs from the expected one (all zero when it is exactly it). */
function differences(received: ReadonlyArray<{ seq: number; eventId: string }>, expected: readonly Published[]) {
  const expectedIds = new Set(expected.map((e) => e.eventId));
  const receivedIds = received.map((r) => r.eventId);
  const seen = new Set<string>();
  let duplicated = 0;
  for (const id of receivedIds) {
    if (seen.has(id)) duplicated++;
    seen.add(id);
  }
  return {
    missing: expected.filter((e) => !seen.has(e.eventId)).length,
    unexpected: receivedIds.filter((id) => !expectedIds.has(id)).length,
    duplicated,
    outOfOrder: received.filter((r, i) => i > 0 && r.seq <= received[i - 1]!.seq).length,
  };
}

describe.each(serverBackends())("EventService delivery on the $name backend", (backend) => {
  describe.skipIf(!backend.available)(
    `${PUBLISHERS} concurrent publishers x ${EVENTS_PER_PUBLISHER} events; 20 subscribers over gRPC, gRPC-Web, Connect and @grpc/grpc-js that disconnect at random and resume after the last cursor they saw`,
    () => {
      const server = useServerProcess({ backend: isolated(backend) });
      let scenario: Scenario;
      beforeAll(async () => {
        scenario = await runScenario(server());
      }, 90_000);

      it("journals each publisher's events in the order it published them", () => {
        for (let p = 0; p < PUBLISHERS; p++) {
          const seqs = scenario.published.filter((e) => e.publisher === p).map((e) => e.seq);
          expect(seqs, `publisher ${p}`).toEqual([...seqs].sort((a, b) => a - b));
        }
        expect(new Set(scenario.published.map((e) => e.seq)).size).toBe(PUBLISHERS * EVENTS_PER_PUBLISHER);
      });

      it("each subscriber receives every event its scope matches exactly once, in journal order", () => {
        const bySeq = [...scenario.published].sort((a, b) => a.seq - b.seq);
        for (const { spec, protocol, received } of scenario.followed) {
          const expected = bySeq.filter(spec.matches);
          expect(expected.length, spec.name).toBeGreaterThan(0);
          expect(differences(received, expected), `${spec.name} over ${protocol} (seed ${scenario.seed})`).toEqual({ missing: 0, unexpected: 0, duplicated: 0, outOfOrder: 0 });
          expect(received.map((r) => r.eventId)).toEqual(expected.map((e) => e.eventId));
        }
      });

      it("so each subscriber sees every publisher's matching events in that publisher's order", () => {
        const byId = new Map(scenario.published.map((e) => [e.eventId, e]));
        for (const { spec, protocol, received } of scenario.followed) {
          for (let p = 0; p < PUBLISHERS; p++) {
            const indices = received.map((r) => byId.get(r.eventId)!).filter((e) => e.publisher === p).map((e) => e.index);
            expect(indices, `${spec.name} over ${protocol}, publisher ${p}`).toEqual([...indices].sort((a, b) => a - b));
          }
        }
      });

      it("a scope sees nothing outside it, and every frame's cursor belongs to the subscription's own scope", () => {
        for (const { spec, protocol, foreign, cursorScopes } of scenario.followed) {
          if (!spec.unbounded) expect(foreign, `${spec.name} over ${protocol}: events outside the scenario`).toBe(0);
          const own = spec.scope.case === "filter" ? "filterFingerprint" : spec.scope.case;
          expect([...cursorScopes], `${spec.name} over ${protocol}`).toEqual([own]);
        }
      });

      it("subscribers that asked for batches (max_frames_per_message) got several frames in a response, never more than they asked", () => {
        const batched = scenario.followed.filter((f) => f.batch > 1);
        expect(batched.length).toBeGreaterThan(0);
        for (const { spec, protocol, largestBatch } of batched) expect(largestBatch, `${spec.name} over ${protocol}`).toBeLessThanOrEqual(BATCH);
        expect(Math.max(...batched.map((f) => f.largestBatch))).toBeGreaterThan(1);
        for (const { spec, protocol, largestBatch } of scenario.followed.filter((f) => f.batch === 0)) expect(largestBatch, `${spec.name} over ${protocol}`).toBeLessThanOrEqual(1);
      });

      it("the subscribers really did disconnect and resume, over every protocol", () => {
        for (const protocol of SUBSCRIBER_PROTOCOLS) {
          const over = scenario.followed.filter((f) => f.protocol === protocol);
          expect(over.length, protocol).toBeGreaterThan(0);
          expect(over.reduce((sum, f) => sum + f.connections - 1, 0), `resumptions over ${protocol}`).toBeGreaterThan(over.length);
        }
      });
    },
  );
});
