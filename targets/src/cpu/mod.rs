//! The Cranelift CPU backend: kernel IR → native code for x86_64 and aarch64,
//! as relocatable objects (ELF, Mach-O, COFF) or JIT-compiled in process.
//!
//! The object defines the C contract of [`crate::header`]: exported
//! `NAME_run`, `NAME_input_sizes` and `NAME_output_sizes`; kernels, math
//! helpers and weights (read-only, 64-byte aligned) are local symbols
//! prefixed with `NAME`. The external symbols are `memset` and `memcpy`, the
//! runtime's `kiln_sgemm_<variant>` GEMM kernels where f32 matmuls call them
//! (see `gemm.rs`), and `kiln_parallel_for` with threads: link with
//! `-lkiln_runtime`.

mod conv_call;
mod emit;
mod fallback;
mod gemm;
mod gemm_epilogue;
mod gemm_par;
#[cfg(test)]
mod gemm_tests;
mod gemm_weights;
mod half;
mod kernel;
mod library;
mod math;
mod matmul;
#[cfg(test)]
mod object_tests;
mod ops;
mod parallel;
mod pool_call;
pub mod profile;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use crate::header::{render_header, sanitize};
use crate::plan::AotProgram;
use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;
use target_lexicon::{Architecture, Triple};
use thiserror::Error;

/// Why a program could not be compiled or run by the CPU backend.
#[derive(Debug, Error, Clone)]
pub enum CpuError {
    #[error("cpu backend: unknown target triple '{0}'")]
    Triple(String),
    #[error("cpu backend: target '{triple}' is not supported: {msg}")]
    Target { triple: String, msg: String },
    #[error("cpu backend: unknown cpu '{cpu}' for target '{triple}'")]
    Cpu { triple: String, cpu: String },
    #[error("cpu backend: unsupported: {0}")]
    Unsupported(String),
    #[error("cpu backend: node '{node}', kernel '{kernel}': {msg}")]
    Kernel {
        node: String,
        kernel: String,
        msg: String,
    },
    #[error("cpu backend: code generation: {0}")]
    Codegen(String),
    #[error("cpu backend: run: {0}")]
    Run(String),
}

/// A target machine: triple plus ISA feature flags.
#[derive(Clone)]
pub struct CpuTarget {
    triple: Triple,
    /// The CPU name the flags came from (for messages).
    cpu: String,
    isa: Arc<OwnedTargetIsa>,
    /// Call `kiln_parallel_for` (from kiln-runtime) for parallel loops.
    threads: bool,
}

impl std::fmt::Debug for CpuTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuTarget({}, cpu={})", self.triple, self.cpu)
    }
}

/// x86 feature flags per CPU level. Cranelift 0.135's `x86-64-v3`/`znver*`
/// presets omit `has_avx`, which silently turns `fma` into `fmaf` calls, so
/// every flag is set explicitly here.
fn x86_flags(cpu: &str) -> Option<&'static [&'static str]> {
    const V2: &[&str] = &[
        "has_sse3",
        "has_ssse3",
        "has_cmpxchg16b",
        "has_sse41",
        "has_sse42",
        "has_popcnt",
    ];
    const V3: &[&str] = &[
        "has_sse3",
        "has_ssse3",
        "has_cmpxchg16b",
        "has_sse41",
        "has_sse42",
        "has_popcnt",
        "has_avx",
        "has_avx2",
        "has_fma",
        "has_bmi1",
        "has_bmi2",
        "has_lzcnt",
    ];
    const V4: &[&str] = &[
        "has_sse3",
        "has_ssse3",
        "has_cmpxchg16b",
        "has_sse41",
        "has_sse42",
        "has_popcnt",
        "has_avx",
        "has_avx2",
        "has_fma",
        "has_bmi1",
        "has_bmi2",
        "has_lzcnt",
        "has_avx512f",
        "has_avx512vl",
        "has_avx512dq",
        "has_avx512bitalg",
    ];
    Some(match cpu {
        "x86-64" | "generic" => &[],
        "x86-64-v2" | "nehalem" | "westmere" => V2,
        "x86-64-v3" | "haswell" | "broadwell" | "skylake" | "znver1" | "znver2" | "znver3"
        | "alderlake" => V3,
        "x86-64-v4" | "skylake-avx512" | "cascadelake" | "icelake-server" | "sapphirerapids"
        | "znver4" | "znver5" => V4,
        _ => return None,
    })
}

