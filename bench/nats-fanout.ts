/**
 * The fan-out peers, measured the way Mailroom's events scenario is
 * (fanout.ts: the same open-loop schedule, in-flight cap, stamps and drain):
 *
 * - **NATS core**: each subscriber is a plain subscription on its own
 *   connection (registered once a flush came back); a publish is
 *   fire-and-forget, so it "resolves" at once.
 * - **NATS JetStream**: a stream on the subject (memory storage); each
 *   subscriber an ordered push consumer delivering new messages, on its own
 *   connection; a publish resolves with the stream's PubAck.
 *
 * Publishes are spread over `publishers` connections, as Mailroom's are.
 */
import { stampOf } from "./jobs.js";
import { type EventsReport, type FanoutOptions, type FanoutTransport, startFanoutLoad } from "./fanout.js";
import type { Load } from "./load.js";

export interface NatsFanoutOptions extends FanoutOptions {
  host: string;
  port: number;
  flavour: "core" | "jetstream";
  publishers: number;
  tag: string;
}

export async function startNatsFanoutLoad(options: NatsFanoutOptions): Promise<Load<EventsReport>> {
  const nats = await import("nats");
  const servers = `${options.host}:${options.port}`;
  const tag = options.tag.replace(/[^A-Za-z0-9_-]/g, "_");
  const subject = `fan.${tag}`;
  const stream = `fan_${tag}`;
  const publishers = await Promise.all(Array.from({ length: options.publishers }, () => nats.connect({ servers })));
  if (options.flavour === "jetstream") {
    const jsm = await publishers[0]!.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [subject], storage: nats.StorageType.Memory, max_age: 60 * 1e9 });
  }
  const jetstreams = publishers.map((nc) => nc.jetstream());
  let next = 0;

  const transport: FanoutTransport = {
    names: { publish: options.flavour === "core" ? "publish" : "js.publish", subscribe: options.flavour === "core" ? "subscribe" : "ordered consumer" },
    async subscribe(_index, sink, signal) {
      const nc = await nats.connect({ servers });
      const closed = () => void nc.close();
      signal.addEventListener("abort", closed, { once: true });
      try {
        const subscription = options.flavour === "core"
          ? nc.subscribe(subject)
          : await nc.jetstream().subscribe(subject, nats.consumerOpts().orderedConsumer().deliverNew());
        await nc.flush();
        sink.ready();
        for await (const message of subscription) sink.event(stampOf(message.data));
      } finally {
        signal.removeEventListener("abort", closed);
        await nc.close();
      }
    },
    async publish(payload) {
      const index = next++ % publishers.length;
      if (options.flavour === "core") publishers[index]!.publish(subject, payload);
      else await jetstreams[index]!.publish(subject, payload);
    },
    async close() {
      await Promise.all(publishers.map((nc) => nc.close()));
    },
  };
  return startFanoutLoad(options, transport);
}
