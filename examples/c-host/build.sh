#!/usr/bin/env bash
# Compiles a model with kiln and links it into the C host (main.c).
#
#   examples/c-host/build.sh MODEL.onnx OUTDIR [--emit c] [kiln compile options...]
#
# NAME is the model file's stem (so do not pass --name). Leaves OUTDIR/NAME.o (compiled from OUTDIR/NAME.c with --emit c), OUTDIR/NAME.h
# and the program OUTDIR/NAME_host; run it as `OUTDIR/NAME_host INPUT.npy...`.
# Environment: KILN (the kiln binary; default: built with cargo), KILN_RUNTIME_DIR
# (a folder holding libkiln_runtime.a; default: built with cargo, feature std),
# CC (default cc), CFLAGS (default -O2).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL.onnx OUTDIR [--emit c] [kiln compile options...]" >&2
  exit 2
fi
model="$1"; out="$2"; shift 2
emit_c=0
prev=""
for a in "$@"; do
  if [ "$a" = "--emit=c" ] || { [ "$prev" = "--emit" ] && [ "$a" = c ]; }; then emit_c=1; fi
  prev="$a"
done
name="$(basename "$model")"; name="${name%.*}"
name="$(printf '%s' "$name" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]/_/g; s/^[0-9]/m_&/')"
upper="$(printf '%s' "$name" | tr 'a-z' 'A-Z')"
mkdir -p "$out"

if [ -z "${KILN:-}" ]; then
  (cd "$repo" && cargo build --release --quiet -p kiln-compiler --bin kiln)
  KILN="$repo/target/release/kiln"
fi
if [ -z "${KILN_RUNTIME_DIR:-}" ]; then
  (cd "$repo" && cargo build --release --quiet -p kiln-runtime --features std)
  KILN_RUNTIME_DIR="$repo/target/release"
fi
CC="${CC:-cc}"
CFLAGS="${CFLAGS:--O2}"

"$KILN" compile "$model" -o "$out" "$@"
if [ "$emit_c" = 1 ]; then
  "$CC" -std=c99 $CFLAGS -c "$out/$name.c" -I "$out" -o "$out/$name.o"
fi
# The link line every program using kiln's output needs: the model's object,
# the runtime, and (for the runtime's std build on Linux) pthread, dl and m.
"$CC" -std=c99 $CFLAGS -Wall -Wextra -I "$out" -I "$repo/runtime/include" \
  -DKILN_MODEL="$name" -DKILN_MODEL_UPPER="$upper" \
  "$here/main.c" "$out/$name.o" \
  -L "$KILN_RUNTIME_DIR" -lkiln_runtime -lpthread -ldl -lm \
  -o "$out/${name}_host"
echo "built $out/${name}_host"
