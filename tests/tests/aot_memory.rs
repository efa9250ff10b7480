//! Every reference model planned ahead of time with fusion and in-place reuse:
//! the arena must stay within 1.10x the peak of simultaneously-live bytes,
//! and the plan, run on the interpreter with its memory plan, must reproduce
//! onnxruntime's outputs (`.io.npz`).
//!
//! `cargo test --release -p kiln-tests --test aot_memory -- --nocapture`
//! prints one line per model: nodes before/after fusion, arena, bound, ratio.

use kiln_compiler::aot::{plan_model, run::run_plan};
use kiln_ir::kernel::BufferRole;
use kiln_ir::Op;
use kiln_targets::plan::{AotStep, BufferLoc};
use kiln_tests::{assert_lists_every_model, compare_all, load, load_io, model_path};

/// Whether the step placed one of its outputs over one of its inputs.
fn in_place(s: &AotStep) -> bool {
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
}

fn check(name: &str) {
    let model = load(&model_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
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
    let in_place = prog.steps.iter().filter(|s| in_place(s)).count();
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
    let (ins, wants) = load_io(name);
    assert!(
        !wants.is_empty(),
        "{name}: the .io.npz holds no out_* arrays"
    );
    let got = run_plan(&prog, &ins).unwrap_or_else(|e| panic!("{name}: run: {e}"));
    if let Err(e) = compare_all(&got, &wants) {
        panic!("{name}: planned run: {e}");
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

        /// The test list above is every model of the shared set: a new model must be added.
        #[test]
        fn every_reference_model_is_listed() {
            assert_lists_every_model(&[$(stringify!($t)),*]);
        }
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
