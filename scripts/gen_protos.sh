#!/usr/bin/env bash
# Regenerates scorer/v1/*_pb2*.py(i) from protos/. CI runs it and fails on any diff.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
"$PY" -m grpc_tools.protoc -I protos \
  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
  protos/scorer/v1/scorer.proto
