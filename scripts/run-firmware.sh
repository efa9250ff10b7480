#!/usr/bin/env bash
# Runs a model in Cortex-M firmware under QEMU and checks it against reference outputs.
#
#   scripts/run-firmware.sh MODEL.onnx MODEL.io.npz [--machine mps2-an386|mps2-an500]
#                           [--example rust|c] [--work DIR] [--no-insn]
#
# Compiles the model with `kiln compile --target thumbv7em-none-eabihf` (Cortex-M4F on
# mps2-an386, Cortex-M7 on mps2-an500; or thumbv7m-none-eabi, soft-float Cortex-M3, on
# mps2-an385), embeds the .io.npz inputs and outputs, builds the
# no_std Rust firmware (examples/firmware-cortex-m; or the plain C one with --example c),
# runs it under qemu-system-arm (always under `timeout`) and prints flash (model code +
# weights, from model.o's symbols), arena, stack high-water and instructions per inference
# (QEMU plugin from ../shared/tools/qemu-insn, built into target/qemu-insn on first use).
# Exits 0 only when every output matches (f32: |got-want| <= 1e-4 + 1e-3*|want|).
# Also prints one machine-readable line: `kiln-fw-result key=value ...`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "run-firmware: error: $*" >&2; exit 2; }

machine=mps2-an386 example=rust work="" insn=1 args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --machine) machine="${2:?--machine needs a value}"; shift 2 ;;
        --example) example="${2:?--example needs rust or c}"; shift 2 ;;
        --work) work="${2:?--work needs a folder}"; shift 2 ;;
        --no-insn) insn=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ ${#args[@]} -eq 2 ]] || die "usage: run-firmware.sh MODEL.onnx MODEL.io.npz [--machine mps2-an386|mps2-an500]"
model="$(realpath "${args[0]}")" npz="$(realpath "${args[1]}")"
[[ -f "$model" ]] || die "model '$model' not found"
[[ -f "$npz" ]] || die "reference data '$npz' not found"

case "$machine" in
    mps2-an386) triple=thumbv7em-none-eabihf cpu=cortex-m4 ;;
    mps2-an500) triple=thumbv7em-none-eabihf cpu=cortex-m7 ;;
    mps2-an385) triple=thumbv7m-none-eabi cpu=cortex-m3 ;;
    *) die "unknown machine '$machine' (mps2-an386, mps2-an500 or mps2-an385)" ;;
esac
case "$example" in rust|c) ;; *) die "--example must be rust or c" ;; esac
for tool in qemu-system-arm arm-none-eabi-gcc arm-none-eabi-nm python3 timeout; do
    command -v "$tool" >/dev/null || die "'$tool' not found (scripts/test.sh installs the firmware toolchain)"
done

stem="$(basename "$model")"; stem="${stem%.*}"
work="${work:-$REPO/target/firmware/runs/$stem-$machine-$example}"
rm -rf "$work"; mkdir -p "$work"

kiln="${KILN:-$REPO/target/release/kiln}"
if [[ -z "${KILN:-}" ]]; then
    (cd "$REPO" && cargo build --release -q -p kiln-compiler) || die "building kiln failed"
fi
[[ -x "$kiln" ]] || die "kiln binary '$kiln' not found"

echo "== compile $stem for $triple ($cpu)"
"$kiln" compile "$model" --target "$triple" --cpu "$cpu" --name model -o "$work/model" 2>"$work/compile.log" \
    || { cat "$work/compile.log" >&2; die "kiln compile failed"; }
[[ -f "$work/model/model.o" ]] || die "kiln compile produced no model.o (is arm-none-eabi-gcc on PATH?)"
python3 "$REPO/scripts/npz-to-firmware.py" "$npz" "$work/io" || die "reading '$npz' failed"

