/** A logger whose lines the test can read back. */
import { createLogger, type Logger, type LogLevel } from "../../src/log.js";

export interface CapturedLog {
  logger: Logger;
  /** Every line written so far, parsed. */
  lines: Array<Record<string, unknown>>;
  /** Everything written, for "appears nowhere" assertions. */
  text(): string;
}

export function captureLog(level: LogLevel = "debug"): CapturedLog {
  const raw: string[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level,
    destination: {
      write(line: string) {
        raw.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  });
  return { logger, lines, text: () => raw.join("") };
}
