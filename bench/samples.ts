/**
 * Latency samples kept whole and sorted once at the end, so percentiles are
 * exact rather than bucketed. A run records at most a few million samples
 * (one a job or one a call over tens of seconds); at 8 bytes each that is
 * tens of MB at worst, and recording is one typed-array store, cheaper on the
 * load generator's CPU than a histogram update.
 */
export interface LatencySummary {
  count: number;
  /** Milliseconds. */
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export class Samples {
  private values = new Float64Array(1 << 16);
  private size = 0;

  get count(): number {
    return this.size;
  }

  add(ms: number): void {
    if (this.size === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.size++] = ms;
  }

  clear(): void {
    this.size = 0;
  }

  summary(): LatencySummary {
    const sorted = this.values.slice(0, this.size).sort();
    const at = (q: number) => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!);
    let sum = 0;
    for (const value of sorted) sum += value;
    return {
      count: sorted.length,
      mean: round(sorted.length === 0 ? 0 : sum / sorted.length),
      p50: round(at(0.5)),
      p90: round(at(0.9)),
      p99: round(at(0.99)),
      p999: round(at(0.999)),
      max: round(sorted.length === 0 ? 0 : sorted[sorted.length - 1]!),
    };
  }
}

export function round(value: number, digits = 3): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
