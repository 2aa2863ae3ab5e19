#!/usr/bin/env bash
# Generates the Python and Go clients from proto/ (`npm run generate:clients`).
#
#   clients/generate.sh [OUT]    # OUT defaults to clients/; CI generates into a
#                                # temporary OUT and diffs it with clients/
#
# Offline, with Debian's packages (no plugin downloads, no module proxy):
#   apt-get install protobuf-compiler protobuf-compiler-grpc protoc-gen-go protoc-gen-go-grpc
# protoc 3.21 and grpc_python_plugin 1.51 make clients/python/gen (for
# python3-protobuf 4.21 and python3-grpcio 1.51 or newer); protoc-gen-go 1.28
# and protoc-gen-go-grpc (grpc-go 1.33) make clients/go/mailroom/v1 (Go
# package mailroomv1). The generated files name these versions, so another
# version of a tool shows as a diff in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-clients}

missing=()
for tool in protoc:protobuf-compiler grpc_python_plugin:protobuf-compiler-grpc protoc-gen-go:protoc-gen-go protoc-gen-go-grpc:protoc-gen-go-grpc; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "clients/generate.sh: missing tools; install them with: apt-get install ${missing[*]}" >&2
  exit 2
fi

# The contract only: the vendored grpc.* protos (health, reflection) have
# clients of their own in every gRPC distribution.
mapfile -t contract < <(cd proto && find mailroom -name '*.proto' | LC_ALL=C sort)

python_out=$out/python/gen
go_out=$out/go
rm -rf "$python_out" "$go_out/mailroom"
mkdir -p "$python_out" "$go_out"

protoc -I proto -I clients/proto \
  --python_out="$python_out" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" --grpc_python_out="$python_out" \
  "${contract[@]}" google/rpc/status.proto

# The contract's files carry no go_package (adding one is a contract change);
# the M flags put them all in one Go package.
go_package=mailroom/clients/go/mailroom/v1
mapping=()
for file in "${contract[@]}"; do
  mapping+=("--go_opt=M$file=$go_package;mailroomv1" "--go-grpc_opt=M$file=$go_package;mailroomv1")
done
protoc -I proto \
  --go_out="$go_out" --go_opt=paths=source_relative \
  --go-grpc_out="$go_out" --go-grpc_opt=paths=source_relative \
  "${mapping[@]}" "${contract[@]}"
