#!/usr/bin/env bash
# Single-thread f32 GEMM throughput: kiln's runtime kernels against numpy's
# np.dot (OpenBLAS), interleaved in one run so that both see the same clock
# and the same background load.
#
# usage: scripts/bench-gemm.sh [ROUNDS] [SIZES] [VARIANTS]
#   ROUNDS    rounds of (kiln, numpy) alternation, default 10
#   SIZES     comma-separated shapes, N (square) or MxNxK, default
#             256,512,1024
#   VARIANTS  comma-separated kiln variants (scalar,avx2,avx512,neon) or
#             "all" for every one this CPU runs but scalar; default all
#
# Each round runs, size by size, kiln then numpy, 5 samples each (a sample
# lasts ~10 ms). The table gives the median GFLOP/s over all samples, and
# the ratio as the median over rounds of (kiln median / numpy median) in
# that round, which cancels most of the drift a shared machine adds. A kiln call packs A but not B (weights are packed at compile
# time); the packing time of B is shown separately.
# OpenBLAS picks its kernel from the CPU (SkylakeX, AVX-512, on Zen 4); set
# OPENBLAS_CORETYPE=Haswell to compare against its AVX2 kernel, as on a
# CPU without AVX-512. The table names the kernel it used.
# Needs the venv from scripts/setup-python.sh (numpy); fails without it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ROUNDS="${1:-10}"
SIZES="${2:-256,512,1024}"
VARIANTS="${3:-all}"
SAMPLES=5
PY="$REPO/.venv/bin/python"
if ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "error: $PY with numpy not found; run scripts/setup-python.sh" >&2
    exit 1
fi

cargo build --release -p kiln-runtime --example gemm_bench >&2
BENCH="$REPO/target/release/examples/gemm_bench"

export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

for ((r = 1; r <= ROUNDS; r++)); do
    echo "round $r/$ROUNDS" >&2
    for n in ${SIZES//,/ }; do
        "$BENCH" "$VARIANTS" "$n" "$SAMPLES" | sed "s/^/$r /" >>"$LOG"
        "$PY" - "$n" "$SAMPLES" <<'PYEOF' | sed "s/^/$r /" >>"$LOG"
import sys, time
import numpy as np
label, samples = sys.argv[1], int(sys.argv[2])
dims = [int(d) for d in label.split("x")]
m, n, k = dims * 3 if len(dims) == 1 else dims
rng = np.random.default_rng(0)
a = rng.random((m, k), dtype=np.float32) - 0.5
b = rng.random((k, n), dtype=np.float32) - 0.5
c = np.empty((m, n), dtype=np.float32)
inner = max(1, (1 << 27) // (m * n * k))  # as in gemm_bench
np.dot(a, b, out=c)
for _ in range(samples):
    t = time.perf_counter()
    for _ in range(inner):
        np.dot(a, b, out=c)
    dt = time.perf_counter() - t
    print(f"sample numpy {label} {2 * m * n * k * inner / dt / 1e9:.2f}")
PYEOF
    done
done

CORE="$("$PY" - <<'PYEOF'
import ctypes, glob, os
import numpy
libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__) + ".libs", "*openblas*"))
name = "kernel unknown"
for path in libs:
    lib = ctypes.CDLL(path)
    for sym in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                "openblas_get_corename64_", "openblas_get_corename"):
        fn = getattr(lib, sym, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            name = fn().decode()
            break
print(name)
PYEOF
)"

CORE="$CORE" "$PY" - "$LOG" <<'PYEOF'
import os, sys
CORE = os.environ["CORE"]
from collections import defaultdict
from statistics import median
samples, pack = defaultdict(list), defaultdict(list)
by_round = defaultdict(list)
for line in open(sys.argv[1]):
    rnd, kind, impl, n, value = line.split()
    if kind == "sample":
        samples[(impl, n)].append(float(value))
        by_round[(impl, n, int(rnd))].append(float(value))
    else:
        pack[(impl, n)].append(float(value))
impls = sorted({i for i, _ in samples if i != "numpy"})
sizes = list(dict.fromkeys(n for _, n in samples))
rounds = sorted({r for _, _, r in by_round})
print(f"single-thread f32 GEMM, GFLOP/s (median of all samples); numpy: OpenBLAS {CORE}")
print("ratio = median over rounds of kiln/numpy within the round")
print(f"{'shape':>14} {'numpy':>8}" + "".join(f" {i:>12} {'ratio':>6}" for i in impls))
for n in sizes:
    row = f"{n:>14} {median(samples[('numpy', n)]):8.1f}"
    for i in impls:
        ratio = median(median(by_round[(i, n, r)]) / median(by_round[("numpy", n, r)])
                       for r in rounds)
        row += f" {median(samples[(i, n)]):12.1f} {ratio:6.2f}"
    print(row)
print("B packing (compile time), ms: " + ", ".join(
    f"{i} {n}: {median(v):.2f}" for (i, n), v in pack.items()))
PYEOF
