//! The C backend end to end: plan a model, render C99, compile it with the host
//! `cc -std=c99 -O2 -Wall -Werror`, run it, and compare with the references
//! (the `.io.npz` files for whole models, the interpreter for single ops).

use kiln_compiler::aot::plan_model;
use kiln_compiler::exec::eval_op;
use kiln_compiler::lower::{lower, LowerCtx};
use kiln_ir::graph::{BinaryOp, UnaryOp};
use kiln_ir::infer::infer_types;
use kiln_ir::kernel::BufferRole;
use kiln_ir::{DType, Op, Storage, Tensor, TensorType};
use kiln_targets::c::{render, test_main};
use kiln_targets::plan::{AotIo, AotProgram, AotStep, BufferLoc};
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Renders, compiles and runs `prog`; returns the raw outputs.
fn run_c(prog: &AotProgram, tag: &str, inputs: &[Tensor], cflags: &[&str]) -> Vec<Storage> {
    let src = render(prog, tag).unwrap_or_else(|e| panic!("{tag}: {e}"));
    let dir = std::env::temp_dir().join(format!("kiln_c_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let name = &src.name;
    std::fs::write(dir.join(format!("{name}.c")), &src.source).expect("write .c");
    std::fs::write(dir.join(format!("{name}.h")), &src.header).expect("write .h");
    std::fs::write(dir.join("main.c"), test_main(tag)).expect("write main.c");
    let exe = dir.join("prog");
    let out = Command::new("cc")
        .args(["-std=c99", "-O2", "-Wall", "-Werror"])
        .args(cflags)
        .arg("-o")
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(dir.join(format!("{name}.c")))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{tag}: cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(&exe);
    for (i, t) in inputs.iter().enumerate() {
        let p = dir.join(format!("in{i}.bin"));
        std::fs::write(&p, t.data.to_le_bytes()).expect("write input");
        cmd.arg(p);
    }
    let outs: Vec<PathBuf> = (0..prog.outputs.len())
        .map(|k| dir.join(format!("out{k}.bin")))
        .collect();
    cmd.args(&outs);
    let r = cmd.output().expect("run program");
    assert!(
        r.status.success(),
        "{tag}: program failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let res = prog
        .outputs
        .iter()
        .zip(&outs)
        .map(|(io, p)| {
            let bytes = std::fs::read(p).expect("read output");
            Storage::from_le_bytes(io.dtype, &bytes).expect("output size")
        })
        .collect();
    if std::env::var_os("KILN_C_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    res
}

/// Largest violation of `|got-want| <= abs + rel·|want|` (NaN must match NaN); `<= 0` passes.
fn worst(got: &Storage, want: &Storage, abs: f64, rel: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let mut w = f64::NEG_INFINITY;
    for i in 0..want.len() {
        let (g, e) = (got.get_f64(i), want.get_f64(i));
        let v = if e.is_nan() || g.is_nan() {
            if e.is_nan() == g.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if e.is_infinite() || g.is_infinite() {
            if e == g {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (g - e).abs() - (abs + rel * e.abs())
        };
        if v > 0.0 {
            eprintln!("  mismatch at {i}: got {g}, want {e}");
        }
        w = w.max(v);
    }
    w
}

fn check_model(name: &str) {
    let dir = models_dir();
    let mut model =
        kiln_compiler::frontend::load_model(&dir.join(format!("{name}.onnx"))).expect("load model");
    kiln_compiler::passes::simplify(&mut model).expect("simplify");
    let prog = plan_model(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name}: {} steps, {} weights, arena {} bytes, lower bound {} bytes ({:.3}x)",
        prog.steps.len(),
        prog.weights.len(),
        prog.arena_size,
        prog.arena_lower_bound,
        prog.arena_size as f64 / prog.arena_lower_bound.max(1) as f64
    );
    assert!(
        prog.arena_size as f64 <= 1.10 * prog.arena_lower_bound as f64,
        "{name}: arena too large"
    );
    let arrays =
        kiln_compiler::io::read_npz(&dir.join(format!("{name}.io.npz"))).expect("read npz");
    let pick = |prefix: &str| {
        let mut v: Vec<(usize, Tensor)> = arrays
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.parse().ok()?, t.clone())))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, t)| t).collect::<Vec<_>>()
    };
    let (ins, wants) = (pick("in_"), pick("out_"));
    assert_eq!(wants.len(), prog.outputs.len());
    // One model also checks that users can move the weights into a section of their own.
    let flags: &[&str] = if name == "mnist_mlp" {
        &["-DKILN_WEIGHTS_SECTION=__attribute__((section(\".rodata.kiln\")))"]
    } else {
        &[]
    };
    let got = run_c(&prog, name, &ins, flags);
    for (k, (g, w)) in got.iter().zip(&wants).enumerate() {
        let v = worst(g, &w.data, 1e-4, 1e-3);
        assert!(v <= 0.0, "{name}: output {k} differs from the reference");
    }
}

