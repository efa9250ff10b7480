//! Round trips of kiln's text and binary forms, hand-written text, and errors.

use kiln_ir::graph::builder::Builder;
use kiln_ir::graph::*;
use kiln_ir::shape::Dim;
use kiln_ir::{binary, text, DType, Model, Storage, Tensor, TensorType};

fn t(dtype: DType, dims: &[Dim]) -> TensorType {
    TensorType::new(dtype, dims.to_vec())
}

fn sym(s: &str) -> Dim {
    Dim::Sym(s.into())
}

fn k(n: usize) -> Dim {
    Dim::Known(n)
}

/// One op of every kind, with non-default parameters where they exist.
fn all_ops() -> Vec<Op> {
    use Op::*;
    let conv = |t: bool| {
        if t {
            ConvTranspose {
                kernel: vec![3, 3],
                strides: vec![2, 2],
                pads: vec![1, 1, 1, 1],
                dilations: vec![1, 1],
                group: 1,
                output_padding: vec![1, 0],
            }
        } else {
            Conv {
                kernel: vec![3, 3],
                strides: vec![1, 1],
                pads: vec![0, 0, 1, 1],
                dilations: vec![1, 2],
                group: 4,
            }
        }
    };
    vec![
        Unary { op: UnaryOp::Relu },
        Unary {
            op: UnaryOp::LeakyRelu { alpha: 0.01 },
        },
        Unary {
            op: UnaryOp::Selu {
                alpha: 1.6732632,
                gamma: 1.050701,
            },
        },
        Unary {
            op: UnaryOp::IsInf {
                detect_positive: true,
                detect_negative: false,
            },
        },
        Unary {
            op: UnaryOp::Gelu { tanh: true },
        },
        Unary {
            op: UnaryOp::Shrink {
                bias: -0.0,
                lambd: f32::MIN_POSITIVE,
            },
        },
        Unary {
            op: UnaryOp::HardSigmoid {
                alpha: 1.0 / 6.0,
                beta: 0.5,
            },
        },
        Binary {
            op: BinaryOp::PRelu,
        },
        Binary {
            op: BinaryOp::BitShiftRight,
        },
        Select,
        Cast { to: DType::BF16 },
        Identity,
        Reduce {
            op: ReduceOp::LogSumExp,
            axes: Some(vec![-1, 0]),
            keep_dims: true,
            noop_with_empty_axes: false,
        },
        Reduce {
            op: ReduceOp::Sum,
            axes: None,
            keep_dims: false,
            noop_with_empty_axes: true,
        },
        ArgReduce {
            max: true,
            axis: -1,
            keep_dims: false,
            select_last_index: true,
        },
        CumSum {
            axis: None,
            exclusive: true,
            reverse: false,
            prod: false,
        },
        MatMul,
        conv(false),
        conv(true),
        Pool {
            kind: PoolKind::Avg {
                count_include_pad: true,
            },
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            ceil_mode: true,
        },
        Pool {
            kind: PoolKind::Lp { p: 3.0 },
            kernel: vec![2],
            strides: vec![1],
            pads: vec![0, 0],
            dilations: vec![1],
            ceil_mode: false,
        },
        Pool {
            kind: PoolKind::Max,
            kernel: vec![3],
            strides: vec![1],
            pads: vec![1, 1],
            dilations: vec![1],
            ceil_mode: false,
        },
        BatchNorm { epsilon: 1e-5 },
        InstanceNorm { epsilon: 1e-6 },
        LayerNorm {
            axis: -1,
            epsilon: 1e-12,
        },
        GroupNorm {
            num_groups: 8,
            epsilon: 1e-5,
        },
        Lrn {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            bias: 2.0,
        },
        LpNorm { axis: 1, p: 2 },
        MeanVarianceNorm {
            axes: vec![0, 2, 3],
        },
        Softmax {
            axis: -1,
            log: true,
        },
        Hardmax { axis: 1 },
        Einsum {
            equation: "bij,bjk->bik".into(),
        },
        Reshape {
            shape: Some(vec![sym("N"), k(784), sym("?"), sym("unk__1")]),
        },
        Reshape { shape: None },
        Transpose {
            perm: vec![0, 2, 3, 1],
        },
        Concat { axis: -3 },
        Split {
            axis: 1,
            sizes: Some(vec![2, 2]),
        },
        Split {
            axis: 0,
            sizes: None,
        },
        Slice {
            axes: Some(vec![SliceAxis {
                axis: 1,
                start: -1,
                end: i64::MIN,
                step: -1,
            }]),
        },
        Slice { axes: None },
        Gather { axis: 0 },
        GatherElements { axis: 1 },
        GatherNd { batch_dims: 1 },
        ScatterElements {
            axis: 0,
            reduction: ScatterReduction::Max,
        },
        ScatterNd {
            reduction: ScatterReduction::None,
        },
        Pad {
            mode: PadMode::Reflect,
            pads: Some(vec![0, -1, 2, 3]),
            value: f64::NEG_INFINITY,
        },
        Pad {
            mode: PadMode::Constant,
            pads: None,
            value: 0.1,
        },
        Expand {
            shape: Some(vec![1, -1, 4]),
        },
        Tile {
            repeats: Some(vec![1, 2]),
        },
        DepthToSpace {
            block: 2,
            crd: true,
        },
        SpaceToDepth { block: 2 },
        Trilu {
            upper: false,
            k: Some(-2),
        },
        Resize {
            mode: ResizeMode::Cubic,
            coord: CoordTransform::TfCropAndResize,
            nearest: NearestMode::RoundPreferCeil,
            cubic_coeff: -0.75,
            exclude_outside: true,
            extrapolation_value: f32::INFINITY,
            scales: Some(vec![1.0, 1.0, 2.5, 1e-7]),
            sizes: None,
        },
        ReverseSequence {
            batch_axis: 1,
            time_axis: 0,
        },
        Compress { axis: Some(-1) },
        Shape {
            start: 1,
            end: Some(-1),
        },
        Size,
        ConstantOfShape {
            shape: Some(vec![2, 3]),
            value: ScalarValue {
                dtype: DType::F32,
                value: f64::NEG_INFINITY,
            },
        },
        ConstantOfShape {
            shape: None,
            value: ScalarValue {
                dtype: DType::I64,
                value: 1e300,
            },
        },
        Range,
        NonZero,
        TopK {
            axis: -1,
            largest: false,
            sorted: true,
            k: Some(5),
        },
        OneHot {
            axis: -1,
            depth: None,
        },
        EyeLike {
            k: 1,
            dtype: Some(DType::U8),
        },
        EyeLike { k: 0, dtype: None },
    ]
}