echo "== build $example firmware"
if [[ "$example" == rust ]]; then
    command -v cargo >/dev/null || die "cargo not found"
    # One target dir per core: the rustflags differ, and runs for different machines
    # must not overwrite each other's image.
    tdir="$REPO/target/firmware/rust-$cpu"
    # Pin the core: instruction counts depend on it (cargo's per-target variable).
    flags_var="CARGO_TARGET_$(tr 'a-z.-' 'A-Z__' <<<"$triple")_RUSTFLAGS"
    (cd "$REPO/examples/firmware-cortex-m" && \
        env KILN_FW_MODEL_DIR="$work/model" KILN_FW_IO_DIR="$work/io" "$flags_var=-C target-cpu=$cpu" \
        cargo build --release -q --target "$triple" --target-dir "$tdir") || die "firmware build failed"
    cp "$tdir/$triple/release/kiln-firmware-cortex-m" "$work/app.elf"
else
    make -s -C "$REPO/examples/firmware-c" MODEL_DIR="$work/model" IO_DIR="$work/io" \
        BUILD="$work/c-build" CPU="$cpu" OUT="$work/app.elf" || die "C firmware build failed"
fi

qemu=(qemu-system-arm -M "$machine" -nographic -monitor none -serial none
      -semihosting-config enable=on,target=native -icount shift=0)
if [[ $insn == 1 ]]; then
    plugin="${KILN_QEMU_INSN:-$REPO/target/qemu-insn/libinsnwin.so}"
    if [[ ! -f "$plugin" ]]; then
        src="${KILN_SHARED:-$REPO/../shared}/tools/qemu-insn/build.sh"
        [[ -f "$src" ]] || die "instruction-count plugin source '$src' not found (or pass --no-insn)"
        bash "$src" "$(dirname "$plugin")" >/dev/null || die "building the qemu-insn plugin failed (needs libglib2.0-dev)"
    fi
    s=$(arm-none-eabi-nm "$work/app.elf" | awk '$3=="bench_start"{print "0x"$1}')
    e=$(arm-none-eabi-nm "$work/app.elf" | awk '$3=="bench_stop"{print "0x"$1}')
    [[ -n "$s" && -n "$e" ]] || die "bench markers not found in the image"
    qemu+=(-plugin "$plugin,start=$s,stop=$e,out=$work/insn.txt")
fi

echo "== run on $machine"
set +e
timeout "${KILN_QEMU_TIMEOUT:-300}" "${qemu[@]}" -kernel "$work/app.elf" >"$work/run.log" 2>&1
rc=$?
set -e
cat "$work/run.log"
if [[ $rc == 124 ]]; then echo "run-firmware: QEMU timed out" >&2; fi

# Flash = the model object's code and read-only data as linked (gc'd sections dropped).
code=0 weights=0
while read -r _addr size type _name; do
    case "$type" in
        [Tt]) code=$((code + 16#$size)) ;;
        [RrDd]) weights=$((weights + 16#$size)) ;;
    esac
done < <(arm-none-eabi-nm -S --size-sort "$work/model/model.o")
arena=$(sed -n 's/^kiln-fw: arena bytes //p' "$work/run.log")
stack=$(sed -n 's/^kiln-fw: stack bytes //p' "$work/run.log")
lower=$(sed -n 's/.*"arena_lower_bound": *\([0-9]*\).*/\1/p' "$work/model/model.json" 2>/dev/null | head -1)
insns=""
if [[ -f "$work/insn.txt" ]]; then insns=$(awk '$2=="window[0]"{print $3}' "$work/insn.txt"); fi
echo "flash: code $code bytes + weights $weights bytes = $((code + weights)) bytes"
echo "arena: ${arena:-?} bytes (live-tensor lower bound ${lower:-?} bytes)"
echo "stack high-water: ${stack:-?} bytes"
echo "instructions per inference: ${insns:-not measured}"
echo "kiln-fw-result model=$stem machine=$machine example=$example status=$rc code=$code weights=$weights arena=${arena:-} lower=${lower:-} stack=${stack:-} insns=${insns:-}"
exit $rc
