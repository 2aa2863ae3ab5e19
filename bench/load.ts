/**
 * What every load scenario shares: a measuring window (counters and samples
 * only accumulate inside it, so warm-up is left out), RPC and error counts,
 * and the clients, one HTTP/2 connection per simulated process.
 */
import { setMaxListeners } from "node:events";
import { ConnectError, Code } from "@connectrpc/connect";
import { type ClientProtocol, createMailroomClients, type MailroomClients } from "../src/client/index.js";

/** A running load: loops started, stopped by `stop()`. */
export interface Load<Report> {
  /** Resolves once the load is really running (e.g. every subscriber registered); warm-up starts then. */
  ready?: Promise<void>;
  beginMeasuring(): void;
  endMeasuring(): void;
  /** Ends every loop and closes the connections. */
  stop(): Promise<void>;
  /** The figures of the measuring window, which lasted `seconds`. */
  report(seconds: number): Report;
}

/**
 * The measuring window every load shares: loops read `open` and count only
 * while it is set; spread into a Load for its begin/end controls.
 */
export class MeasuringWindow {
  open = false;
  readonly beginMeasuring = (): void => {
    this.open = true;
  };
  readonly endMeasuring = (): void => {
    this.open = false;
  };
}

/** Stops loops that end on their abort signal, and waits until they have. */
export async function abortLoops(abort: AbortController, loops: Array<Promise<unknown>>): Promise<void> {
  abort.abort();
  await Promise.all(loops);
}

export class ErrorCounts {
  private readonly counts = new Map<string, number>();
  private logged = 0;

  record(where: string, error: unknown): void {
    const code = Code[ConnectError.from(error).code] ?? "Unknown";
    const key = `${where}: ${code}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    // The first few in full: a load that only fails should say why.
    if (this.logged++ < 3) console.error(`bench: ${where} failed: ${error instanceof Error ? error.message : String(error)}`);
  }

  get total(): number {
    let sum = 0;
    for (const count of this.counts.values()) sum += count;
    return sum;
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}

export function connect(url: string, protocol: ClientProtocol): MailroomClients {
  return createMailroomClients({ baseUrl: url, protocol });
}

/** An abort controller for a load's calls: every call in flight listens to its signal. */
export function loadAbortController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

/** Whether the error is only the abort of a call the load cancelled at its end. */
export function isAbort(error: unknown, signal: AbortSignal): boolean {
  return signal.aborted && ConnectError.from(error).code === Code.Canceled;
}

export function perSecond(count: number, seconds: number): number {
  return seconds > 0 ? Math.round(count / seconds) : 0;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
