//! The ahead-of-time compile driver behind `kiln compile` and the `kiln-build`
//! helper: plan a loaded model (passes, lowering, memory plan), then hand the
//! plan to the backend the target triple selects and write its files.
//!
//! Backends by triple: `x86_64-*` and `aarch64-*` go to the Cranelift CPU
//! backend (an object file), `thumb*` to the firmware C99 backend (C source,
//! plus an object when an Arm toolchain is found). `--emit c` asks any target
//! for portable C99 instead. This module owns the choice and the files; the
//! backends own their formats and never see the graph.

use crate::aot::{plan_model, AotError};
use kiln_ir::Model;
use kiln_targets::header::sanitize;
use kiln_targets::plan::AotProgram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// What a compile can fail on. Planning errors name the node and op.
#[derive(Debug, Error)]
pub enum CompileError {
    #[error(transparent)]
    Plan(#[from] AotError),
    #[error("{0}")]
    Backend(String),
    #[error("unsupported target '{triple}': {why}")]
    Target { triple: String, why: String },
    #[error("cannot write '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which code to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmitKind {
    /// The target's native artifact: an object for CPU triples; C plus an
    /// object (when a compiler is found) for firmware triples.
    #[default]
    Native,
    /// Portable C99 source and header only, for any target.
    C,
    /// The planned kernel IR as text (`NAME.kir`): every step's buffers,
    /// their arena placement and loops, for reading what the backends get.
    Kir,
}

#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// A target triple, e.g. `x86_64-unknown-linux-gnu` or `thumbv7em-none-eabihf`.
    pub target: String,
    /// The ISA level or core (`native`, `x86-64-v3`, `cortex-m7`, ...); None = the target's default.
    pub cpu: Option<String>,
    /// C identifier prefix; None = the model file's stem.
    pub name: Option<String>,
    /// A C compiler for firmware objects; None = search PATH.
    pub cc: Option<PathBuf>,
    pub emit: EmitKind,
    /// CPU objects that never call the runtime's thread pool (they then need
    /// only libc). By default loops proven parallel-safe call `kiln_parallel_for`.
    pub single_threaded: bool,
}

/// One phase of a compile and how long it took, for the summary.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: &'static str,
    pub time: Duration,
}

/// What a compile wrote and what it costs at run time.
#[derive(Clone, Debug)]
pub struct CompileOutput {
    /// The sanitised C identifier prefix.
    pub name: String,
    pub backend: &'static str,
    pub files: Vec<PathBuf>,
    pub arena_size: usize,
    pub arena_lower_bound: usize,
    pub weight_bytes: usize,
    /// Machine code bytes, when the backend produced an object.
    pub code_bytes: Option<u64>,
    pub steps: usize,
    pub phases: Vec<Phase>,
}

/// The C identifier a model file gets by default: its stem, sanitised.
pub fn default_name(path: &Path) -> String {
    sanitize(
        &path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    )
}

/// The backend family a triple belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Cpu,
    Firmware,
}

/// Classifies a triple, or explains which ones kiln knows.
pub fn family(triple: &str) -> Result<Family, CompileError> {
    let arch = triple.split('-').next().unwrap_or("");
    match arch {
        "x86_64" | "aarch64" | "arm64" => Ok(Family::Cpu),
        a if a.starts_with("thumbv") => Ok(Family::Firmware),
        _ => Err(CompileError::Target {
            triple: triple.into(),
            why: "kiln compiles for x86_64-*, aarch64-* (Linux, Android, Apple, Windows) and \
                  thumbv7em-none-eabihf, thumbv7m-none-eabi, thumbv8m.main-none-eabihf; \
                  `--emit c` gives portable C99 for anything else"
                .into(),
        }),
    }
}

fn write(path: PathBuf, bytes: &[u8], files: &mut Vec<PathBuf>) -> Result<(), CompileError> {
    std::fs::write(&path, bytes).map_err(|source| CompileError::Io {
        path: path.clone(),
        source,
    })?;
    files.push(path);
    Ok(())
}

/// Plans `model` (simplify, fuse, lower, place in the arena).
pub fn plan(model: &Model) -> Result<AotProgram, CompileError> {
    Ok(plan_model(model)?)
}