/// A model with every op, weird names, duplicate names, all const dtypes,
/// absent inputs, symbolic dims and nested regions.
fn big_model() -> Model {
    let mut m = Model {
        name: "every op \"quoted\"".into(),
        ..Default::default()
    };
    let x = m.add_value(
        "input",
        t(DType::F32, &[sym("N"), k(3), sym("?"), sym("seq len")]),
    );
    let cond = m.add_value("cond:0", t(DType::Bool, &[]));
    let consts = [
        Storage::F32(vec![
            1.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            1e-45,
        ]),
        Storage::F16(vec![0x3c00, 0x8000, 0x7c00, 0x0001, 0x7bff, 0x1234]),
        Storage::BF16(vec![0x3f80, 0x8000, 0x7f80, 0x0001, 0x7f7f, 0x4049]),
        Storage::F64(vec![
            0.1,
            -0.0,
            f64::INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ]),
        Storage::I8(vec![-128, 127, 0, 1, -1, 5]),
        Storage::U8(vec![0, 255, 1, 2, 3, 4]),
        Storage::I16(vec![i16::MIN, i16::MAX, 0, 1, -1, 7]),
        Storage::U16(vec![0, u16::MAX, 1, 2, 3, 4]),
        Storage::I32(vec![i32::MIN, i32::MAX, 0, 1, -1, 7]),
        Storage::U32(vec![0, u32::MAX, 1, 2, 3, 4]),
        Storage::I64(vec![i64::MIN, i64::MAX, 0, 1, -1, 7]),
        Storage::U64(vec![0, u64::MAX, 1, 2, 3, 4]),
        Storage::Bool(vec![true, false, true, true, false, false]),
    ];
    let mut cids = vec![];
    for (i, s) in consts.into_iter().enumerate() {
        let name = if i % 2 == 0 {
            "w".to_string()
        } else {
            format!("/layer.{i}/weight:0")
        };
        cids.push(m.add_const(name, Tensor::new(vec![2, 3], s).unwrap()));
    }
    // A big constant that prints as hex, and a scalar.
    let big: Vec<f32> = (0..100).map(|i| i as f32 * 0.37 - 5.0).collect();
    let bigc = m.add_const("big", Tensor::from_f32(vec![10, 10], big));
    let scalar = m.add_const("", Tensor::scalar_f64(DType::I64, -3.0));

    let mut b = Builder::new(&mut m);
    let mut last = x;
    for (i, op) in all_ops().into_iter().enumerate() {
        let nout = if matches!(op, Op::Split { .. } | Op::TopK { .. }) {
            2
        } else {
            1
        };
        let inputs = vec![Some(last), None, Some(cids[i % cids.len()]), Some(scalar)];
        let ty = t(DType::F32, &[sym("N"), k(i)]);
        let name = match i % 4 {
            0 => format!("node {i}"),
            1 => "dup".to_string(),
            2 => String::new(),
            _ => format!("n:{i}:"),
        };
        let outs = b.add_typed(name, op, inputs, vec![ty; nout], vec![]);
        last = outs[0];
    }
    let y = b
        .add("relu", Op::Unary { op: UnaryOp::Relu }, vec![Some(bigc)], 1)
        .unwrap()[0];
    let mut first = b.finish();
    let region_builder = |m: &mut Model, with_params: bool, inner: Option<(Region, Region)>| {
        let mut rb = Builder::new(m);
        let params = if with_params {
            vec![
                rb.model.add_value("iter", t(DType::I64, &[])),
                rb.model.add_value("cond", t(DType::Bool, &[])),
            ]
        } else {
            vec![]
        };
        let v = rb.add_typed(
            "then_out",
            Op::Identity,
            vec![Some(y)],
            vec![t(DType::F32, &[k(10), k(10)])],
            vec![],
        );
        let mut res = v.clone();
        if let Some(inner) = inner {
            res = rb.add_typed(
                "inner_if",
                Op::If,
                vec![Some(cond)],
                vec![t(DType::F32, &[k(10), k(10)])],
                vec![inner.0, inner.1],
            );
        }
        let mut r = rb.finish();
        r.params = params;
        r.results = res;
        r
    };
    let inner = (
        region_builder(&mut m, false, None),
        region_builder(&mut m, false, None),
    );
    let then_r = region_builder(&mut m, false, Some(inner));
    let else_r = region_builder(&mut m, false, None);
    let loop_body = region_builder(&mut m, true, None);
    let mut b = Builder::new(&mut m);
    let iff = b.add_typed(
        "if",
        Op::If,
        vec![Some(cond)],
        vec![t(DType::F32, &[k(10), k(10)])],
        vec![then_r, else_r],
    );
    let lp = b.add_typed(
        "loop",
        Op::Loop,
        vec![None, Some(cond)],
        vec![],
        vec![loop_body],
    );
    assert!(lp.is_empty());
    let mut body = b.finish();
    first.nodes.append(&mut body.nodes);
    m.body = first;
    m.body.params = vec![x, cond];
    m.body.results = vec![last, iff[0], x];
    // A value no node defines.
    m.add_value("dangling", t(DType::U8, &[k(0)]));
    m
}

