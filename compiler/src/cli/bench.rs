//! `kiln bench`: time the native code `kiln compile` generates for this
//! machine (compiled in-process, the same code as the object file), after a
//! warm-up, and report the median, p10 and p90 latency and the achieved
//! GFLOP/s. A benchmark, never a test: it prints figures and asserts nothing.

use super::{model, run, stats, CmdResult};
use anyhow::{anyhow, Context};
use kiln_compiler::{io, native::NativeModel};
use kiln_ir::{Storage, Tensor};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model (.onnx, .kiln or .kilnb)
    pub model: PathBuf,
    /// Inputs as for `kiln run` (default: deterministic pseudo-random data of
    /// each input's shape; symbolic dims need real inputs)
    #[arg(short, long = "input", value_name = "[NAME=]FILE")]
    pub inputs: Vec<String>,
    /// Threads of the runtime's pool (sets KILN_NUM_THREADS; default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Untimed runs first
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Print one JSON object on stdout instead of a table
    #[arg(long)]
    pub json: bool,
    /// Also time every step (the code reports each step's start; slightly
    /// slower) and print the steps that take longest
    #[arg(long)]
    pub profile: bool,
}

/// Deterministic inputs: floats in [-1, 1), integers in [0, 8) (valid ids and
/// indices for the models we know), bools alternating.
fn synthetic(dtype: kiln_ir::DType, shape: Vec<usize>, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let data = if dtype.is_float() {
        Storage::from_f64s(
            dtype,
            (0..n).map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0),
        )
    } else if dtype == kiln_ir::DType::Bool {
        Storage::from_i64s(dtype, (0..n).map(|i| (i % 2) as i64))
    } else {
        Storage::from_i64s(dtype, (0..n).map(|_| (next() % 8) as i64))
    };
    Tensor { shape, data }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub fn main(a: Args) -> CmdResult {
    if let Some(t) = a.threads {
        // Read by the runtime's pool when it first starts, which is below.
        std::env::set_var("KILN_NUM_THREADS", t.to_string());
    }
    let mut m = model::load(&a.model)?;
    model::simplify(&mut m)?;
    let files = run::bind_inputs(&m, &a.inputs)?;
    let mut inputs = vec![];
    for (k, (&p, f)) in m.inputs().iter().zip(&files).enumerate() {
        let info = m.value(p);
        inputs.push(match f {
            Some(f) => {
                io::read_tensor(f).with_context(|| format!("reading input '{}'", info.name))?
            }
            None => {
                let dims = info.ty.dims().ok_or_else(|| {
                    anyhow!(
                        "input '{}' has symbolic shape {}; pass it with -i {}=FILE",
                        info.name,
                        info.ty,
                        info.name
                    )
                })?;
                synthetic(info.ty.dtype, dims, k as u64 + 1)
            }
        });
    }
    let t0 = Instant::now();
    let nm =
        NativeModel::compile_with(&m, &inputs, a.profile).context("compiling for this machine")?;
    let compile = t0.elapsed();
    let in_bytes = nm.input_bytes(&inputs);
    let in_refs: Vec<&[u8]> = in_bytes.iter().map(|b| b.as_slice()).collect();
    let prog = nm.program();
    let mut out_bytes: Vec<Vec<u8>> = prog
        .outputs
        .iter()
        .map(|o| vec![0u8; o.byte_size()])
        .collect();
    let align = kiln_targets::plan::ARENA_ALIGN;
    let mut raw = vec![0u8; prog.arena_size + align];
    let skip = raw.as_ptr().align_offset(align);
    let arena = &mut raw[skip..skip + prog.arena_size];
    let mut times = Vec::with_capacity(a.iters);
    for i in 0..a.warmup + a.iters.max(1) {
        let mut out_refs: Vec<&mut [u8]> = out_bytes.iter_mut().map(|b| b.as_mut_slice()).collect();
        let t = Instant::now();
        nm.jit()
            .run_with_arena(&in_refs, &mut out_refs, arena)
            .map_err(anyhow::Error::from)?;
        if i >= a.warmup {
            times.push(t.elapsed());
        } else if i + 1 == a.warmup {
            kiln_targets::cpu::profile::reset();
        }
    }
    if a.profile {
        print_profile(prog, times.len());
    }
    times.sort();
    let (p10, med, p90) = (
        percentile(&times, 0.1),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
    );
    let macs = stats::macs(&m);
    let gflops = (macs.unknown == 0).then(|| 2.0 * macs.total as f64 / med.as_secs_f64() / 1e9);
    let threads = std::env::var("KILN_NUM_THREADS").ok();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if a.json {
        let v = serde_json::json!({
            "model": a.model.display().to_string(),
            "threads": threads,
            "iters": times.len(),
            "median_ms": ms(med), "p10_ms": ms(p10), "p90_ms": ms(p90),
            "macs": if macs.unknown == 0 { Some(macs.total) } else { None },
            "gflops": gflops,
            "compile_ms": ms(compile),
            "arena_bytes": prog.arena_size,
        });
        println!("{v}");
    } else {
        println!(
            "{}: median {:.3} ms (p10 {:.3}, p90 {:.3}) over {} runs, threads {}{}; compiled in {:.0} ms",
            a.model.display(),
            ms(med),
            ms(p10),
            ms(p90),
            times.len(),
            threads.as_deref().unwrap_or("all"),
            gflops
                .map(|g| format!(", {g:.2} GFLOP/s"))
                .unwrap_or_default(),
            ms(compile)
        );
    }
    Ok(())
}

/// The steps that took longest, with their share of the run.
fn print_profile(prog: &kiln_targets::plan::AotProgram, runs: usize) {
    let totals = kiln_targets::cpu::profile::totals();
    let all: Duration = totals.iter().sum();
    let mut order: Vec<usize> = (0..totals.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(totals[i]));
    eprintln!("{:>5} {:>9} {:>6}  node (kernels)", "step", "us/run", "%");
    for &i in order.iter().take(40) {
        let Some(step) = prog.steps.get(i) else {
            continue;
        };
        let kernels: Vec<&str> = step
            .program
            .kernels
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        eprintln!(
            "{:>5} {:>9.1} {:>6.2}  {} ({})",
            i,
            totals[i].as_secs_f64() * 1e6 / runs.max(1) as f64,
            100.0 * totals[i].as_secs_f64() / all.as_secs_f64().max(1e-12),
            step.node,
            kernels.join(", ")
        );
    }
}
