/**
 * Where client commands write: results on stdout (one line each), errors and
 * notes on stderr. Colour only when the stream is a terminal and NO_COLOR is
 * not set, so pipes and files get plain text.
 */
import { type DescMessage, type MessageShape, toJsonString } from "@bufbuild/protobuf";

export interface Paint {
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
  dim(text: string): string;
  bold(text: string): string;
}

export interface Output {
  /** --json: results as proto3 JSON, one object a line. */
  readonly json: boolean;
  /** Colours for stdout. */
  readonly paint: Paint;
  /** Colours for stderr. */
  readonly errorPaint: Paint;
  line(text: string): void;
  /** A message as one line of proto3 JSON (enum names, every field set). */
  message<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): void;
  error(text: string): void;
}

const sgr = (open: number, close: number) => (text: string) => `\u001b[${open}m${text}\u001b[${close}m`;
const colours: Paint = { red: sgr(31, 39), green: sgr(32, 39), yellow: sgr(33, 39), cyan: sgr(36, 39), dim: sgr(2, 22), bold: sgr(1, 22) };
const plain: Paint = { red: String, green: String, yellow: String, cyan: String, dim: String, bold: String };

function paintFor(stream: NodeJS.WriteStream): Paint {
  return stream.isTTY && !process.env.NO_COLOR ? colours : plain;
}

export function terminalOutput(json: boolean): Output {
  return {
    json,
    paint: paintFor(process.stdout),
    errorPaint: paintFor(process.stderr),
    line: (text) => process.stdout.write(`${text}\n`),
    message: (schema, message) => process.stdout.write(`${toJsonString(schema, message)}\n`),
    error: (text) => process.stderr.write(`${text}\n`),
  };
}
