#!/usr/bin/env bash
# Runs the go tool on this client offline, in GOPATH mode, against the Go
# packages Debian ships in /usr/share/gocode (no module proxy, no network):
#
#   clients/go/go-offline.sh run mailroom/clients/go/example -url http://127.0.0.1:50051
#   clients/go/go-offline.sh build -o mailroom-example mailroom/clients/go/example
#   clients/go/go-offline.sh vet mailroom/clients/go/mailroom/v1 mailroom/clients/go/example
#
# Needs Go 1.19, grpc-go 1.33 and google.golang.org/protobuf 1.28 from Debian:
#   apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
# (the -1-5 one, not -1-3: grpc-go must marshal through google.golang.org/protobuf,
# which the generated code is for). In a Go module, copy mailroom/v1 into it
# instead; it needs google.golang.org/grpc >= 1.33 and google.golang.org/protobuf >= 1.28.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/google.golang.org/grpc ]; then
  echo "go-offline.sh: needs Go and Debian's Go gRPC sources: apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev" >&2
  exit 2
fi
if [ -e /usr/share/gocode/src/github.com/golang/protobuf/proto/table_marshal.go ]; then
  echo "go-offline.sh: github.com/golang/protobuf is 1.3 (golang-github-golang-protobuf-1-3-dev), which cannot marshal the generated messages: apt-get install golang-github-golang-protobuf-1-5-dev" >&2
  exit 2
fi
# A throw-away GOPATH whose src/mailroom/clients/go is this directory, so the
# import path mailroom/clients/go/... resolves here.
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/mailroom/clients"
ln -s "$here" "$gopath/src/mailroom/clients/go"
cd "$gopath/src/mailroom/clients/go"
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" go "$@"
