/**
 * Helpers for MailboxService end-to-end tests: calls in the words of the
 * contract, refusals decoded into their ErrorDetail, server streams read one
 * frame at a time, bounded polling, and a mailbox emptied between tests that
 * look at every thread.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, expect, onTestFinished } from "vitest";
import { type DispatchSignal, type RunDispatch, RunDispatchStatus } from "../../gen/mailroom/v1/dispatch_pb.js";
import { type ErrorDetail, ErrorDetailSchema } from "../../gen/mailroom/v1/errors_pb.js";
import type { LiveRunCommand } from "../../gen/mailroom/v1/live_pb.js";
import type {
  MailboxService,
  NewDispatch,
  NewDispatchSchema,
  OpenLiveChannelResponse,
  WatchDispatchSignalsResponse,
} from "../../gen/mailroom/v1/mailbox_service_pb.js";
import type { ClientProtocol, MailroomClients } from "../../src/client/index.js";
import { testClients } from "./e2e-auth.js";
import type { ServerBackend } from "./server-process.js";

export type Mailbox = Client<typeof MailboxService>;
/** The target of a live command, as a plain object. */
export interface LiveTarget {
  threadId: string;
  runId: string;
  dispatchId?: string;
}

/** The fields of a NewDispatch as a plain object. */
export type NewDispatchInit = Exclude<MessageInitShape<typeof NewDispatchSchema>, NewDispatch>;

export const protocols: ClientProtocol[] = ["grpc", "grpc-web", "connect"];

/** A lease long enough never to expire during a test. */
export const LONG_LEASE = durationFromMs(60_000);

export const ms = durationFromMs;

/** An id no other test (or earlier run against the same database) uses. */
export function uid(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** The same backend on a database of its own (mongo), so the server sees only this suite's work. */
export function isolated(backend: ServerBackend): ServerBackend {
  if (backend.name !== "mongo") return backend;
  return { ...backend, args: ["--store", "mongo", "--mongodb-database", uid("mailroom_e2e_mailbox").replace(/-/g, "_")] };
}

/** An object that forwards every property to `current()`, so it can be named before it exists. */
function forwarding<T extends object>(current: () => T): T {
  return new Proxy({} as T, { get: (_target, key) => Reflect.get(current(), key) });
}

/**
 * Clients for the enclosing suite over one protocol: connected before its
 * tests (once `url()` is known), closed after them. Use them inside tests.
 */
export function useClients(url: () => string, protocol: ClientProtocol): MailroomClients {
  let clients: MailroomClients | undefined;
  beforeAll(() => {
    clients = testClients({ baseUrl: url(), protocol });
  });
  afterAll(() => clients?.close());
  const current = (): MailroomClients => {
    if (!clients) throw new Error("the suite's clients connect in beforeAll: use them inside tests");
    return clients;
  };
  return {
    mailbox: forwarding(() => current().mailbox),
    pools: forwarding(() => current().pools),
    events: forwarding(() => current().events),
    health: forwarding(() => current().health),
    close: () => current().close(),
  };
}

export async function enqueue(mailbox: Mailbox, threadId: string, extra: Partial<NewDispatchInit> = {}): Promise<RunDispatch> {
  const response = await mailbox.enqueue({ dispatch: { threadId, ...extra } });
  expect(response.deduplicated).toBe(false);
  return response.dispatch!;
}

/** Claims the thread's next dispatch; fails the test when there is none. */
export async function claimOne(mailbox: Mailbox, threadId: string, options: { consumerId?: string; leaseMs?: number } = {}): Promise<RunDispatch> {
  const { dispatches } = await mailbox.claim({
    threadId,
    consumerId: options.consumerId ?? "worker",
    lease: options.leaseMs === undefined ? LONG_LEASE : ms(options.leaseMs),
    limit: 1,
  });
  expect(dispatches, `a claimable dispatch in thread ${threadId}`).toHaveLength(1);
  return dispatches[0]!;
}

export async function ack(mailbox: Mailbox, dispatch: RunDispatch): Promise<RunDispatch> {
  return (await mailbox.ack({ dispatchId: dispatch.dispatchId, claimToken: dispatch.claimToken })).dispatch!;
}

export async function countIn(mailbox: Mailbox, threadId: string, status: RunDispatchStatus): Promise<number> {
  return Number((await mailbox.countDispatches({ threadId, statuses: [status] })).total);
}

export interface LongPoll {
  /** What the waiting Claim returned. */
  claimed: RunDispatch[];
  /** The dispatch enqueued while it waited. */
  enqueued: RunDispatch;
  /** Whether the Claim was still waiting when the enqueue was sent. */
  waitedForTheEnqueue: boolean;
  /** From the enqueue's completion to the Claim's return (negative when the Claim answered first). */
  latencyMs: number;
}

/** A long-poll Claim on `waiter` for an empty thread, then an enqueue there through `producer`. */
export async function longPollThenEnqueue(waiter: Mailbox, producer: Mailbox, threadId: string): Promise<LongPoll> {
  let settled = false;
  const claiming = waiter.claim({ threadId, consumerId: "poller", lease: LONG_LEASE, limit: 1, wait: ms(20_000) }).finally(() => {
    settled = true;
  });
  // One round trip on the waiter's connection: the claim has reached the server and found nothing.
  await waiter.getDispatchEpoch({ threadId });
  const waitedForTheEnqueue = !settled;
  const enqueued = await enqueue(producer, threadId);
  const enqueueDone = performance.now();
  const { dispatches } = await claiming;
  return { claimed: dispatches, enqueued, waitedForTheEnqueue, latencyMs: performance.now() - enqueueDone };
}

export interface Refusal {
  code: Code;
  message: string;
  /** The one ErrorDetail the error carries (undefined when it carries none). */
  detail: ErrorDetail | undefined;
}

/** The error a call failed with, decoded; fails the test when the call succeeded. */
export async function refusal(call: Promise<unknown>): Promise<Refusal> {
  const outcome = await call.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (!("error" in outcome)) throw new Error(`expected the call to fail, but it returned ${JSON.stringify(outcome.value, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
  expect(outcome.error).toBeInstanceOf(ConnectError);
  const error = outcome.error as ConnectError;
  const details = error.findDetails(ErrorDetailSchema);
  expect(details.length, "ErrorDetails on the error").toBeLessThanOrEqual(1);
  return { code: error.code, message: error.rawMessage, detail: details[0] };
}

/** Reads a server stream to its end (for streams expected to fail at once). */
export async function drainStream(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _frame of stream) {
    // only the outcome matters
  }
}

/**
 * Polls `probe` until it returns something other than undefined/false, at
 * most `timeoutMs`; for outcomes the server reaches on its own (the lease
 * sweeper) that no stream announces.
 */
export async function until<T>(probe: () => Promise<T | undefined | false>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * One server-streaming call, read a frame at a time. Frames are buffered as
 * they arrive; `next` waits for one, failing when the stream ends first or
 * nothing comes within the timeout.
 */
export class Frames<T> {
  private readonly buffered: T[] = [];
  private readonly controller = new AbortController();
  private ended: { error: unknown } | undefined;
  private changed: () => void = () => undefined;

  constructor(open: (signal: AbortSignal) => AsyncIterable<T>) {
    void this.pump(open(this.controller.signal));
  }

  private async pump(stream: AsyncIterable<T>): Promise<void> {
    try {
      for await (const frame of stream) {
        this.buffered.push(frame);
        this.changed();
      }
      this.ended = { error: undefined };
    } catch (error) {
      this.ended = { error };
    }
    this.changed();
  }

  async next(what = "the next frame", timeoutMs = 10_000): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const frame = this.buffered.shift();
      if (frame !== undefined) return frame;
      if (this.ended) throw new Error(`the stream ended before ${what}: ${String(this.ended.error ?? "cleanly")}`);
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new Error(`no frame within ${timeoutMs} ms while waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.changed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The next frame for which `pick` returns a value (skipping heartbeats and the like). */
  async nextMatching<U>(pick: (frame: T) => U | undefined, what: string, timeoutMs = 10_000): Promise<U> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const picked = pick(await this.next(what, Math.max(1, deadline - performance.now())));
      if (picked !== undefined) return picked;
    }
  }

  close(): void {
    this.controller.abort();
  }
}