/// Compiles `model` for `opts.target` into `out_dir` (created if missing).
pub fn compile_model(
    model: &Model,
    default: &str,
    opts: &CompileOptions,
    out_dir: &Path,
) -> Result<CompileOutput, CompileError> {
    let fam = if opts.emit != EmitKind::Native {
        None
    } else {
        Some(family(&opts.target)?)
    };
    std::fs::create_dir_all(out_dir).map_err(|source| CompileError::Io {
        path: out_dir.into(),
        source,
    })?;
    let name = sanitize(opts.name.as_deref().unwrap_or(default));
    let t0 = Instant::now();
    let prog = plan(model)?;
    let mut phases = vec![Phase {
        name: "plan",
        time: t0.elapsed(),
    }];
    let weight_bytes = prog
        .weights
        .iter()
        .map(|w| w.data.len() * w.data.dtype().size())
        .sum();
    let mut files = vec![];
    let t1 = Instant::now();
    let (backend, code_bytes) = match fam {
        None if opts.emit == EmitKind::Kir => {
            write(
                out_dir.join(format!("{name}.kir")),
                kernel_ir_text(&prog).as_bytes(),
                &mut files,
            )?;
            ("kernel-ir", None)
        }
        None => {
            let src = kiln_targets::c::render(&prog, &name)
                .map_err(|e| CompileError::Backend(e.to_string()))?;
            write(
                out_dir.join(format!("{name}.c")),
                src.source.as_bytes(),
                &mut files,
            )?;
            write(
                out_dir.join(format!("{name}.h")),
                src.header.as_bytes(),
                &mut files,
            )?;
            ("c99", None)
        }
        Some(Family::Cpu) => {
            let target = kiln_targets::cpu::CpuTarget::parse(&opts.target, opts.cpu.as_deref())
                .map_err(|e| CompileError::Target {
                    triple: opts.target.clone(),
                    why: e.to_string(),
                })?
                .with_threads(!opts.single_threaded);
            let art = kiln_targets::cpu::compile_object(&prog, &name, &target)
                .map_err(|e| CompileError::Backend(e.to_string()))?;
            let ext = if opts.target.contains("windows") {
                "obj"
            } else {
                "o"
            };
            write(
                out_dir.join(format!("{name}.{ext}")),
                &art.object,
                &mut files,
            )?;
            write(
                out_dir.join(format!("{name}.h")),
                art.header.as_bytes(),
                &mut files,
            )?;
            ("cranelift", Some(art.stats.code_bytes as u64))
        }
        Some(Family::Firmware) => {
            let target = kiln_targets::c::FirmwareTarget::parse(&opts.target, opts.cpu.as_deref())
                .map_err(|e| CompileError::Target {
                    triple: opts.target.clone(),
                    why: e.to_string(),
                })?;
            let art =
                kiln_targets::c::build_firmware(&prog, &name, &target, opts.cc.as_deref(), out_dir)
                    .map_err(|e| CompileError::Backend(e.to_string()))?;
            files.push(art.c_file.clone());
            files.push(art.h_file.clone());
            files.extend(art.object.clone());
            ("c99-firmware", art.text_bytes)
        }
    };
    phases.push(Phase {
        name: "codegen",
        time: t1.elapsed(),
    });
    let manifest = manifest(
        &prog,
        &name,
        &opts.target,
        backend,
        weight_bytes,
        code_bytes,
    );
    write(
        out_dir.join(format!("{name}.json")),
        manifest.as_bytes(),
        &mut files,
    )?;
    Ok(CompileOutput {
        name,
        backend,
        files,
        arena_size: prog.arena_size,
        arena_lower_bound: prog.arena_lower_bound,
        weight_bytes,
        code_bytes,
        steps: prog.steps.len(),
        phases,
    })
}

/// `NAME.json`: what a build system or a test needs to know about the
/// artifact without parsing the header (tensors, arena, sizes, target).
fn manifest(
    prog: &AotProgram,
    name: &str,
    target: &str,
    backend: &str,
    weight_bytes: usize,
    code_bytes: Option<u64>,
) -> String {
    let io = |ios: &[kiln_targets::plan::AotIo]| -> Vec<serde_json::Value> {
        ios.iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name, "dtype": i.dtype.name(), "shape": i.shape, "bytes": i.byte_size()
                })
            })
            .collect()
    };
    let v = serde_json::json!({
        "name": name,
        "model": prog.name,
        "target": target,
        "backend": backend,
        "arena_size": prog.arena_size,
        "arena_align": kiln_targets::plan::ARENA_ALIGN,
        "arena_lower_bound": prog.arena_lower_bound,
        "weight_bytes": weight_bytes,
        "code_bytes": code_bytes,
        "steps": prog.steps.len(),
        "inputs": io(&prog.inputs),
        "outputs": io(&prog.outputs),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// The plan as readable text: per step, where each buffer lives and the kernels.
pub fn kernel_ir_text(prog: &AotProgram) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// model '{}': {} steps, arena {} bytes (lower bound {})",
        prog.name,
        prog.steps.len(),
        prog.arena_size,
        prog.arena_lower_bound
    );
    for (i, st) in prog.steps.iter().enumerate() {
        let _ = writeln!(s, "\n// step {i}: node '{}'", st.node);
        for (b, loc) in st.bindings.iter().enumerate() {
            let _ = writeln!(s, "//   b{b} at {loc:?}");
        }
        let _ = write!(s, "{}", st.program);
    }
    s
}