fn assert_text_round_trip(m: &Model) -> String {
    let s = text::print(m);
    let back = text::parse(&s).unwrap_or_else(|e| panic!("{e}\n{s}"));
    assert_eq!(&back, m, "\n{s}");
    assert_eq!(text::print(&back), s);
    s
}

#[test]
fn text_round_trips_every_op() {
    let m = big_model();
    let s = assert_text_round_trip(&m);
    if std::env::var("KILN_PRINT").is_ok() {
        println!("{s}");
    }
    assert!(
        s.contains("order "),
        "builder order differs from definition order:\n{s}"
    );
    assert!(s.contains("%dup#1"));
    assert!(s.contains("dense<hex \""));
    assert!(s.contains("{op: {leaky_relu: {alpha: 0.01}}}"), "{s}");
}

#[test]
fn binary_round_trips_every_op() {
    let m = big_model();
    let b = binary::encode(&m);
    assert_eq!(binary::decode(&b).unwrap(), m);
}

#[test]
fn a_built_model_in_definition_order_prints_no_order() {
    let mut m = Model {
        name: "mlp".into(),
        ..Default::default()
    };
    let w = m.add_const("fc.weight", Tensor::from_f32(vec![4, 2], vec![0.5; 8]));
    let x = m.add_value("x", t(DType::F32, &[sym("N"), k(4)]));
    let mut b = Builder::new(&mut m);
    let h = b.add("mm", Op::MatMul, vec![Some(x), Some(w)], 1).unwrap()[0];
    let y = b
        .add("relu", Op::Unary { op: UnaryOp::Relu }, vec![Some(h)], 1)
        .unwrap()[0];
    let nodes = b.finish().nodes;
    m.body = Region {
        params: vec![x],
        nodes,
        results: vec![y],
    };
    let s = assert_text_round_trip(&m);
    assert!(!s.contains("order"), "{s}");
}

