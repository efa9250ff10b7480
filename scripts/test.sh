#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (`.ci/run` calls this).
#
# Installs what the tests need, idempotently: the Python venv with onnx,
# numpy and onnxruntime (for the ONNX conformance data), then builds once in
# release mode and runs every test. The shared models are expected in
# ../shared/models beside the repository (KILN_SHARED overrides).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

export KILN_SHARED="${KILN_SHARED:-$REPO/../shared}"
if [[ ! -d "$KILN_SHARED/models" ]]; then
    echo "error: shared models not found at $KILN_SHARED/models (set KILN_SHARED)" >&2
    exit 1
fi

echo "== python tooling"
bash scripts/setup-python.sh
echo "== ONNX conformance data"
.venv/bin/python scripts/gen-conformance.py "$REPO/.cache/onnx-node-tests"

echo "== format"
cargo fmt --all --check

echo "== build (release)"
cargo build --release --workspace --all-targets

echo "== tests"
cargo test --release --workspace -- --test-threads=2
