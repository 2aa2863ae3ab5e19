/**
 * Coalesces concurrent calls of one kind into batches, so that many callers
 * share each round trip to the store (what group commit does for the
 * journal). A batch starts at the end of the event loop turn in which its
 * first call arrived (`setImmediate`: requests whose frames arrived together
 * go together, at the cost of no added wait), or, while as many batches as
 * allowed are in flight, when one of them ends: under load, every call that
 * arrived meanwhile goes in the next batch. No timers.
 */

/** One input's outcome: its result, or the error that call alone gets. */
export type Outcome<O> = { value: O } | { error: unknown };

export interface CoalescerOptions<I> {
  /** Batches in flight at once (1: each batch sees the previous one's effects). */
  maxInFlight: number;
  /** Most weight per batch; one input heavier than this runs alone. */
  maxWeight: number;
  /** An input's share of a batch (e.g. its number of dispatches); 1 when omitted. */
  weight?: (input: I) => number;
}

interface Waiting<I, O> {
  input: I;
  resolve(value: O): void;
  reject(error: unknown): void;
}

export class Coalescer<I, O> {
  private readonly waiting: Array<Waiting<I, O>> = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    /** Runs one batch: an outcome per input, in order. A throw fails every input of the batch. */
    private readonly run: (inputs: I[]) => Promise<Array<Outcome<O>>>,
    private readonly options: CoalescerOptions<I>,
  ) {}

  submit(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.waiting.push({ input, resolve, reject });
      if (!this.scheduled && this.inFlight < this.options.maxInFlight) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  private pump(): void {
    while (this.inFlight < this.options.maxInFlight && this.waiting.length > 0) {
      const batch: Array<Waiting<I, O>> = [];
      let weight = 0;
      while (this.waiting.length > 0) {
        const next = this.options.weight?.(this.waiting[0]!.input) ?? 1;
        if (batch.length > 0 && weight + next > this.options.maxWeight) break;
        batch.push(this.waiting.shift()!);
        weight += next;
      }
      this.inFlight++;
      void this.execute(batch);
    }
  }

  private async execute(batch: Array<Waiting<I, O>>): Promise<void> {
    try {
      const outcomes = await this.run(batch.map((w) => w.input));
      batch.forEach((waiting, i) => {
        const outcome = outcomes[i]!;
        if ("value" in outcome) waiting.resolve(outcome.value);
        else waiting.reject(outcome.error);
      });
    } catch (error) {
      for (const waiting of batch) waiting.reject(error);
    } finally {
      this.inFlight--;
      this.pump();
    }
  }
}