#[test]
fn nan_and_signed_zero_survive_bit_for_bit() {
    let mut m = Model::default();
    let nan = f32::from_bits(0x7fc0_1234);
    let neg_nan = f32::from_bits(0xffc0_0000);
    let c = m.add_const(
        "c",
        Tensor::from_f32(vec![5], vec![nan, neg_nan, -0.0, f32::INFINITY, 1.0]),
    );
    let h = m.add_const(
        "h",
        Tensor::new(vec![2], Storage::F16(vec![0x7e01, 0xfc00])).unwrap(),
    );
    let mut b = Builder::new(&mut m);
    let o = b.add_typed(
        "fill",
        Op::ConstantOfShape {
            shape: Some(vec![1]),
            value: ScalarValue {
                dtype: DType::F32,
                value: f64::NAN,
            },
        },
        vec![],
        vec![t(DType::F32, &[k(1)])],
        vec![],
    );
    let nodes = b.finish().nodes;
    m.body = Region {
        params: vec![],
        nodes,
        results: vec![c, h, o[0]],
    };
    let bytes = |m: &Model| {
        m.consts
            .values()
            .map(|t| t.data.to_le_bytes())
            .collect::<Vec<_>>()
    };
    let s = text::print(&m);
    let back = text::parse(&s).unwrap();
    assert_eq!(bytes(&back), bytes(&m));
    assert_eq!(text::print(&back), s);
    assert!(s.contains("value: nan"), "{s}");
    let back = binary::decode(&binary::encode(&m)).unwrap();
    assert_eq!(bytes(&back), bytes(&m));
    assert_eq!(text::print(&back), s);
}

const HAND_WRITTEN: &str = r#"
kiln 1
model "hand"
// weights written as decimals, nested lists read flattened
const %w: f32[2,2] = dense<[[1, 2.5], [-3, 1e-3]]>
const %b: f32[2] = dense<hex "0000803f00000040">
const %flag: bool[] = dense<[true]>
func(%x: f32[batch,2], %"weird name": i64[]) {
  %h = mat_mul(%x, %w) : f32[batch,2] @"/fc/MatMul"
  %y = binary(%h, %b) {op: add} : f32[batch,2]
  %p, %q = split(%y) {axis: 1, sizes: [1, 1]} : f32[batch,1], f32[batch,1]
  %z = unary(%p) {op: {leaky_relu: {alpha: 0.2}}} : f32[batch,1]
  %s = slice(%z, _, _) : f32[batch,1]
  %c = if(%flag) : f32[batch,1] {
    then { return %z }
    else {
      %n = unary(%q) {op: neg} : f32[batch,1]
      return %n
    }
  }
  return %c, %"weird name"
}
"#;

#[test]
fn hand_written_text_parses() {
    let m = text::parse(HAND_WRITTEN).unwrap();
    assert_eq!(m.name, "hand");
    assert_eq!(
        m.consts[&ValueId(0)].data,
        Storage::F32(vec![1.0, 2.5, -3.0, 1e-3])
    );
    assert_eq!(m.consts[&ValueId(1)].data, Storage::F32(vec![1.0, 2.0]));
    let names: Vec<&str> = m.body.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["/fc/MatMul", "y", "p", "z", "s", "c"]);
    assert_eq!(
        m.body.nodes[3].op,
        Op::Unary {
            op: UnaryOp::LeakyRelu { alpha: 0.2 }
        }
    );
    assert_eq!(m.body.nodes[4].op, Op::Slice { axes: None });
    assert_eq!(m.body.nodes[4].inputs[1], None);
    assert_eq!(m.body.nodes[5].regions.len(), 2);
    assert_eq!(m.value(m.body.params[1]).name, "weird name");
    assert_eq!(m.ty(m.body.params[0]).shape, vec![sym("batch"), k(2)]);
    kiln_ir::graph::verify::verify(&m).unwrap();
    assert_text_round_trip(&m);
}

