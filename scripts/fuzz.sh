#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 60), seeding the corpora
# with the shared reference models and their kiln text/binary forms.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags); installs
# cargo-fuzz if missing. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${KILN_SHARED:-$REPO/../shared}"
TOOLCHAIN="${KILN_FUZZ_TOOLCHAIN:-nightly}"

if ! cargo +"$TOOLCHAIN" fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo +"$TOOLCHAIN" install cargo-fuzz
fi

cd "$REPO/fuzz"
mkdir -p corpus/onnx_loader corpus/kiln_loader

# Seeds: real models for the ONNX loader; their kiln forms (made by the kiln CLI) for the other.
if [ -d "$SHARED/models" ]; then
    for m in "$SHARED"/models/*.onnx; do
        size=$(stat -c %s "$m")
        # libFuzzer's default max_len makes multi-megabyte seeds pointless.
        if [ "$size" -lt 1000000 ]; then
            cp -f "$m" corpus/onnx_loader/
        fi
    done
    (cd "$REPO" && cargo build --quiet -p kiln-compiler --bin kiln) || true
    KILN="$REPO/target/debug/kiln"
    if [ -x "$KILN" ]; then
        for m in corpus/onnx_loader/*.onnx; do
            b="$(basename "$m" .onnx)"
            "$KILN" convert "$m" -o "corpus/kiln_loader/$b.kiln" 2>/dev/null || true
            "$KILN" convert "$m" -o "corpus/kiln_loader/$b.kilnb" 2>/dev/null || true
        done
    fi
else
    echo "warning: no reference models at $SHARED/models; starting from empty corpora" >&2
fi

for target in onnx_loader kiln_loader; do
    echo "== fuzzing $target for ${SECONDS_PER_TARGET}s" >&2
    cargo +"$TOOLCHAIN" fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=1048576 -rss_limit_mb=4096 -timeout=20
done
