/**
 * How Mailroom's server streams behave: the first frame is a heartbeat (sent
 * once the stream is registered, so whatever happens after the client sees it
 * reaches the client), then items as they come, with a heartbeat whenever the
 * stream was idle for its interval. When the call's signal aborts (client gone,
 * deadline, server shutting down) the stream ends with the signal's reason,
 * which for a shutdown is UNAVAILABLE with reason SHUTTING_DOWN.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type StreamHeartbeat, StreamHeartbeatSchema } from "../../gen/mailroom/v1/common_pb.js";
import type { PushQueue } from "../engine/push-queue.js";

export function heartbeat(): StreamHeartbeat {
  return create(StreamHeartbeatSchema, { sentAt: timestampNow() });
}

export async function* heartbeatStream<T, F>(
  queue: PushQueue<T>,
  options: { heartbeatMs: number; signal: AbortSignal; frame: (item: T) => F; heartbeat: (beat: StreamHeartbeat) => F },
): AsyncGenerator<F> {
  const { signal } = options;
  yield options.heartbeat(heartbeat());
  for (;;) {
    if (signal.aborted) throw signal.reason;
    const next = await queue.next(options.heartbeatMs, signal);
    if ("value" in next) yield options.frame(next.value);
    else if ("timeout" in next) yield options.heartbeat(heartbeat());
    else if (signal.aborted) throw signal.reason;
    else return;
  }
}