fn err_at(src: &str) -> (usize, usize, String) {
    let e = text::parse(src).unwrap_err();
    (e.line, e.col, e.msg)
}

#[test]
fn text_errors_have_positions() {
    let (l, c, msg) = err_at("kiln 1\nfunc() {\n  %y = mat_mul(%x, %x) : f32[2]\n  return %y\n}\n");
    assert_eq!((l, c), (3, 16), "{msg}");
    assert!(msg.contains("%x") && msg.contains("not defined"), "{msg}");

    let (l, c, msg) = err_at("kiln 1\nfunc() {\n  %y = nosuchop() : f32[2]\n  return %y\n}\n");
    assert_eq!((l, c), (3, 8));
    assert!(msg.contains("nosuchop"), "{msg}");

    let (l, c, msg) = err_at(
        "kiln 1\nfunc(%x: f32[2]) {\n  %y = conv(%x) {kernel: [3]} : f32[2]\n  return %y\n}\n",
    );
    assert_eq!((l, c), (3, 8));
    assert!(msg.contains("missing field"), "{msg}");

    let (l, c, _) = err_at("kiln 1\nfunc(%x: f33[2]) { return }");
    assert_eq!((l, c), (2, 10));
    let (l, c, _) = err_at("kiln 1\nconst %w: f32[3] = dense<[1, 2]>\nfunc() { return }");
    assert_eq!(l, 2, "{c}");
    let (l, _, _) = err_at("kiln 1\nfunc(%x: f32[], %x: f32[]) { return }");
    assert_eq!(l, 2);
    let (l, _, _) = err_at("kiln 1\nfunc() { return ");
    assert_eq!(l, 2);
    let (l, c, _) = err_at("kiln 2");
    assert_eq!((l, c), (1, 6));
    assert!(text::parse("kiln 1\nfunc() { return } $").is_err());
    assert!(text::parse("kiln 1\nconst %w: u8[2] = dense<[1, 256]>\nfunc() { return }").is_err());
    assert!(text::parse("kiln 1\nfunc() { return }\norder 0").is_err());
}

/// Cheap deterministic fuzzing: truncations and byte edits of a printed model never panic.
#[test]
fn mangled_inputs_never_panic() {
    let m = big_model();
    let s = text::print(&m);
    let chars: Vec<char> = s.chars().collect();
    let step = (chars.len() / 400).max(1);
    for cut in (0..chars.len()).step_by(step) {
        let _ = text::parse(&chars[..cut].iter().collect::<String>());
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let replacements = [
        '{', '}', '(', ')', '[', ']', '%', '"', ',', ':', '-', '9', 'a', '#', '@', '\n', '<', '>',
    ];
    let iters: usize = std::env::var("KILN_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for _ in 0..iters {
        let mut c = chars.clone();
        for _ in 0..3 {
            let i = next() as usize % c.len();
            c[i] = replacements[next() as usize % replacements.len()];
        }
        let _ = text::parse(&c.iter().collect::<String>());
    }
    let deep = format!(
        "kiln 1\nfunc() {{ %y = unary() {{op: {}1{}}} : f32[] return %y }}",
        "[".repeat(100000),
        "]".repeat(100000)
    );
    assert!(text::parse(&deep).is_err());

    let bin = binary::encode(&m);
    for cut in 0..bin.len() {
        assert!(binary::decode(&bin[..cut]).is_err());
    }
    for _ in 0..iters * 7 {
        let mut b = bin.clone();
        for _ in 0..4 {
            let i = next() as usize % b.len();
            b[i] = next() as u8;
        }
        let _ = binary::decode(&b);
    }
}

#[test]
fn binary_rejects_garbage() {
    assert!(matches!(
        binary::decode(b"nope"),
        Err(binary::BinaryError::Magic)
    ));
    assert!(binary::decode(b"KILN\xff\xff\xff").is_err());
    let m = text::parse(HAND_WRITTEN).unwrap();
    let mut bin = binary::encode(&m);
    assert_eq!(binary::decode(&bin).unwrap(), m);
    bin.truncate(bin.len() - 3);
    assert!(binary::decode(&bin).is_err());
}