fn arm_flags(cpu: &str) -> Option<&'static [&'static str]> {
    Some(match cpu {
        "generic" | "cortex-a53" | "cortex-a72" => &[],
        "cortex-a55" | "cortex-a75" | "cortex-a76" | "cortex-a78" | "neoverse-n1" | "apple-a14" => {
            &["has_lse"]
        }
        "apple-m1" | "apple-m2" | "apple-m3" | "neoverse-v1" | "neoverse-n2" | "cortex-x1" => {
            &["has_lse", "has_fp16", "has_dotprod"]
        }
        _ => return None,
    })
}

fn shared_flags(pic: bool) -> Result<settings::Flags, CpuError> {
    let mut b = settings::builder();
    let set = |b: &mut settings::Builder, k: &str, v: &str| {
        b.set(k, v)
            .map_err(|e| CpuError::Codegen(format!("setting {k}={v}: {e}")))
    };
    set(&mut b, "opt_level", "speed")?;
    set(&mut b, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut b, "enable_verifier", "true")?;
    // Functions that call the GEMM kernels keep up to half a MiB of scratch
    // in their frame: touch it page by page, as Windows' guard page needs
    // and as keeps a deep frame from jumping a guard gap elsewhere.
    set(&mut b, "enable_probestack", "true")?;
    set(&mut b, "probestack_strategy", "inline")?;
    Ok(settings::Flags::new(b))
}

impl CpuTarget {
    /// A target for `triple` (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu,
    /// aarch64-linux-android, aarch64-apple-darwin, aarch64-apple-ios,
    /// x86_64-pc-windows-msvc, x86_64-apple-darwin).
    ///
    /// `cpu`: `None` gives the host's features when `triple` is the host, else a
    /// baseline (x86-64-v2 for x86_64, generic for aarch64, apple-m1 on Apple);
    /// or a name: "native", "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4",
    /// "znver3", "haswell", "cortex-a76", "apple-m1", "generic", ...
    pub fn parse(triple: &str, cpu: Option<&str>) -> Result<CpuTarget, CpuError> {
        Self::build(triple, cpu, true)
    }

    /// The machine this process runs on, with its features.
    pub fn host() -> Result<CpuTarget, CpuError> {
        Self::build(&Triple::host().to_string(), Some("native"), true)
    }

    fn build(triple_s: &str, cpu: Option<&str>, pic: bool) -> Result<CpuTarget, CpuError> {
        let triple =
            Triple::from_str(triple_s).map_err(|_| CpuError::Triple(triple_s.to_string()))?;
        let terr = |msg: &str| CpuError::Target {
            triple: triple_s.to_string(),
            msg: msg.to_string(),
        };
        let arch = triple.architecture;
        if !matches!(arch, Architecture::X86_64 | Architecture::Aarch64(_)) {
            return Err(terr("only x86_64 and aarch64 are supported"));
        }
        let is_host = triple == Triple::host();
        let apple = matches!(
            triple.operating_system,
            target_lexicon::OperatingSystem::Darwin(_)
                | target_lexicon::OperatingSystem::IOS(_)
                | target_lexicon::OperatingSystem::MacOSX(_)
        );
        let cpu_name = match cpu {
            Some(c) => c.to_string(),
            None if is_host => "native".into(),
            None if arch == Architecture::X86_64 => "x86-64-v2".into(),
            None if apple => "apple-m1".into(),
            None => "generic".into(),
        };
        let flags = shared_flags(pic)?;
        let isa = if cpu_name == "native" {
            if !is_host {
                return Err(terr("cpu 'native' is only valid for the host triple"));
            }
            let b = cranelift_native::builder().map_err(terr)?;
            b.finish(flags)
                .map_err(|e| CpuError::Codegen(e.to_string()))?
        } else {
            let mut b = isa::lookup(triple.clone()).map_err(|e| terr(&e.to_string()))?;
            let feats = if arch == Architecture::X86_64 {
                x86_flags(&cpu_name)
            } else {
                arm_flags(&cpu_name)
            };
            let feats = feats.ok_or_else(|| CpuError::Cpu {
                triple: triple_s.to_string(),
                cpu: cpu_name.clone(),
            })?;
            for f in feats {
                b.enable(f)
                    .map_err(|e| CpuError::Codegen(format!("ISA flag {f}: {e}")))?;
            }
            b.finish(flags)
                .map_err(|e| CpuError::Codegen(e.to_string()))?
        };
        Ok(CpuTarget {
            triple,
            cpu: cpu_name,
            isa: Arc::new(isa),
            threads: false,
        })
    }

