#!/usr/bin/env bash
# Create (if missing) the repo-local Python venv used by kiln's test tooling and
# install the packages the scripts need: numpy, onnx, onnxruntime.
#
# Idempotent: an existing venv is reused, and packages that already import are
# not reinstalled. Exits non-zero if anything fails.
#
# Version pins:
#   onnx 1.22.0 is the last wheel that ships onnx/backend/test/data/node/
#   (the operator conformance cases); later wheels drop it, though
#   scripts/gen-conformance.py can regenerate the cases with any version.
#   onnxruntime 1.32.0 is the version that produced the reference outputs in
#   /work/shared/models/*.io.npz.
#
# Override the interpreter with PYTHON=/path/to/python3 if needed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
BASE_PYTHON="${PYTHON:-python3}"

NUMPY_PIN="numpy==2.4.6"
ONNX_PIN="onnx==1.22.0"
ORT_PIN="onnxruntime==1.32.0"

if [[ -x "$PY" ]] && "$PY" -c 'import sys' >/dev/null 2>&1; then
    echo "setup-python: reusing venv $VENV ($("$PY" --version 2>&1))"
else
    echo "setup-python: creating venv $VENV with $BASE_PYTHON ($("$BASE_PYTHON" --version 2>&1))"
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
fi

# module name -> pip requirement
missing=()
check() {
    local module="$1" req="$2"
    if "$PY" -c "import $module" >/dev/null 2>&1; then
        echo "setup-python: $module already importable ($("$PY" -c "import $module; print($module.__version__)"))"
    else
        missing+=("$req")
    fi
}
check numpy "$NUMPY_PIN"
check onnx "$ONNX_PIN"
check onnxruntime "$ORT_PIN"

if ((${#missing[@]})); then
    echo "setup-python: installing ${missing[*]}"
    "$PY" -m pip install --quiet "${missing[@]}"
    # Verify the install really produced importable modules.
    "$PY" - <<'EOF'
import numpy, onnx, onnxruntime
print(f"setup-python: installed numpy {numpy.__version__}, onnx {onnx.__version__}, "
      f"onnxruntime {onnxruntime.__version__}")
EOF
else
    echo "setup-python: nothing to install"
fi

echo "setup-python: done; use $PY"
