//! `kiln inspect`: what a model takes, gives, contains and costs.

use super::{model, stats, CmdResult};
use kiln_ir::{Model, ValueId};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model (.onnx, .kiln or .kilnb)
    pub model: PathBuf,
    /// Print one JSON object on stdout instead of a table
    #[arg(long)]
    pub json: bool,
    /// Report inputs, outputs, parameters and MACs of the simplified model
    /// (the op histogram always shows both)
    #[arg(long)]
    pub after_passes: bool,
}

fn io_json(m: &Model, ids: &[ValueId]) -> Value {
    Value::Array(
        ids.iter()
            .map(|&v| {
                let info = m.value(v);
                json!({ "name": info.name, "dtype": info.ty.dtype, "shape": info.ty.shape })
            })
            .collect(),
    )
}

/// The documented `--json` schema: `model`, `path`, `inputs`/`outputs` (`name`,
/// `dtype`, `shape` with numbers for known dims and strings for symbols),
/// `ops_before`/`ops_after` (op → count), `parameters`, `parameter_bytes`,
/// `macs` (null when any MAC-bearing node has symbolic dims), `after_passes`.
pub fn report(
    path: &std::path::Path,
    loaded: &Model,
    simplified: &Model,
    after_passes: bool,
) -> Value {
    let m = if after_passes { simplified } else { loaded };
    let (params, bytes) = m.param_stats();
    let macs = stats::macs(m);
    json!({
        "model": m.name,
        "path": path.display().to_string(),
        "inputs": io_json(m, m.inputs()),
        "outputs": io_json(m, m.outputs()),
        "ops_before": loaded.op_histogram(),
        "ops_after": simplified.op_histogram(),
        "parameters": params,
        "parameter_bytes": bytes,
        "macs": if macs.unknown == 0 { json!(macs.total) } else { Value::Null },
        "after_passes": after_passes,
        "fused_groups": kiln_compiler::passes::fused_patterns(simplified),
    })
}

fn print_io(title: &str, m: &Model, ids: &[ValueId]) {
    println!("{title}:");
    let w = ids
        .iter()
        .map(|&v| m.value(v).name.len())
        .max()
        .unwrap_or(0);
    for &v in ids {
        let info = m.value(v);
        println!("  {:w$}  {}", info.name, info.ty);
    }
}

fn print_histograms(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) {
    println!("ops:              loaded  simplified");
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for k in keys {
        let b = before.get(k).copied().unwrap_or(0);
        let a = after.get(k).copied().unwrap_or(0);
        println!("  {k:<20} {b:>6}  {a:>10}");
    }
    println!(
        "  {:<20} {:>6}  {:>10}",
        "total",
        before.values().sum::<usize>(),
        after.values().sum::<usize>()
    );
}

pub fn main(a: Args) -> CmdResult {
    let loaded = model::load(&a.model)?;
    // A model that fails to simplify is still worth describing: report it as
    // loaded, then fail with the pass's error.
    let mut simplified = loaded.clone();
    let mut simplify_result = model::simplify(&mut simplified);
    if a.after_passes && simplify_result.is_ok() {
        // After the passes means after fusion too: the graph a backend compiles.
        simplify_result = kiln_compiler::passes::fuse(&mut simplified)
            .map(|_| ())
            .map_err(|e| anyhow::Error::from(e).context("fusing operators"));
    }
    if simplify_result.is_err() {
        simplified = loaded.clone();
    }
    if a.json {
        let r = report(&a.model, &loaded, &simplified, a.after_passes);
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(anyhow::Error::from)?
        );
        return Ok(simplify_result?);
    }
    let m = if a.after_passes { &simplified } else { &loaded };
    println!(
        "model: {} ({})",
        if m.name.is_empty() {
            "<unnamed>"
        } else {
            &m.name
        },
        a.model.display()
    );
    print_io("inputs", m, m.inputs());
    print_io("outputs", m, m.outputs());
    let (params, bytes) = m.param_stats();
    println!(
        "parameters: {} ({})",
        stats::thousands(params as u64),
        stats::human_bytes(bytes)
    );
    let macs = stats::macs(m);
    match macs.unknown {
        0 => println!("MACs: {}", stats::thousands(macs.total)),
        n => println!(
            "MACs: at least {} ({n} nodes with symbolic shapes not counted)",
            stats::thousands(macs.total)
        ),
    }
    print_histograms(&loaded.op_histogram(), &simplified.op_histogram());
    let fused = kiln_compiler::passes::fused_patterns(&simplified);
    if !fused.is_empty() {
        let total = fused.values().sum::<usize>();
        println!("fused groups: {total} (each runs as one kernel program)");
        for (pattern, count) in &fused {
            println!("  {count:>5}  {pattern}");
        }
    }
    Ok(simplify_result?)
}
