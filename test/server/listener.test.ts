/**
 * The one-port listener tells HTTP/2 with prior knowledge from HTTP/1.1 by the
 * first bytes of a connection, however they are split into chunks.
 */
import { describe, expect, it } from "vitest";
import { classifyFirstBytes } from "../../src/server/listener.js";

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

describe("a connection's first bytes decide its protocol", () => {
  it("is HTTP/2 once the whole connection preface has arrived, also with frames behind it", () => {
    expect(classifyFirstBytes(preface)).toBe("http2");
    expect(classifyFirstBytes(Buffer.concat([preface, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]))).toBe("http2");
  });

  it("waits while the bytes so far are only the start of the preface", () => {
    for (let length = 0; length < preface.length; length++) {
      expect(classifyFirstBytes(preface.subarray(0, length)), `${length} bytes`).toBe("undecided");
    }
  });

  it("is HTTP/1.1 as soon as the bytes stop matching the preface", () => {
    expect(classifyFirstBytes(Buffer.from("POST /grpc.health.v1.Health/Check HTTP/1.1\r\n"))).toBe("http1");
    expect(classifyFirstBytes(Buffer.from("G"))).toBe("http1");
    expect(classifyFirstBytes(Buffer.from("PRI * HTTP/1.1\r\n"))).toBe("http1");
  });
});
