/**
 * Per-namespace limits this server instance enforces on its own: requests
 * per second (a token bucket a namespace, one second of burst) and server
 * streams open at once. Past a limit the call gets RESOURCE_EXHAUSTED with a
 * reason, and only its namespace is affected. Callers without credentials
 * (Health) share one fixed stream cap.
 *
 * A stream's slot is taken when its call is admitted and given back when the
 * call's signal aborts, which Connect does whenever a call ends: normally,
 * with an error, or because the client went away.
 */
import { Code } from "@connectrpc/connect";
import { ErrorReason } from "../../gen/mailroom/v1/errors_pb.js";
import { errorWithDetail } from "./errors.js";

/** Buckets kept before full ones (idle namespaces, indistinguishable from new) are dropped. */
const MAX_IDLE_BUCKETS = 1024;

interface Bucket {
  tokens: number;
  at: number;
  perSecond: number;
}

function refilled(bucket: Bucket, now: number): number {
  return Math.min(bucket.perSecond, bucket.tokens + ((now - bucket.at) / 1000) * bucket.perSecond);
}

export class NamespaceLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly streams = new Map<string, number>();
  private anonymousStreams = 0;

  constructor(
    private readonly maxUnauthenticatedStreams: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes one request of the namespace's budget. @throws ConnectError RESOURCE_EXHAUSTED (RATE_LIMITED). */
  takeRequest(namespace: string, perSecond: number | undefined): void {
    if (perSecond === undefined) return;
    const now = this.now();
    const bucket = this.buckets.get(namespace) ?? this.newBucket(namespace, perSecond, now);
    bucket.perSecond = perSecond; // the limit may have changed with the auth file
    bucket.tokens = refilled(bucket, now);
    bucket.at = now;
    if (bucket.tokens < 1) {
      const retryAfterMs = Math.ceil(((1 - bucket.tokens) / perSecond) * 1000);
      throw errorWithDetail(Code.ResourceExhausted, `namespace ${JSON.stringify(namespace)} is past its limit of ${perSecond} requests per second; retry in ${retryAfterMs} ms`, {
        reason: ErrorReason.RATE_LIMITED,
        metadata: { namespace, limit: String(perSecond), retry_after_ms: String(retryAfterMs) },
      });
    }
    bucket.tokens -= 1;
  }

  /**
   * Holds a stream slot of the namespace (undefined: a caller without
   * credentials) until `ended` aborts. @throws ConnectError RESOURCE_EXHAUSTED (STREAM_LIMIT).
   */
  openStream(namespace: string | undefined, max: number | undefined, ended: AbortSignal): void {
    const limit = namespace === undefined ? this.maxUnauthenticatedStreams : max;
    const open = namespace === undefined ? this.anonymousStreams : (this.streams.get(namespace) ?? 0);
    if (limit !== undefined && open >= limit) {
      const message = namespace === undefined
        ? `callers without credentials already hold ${open} open streams on this server, the limit (--max-unauthenticated-streams); send credentials, or close one first`
        : `namespace ${JSON.stringify(namespace)} already holds ${open} open streams on this server, its limit (max_open_streams); close one first`;
      throw errorWithDetail(Code.ResourceExhausted, message, {
        reason: ErrorReason.STREAM_LIMIT,
        metadata: { namespace: namespace ?? "", limit: String(limit) },
      });
    }
    this.adjust(namespace, 1);
    if (ended.aborted) this.adjust(namespace, -1);
    else ended.addEventListener("abort", () => this.adjust(namespace, -1), { once: true });
  }

  /** Streams open now, by namespace (tests, metrics). */
  openStreams(namespace: string | undefined): number {
    return namespace === undefined ? this.anonymousStreams : (this.streams.get(namespace) ?? 0);
  }

  private adjust(namespace: string | undefined, by: number): void {
    if (namespace === undefined) {
      this.anonymousStreams += by;
      return;
    }
    const open = (this.streams.get(namespace) ?? 0) + by;
    if (open === 0) this.streams.delete(namespace);
    else this.streams.set(namespace, open);
  }

  private newBucket(namespace: string, perSecond: number, now: number): Bucket {
    if (this.buckets.size >= MAX_IDLE_BUCKETS) {
      for (const [name, bucket] of this.buckets) {
        if (refilled(bucket, now) >= bucket.perSecond) this.buckets.delete(name);
      }
    }
    const bucket = { tokens: perSecond, at: now, perSecond };
    this.buckets.set(namespace, bucket);
    return bucket;
  }
}