    /// Multi-threaded code: loops proven parallel-safe call the runtime's
    /// `kiln_parallel_for`, so the object must be linked with kiln-runtime
    /// (`-lkiln_runtime -lpthread -ldl -lm`). Off by default.
    pub fn with_threads(mut self, threads: bool) -> CpuTarget {
        self.threads = threads;
        self
    }

    /// The target triple.
    pub fn triple(&self) -> &Triple {
        &self.triple
    }

    /// The CPU name the ISA flags were chosen for.
    pub fn cpu(&self) -> &str {
        &self.cpu
    }

    /// Whether floor/ceil/nearest are single instructions (no libcall risk).
    fn native_round(&self) -> bool {
        if self.triple.architecture != Architecture::X86_64 {
            return true;
        }
        self.isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_sse41" && f.as_bool() == Some(true))
    }
}

/// Size and time figures of one compilation.
#[derive(Clone, Debug, Default)]
pub struct CodeStats {
    /// Bytes of machine code (all functions).
    pub code_bytes: usize,
    /// Bytes of weight data.
    pub weight_bytes: usize,
    /// Functions emitted (kernels, helpers, `NAME_run`).
    pub functions: usize,
    /// Wall time of code generation.
    pub compile_time: std::time::Duration,
}

/// A relocatable object plus the matching C header.
#[derive(Clone, Debug)]
pub struct ObjectArtifact {
    /// The C identifier prefix (sanitised model name).
    pub name: String,
    pub object: Vec<u8>,
    pub header: String,
    pub stats: CodeStats,
}

/// Compiles `prog` to an object file for `target`, symbols prefixed with `sanitize(name)`.
pub fn compile_object(
    prog: &AotProgram,
    name: &str,
    target: &CpuTarget,
) -> Result<ObjectArtifact, CpuError> {
    let t0 = Instant::now();
    let name = sanitize(name);
    let isa = target.isa.as_ref().clone();
    let builder = cranelift_object::ObjectBuilder::new(
        isa,
        name.as_bytes().to_vec(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| CpuError::Codegen(e.to_string()))?;
    let mut module = cranelift_object::ObjectModule::new(builder);
    let em = emit::emit_program(
        &mut module,
        prog,
        &name,
        target.native_round(),
        target.threads,
        false,
    )?;
    let object = module
        .finish()
        .emit()
        .map_err(|e| CpuError::Codegen(e.to_string()))?;
    Ok(ObjectArtifact {
        header: render_header(prog, &name),
        name,
        object,
        stats: CodeStats {
            code_bytes: em.code_bytes,
            weight_bytes: em.weight_bytes,
            functions: em.functions,
            compile_time: t0.elapsed(),
        },
    })
}

type RunFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8) -> i32;

/// A program compiled in process through cranelift-jit (host CPU features).
pub struct JitModel {
    /// Owns the executable memory `run` points into.
    _module: cranelift_jit::JITModule,
    run: RunFn,
    arena_size: usize,
    input_sizes: Vec<usize>,
    output_sizes: Vec<usize>,
    stats: CodeStats,
}

impl JitModel {
    /// Compiles `prog` for the host.
    pub fn compile(prog: &AotProgram) -> Result<JitModel, CpuError> {
        Self::compile_with(prog, false)
    }