#[test]
fn c_mnist_mlp() {
    check_model("mnist_mlp");
}

#[test]
fn c_mnist_cnn() {
    check_model("mnist_cnn");
}

#[test]
fn c_kws_dscnn() {
    check_model("kws_dscnn");
}

/// ONNX `If` compiled ahead of time (a data-dependent branch).
#[test]
fn c_tf_cond() {
    check_model("tf_cond");
}

/// ONNX `Loop` with a trip count from an input, compiled to a `while` loop.
#[test]
fn c_tf_while_loop() {
    check_model("tf_while_loop");
}

/// A 2-layer LSTM (unrolled by the frontend) and a transformer through C.
#[test]
fn c_lstm_speech() {
    check_model("lstm_speech");
}

#[test]
fn c_tiny_transformer() {
    check_model("tiny_transformer");
}

/// A one-step program for `op` on concrete inputs, lowered as `eval_op` lowers it.
fn op_program(op: &Op, vals: &[Tensor]) -> AotProgram {
    let types: Vec<Option<TensorType>> = vals
        .iter()
        .map(|t| Some(TensorType::known(t.dtype(), &t.shape)))
        .collect();
    let none: Vec<Option<&Tensor>> = vec![None; vals.len()];
    let outs = infer_types(op, &types, &none, 1, &[]).expect("infer");
    let cx = LowerCtx {
        node: "n",
        op,
        inputs: &types,
        outputs: &outs,
        consts: &none,
    };
    let program = lower(&cx).expect("lower");
    let mut arena = 0;
    let bindings = program
        .buffers
        .iter()
        .map(|b| match b.role {
            BufferRole::Input(i) => BufferLoc::Input(i),
            BufferRole::Output(k) => BufferLoc::Output(k),
            BufferRole::Scratch => {
                let at = arena;
                arena += (b.len * b.dtype.size()).div_ceil(64) * 64;
                BufferLoc::Arena(at)
            }
        })
        .collect();
    let io = |t: &TensorType, i: usize| AotIo {
        name: format!("v{i}"),
        dtype: t.dtype,
        shape: t.dims().unwrap_or_default(),
    };
    AotProgram {
        name: "op".into(),
        steps: vec![AotStep {
            node: "n".into(),
            program,
            bindings,
        }],
        weights: vec![],
        inputs: types
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| io(t, i)))
            .collect(),
        outputs: outs.iter().enumerate().map(|(i, t)| io(t, i)).collect(),
        output_copies: vec![],
        arena_size: arena,
        arena_lower_bound: arena,
    }
}

fn check_op(tag: &str, op: Op, vals: Vec<Tensor>, abs: f64, rel: f64) {
    let refs: Vec<Option<&Tensor>> = vals.iter().map(Some).collect();
    let want = eval_op("n", &op, &refs, 1).expect("interpreter");
    let got = run_c(&op_program(&op, &vals), tag, &vals, &[]);
    let v = worst(&got[0], &want[0].data, abs, rel);
    assert!(v <= 0.0, "{tag}: C differs from the interpreter");
}

