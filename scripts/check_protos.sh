#!/usr/bin/env bash
# Fails when the generated code under scorer/v1 differs from what protos/ generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/scorer/v1"
PY=${PY:-.venv/bin/python}
PATH="$(dirname "$PY"):$PATH" "$PY" -m grpc_tools.protoc -I protos \
  --python_out="$tmp" --grpc_python_out="$tmp" --mypy_out="$tmp" --mypy_grpc_out="$tmp" \
  protos/scorer/v1/scorer.proto >/dev/null
for f in scorer_pb2.py scorer_pb2.pyi scorer_pb2_grpc.py scorer_pb2_grpc.pyi; do
  if ! diff -q "$tmp/scorer/v1/$f" "scorer/v1/$f" >/dev/null; then
    echo "generated code is stale: scorer/v1/$f differs; run 'make proto' and commit" >&2
    exit 1
  fi
done
echo "generated code matches protos/"
