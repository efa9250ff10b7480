#!/usr/bin/env python3
"""Write ONNX's operator ("node") conformance cases to a directory.

Usage (with the repo venv from scripts/setup-python.sh):

    .venv/bin/python scripts/gen-conformance.py [OUT_DIR] [--regenerate]

OUT_DIR defaults to <repo>/.cache/onnx-node-tests. Each case gets its own
folder in the standard ONNX backend-test layout:

    OUT_DIR/<case>/model.onnx
    OUT_DIR/<case>/test_data_set_<k>/input_<j>.pb, output_<j>.pb

If the installed onnx wheel ships onnx/backend/test/data/node/ (wheels up to
1.22.0 do), that tree is copied. Otherwise (or with --regenerate) the cases are
regenerated from onnx.backend.test.case.node.collect_testcases().

Idempotent: OUT_DIR/.complete records the onnx version (and source) that
produced it; if it matches the installed onnx version the script does nothing.
The tree is built in a sibling temp dir and renamed into place, so an
interrupted run never leaves a half-written OUT_DIR marked complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / ".cache" / "onnx-node-tests"
MARKER = ".complete"


def count_cases(root: Path) -> int:
    return sum(1 for p in root.iterdir() if p.is_dir() and (p / "model.onnx").is_file())


def marker_matches(out: Path, version: str) -> bool:
    marker = out / MARKER
    if not marker.is_file():
        return False
    first = marker.read_text().splitlines()[:1]
    return first == [f"onnx=={version}"]


def copy_shipped(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def _proto_for(value_info, value, numpy_helper, TensorProto):
    """Serialize one input/output value the way onnx's cmd_tools does."""
    t = value_info.type
    name = value_info.name
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, name)
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, name)
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, name)
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(value, name)


def regenerate(dst: Path) -> None:
    import warnings

    import onnx.backend.test.case.node as node_test
    from onnx import TensorProto, numpy_helper

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_test.collect_testcases(None)
    dst.mkdir(parents=True)
    for case in cases:
        if case.kind != "node" or case.model is None:
            continue
        case_dir = dst / case.name
        case_dir.mkdir()
        (case_dir / "model.onnx").write_bytes(case.model.SerializeToString())
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets or []):
            ds = case_dir / f"test_data_set_{i}"
            ds.mkdir()
            for j, value in enumerate(inputs):
                proto = _proto_for(graph.input[j], value, numpy_helper, TensorProto)
                (ds / f"input_{j}.pb").write_bytes(proto.SerializeToString())
            for j, value in enumerate(outputs):
                proto = _proto_for(graph.output[j], value, numpy_helper, TensorProto)
                (ds / f"output_{j}.pb").write_bytes(proto.SerializeToString())


def main(argv: list[str]) -> int:
    force_regen = "--regenerate" in argv
    args = [a for a in argv if a != "--regenerate"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(args[0]).resolve() if args else DEFAULT_OUT

    import onnx

    version = onnx.__version__
    if marker_matches(out, version):
        print(f"gen-conformance: {out} already complete for onnx {version}: "
              f"{count_cases(out)} cases (skipping)")
        return 0

    shipped = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "node"
    use_shipped = shipped.is_dir() and not force_regen

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)

    t0 = time.monotonic()
    try:
        if use_shipped:
            source = f"copied from {shipped}"
            print(f"gen-conformance: onnx {version}: copying {shipped}")
            copy_shipped(shipped, tmp)
        else:
            source = "regenerated with onnx.backend.test.case.node.collect_testcases()"
            print(f"gen-conformance: onnx {version}: regenerating cases")
            regenerate(tmp)
        n = count_cases(tmp)
        if n == 0:
            raise RuntimeError("no conformance cases were produced")
        (tmp / MARKER).write_text(f"onnx=={version}\n{source}\ncases {n}\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dt = time.monotonic() - t0
    print(f"gen-conformance: wrote {n} cases to {out} ({dt:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
