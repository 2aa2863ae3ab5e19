/**
 * One timer for many deadlines. Streams wait for heartbeats, stalled writes
 * and idle connections by the thousand, and almost every one of those
 * deadlines is pushed back before it passes (the stream sent something, the
 * write drained). A Node timer per wait would arm and clear a timer for
 * nearly every frame; here a deadline is an entry in a slot of a wheel that
 * one interval timer turns, so setting and moving one is a Set insertion.
 *
 * Deadlines fire at their time or within two resolutions after (a slot's
 * end, then the next turn of the interval), never before.
 * The interval runs only while an entry is scheduled and never keeps the
 * process alive.
 */
export interface WheelEntry {
  /** Slot the entry waits in; undefined when it is not scheduled. */
  slot: number | undefined;
  readonly fire: () => void;
}

export class TimerWheel {
  private readonly slots = new Map<number, Set<WheelEntry>>();
  private timer: NodeJS.Timeout | undefined;
  /** Every slot up to this one has been fired. */
  private turned: number;
  private scheduled = 0;

  constructor(
    readonly resolutionMs: number,
    /** Milliseconds on a monotonic clock. */
    readonly now: () => number = () => performance.now(),
  ) {
    this.turned = Math.floor(this.now() / resolutionMs);
  }

  /** An entry that calls `fire` each time a deadline it was given passes. */
  entry(fire: () => void): WheelEntry {
    return { slot: undefined, fire };
  }

  /** Schedules (or moves) the entry to fire at `at` on this wheel's clock. */
  schedule(entry: WheelEntry, at: number): void {
    const slot = this.slotOf(at);
    if (entry.slot === slot) return;
    this.cancel(entry);
    let members = this.slots.get(slot);
    if (members === undefined) this.slots.set(slot, (members = new Set()));
    members.add(entry);
    entry.slot = slot;
    if (this.scheduled++ === 0) this.start();
  }

  /** Schedules the entry for `at` unless it is already due by then (keeps an earlier deadline). */
  scheduleBy(entry: WheelEntry, at: number): void {
    if (entry.slot === undefined || entry.slot > this.slotOf(at)) this.schedule(entry, at);
  }

  cancel(entry: WheelEntry): void {
    const slot = entry.slot;
    if (slot === undefined) return;
    entry.slot = undefined;
    const members = this.slots.get(slot);
    if (members?.delete(entry)) {
      if (members.size === 0) this.slots.delete(slot);
      if (--this.scheduled === 0) this.stop();
    }
  }

  /** Entries waiting now (for tests and metrics). */
  get size(): number {
    return this.scheduled;
  }

  private slotOf(at: number): number {
    return Math.max(Math.ceil(at / this.resolutionMs), this.turned + 1);
  }

  private start(): void {
    this.turned = Math.max(this.turned, Math.floor(this.now() / this.resolutionMs));
    this.timer = setInterval(() => this.turn(), this.resolutionMs);
    this.timer.unref();
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private turn(): void {
    const current = Math.floor(this.now() / this.resolutionMs);
    // Slots are visited in order, also after the event loop was blocked for several.
    for (let slot = this.turned + 1; slot <= current && this.scheduled > 0; slot++) {
      this.turned = slot;
      const members = this.slots.get(slot);
      if (members === undefined) continue;
      this.slots.delete(slot);
      for (const entry of members) {
        entry.slot = undefined;
        this.scheduled--;
      }
      for (const entry of members) entry.fire();
    }
    this.turned = Math.max(this.turned, current);
    if (this.scheduled === 0) this.stop();
  }
}

