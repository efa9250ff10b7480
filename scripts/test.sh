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

echo "== firmware toolchain"
# Cortex-M firmware tests: QEMU, the bare-metal GCC with newlib, the Rust targets, and
# glib headers for the instruction-counting QEMU plugin. Installed only when missing.
need=()
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
[[ -d /usr/lib/arm-none-eabi/newlib ]] || need+=(libnewlib-arm-none-eabi)
pkg-config --exists glib-2.0 2>/dev/null || need+=(libglib2.0-dev pkg-config)
if [[ ${#need[@]} -gt 0 ]]; then
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
installed_targets=$(rustup target list --installed)
for t in thumbv7em-none-eabihf thumbv7m-none-eabi thumbv8m.main-none-eabihf; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done
if [[ ! -f target/qemu-insn/libinsnwin.so ]]; then
    bash "$KILN_SHARED/tools/qemu-insn/build.sh" "$REPO/target/qemu-insn"
fi

echo "== aarch64 cross toolchain"
bash scripts/setup-cross.sh

echo "== python tooling"
bash scripts/setup-python.sh
echo "== ONNX conformance data"
.venv/bin/python scripts/gen-conformance.py "$REPO/.cache/onnx-node-tests"

echo "== format"
cargo fmt --all --check

echo "== build (release)"
cargo build --release --workspace --all-targets

echo "== tests"
cargo test --release --workspace --no-fail-fast -- --test-threads=2
