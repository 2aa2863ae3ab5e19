/**
 * Whether the Python and Go clients can run here, and if not, what to install
 * (one line for the skip message). CI installs all of it (.ci/run).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

export const systemPython = "/usr/bin/python3";

/** Why /usr/bin/python3 cannot run the generated Python client, or undefined when it can. */
export function pythonMissing(): string | undefined {
  try {
    execFileSync(systemPython, ["-c", "import grpc, google.protobuf"], { stdio: "ignore" });
    return undefined;
  } catch {
    return `${systemPython} cannot import grpc and google.protobuf; install them: apt-get install python3-grpcio python3-protobuf`;
  }
}

/** Why clients/go/go-offline.sh cannot build the Go client, or undefined when it can. */
export function goMissing(): string | undefined {
  const gocode = "/usr/share/gocode/src";
  const install = "apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev";
  if (spawnSync("go", ["version"], { stdio: "ignore" }).status !== 0 || !existsSync(`${gocode}/google.golang.org/grpc`)) {
    return `Go or Debian's Go gRPC sources are missing; install them: ${install}`;
  }
  if (existsSync(`${gocode}/github.com/golang/protobuf/proto/table_marshal.go`)) return `github.com/golang/protobuf is 1.3; install 1.5: ${install}`;
  return undefined;
}
