//! Fused vs unfused: the same small graphs run by the graph executor (every
//! node on its own, through its own lowering) and as fused kernel programs
//! planned ahead of time and run on the interpreter with their memory plan.

use crate::aot::{plan_model, run::run_plan};
use crate::exec::run_model;
use crate::passes;
use kiln_ir::graph::builder::Builder;
use kiln_ir::graph::{BinaryOp, UnaryOp};
use kiln_ir::kernel::call::{Activation, LibraryCall};
use kiln_ir::{DType, Model, Op, Tensor, TensorType, ValueId};

/// Deterministic values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn konst(m: &mut Model, name: &str, shape: Vec<usize>, seed: u64) -> ValueId {
    let n = shape.iter().product();
    m.add_const(name, Tensor::from_f32(shape, data(n, seed)))
}

fn scalar(m: &mut Model, name: &str, v: f32) -> ValueId {
    m.add_const(name, Tensor::from_f32(vec![], vec![v]))
}

/// A model with f32 inputs of `shapes`, built by `f`, returning its outputs.
fn model(
    shapes: &[Vec<usize>],
    f: impl FnOnce(&mut Builder, &[ValueId]) -> Vec<ValueId>,
) -> (Model, Vec<Tensor>) {
    let mut m = Model {
        name: "t".into(),
        ..Model::default()
    };
    let params: Vec<ValueId> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| m.add_value(format!("x{i}"), TensorType::known(DType::F32, s)))
        .collect();
    let mut b = Builder::new(&mut m);
    let results = f(&mut b, &params);
    let mut body = b.finish();
    body.params = params;
    body.results = results;
    m.body = body;
    let inputs = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Tensor::from_f32(s.clone(), data(s.iter().product(), 100 + i as u64)))
        .collect();
    (m, inputs)
}

fn add(b: &mut Builder, name: &str, op: Op, ins: &[ValueId]) -> ValueId {
    b.add(name, op, ins.iter().map(|&v| Some(v)).collect(), 1)
        .unwrap_or_else(|e| panic!("{e}"))[0]
}

fn bin(b: &mut Builder, name: &str, op: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
    add(b, name, Op::Binary { op }, &[x, y])
}

fn un(b: &mut Builder, name: &str, op: UnaryOp, x: ValueId) -> ValueId {
    add(b, name, Op::Unary { op }, &[x])
}

fn conv(k: usize, pad: usize, group: usize) -> Op {
    Op::Conv {
        kernel: vec![k, k],
        strides: vec![1, 1],
        pads: vec![pad; 4],
        dilations: vec![1, 1],
        group,
    }
}

/// Fuses the model, checks the number of fused groups and their sizes, and
/// compares fused (planned, interpreted) with unfused (executor) results.
fn check(m: Model, inputs: Vec<Tensor>, want_groups: &[usize]) {
    let want = run_model(&m, inputs.clone()).expect("unfused run");
    let mut fused = m.clone();
    passes::optimize(&mut fused).expect("optimize");
    let sizes: Vec<usize> = fused
        .body
        .nodes
        .iter()
        .filter(|n| n.op == Op::Fused)
        .map(|n| n.regions[0].nodes.len())
        .collect();
    assert_eq!(sizes, want_groups, "fused groups");
    kiln_ir::graph::verify::verify(&fused).expect("fused model verifies");
    // The executor runs a fused node through its body: same values.
    let again = run_model(&fused, inputs.clone()).expect("executor on fused model");
    let plan = plan_model(&m).expect("plan");
    let got = run_plan(&plan, &inputs).expect("run plan");
    for (g, w) in got.iter().chain(&again).zip(want.iter().chain(&want)) {
        assert_eq!(g.shape, w.shape);
        for (i, (a, e)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            assert!(
                (a - e).abs() <= 1e-5 + 1e-5 * e.abs(),
                "element {i}: fused {a}, unfused {e}"
            );
        }
    }
    // The text and binary forms keep the fused nodes.
    let text = kiln_ir::text::print(&fused);
    let parsed = kiln_ir::text::parse(&text).expect("parse printed fused model");
    assert_eq!(kiln_ir::text::print(&parsed), text);
    let bytes = kiln_ir::binary::encode(&fused);
    let decoded = kiln_ir::binary::decode(&bytes).expect("decode");
    assert_eq!(kiln_ir::text::print(&decoded), text);
}