fn sample_values() -> Vec<f32> {
    let mut v: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.0371).collect();
    v.extend([
        0.0,
        -0.0,
        1e-7,
        -1e-7,
        1e-30,
        30.0,
        -30.0,
        88.0,
        -100.0,
        1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    v
}

#[test]
fn c_unary_math_matches_interpreter() {
    let x = sample_values();
    let n = x.len();
    let t = Tensor::from_f32(vec![n], x.clone());
    let pos = Tensor::from_f32(vec![n], x.iter().map(|v| v.abs() * 3.0).collect());
    let unit = Tensor::from_f32(
        vec![n],
        x.iter().map(|v| (v / 15.0).clamp(-1.0, 1.0)).collect(),
    );
    let ops = [
        ("exp", UnaryOp::Exp, &t),
        ("tanh", UnaryOp::Tanh, &t),
        ("erf", UnaryOp::Erf, &t),
        ("sigmoid", UnaryOp::Sigmoid, &t),
        ("gelu", UnaryOp::Gelu { tanh: false }, &t),
        ("gelu_tanh", UnaryOp::Gelu { tanh: true }, &t),
        ("sin", UnaryOp::Sin, &t),
        ("cos", UnaryOp::Cos, &t),
        ("atan", UnaryOp::Atan, &t),
        ("softplus", UnaryOp::Softplus, &t),
        ("log", UnaryOp::Log, &pos),
        ("sqrt", UnaryOp::Sqrt, &pos),
        ("round", UnaryOp::Round, &t),
        ("tan", UnaryOp::Tan, &t),
        ("sinh", UnaryOp::Sinh, &t),
        ("cosh", UnaryOp::Cosh, &t),
        ("asinh", UnaryOp::Asinh, &t),
        ("acosh", UnaryOp::Acosh, &pos),
        ("asin", UnaryOp::Asin, &unit),
        ("acos", UnaryOp::Acos, &unit),
        ("atanh", UnaryOp::Atanh, &unit),
        ("floor", UnaryOp::Floor, &t),
        ("ceil", UnaryOp::Ceil, &t),
    ];
    for (tag, op, input) in ops {
        // About 4 ulp of f32, plus a denormal-sized absolute slack.
        check_op(
            &format!("u_{tag}"),
            Op::Unary { op },
            vec![input.clone()],
            1e-37,
            4.0 * f32::EPSILON as f64,
        );
    }
}

#[test]
fn c_pow_matches_interpreter() {
    let a = Tensor::from_f32(vec![6], vec![2.0, -3.0, 0.5, 10.0, 0.0, -2.0]);
    let b = Tensor::from_f32(vec![6], vec![0.5, 3.0, -2.25, 2.0, 2.0, 0.5]);
    check_op(
        "pow",
        Op::Binary { op: BinaryOp::Pow },
        vec![a, b],
        1e-37,
        4.0 * f32::EPSILON as f64,
    );
}

#[test]
fn c_softmax_matches_interpreter() {
    let x = Tensor::from_f32(
        vec![3, 7],
        (0..21)
            .map(|i| ((i * 37) % 11) as f32 * 0.7 - 3.0)
            .collect(),
    );
    check_op(
        "softmax",
        Op::Softmax {
            axis: -1,
            log: false,
        },
        vec![x.clone()],
        1e-7,
        1e-5,
    );
    check_op(
        "logsoftmax",
        Op::Softmax { axis: 0, log: true },
        vec![x],
        1e-6,
        1e-5,
    );
}

#[test]
fn c_integer_ops_match_interpreter() {
    let a = Tensor {
        shape: vec![6],
        data: Storage::I32(vec![7, -7, i32::MIN, 5, 0, 100]),
    };
    let b = Tensor {
        shape: vec![6],
        data: Storage::I32(vec![2, 2, -1, 0, 3, -7]),
    };
    check_op(
        "idiv",
        Op::Binary { op: BinaryOp::Div },
        vec![a.clone(), b.clone()],
        0.0,
        0.0,
    );
    check_op(
        "imod",
        Op::Binary { op: BinaryOp::Mod },
        vec![a.clone(), b.clone()],
        0.0,
        0.0,
    );
    check_op(
        "imul",
        Op::Binary { op: BinaryOp::Mul },
        vec![a, b],
        0.0,
        0.0,
    );
    let f = Tensor::from_f32(
        vec![6],
        vec![300.0, -2.7, f32::NAN, 1.0 / 3.0, -1e10, 127.9],
    );
    check_op("cast_i8", Op::Cast { to: DType::I8 }, vec![f], 0.0, 0.0);
}