/**
 * Empties the mailbox for tests that claim from every thread or purge: every
 * live dispatch is cancelled and every terminal one purged.
 */
export async function emptyMailbox(mailbox: Mailbox): Promise<void> {
  for (;;) {
    const { dispatches } = await mailbox.listDispatches({ statuses: [RunDispatchStatus.QUEUED, RunDispatchStatus.CLAIMED], pageSize: 1000 });
    if (dispatches.length === 0) break;
    await Promise.all(dispatches.map((d) => mailbox.cancel({ dispatchId: d.dispatchId, reason: "test clean-up" })));
  }
  await mailbox.purgeTerminal({ completedBefore: timestampFromMs(Date.now() + 1), limit: 100_000 });
  expect((await mailbox.countDispatches({})).total).toBe(0n);
}

// ---- streams --------------------------------------------------------------

export const signalOf = (frame: WatchDispatchSignalsResponse): DispatchSignal | undefined => (frame.frame.case === "signal" ? frame.frame.value : undefined);
export const commandOf = (frame: OpenLiveChannelResponse): LiveRunCommand | undefined => (frame.frame.case === "command" ? frame.frame.value : undefined);

/** WatchDispatchSignals (all threads when threadId is empty), closed when the test ends. */
export function watchSignals(mailbox: Mailbox, threadId = ""): Frames<WatchDispatchSignalsResponse> {
  const frames = new Frames((signal) => mailbox.watchDispatchSignals({ threadId }, { signal }));
  onTestFinished(() => frames.close());
  return frames;
}

/** Opens a live channel and waits for its first frame, a heartbeat: from then on it is registered. */
export async function openLiveChannel(mailbox: Mailbox, target: LiveTarget): Promise<Frames<OpenLiveChannelResponse>> {
  const frames = new Frames((signal) => mailbox.openLiveChannel({ target }, { signal }));
  onTestFinished(() => frames.close());
  expect((await frames.next("the channel's first frame")).frame.case).toBe("heartbeat");
  return frames;
}

export function nextCommand(channel: Frames<OpenLiveChannelResponse>, what = "a live command"): Promise<LiveRunCommand> {
  return channel.nextMatching(commandOf, what);
}

/** A live command body: one user message. */
export function say(text: string) {
  return { body: { case: "messages" as const, value: { messages: [{ role: "user", text }] } } };
}