#[test]
fn conv_bias_residual_relu_fuse_as_gemm_epilogue() {
    let (m, ins) = model(&[vec![1, 4, 6, 6], vec![1, 8, 6, 6]], |b, x| {
        let w = konst(b.model, "w", vec![8, 4, 3, 3], 1);
        let bias = konst(b.model, "b", vec![8], 2);
        let y = add(b, "conv", conv(3, 1, 1), &[x[0], w, bias]);
        let s = bin(b, "res", BinaryOp::Add, y, x[1]);
        vec![un(b, "relu", UnaryOp::Relu, s)]
    });
    check(m, ins, &[3]);
}

#[test]
fn depthwise_conv_and_clip_fuse_into_its_stores() {
    let (m, ins) = model(&[vec![1, 4, 5, 5]], |b, x| {
        let w = konst(b.model, "w", vec![4, 1, 3, 3], 3);
        let y = add(b, "dw", conv(3, 1, 4), &[x[0], w]);
        let lo = scalar(b.model, "lo", 0.0);
        let hi = scalar(b.model, "hi", 0.5);
        let y = bin(b, "max", BinaryOp::Max, y, lo);
        vec![bin(b, "min", BinaryOp::Min, y, hi)]
    });
    check(m, ins, &[3]);
}

/// A depthwise conv followed by SiLU keeps its library call, which records
/// the function; followed by a clamp then SiLU (the routine applies its
/// function before its clamp), the call computes the conv alone and a
/// second kernel applies the tail.
#[test]
fn depthwise_conv_and_silu_fuse_into_the_call() {
    let call_funcs = |clip_first: bool| {
        let (m, ins) = model(&[vec![1, 4, 5, 5]], |b, x| {
            let w = konst(b.model, "w", vec![4, 1, 3, 3], 3);
            let mut y = add(b, "dw", conv(3, 1, 4), &[x[0], w]);
            if clip_first {
                let lo = scalar(b.model, "lo", 0.0);
                y = bin(b, "max", BinaryOp::Max, y, lo);
            }
            let s = un(b, "sigmoid", UnaryOp::Sigmoid, y);
            vec![bin(b, "mul", BinaryOp::Mul, y, s)]
        });
        let plan = plan_model(&m).expect("plan");
        check(m, ins, &[if clip_first { 4 } else { 3 }]);
        plan.steps
            .iter()
            .flat_map(|s| &s.program.kernels)
            .filter_map(|k| match &k.call {
                Some(LibraryCall::Depthwise2d(d)) => Some((d.func, d.act)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let inf = (f32::NEG_INFINITY, f32::INFINITY);
    assert_eq!(call_funcs(false), vec![(Some(Activation::Silu), inf)]);
    assert_eq!(call_funcs(true), vec![(None, inf)]);
}

#[test]
fn matmul_bias_gelu_and_silu_fuse_with_shared_values() {
    let (m, ins) = model(&[vec![6, 16]], |b, x| {
        let w = konst(b.model, "w", vec![16, 8], 4);
        let bias = konst(b.model, "b", vec![8], 5);
        let y = add(b, "mm", Op::MatMul, &[x[0], w]);
        let y = bin(b, "bias", BinaryOp::Add, y, bias);
        // GELU as exported: x * 0.5 * (1 + erf(x / sqrt 2)); x has two users.
        let r2 = scalar(b.model, "sqrt2", std::f32::consts::SQRT_2);
        let one = scalar(b.model, "one", 1.0);
        let half = scalar(b.model, "half", 0.5);
        let d = bin(b, "div", BinaryOp::Div, y, r2);
        let e = un(b, "erf", UnaryOp::Erf, d);
        let p = bin(b, "add1", BinaryOp::Add, e, one);
        let g = bin(b, "mulx", BinaryOp::Mul, y, p);
        let g = bin(b, "half", BinaryOp::Mul, g, half);
        // A second group: an elementwise root with SiLU (x * sigmoid(x)).
        let w2 = konst(b.model, "w2", vec![8, 8], 6);
        let z = add(b, "mm2", Op::MatMul, &[g, w2]);
        let s = un(b, "sig", UnaryOp::Sigmoid, z);
        vec![bin(b, "silu", BinaryOp::Mul, z, s)]
    });
    check(m, ins, &[7, 3]);
}

#[test]
fn a_value_used_outside_the_chain_ends_it() {
    let (m, ins) = model(&[vec![2, 3, 4]], |b, x| {
        let e = un(b, "exp", UnaryOp::Exp, x[0]);
        let n = un(b, "neg", UnaryOp::Neg, e);
        let t = un(b, "tanh", UnaryOp::Tanh, n);
        // `e` is also a graph output: the group may only end at it.
        vec![t, e]
    });
    check(m, ins, &[2]);
}

#[test]
fn broadcast_group_values_are_not_fused() {
    let (m, ins) = model(&[vec![1, 3, 4, 4]], |b, x| {
        let p = add(
            b,
            "gap",
            Op::Reduce {
                op: kiln_ir::graph::ReduceOp::Mean,
                axes: Some(vec![2, 3]),
                keep_dims: true,
                noop_with_empty_axes: false,
            },
            &[x[0]],
        );
        // [1,3,1,1] * [1,3,4,4]: the group value would be read at many elements.
        vec![bin(b, "scale", BinaryOp::Mul, p, x[0])]
    });
    check(m, ins, &[]);
}

#[test]
fn a_dying_input_is_overwritten_in_place() {
    let (m, ins) = model(&[vec![1, 3, 4, 4]], |b, x| {
        let y = un(b, "neg", UnaryOp::Neg, x[0]);
        let p = add(
            b,
            "gap",
            Op::Reduce {
                op: kiln_ir::graph::ReduceOp::Mean,
                axes: Some(vec![2, 3]),
                keep_dims: true,
                noop_with_empty_axes: false,
            },
            &[y],
        );
        let z = bin(b, "scale", BinaryOp::Mul, p, y);
        let e = un(b, "exp", UnaryOp::Exp, z);
        vec![add(
            b,
            "softmax",
            Op::Softmax {
                axis: -1,
                log: false,
            },
            &[e],
        )]
    });
    let plan = plan_model(&m).expect("plan");
    // `scale` (fused with `exp`) reads `neg`'s output (its last use) at the
    // element it writes.
    let step = plan
        .steps
        .iter()
        .find(|s| s.node.starts_with("exp"))
        .expect("scale+exp step");
    let binding = |role: kiln_ir::kernel::BufferRole| {
        step.program
            .buffers
            .iter()
            .zip(&step.bindings)
            .find(|(b, _)| b.role == role)
            .map(|(_, l)| *l)
    };
    use kiln_ir::kernel::BufferRole::{Input, Output};
    assert_eq!(binding(Output(0)), binding(Input(1)), "{:?}", step.bindings);
    // Without the reuse, `scale` alone would need neg + gap + its output: 192 + 64 + 192.
    assert!(plan.arena_lower_bound < 448, "{}", plan.arena_lower_bound);
    assert_eq!(plan.arena_size, plan.arena_lower_bound);
    check(m, ins, &[2]);
}

#[test]
fn transposes_fold_into_the_gemm_views() {
    // Attention scores as exported: q and k split into heads by Transpose.
    let (m, ins) = model(&[vec![1, 5, 2, 8], vec![1, 5, 2, 8]], |b, x| {
        let q = add(
            b,
            "q",
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[x[0]],
        );
        let k = add(
            b,
            "kt",
            Op::Transpose {
                perm: vec![0, 2, 3, 1],
            },
            &[x[1]],
        );
        let s = add(b, "scores", Op::MatMul, &[q, k]);
        let c = scalar(b.model, "scale", 0.25);
        vec![bin(b, "scaled", BinaryOp::Mul, s, c)]
    });
    check(m, ins, &[4]);
    // A 2-D weight read transposed (Gemm with transB on a computed operand).
    let (m, ins) = model(&[vec![3, 6], vec![4, 6]], |b, x| {
        let t = add(b, "t", Op::Transpose { perm: vec![1, 0] }, &[x[1]]);
        vec![add(b, "mm", Op::MatMul, &[x[0], t])]
    });
    check(m, ins, &[2]);
}

#[test]
fn gemm_epilogue_indexes_bias_without_division() {
    let (m, _) = model(&[vec![6, 16]], |b, x| {
        let w = konst(b.model, "w", vec![16, 8], 4);
        let bias = konst(b.model, "b", vec![8], 5);
        let y = add(b, "mm", Op::MatMul, &[x[0], w]);
        vec![bin(b, "bias", BinaryOp::Add, y, bias)]
    });
    let plan = plan_model(&m).expect("plan");
    let [step] = plan.steps.as_slice() else {
        panic!("one fused step expected, got {}", plan.steps.len())
    };
    let text = format!("{:?}", step.program);
    assert!(text.contains("Matmul"), "{text}");
    assert!(
        !text.contains("Rem") && !text.contains("Div"),
        "{}",
        step.program
    );
}
