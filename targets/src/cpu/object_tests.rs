//! Objects for every supported target format, read back with the `object`
//! crate: container, contract symbols, sections and relocations.

use super::test_util::{matmul_f32, single};
use super::*;
use crate::plan::{AotIo, AotStep, BufferLoc};
use kiln_ir::kernel::build::ProgramBuilder;
use kiln_ir::kernel::{BufferRole, Expr, Stmt, UnOp};
use kiln_ir::{DType, Storage};

/// A one-step program that reads a weight, for the object-file checks.
fn weighted_program() -> AotProgram {
    let mut pb = ProgramBuilder::new();
    let x = pb.buffer("x", DType::F32, 16, BufferRole::Input(0));
    let w = pb.buffer("w", DType::F32, 16, BufferRole::Input(1));
    let o = pb.buffer("o", DType::F32, 16, BufferRole::Output(0));
    let body = pb.nest(&[16], |_, idx| {
        vec![Stmt::Store {
            buf: o,
            index: idx[0].clone(),
            value: (Expr::load(x, idx[0].clone()) * Expr::load(w, idx[0].clone())).un(UnOp::Exp),
        }]
    });
    pb.kernel("k", body);
    let program = pb.finish();
    AotProgram {
        name: "Tiny Model".into(),
        steps: vec![AotStep {
            node: "n".into(),
            program,
            bindings: vec![
                BufferLoc::Input(0),
                BufferLoc::Weight(0),
                BufferLoc::Output(0),
            ],
        }],
        weights: vec![crate::plan::AotWeight {
            name: "w".into(),
            data: Storage::F32((0..16).map(|i| i as f32).collect()),
        }],
        inputs: vec![AotIo {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![16],
        }],
        outputs: vec![AotIo {
            name: "o".into(),
            dtype: DType::F32,
            shape: vec![16],
        }],
        output_copies: vec![],
        arena_size: 0,
        arena_lower_bound: 0,
    }
}

/// Objects for every supported triple: the right container, the exported
/// contract symbols (with Mach-O's underscore), local weights in 64-byte
/// aligned read-only data, local code, only memset/memcpy undefined, and
/// position-independent relocations only.
#[test]
fn objects_have_the_contract_symbols() {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationKind, SectionKind};
    let prog = weighted_program();
    for (triple, cpu, format) in [
        (
            "x86_64-unknown-linux-gnu",
            Some("x86-64-v3"),
            object::BinaryFormat::Elf,
        ),
        (
            "x86_64-unknown-linux-gnu",
            Some("x86-64"),
            object::BinaryFormat::Elf,
        ),
        ("aarch64-unknown-linux-gnu", None, object::BinaryFormat::Elf),
        (
            "aarch64-linux-android",
            Some("cortex-a76"),
            object::BinaryFormat::Elf,
        ),
        ("aarch64-apple-darwin", None, object::BinaryFormat::MachO),
        (
            "aarch64-apple-ios",
            Some("apple-m1"),
            object::BinaryFormat::MachO,
        ),
        ("x86_64-apple-darwin", None, object::BinaryFormat::MachO),
        (
            "x86_64-pc-windows-msvc",
            Some("znver3"),
            object::BinaryFormat::Coff,
        ),
    ] {
        let t = CpuTarget::parse(triple, cpu).unwrap_or_else(|e| panic!("{triple}: {e}"));
        let art = compile_object(&prog, &prog.name, &t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(art.name, "tiny_model");
        assert!(art.header.contains("int tiny_model_run("));
        let f = object::File::parse(art.object.as_slice()).expect("parse object");
        assert_eq!(f.format(), format, "{triple}");
        let pre = if format == object::BinaryFormat::MachO {
            "_"
        } else {
            ""
        };
        let sym = |n: &str| {
            let want = format!("{pre}{n}");
            f.symbols()
                .find(|s| s.name() == Ok(want.as_str()))
                .unwrap_or_else(|| panic!("{triple}: no symbol {want}"))
        };
        for (n, kind) in [
            ("tiny_model_run", SectionKind::Text),
            ("tiny_model_input_sizes", SectionKind::ReadOnlyData),
            ("tiny_model_output_sizes", SectionKind::ReadOnlyData),
        ] {
            let s = sym(n);
            assert!(
                s.is_global() && s.is_definition(),
                "{triple}: {n} must be exported"
            );
            let sec = f
                .section_by_index(s.section_index().expect("section"))
                .expect("section");
            let k = sec.kind();
            let ok = k == kind || (kind == SectionKind::ReadOnlyData && k == SectionKind::Data);
            assert!(ok, "{triple}: {n} in a {k:?} section");
        }
        let w = sym("tiny_model_w0");
        assert!(w.is_local(), "{triple}: weights must be local");
        let wsec = f
            .section_by_index(w.section_index().expect("section"))
            .expect("section");
        assert!(
            matches!(
                wsec.kind(),
                SectionKind::ReadOnlyData | SectionKind::ReadOnlyDataWithRel
            ),
            "{triple}: weights in {:?}",
            wsec.kind()
        );
        assert!(
            wsec.align() >= 64,
            "{triple}: weight section aligned to {}",
            wsec.align()
        );
        assert_eq!(w.address() % 64, 0, "{triple}: weight symbol alignment");
        assert!(
            sym("tiny_model_s0_k0").is_local(),
            "{triple}: kernels must be local"
        );
        for s in f
            .symbols()
            .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
        {
            let n = s.name().unwrap_or("");
            assert!(
                n == format!("{pre}memset") || n == format!("{pre}memcpy"),
                "{triple}: unexpected external symbol {n}"
            );
        }
        let mut relocs = 0;
        for sec in f.sections().filter(|s| s.kind() == SectionKind::Text) {
            for (_, r) in sec.relocations() {
                relocs += 1;
                assert_ne!(
                    r.kind(),
                    RelocationKind::Absolute,
                    "{triple}: absolute relocation in code: {r:?}"
                );
            }
        }
        assert!(
            relocs > 0,
            "{triple}: calls and weight addresses need relocations"
        );
    }
}

#[test]
fn unknown_targets_and_cpus_are_errors() {
    assert!(matches!(
        CpuTarget::parse("riscv64gc-unknown-linux-gnu", None),
        Err(CpuError::Target { .. })
    ));
    assert!(matches!(
        CpuTarget::parse("not a triple", None),
        Err(CpuError::Triple(_))
    ));
    assert!(matches!(
        CpuTarget::parse("x86_64-unknown-linux-gnu", Some("cortex-a76")),
        Err(CpuError::Cpu { .. })
    ));
    assert!(CpuTarget::parse("aarch64-unknown-linux-gnu", Some("native")).is_err());
    CpuTarget::host().expect("host target");
}

/// Writes a 64x196x256 f32 matmul object to `KILN_CPU_DUMP` for reading the code.
#[test]
#[ignore]
fn dump_matmul_object() {
    let path = std::env::var("KILN_CPU_DUMP").expect("set KILN_CPU_DUMP to an output path");
    let p = single(&matmul_f32(64, 196, 256));
    let art = compile_object(&p, "mm", &CpuTarget::host().expect("host")).expect("compile");
    std::fs::write(path, art.object).expect("write");
}