    /// Compiles `prog` for the host; with `profile`, the code reports the
    /// start of every step to [`profile`] (timings for `kiln bench --profile`).
    pub fn compile_with(prog: &AotProgram, profile: bool) -> Result<JitModel, CpuError> {
        let t0 = Instant::now();
        let target = CpuTarget::build(&Triple::host().to_string(), Some("native"), false)?;
        let isa = target.isa.as_ref().clone();
        let mut builder =
            cranelift_jit::JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        builder.symbol(
            "kiln_parallel_for",
            kiln_runtime::kiln_parallel_for as *const u8,
        );
        builder.symbol("kiln_profile_step", profile::kiln_profile_step as *const u8);
        for (name, ptr) in gemm::jit_symbols() {
            builder.symbol(name, ptr);
        }
        let mut module = cranelift_jit::JITModule::new(builder);
        let em = emit::emit_program(
            &mut module,
            prog,
            "kiln_jit",
            target.native_round(),
            true,
            profile,
        )?;
        module
            .finalize_definitions()
            .map_err(|e| CpuError::Codegen(e.to_string()))?;
        let ptr = module.get_finalized_function(em.run);
        // SAFETY: `run` was declared with exactly this signature (three
        // pointers in, i32 out, the platform's C calling convention).
        let run: RunFn = unsafe { std::mem::transmute::<*const u8, RunFn>(ptr) };
        Ok(JitModel {
            _module: module,
            run,
            arena_size: prog.arena_size,
            input_sizes: prog.inputs.iter().map(|i| i.byte_size()).collect(),
            output_sizes: prog.outputs.iter().map(|i| i.byte_size()).collect(),
            stats: CodeStats {
                code_bytes: em.code_bytes,
                weight_bytes: em.weight_bytes,
                functions: em.functions,
                compile_time: t0.elapsed(),
            },
        })
    }

    /// Bytes of arena a run needs.
    pub fn arena_size(&self) -> usize {
        self.arena_size
    }

    /// Code size and compile time.
    pub fn stats(&self) -> &CodeStats {
        &self.stats
    }

    /// Runs the model with a fresh internal arena. Checks input/output counts and byte sizes.
    pub fn run(&self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) -> Result<(), CpuError> {
        let mut raw = vec![0u8; self.arena_size + crate::plan::ARENA_ALIGN];
        let skip = raw.as_ptr().align_offset(crate::plan::ARENA_ALIGN);
        let arena = &mut raw[skip..skip + self.arena_size];
        self.run_with_arena(inputs, outputs, arena)
    }

    /// Runs the model in a caller-provided arena (at least [`Self::arena_size`]
    /// bytes, aligned to [`crate::plan::ARENA_ALIGN`]).
    pub fn run_with_arena(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut [u8],
    ) -> Result<(), CpuError> {
        let check = |what: &str, got: &[usize], want: &[usize]| -> Result<(), CpuError> {
            if got.len() != want.len() {
                return Err(CpuError::Run(format!(
                    "{} {what}s given, the model has {}",
                    got.len(),
                    want.len()
                )));
            }
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                if g != w {
                    return Err(CpuError::Run(format!(
                        "{what} {i} is {g} bytes, expected {w}"
                    )));
                }
            }
            Ok(())
        };
        let in_sizes: Vec<usize> = inputs.iter().map(|s| s.len()).collect();
        let out_sizes: Vec<usize> = outputs.iter().map(|s| s.len()).collect();
        check("input", &in_sizes, &self.input_sizes)?;
        check("output", &out_sizes, &self.output_sizes)?;
        if arena.len() < self.arena_size {
            return Err(CpuError::Run(format!(
                "arena is {} bytes, the model needs {}",
                arena.len(),
                self.arena_size
            )));
        }
        if arena.as_ptr().align_offset(crate::plan::ARENA_ALIGN) != 0 {
            return Err(CpuError::Run(format!(
                "arena is not aligned to {} bytes",
                crate::plan::ARENA_ALIGN
            )));
        }
        let ins: Vec<*const u8> = inputs.iter().map(|s| s.as_ptr()).collect();
        let outs: Vec<*mut u8> = outputs.iter_mut().map(|s| s.as_mut_ptr()).collect();
        // SAFETY: every buffer was checked against the sizes the code was
        // compiled for, and the arena is large enough and aligned.
        let rc = unsafe { (self.run)(ins.as_ptr(), outs.as_ptr(), arena.as_mut_ptr()) };
        if rc != 0 {
            return Err(CpuError::Run(format!("the model returned {rc}")));
        }
        Ok(())
    }
}
