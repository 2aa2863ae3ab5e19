/**
 * The process logger: one JSON object a line on stdout, so log collectors can
 * parse it without configuration. Field names are snake_case throughout
 * (`duration_ms`, `error_reference`); the level is written as its name, not
 * pino's number, so a person reading the raw stream needs no lookup table.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from "pino";

export type Logger = PinoLogger;

export const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];

export interface LoggerOptions {
  level: LogLevel;
  /** Where lines go; stdout (synchronously, so nothing is lost on exit) when omitted. */
  destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // pino's default error key is "err"; spell it out for readers of the log.
      errorKey: "error",
    },
    options.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
