#!/usr/bin/env bash
# kiln against onnxruntime on every model in ../shared/models at 1 and 2
# threads, interleaved in one run; writes docs/BENCHMARKS.md. A benchmark,
# not a test: it asserts nothing.
#
#   scripts/bench.sh [--only m1,m2] [--rounds N] [--iters N] [--threads 1,2]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SHARED="${KILN_SHARED:-$REPO/../shared}"
bash scripts/setup-python.sh >/dev/null
cargo build --release -q -p kiln-compiler --bin kiln
.venv/bin/python scripts/bench.py --kiln "$REPO/target/release/kiln" \
    --models "$SHARED/models" --out "$REPO/docs/BENCHMARKS.md" "$@"
