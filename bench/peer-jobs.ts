/**
 * The peers' enqueue -> claim -> ack, shaped like the mailbox scenario's so
 * the figures compare one to one (the producer loops, backlog gate and
 * figures are jobs.ts's, shared with Mailroom's load):
 *
 * - **BullMQ** on redis-server: `producers` Queue clients (one connection
 *   each) call `addBulk` with `batch` jobs (`add` when batch is 1); `workers`
 *   Worker instances, each with `concurrency` = the claim limit, process
 *   them; a job counts as acked at the Worker's `completed` event, i.e. once
 *   Redis moved it to completed. Jobs are removed on completion (BullMQ keeps
 *   them forever otherwise; Mailroom keeps acked dispatches for its retention,
 *   which costs memory, not round trips). BullMQ has no claim call of ours:
 *   its workers fetch with blocking commands of their own.
 * - **NATS JetStream** on nats-server: a work-queue stream (memory storage)
 *   and one durable pull consumer; `producers` connections publish `batch`
 *   messages a call (concurrently, then wait for every PubAck); `workers`
 *   connections `fetch` up to the claim limit (expiring after the claim
 *   wait), ack each message, and flush (one round trip: the server has the
 *   acks), which is the AckBatch of this load.
 *
 * The payload is the same 8-byte enqueue stamp, for end-to-end latency.
 */
import { type JobsReport, JobsHarness, stampOf } from "./jobs.js";
import { abortLoops, type Load } from "./load.js";

export interface PeerJobsOptions {
  host: string;
  port: number;
  producers: number;
  workers: number;
  batch: number;
  claimLimit: number;
  /** JetStream: how long a fetch waits for its batch to fill. */
  waitMs: number;
  maxBacklog: number;
  tag: string;
}

/** Names BullMQ and JetStream accept (letters, digits, dashes and underscores). */
function safeName(tag: string): string {
  return tag.replace(/[^A-Za-z0-9_-]/g, "_");
}

export async function startBullmqLoad(options: PeerJobsOptions): Promise<Load<JobsReport>> {
  const { Queue, Worker } = await import("bullmq");
  const harness = new JobsHarness(options);
  const connection = { host: options.host, port: options.port };
  const name = safeName(options.tag);
  const queues = Array.from({ length: options.producers }, () => new Queue(name, { connection }));
  for (const queue of queues) queue.on("error", (error) => harness.errors.record("Queue", error));
  const jobOptions = { removeOnComplete: true, removeOnFail: true };
  const producers = queues.map((queue) =>
    harness.produce(options.batch === 1 ? "add" : "addBulk", async (payloads) => {
      const jobs = payloads.map((data) => ({ name: "job", data: { at: stampOf(data) }, opts: jobOptions }));
      if (jobs.length === 1) await queue.add(jobs[0]!.name, jobs[0]!.data, jobOptions);
      else await queue.addBulk(jobs);
      return jobs.length;
    }),
  );
  const workers = Array.from({ length: options.workers }, () => {
    const worker = new Worker<{ at?: number }>(name, async () => undefined, { connection, concurrency: options.claimLimit });
    worker.on("completed", (job) => harness.acked(1, [job.data.at]));
    worker.on("failed", (_job, error) => harness.errors.record("job", error));
    worker.on("error", (error) => harness.errors.record("Worker", error));
    return worker;
  });
  return {
    beginMeasuring: harness.measuring.beginMeasuring,
    endMeasuring: harness.measuring.endMeasuring,
    stop: async () => {
      await abortLoops(harness.abort, producers);
      await Promise.all(workers.map((worker) => worker.close(true)));
      await Promise.all(queues.map((queue) => queue.close()));
    },
    report: (seconds) => harness.report(seconds),
  };
}

export async function startJetStreamLoad(options: PeerJobsOptions): Promise<Load<JobsReport>> {
  const nats = await import("nats");
  const harness = new JobsHarness(options);
  const { signal } = harness;
  const servers = `${options.host}:${options.port}`;
  const stream = safeName(`jobs_${options.tag}`);
  const subject = `jobs.${safeName(options.tag)}`;
  const durable = "workers";

  const admin = await nats.connect({ servers });
  const jsm = await admin.jetstreamManager();
  await jsm.streams.add({ name: stream, subjects: [subject], retention: nats.RetentionPolicy.Workqueue, storage: nats.StorageType.Memory });
  await jsm.consumers.add(stream, { durable_name: durable, ack_policy: nats.AckPolicy.Explicit, max_ack_pending: Math.max(1000, options.workers * options.claimLimit * 2) });

  const connections = await Promise.all(Array.from({ length: options.producers + options.workers }, () => nats.connect({ servers })));
  const producers = connections.slice(0, options.producers).map((nc) => {
    const js = nc.jetstream();
    return harness.produce(options.batch === 1 ? "publish" : "publish batch", async (payloads) => {
      await Promise.all(payloads.map((data) => js.publish(subject, data)));
      return payloads.length;
    });
  });

  const worker = async (nc: Awaited<ReturnType<typeof nats.connect>>) => {
    const consumer = await nc.jetstream().consumers.get(stream, durable);
    while (!signal.aborted) {
      const started = performance.now();
      const messages = [];
      try {
        for await (const message of await consumer.fetch({ max_messages: options.claimLimit, expires: Math.max(1000, options.waitMs) })) messages.push(message);
      } catch (error) {
        if (signal.aborted) break;
        harness.errors.record("fetch", error);
        continue;
      }
      harness.claimed(performance.now() - started, messages.length);
      if (messages.length === 0) continue;
      const ackStarted = performance.now();
      for (const message of messages) message.ack();
      try {
        await nc.flush();
      } catch (error) {
        if (signal.aborted) break;
        harness.errors.record("ack", error);
        continue;
      }
      harness.acked(messages.length, messages.map((m) => stampOf(m.data)), 1, performance.now() - ackStarted);
    }
  };
  const workers = connections.slice(options.producers).map(worker);

  return {
    beginMeasuring: harness.measuring.beginMeasuring,
    endMeasuring: harness.measuring.endMeasuring,
    stop: async () => {
      await abortLoops(harness.abort, [...producers, ...workers]);
      await Promise.all([admin, ...connections].map((nc) => nc.close()));
    },
    report: (seconds) => harness.report(seconds),
  };
}
