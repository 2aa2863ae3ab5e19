/**
 * An HTTP/2 client written frame by frame over a plain socket, for peers no
 * real client library will play: one that ignores the server's stream limit,
 * or never answers a PING. It speaks just enough HTTP/2: the preface, SETTINGS
 * (acknowledging the server's), HEADERS with literal HPACK fields, DATA; and it
 * records every frame the server sends.
 */
import net from "node:net";

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7 } as const;
const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const H2_ERROR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, REFUSED_STREAM: 7, CANCEL: 8 } as const;

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export class RawH2Client {
  readonly frames: Frame[] = [];
  closed = false;
  private buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];

  private constructor(private readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("close", () => {
      this.closed = true;
      this.notify();
    });
    socket.on("error", () => undefined);
  }

  /** Connects, exchanges SETTINGS (the server's acknowledged, so its limits apply) and resolves once the server acknowledged ours. */
  static async connect(port: number): Promise<RawH2Client> {
    const socket = net.connect(port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const client = new RawH2Client(socket);
    socket.write(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    client.send(FRAME.SETTINGS, 0, 0, Buffer.alloc(0));
    await client.until((frames) => frames.some((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0), "the server's SETTINGS ACK");
    return client;
  }

  /** Opens stream `streamId` with a gRPC POST to `path`; the request stays open unless `body` ends it. */
  request(streamId: number, path: string, body?: Uint8Array): void {
    const fields: Array<[string, string]> = [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "127.0.0.1"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ];
    // Literal header fields without indexing, new names, no Huffman coding: every length fits 7 bits.
    const block = Buffer.concat(fields.map(([name, value]) => Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)])));
    this.send(FRAME.HEADERS, FLAG.END_HEADERS, streamId, block);
    if (body !== undefined) this.send(FRAME.DATA, FLAG.END_STREAM, streamId, Buffer.from(body));
  }

  /** Resolves once the frames so far satisfy `done`, or rejects when the connection closes first. */
  until(done: (frames: Frame[]) => boolean, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (done(this.frames)) return resolve();
        if (this.closed) return reject(new Error(`the connection closed before ${what}`));
        this.waiters.push(check);
      };
      check();
    });
  }

  /** Resolves once the server closed the connection. */
  untilClosed(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => (this.closed ? resolve() : this.waiters.push(check));
      check();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private send(type: number, flags: number, streamId: number, payload: Buffer): void {
    const header = Buffer.alloc(9);
    header.writeUIntBE(payload.length, 0, 3);
    header.writeUInt8(type, 3);
    header.writeUInt8(flags, 4);
    header.writeUInt32BE(streamId, 5);
    this.socket.write(Buffer.concat([header, payload]));
  }

  private receive(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 9) {
      const length = this.buffer.readUIntBE(0, 3);
      if (this.buffer.length < 9 + length) break;
      const frame: Frame = {
        type: this.buffer.readUInt8(3),
        flags: this.buffer.readUInt8(4),
        streamId: this.buffer.readUInt32BE(5) & 0x7fffffff,
        payload: this.buffer.subarray(9, 9 + length),
      };
      this.buffer = this.buffer.subarray(9 + length);
      this.frames.push(frame);
      // The server's settings are acknowledged; its PINGs never are.
      if (frame.type === FRAME.SETTINGS && (frame.flags & FLAG.ACK) === 0) this.send(FRAME.SETTINGS, FLAG.ACK, 0, Buffer.alloc(0));
    }
    this.notify();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const check of waiters) check();
  }
}

/** The error code of a RST_STREAM or GOAWAY frame. */
export function errorCodeOf(frame: Frame): number {
  return frame.type === FRAME.GOAWAY ? frame.payload.readUInt32BE(4) : frame.payload.readUInt32BE(0);
}
