/**
 * How a server stream waits for its next item: until a producer wakes it,
 * until it has sent nothing for its heartbeat interval, or until it ends (its
 * call's signal aborted, or it was closed).
 *
 * Nothing here is armed per frame. The call's signal gets one listener for
 * the stream's life; the heartbeat deadline is an entry on the shared
 * TimerWheel, scheduled when the stream first waits and moved only when it
 * comes due (a stream that keeps sending just notes the time of each send).
 */
import { TimerWheel, type WheelEntry } from "./timer-wheel.js";

export type Woken = "ready" | "idle" | "ended";

/** The wheel every stream's heartbeat deadline is on (100 ms resolution; intervals are whole seconds). */
export const heartbeatWheel = new TimerWheel(100);

export class StreamWaiter {
  private waiting: ((woken: Woken) => void) | undefined;
  private lastSent: number;
  private readonly deadline: WheelEntry;
  private signal: AbortSignal | undefined;
  private ended = false;
  private readonly onAbort = () => this.end();

  constructor(
    private idleMs: number,
    private readonly wheel: TimerWheel = heartbeatWheel,
  ) {
    this.lastSent = wheel.now();
    this.deadline = wheel.entry(() => this.onDeadline());
  }

  /** True once the stream ended (its signal aborted or `end` was called). */
  get done(): boolean {
    return this.ended;
  }

  /**
   * Ties the stream to its call's signal (and heartbeat interval). Cheap to
   * call before every wait: only a different signal is registered again.
   */
  bind(signal: AbortSignal | undefined, idleMs = this.idleMs): void {
    this.idleMs = idleMs;
    if (signal === this.signal || this.ended) return;
    this.signal?.removeEventListener("abort", this.onAbort);
    this.signal = signal;
    if (signal?.aborted) this.end();
    else signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  /** The stream sent something: its idle interval starts again. */
  sent(): void {
    this.lastSent = this.wheel.now();
  }

  /** Resolves "ready" once woken, "idle" once nothing was sent for the interval, "ended" once ended. */
  wait(): Promise<Woken> {
    if (this.ended) return Promise.resolve("ended");
    const due = this.lastSent + this.idleMs;
    if (this.wheel.now() >= due) return Promise.resolve("idle");
    this.wheel.scheduleBy(this.deadline, due);
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  /** Something may be ready: a waiting stream looks again. */
  wake(): void {
    this.settle("ready");
  }

  /** Ends the stream: a wait in progress (and every later one) resolves "ended"; nothing stays registered. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.wheel.cancel(this.deadline);
    this.signal?.removeEventListener("abort", this.onAbort);
    this.signal = undefined;
    this.settle("ended");
  }

  private settle(woken: Woken): void {
    const resolve = this.waiting;
    if (resolve === undefined) return;
    this.waiting = undefined;
    resolve(woken);
  }

  private onDeadline(): void {
    if (this.ended || this.waiting === undefined) return; // the next wait schedules again
    const due = this.lastSent + this.idleMs;
    if (this.wheel.now() >= due) this.settle("idle");
    else this.wheel.schedule(this.deadline, due);
  }
}
