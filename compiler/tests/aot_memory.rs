//! Every reference model planned ahead of time with fusion and in-place reuse:
//! the arena must stay within 1.10x the peak of simultaneously-live bytes,
//! and the plan, run on the interpreter with its memory plan, must reproduce
//! onnxruntime's outputs (`.io.npz`).
//!
//! `cargo test --release -p kiln-compiler --test aot_memory -- --nocapture`
//! prints one line per model: nodes before/after fusion, arena, bound, ratio.

use kiln_compiler::aot::{plan_model, run::run_plan};
use kiln_ir::kernel::BufferRole;
use kiln_ir::{Op, Tensor};
use kiln_targets::plan::BufferLoc;
use std::path::{Path, PathBuf};

fn models_dir() -> PathBuf {
    let shared = std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let d = shared.join("models");
    assert!(
        d.is_dir(),
        "reference models not found at '{}' (set KILN_SHARED)",
        d.display()
    );
    d
}

/// `|got - want| <= 1e-4 + 1e-3·|want|`, the tolerance the models' README gives for f32.
fn check_close(name: &str, k: usize, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape, "{name}: output {k} shape");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let bad: Vec<(usize, f64, f64)> = g
        .iter()
        .zip(&w)
        .enumerate()
        .filter(|(_, (a, e))| {
            let ok = if e.is_nan() || a.is_nan() {
                e.is_nan() && a.is_nan()
            } else {
                a == e || (*a - *e).abs() <= 1e-4 + 1e-3 * e.abs()
            };
            !ok
        })
        .map(|(i, (a, e))| (i, *a, *e))
        .take(5)
        .collect();
    assert!(
        bad.is_empty(),
        "{name}: output {k} differs from the reference at (index, got, want) {bad:?}"
    );
}

fn check(name: &str) {
    let dir = models_dir();
    let mut model = kiln_compiler::frontend::load_model(&dir.join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{name}: load: {e}"));
    kiln_compiler::passes::simplify(&mut model).unwrap_or_else(|e| panic!("{name}: {e}"));
    let before = model.body.nodes.len();
    let mut fused = model.clone();
    kiln_compiler::passes::optimize(&mut fused).unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = fused.body.nodes.len();
    let groups = fused
        .body
        .nodes
        .iter()
        .filter(|n| n.op == Op::Fused)
        .count();
    let prog = plan_model(&model).unwrap_or_else(|e| panic!("{name}: plan: {e}"));
    let ratio = prog.arena_size as f64 / prog.arena_lower_bound.max(1) as f64;
    // Steps whose output was placed over one of their inputs.
    let in_place = prog
        .steps
        .iter()
        .filter(|s| {
            let at = |out: bool| {
                s.program
                    .buffers
                    .iter()
                    .zip(&s.bindings)
                    .filter(move |(b, _)| matches!(b.role, BufferRole::Output(_)) == out)
                    .filter(|(b, _)| !matches!(b.role, BufferRole::Scratch))
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
            };
            let ins = at(false);
            at(true)
                .iter()
                .any(|o| matches!(o, BufferLoc::Arena(_)) && ins.contains(o))
        })
        .count();
    println!(
        "{name}: nodes {before} -> {after} ({groups} fused groups), {} steps ({in_place} in place), arena {} B, lower bound {} B, ratio {ratio:.3}",
        prog.steps.len(),
        prog.arena_size,
        prog.arena_lower_bound
    );
    assert!(
        prog.arena_size as f64 <= 1.10 * prog.arena_lower_bound as f64,
        "{name}: arena {} exceeds 1.10 x lower bound {}",
        prog.arena_size,
        prog.arena_lower_bound
    );
    let arrays = kiln_compiler::io::read_npz(&dir.join(format!("{name}.io.npz")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let pick = |prefix: &str| {
        let mut v: Vec<(usize, Tensor)> = arrays
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.parse().ok()?, t.clone())))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, t)| t).collect::<Vec<_>>()
    };
    let (ins, wants) = (pick("in_"), pick("out_"));
    let got = run_plan(&prog, &ins).unwrap_or_else(|e| panic!("{name}: run: {e}"));
    assert_eq!(got.len(), wants.len(), "{name}: number of outputs");
    for (k, (g, w)) in got.iter().zip(&wants).enumerate() {
        check_close(name, k, g, w);
    }
}

macro_rules! models {
    ($($t:ident),* $(,)?) => {
        $(
            #[test]
            fn $t() {
                check(stringify!($t));
            }
        )*
    };
}

models!(
    mnist_mlp,
    mnist_cnn,
    kws_dscnn,
    keras_kws_dscnn,
    squeezenet1_1,
    mobilenet_v2,
    lstm_speech,
    bert_tiny,
    tiny_transformer,
    tf_while_loop,
    tf_cond,
    onnxzoo_light_squeezenet,
    onnxzoo_light_resnet50,
    onnxzoo_light_inception_v1,
);

/// The test list above is every model of the shared set: a new model must be added.
#[test]
fn every_reference_model_is_listed() {
    let listed = [
        "mnist_mlp",
        "mnist_cnn",
        "kws_dscnn",
        "keras_kws_dscnn",
        "squeezenet1_1",
        "mobilenet_v2",
        "lstm_speech",
        "bert_tiny",
        "tiny_transformer",
        "tf_while_loop",
        "tf_cond",
        "onnxzoo_light_squeezenet",
        "onnxzoo_light_resnet50",
        "onnxzoo_light_inception_v1",
    ];
    let mut found: Vec<String> = std::fs::read_dir(models_dir())
        .expect("read models dir")
        .filter_map(|e| {
            let p = e.ok()?.path();
            if p.extension()? != "onnx" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    let mut want: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}
