/**
 * Calls from outside Node's ecosystem: `curl` (the Connect protocol is plain
 * HTTP with JSON) and `buf curl` (gRPC from the schema in proto/).
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { repoRoot } from "./server-process.js";
import { e2eAuthHeaderLines } from "./e2e-auth.js";

const run = promisify(execFile);

export interface CurlResult {
  status: number;
  /** "1.1" or "2", as curl negotiated it. */
  httpVersion: string;
  body: string;
}

/** A Connect unary call with a JSON body, e.g. `curlConnect(url, "/grpc.health.v1.Health/Check", "{}")`. */
export async function curlConnect(
  baseUrl: string,
  path: string,
  body: string,
  options: { http2PriorKnowledge?: boolean; http1?: boolean; headers?: string[]; cacert?: string } = {},
): Promise<CurlResult> {
  const args = ["--silent", "--show-error", "-X", "POST", "-H", "content-type: application/json", "--data-binary", body];
  if (options.http2PriorKnowledge) args.push("--http2-prior-knowledge");
  if (options.http1) args.push("--http1.1");
  if (options.cacert) args.push("--cacert", options.cacert);
  // The suites' token, unless the call sends its own.
  for (const header of [...e2eAuthHeaderLines(options.headers), ...(options.headers ?? [])]) args.push("-H", header);
  // The status line goes last, after a marker no JSON body contains.
  args.push("--write-out", "\n@@%{http_code} %{http_version}", `${baseUrl}${path}`);
  const { stdout } = await run("curl", args);
  const at = stdout.lastIndexOf("\n@@");
  const [status, httpVersion] = stdout.slice(at + 3).split(" ");
  return { status: Number(status), httpVersion: httpVersion ?? "", body: stdout.slice(0, at) };
}

/** `buf curl` over gRPC with HTTP/2 prior knowledge, the schema taken from proto/. */
export async function bufCurlGrpc(baseUrl: string, path: string, body: string): Promise<unknown> {
  const { stdout } = await run(
    join(repoRoot, "node_modules/.bin/buf"),
    ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--schema", "proto", ...e2eAuthHeaderLines().flatMap((line) => ["-H", line]), "--data", body, `${baseUrl}${path}`],
    { cwd: repoRoot },
  );
  return JSON.parse(stdout);
}
