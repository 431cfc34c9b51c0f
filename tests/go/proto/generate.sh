#!/usr/bin/env bash
# Regenerates the Go code for the fixtures' protos (committed; builds do not need protoc).
# Needs protoc, protoc-gen-go v1.36.6 and protoc-gen-go-grpc v1.3.0 (grpc-go 1.61 compatible).
set -euo pipefail
cd "$(dirname "$0")"
protoc --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    kv.proto counter.proto
