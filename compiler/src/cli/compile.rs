//! `kiln compile`: a model in, code for one target out (object + header for
//! CPUs, C99 + header (+ object) for firmware), with a cargo-style progress
//! line and a summary on stderr.

use super::{model, stats, CmdResult, Failure};
use kiln_compiler::compile::{compile_model, default_name, CompileOptions, EmitKind};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Emit {
    /// The target's native artifact (object + header; C too for firmware)
    #[default]
    Obj,
    /// Portable C99 source + header, for any target
    C,
    /// The planned kernel IR as readable text (NAME.kir)
    Kir,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model (.onnx, .kiln or .kilnb)
    pub model: PathBuf,
    /// Target triple (default: the host's)
    #[arg(long, value_name = "TRIPLE")]
    pub target: Option<String>,
    /// ISA level or core: native, x86-64-v2, x86-64-v3, x86-64-v4, cortex-a76, apple-m1,
    /// cortex-m4, cortex-m7, ... (default: the host's features for the host, else a baseline)
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<String>,
    /// C identifier prefix of the generated symbols (default: the model file's stem)
    #[arg(long)]
    pub name: Option<String>,
    /// C compiler for firmware objects (default: arm-none-eabi-gcc on PATH)
    #[arg(long, value_name = "PATH")]
    pub cc: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub emit: Emit,
    /// CPU objects that never call the runtime's thread pool (link with libc only)
    #[arg(long)]
    pub single_threaded: bool,
    /// Output directory
    #[arg(short, long = "out-dir", value_name = "OUTDIR")]
    pub out_dir: PathBuf,
}

/// The triple of the machine kiln runs on.
pub fn host_triple() -> String {
    let arch = std::env::consts::ARCH;
    match std::env::consts::OS {
        "linux" => format!("{arch}-unknown-linux-gnu"),
        "macos" => format!("{arch}-apple-darwin"),
        "windows" => format!("{arch}-pc-windows-msvc"),
        os => format!("{arch}-unknown-{os}"),
    }
}

pub fn main(a: Args) -> CmdResult {
    let start = Instant::now();
    let triple = a.target.clone().unwrap_or_else(host_triple);
    let m = model::load(&a.model)?;
    let name = default_name(&a.model);
    eprintln!(
        "   Compiling {} ({} nodes) for {triple}",
        a.model.display(),
        m.body.nodes.len()
    );
    let macs = stats::macs(&m);
    let opts = CompileOptions {
        target: triple.clone(),
        cpu: a.cpu.clone(),
        name: a.name.clone(),
        cc: a.cc.clone(),
        emit: match a.emit {
            Emit::Obj => EmitKind::Native,
            Emit::C => EmitKind::C,
            Emit::Kir => EmitKind::Kir,
        },
        single_threaded: a.single_threaded,
    };
    let out = compile_model(&m, &name, &opts, &a.out_dir).map_err(|e| match e {
        kiln_compiler::compile::CompileError::Target { .. } => Failure::Usage(e.to_string()),
        e => Failure::Error(anyhow::Error::new(e).context(format!(
            "failed to compile '{}' for {triple}",
            a.model.display()
        ))),
    })?;
    let ratio = if out.arena_lower_bound == 0 {
        1.0
    } else {
        out.arena_size as f64 / out.arena_lower_bound as f64
    };
    eprintln!(
        "      Arena {} bytes ({}; lower bound {} bytes, {ratio:.3}x)",
        stats::thousands(out.arena_size as u64),
        stats::human_bytes(out.arena_size),
        stats::thousands(out.arena_lower_bound as u64)
    );
    eprintln!(
        "    Weights {} bytes ({})",
        stats::thousands(out.weight_bytes as u64),
        stats::human_bytes(out.weight_bytes)
    );
    if let Some(c) = out.code_bytes {
        eprintln!(
            "       Code {} bytes ({})",
            stats::thousands(c),
            stats::human_bytes(c as usize)
        );
    }
    if macs.unknown == 0 {
        eprintln!("       MACs {}", stats::thousands(macs.total));
    }
    let phases: Vec<String> = out
        .phases
        .iter()
        .map(|p| format!("{} {:.3}s", p.name, p.time.as_secs_f64()))
        .collect();
    eprintln!(
        "      Steps {} (backend {}: {})",
        out.steps,
        out.backend,
        phases.join(", ")
    );
    for f in &out.files {
        eprintln!("      Wrote {}", f.display());
    }
    eprintln!(
        "   Finished {} in {:.2}s",
        out.name,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
