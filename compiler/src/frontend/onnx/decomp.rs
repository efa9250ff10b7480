//! ONNX ops with no kiln op of their own, expressed as small graphs of kiln
//! ops so that their meaning still comes from the existing lowerings.

use super::emit::node;
use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::PadMode;
use kiln_ir::graph::{BinaryOp, ReduceOp, UnaryOp};
use kiln_ir::{DType, Dim, Op, Region, Tensor, ValueId};

/// The ONNX ops this module expresses.
pub(crate) const OPS: &[&str] = &[
    "BlackmanWindow",
    "CenterCropPad",
    "HammingWindow",
    "HannWindow",
    "RMSNormalization",
    "Swish",
];

type Outs = Result<Vec<Option<ValueId>>, FrontendError>;

fn bin(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    op: BinaryOp,
    a: ValueId,
    b: ValueId,
) -> Result<ValueId, FrontendError> {
    node(imp, r, n, Op::Binary { op }, vec![Some(a), Some(b)])
}

fn un(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    op: UnaryOp,
    a: ValueId,
) -> Result<ValueId, FrontendError> {
    node(imp, r, n, Op::Unary { op }, vec![Some(a)])
}

fn cast(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    x: ValueId,
    to: DType,
) -> Result<ValueId, FrontendError> {
    if imp.ty(x).dtype == to {
        return Ok(x);
    }
    node(imp, r, n, Op::Cast { to }, vec![Some(x)])
}

pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    match n.p.op_type.as_str() {
        "RMSNormalization" => rms_norm(imp, r, n),
        "Swish" => swish(imp, r, n),
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => window(imp, r, n),
        "CenterCropPad" => center_crop_pad(imp, r, n),
        other => Err(n.bad(format!("op {other} has no mapping"))),
    }
}

/// `x / sqrt(mean(x², axes axis..) + epsilon) * scale`, computed in the stash type.
fn rms_norm(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (x, scale) = (imp.req(n, 0)?, imp.req(n, 1)?);
    let dtype = imp.ty(x).dtype;
    let rank = imp.ty(x).rank();
    let axis = kiln_ir::infer::norm_axis(n.i("axis", -1), rank).map_err(|e| n.bad(e.msg))?;
    let stash = match n.i("stash_type", 1) {
        1 => DType::F32,
        s => super::tensor::dtype_of(s as i32, &n.name)?,
    };
    let xs = cast(imp, r, n, x, stash)?;
    let sq = bin(imp, r, n, BinaryOp::Mul, xs, xs)?;
    let red = Op::Reduce {
        op: ReduceOp::Mean,
        axes: Some((axis as i64..rank as i64).collect()),
        keep_dims: true,
        noop_with_empty_axes: false,
    };
    let ms = node(imp, r, n, red, vec![Some(sq)])?;
    let eps = imp.scalar(stash, n.f("epsilon", 1e-5) as f64);
    let ms = bin(imp, r, n, BinaryOp::Add, ms, eps)?;
    let rms = un(imp, r, n, UnaryOp::Sqrt, ms)?;
    let y = bin(imp, r, n, BinaryOp::Div, xs, rms)?;
    let y = cast(imp, r, n, y, dtype)?;
    let s = cast(imp, r, n, scale, dtype)?;
    let y = imp.add1(
        r,
        &n.name,
        Op::Binary { op: BinaryOp::Mul },
        vec![Some(y), Some(s)],
    )?;
    Ok(vec![Some(y)])
}

/// `x * sigmoid(alpha * x)`.
fn swish(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    let alpha = n.f("alpha", 1.0);
    let mut z = x;
    if alpha != 1.0 {
        let a = imp.scalar(imp.ty(x).dtype, alpha as f64);
        z = bin(imp, r, n, BinaryOp::Mul, x, a)?;
    }
    let s = un(imp, r, n, UnaryOp::Sigmoid, z)?;
    let y = imp.add1(
        r,
        &n.name,
        Op::Binary { op: BinaryOp::Mul },
        vec![Some(x), Some(s)],
    )?;
    Ok(vec![Some(y)])
}

/// `sum_j c_j cos(2π j n / N')` over `n in 0..size`, with `N' = size` when
/// periodic and `size - 1` otherwise; Hann is `sin²(π n / N')`.
fn window(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let size = imp.req(n, 0)?;
    let it = imp.ty(size).dtype;
    let out = match n.attr("output_datatype") {
        Some(a) => super::tensor::dtype_of(a.i as i32, &n.name)?,
        None => DType::F32,
    };
    let ct = DType::F32;
    let zero = imp.scalar(it, 0.0);
    let one_i = imp.scalar(it, 1.0);
    let ni = node(
        imp,
        r,
        n,
        Op::Range,
        vec![Some(zero), Some(size), Some(one_i)],
    )?;
    let ni = cast(imp, r, n, ni, ct)?;
    let mut n1 = cast(imp, r, n, size, ct)?;
    if n.i("periodic", 1) == 0 {
        let one = imp.scalar(ct, 1.0);
        n1 = bin(imp, r, n, BinaryOp::Sub, n1, one)?;
    }
    // cos(k π n / N') for one multiple k.
    let wave = |imp: &mut Importer, r: &mut Region, k: f64, sin: bool| {
        let c = imp.scalar(ct, k * std::f64::consts::PI);
        let ph = bin(imp, r, n, BinaryOp::Mul, ni, c)?;
        let ph = bin(imp, r, n, BinaryOp::Div, ph, n1)?;
        un(imp, r, n, if sin { UnaryOp::Sin } else { UnaryOp::Cos }, ph)
    };
    let y = match n.p.op_type.as_str() {
        "HannWindow" => {
            let s = wave(imp, r, 1.0, true)?;
            bin(imp, r, n, BinaryOp::Mul, s, s)?
        }
        "HammingWindow" => {
            let alpha = 25.0 / 46.0;
            let c = wave(imp, r, 2.0, false)?;
            let b = imp.scalar(ct, -(1.0 - alpha));
            let t = bin(imp, r, n, BinaryOp::Mul, c, b)?;
            let a = imp.scalar(ct, alpha);
            bin(imp, r, n, BinaryOp::Add, t, a)?
        }
        _ => {
            let c2 = wave(imp, r, 2.0, false)?;
            let c4 = wave(imp, r, 4.0, false)?;
            let k2 = imp.scalar(ct, -0.5);
            let k4 = imp.scalar(ct, 0.08);
            let t2 = bin(imp, r, n, BinaryOp::Mul, c2, k2)?;
            let t4 = bin(imp, r, n, BinaryOp::Mul, c4, k4)?;
            let t = bin(imp, r, n, BinaryOp::Add, t2, t4)?;
            let a = imp.scalar(ct, 0.42);
            bin(imp, r, n, BinaryOp::Add, t, a)?
        }
    };
    let y = imp.add1(r, &n.name, Op::Cast { to: out }, vec![Some(y)])?;
    Ok(vec![Some(y)])
}

/// A Pad over the named axes whose (possibly negative) amounts centre the
/// input in the target extent: `before = trunc((target - dim) / 2)`.
fn center_crop_pad(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (x, shape) = (imp.req(n, 0)?, imp.req(n, 1)?);
    let xs = imp.ty(x).shape.clone();
    let rank = xs.len();
    let axes: Vec<usize> = match n.ints("axes") {
        Some(a) => a
            .iter()
            .map(|&v| kiln_ir::infer::norm_axis(v, rank).map_err(|e| n.bad(e.msg)))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let dims = axes
        .iter()
        .map(|&a| match xs[a] {
            Dim::Known(d) => Ok(d as i64),
            _ => Err(n.shape_err(format!("axis {a} must have a known extent"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let k = axes.len();
    let xd = imp.add_const(&n.name, Tensor::from_i64(vec![k], dims));
    let target = cast(imp, r, n, shape, DType::I64)?;
    let diff = bin(imp, r, n, BinaryOp::Sub, target, xd)?;
    let zero = imp.scalar(DType::I64, 0.0);
    let two = imp.scalar(DType::I64, 2.0);
    let grow = bin(imp, r, n, BinaryOp::Max, diff, zero)?;
    let grow = bin(imp, r, n, BinaryOp::Div, grow, two)?;
    let neg = un(imp, r, n, UnaryOp::Neg, diff)?;
    let shrink = bin(imp, r, n, BinaryOp::Max, neg, zero)?;
    let shrink = bin(imp, r, n, BinaryOp::Div, shrink, two)?;
    let before = bin(imp, r, n, BinaryOp::Sub, grow, shrink)?;
    let after = bin(imp, r, n, BinaryOp::Sub, diff, before)?;
    let pads = node(
        imp,
        r,
        n,
        Op::Concat { axis: 0 },
        vec![Some(before), Some(after)],
    )?;
    let axes_t = imp.add_const(
        &n.name,
        Tensor::from_i64(vec![k], axes.iter().map(|&a| a as i64).collect()),
    );
    let op = Op::Pad {
        mode: PadMode::Constant,
        pads: None,
        value: 0.0,
    };
    let y = imp.add1(
        r,
        &n.name,
        op,
        vec![Some(x), Some(pads), None, Some(axes_t)],
    )?;
    Ok(vec![Some(y)])
}

/// Training-mode BatchNormalization: normalises with the batch statistics
/// (mean and population variance over all axes but 1) and outputs the running
/// statistics `stat * momentum + batch_stat * (1 - momentum)`.
pub(crate) fn batch_norm_training(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let ins = (0..5)
        .map(|i| imp.req(n, i))
        .collect::<Result<Vec<_>, _>>()?;
    let (x, s, b, mean, var) = (ins[0], ins[1], ins[2], ins[3], ins[4]);
    let xt = imp.ty(x).clone();
    let rank = xt.rank();
    if rank < 2 {
        return Err(n.shape_err(format!("input must have rank >= 2, got {rank}")));
    }
    let c = xt.shape[1].clone();
    let axes: Vec<i64> = (0..rank as i64).filter(|&a| a != 1).collect();
    let red = Op::Reduce {
        op: ReduceOp::Mean,
        axes: Some(axes),
        keep_dims: true,
        noop_with_empty_axes: false,
    };
    let mk = node(imp, r, n, red.clone(), vec![Some(x)])?;
    let d = bin(imp, r, n, BinaryOp::Sub, x, mk)?;
    let d2 = bin(imp, r, n, BinaryOp::Mul, d, d)?;
    let vk = node(imp, r, n, red, vec![Some(d2)])?;
    let flat = Op::Reshape {
        shape: Some(vec![c]),
    };
    let bm = node(imp, r, n, flat.clone(), vec![Some(mk)])?;
    let bv = node(imp, r, n, flat, vec![Some(vk)])?;
    let op = Op::BatchNorm {
        epsilon: n.f("epsilon", 1e-5),
    };
    let y = imp.add1(
        r,
        &n.name,
        op,
        vec![Some(x), Some(s), Some(b), Some(bm), Some(bv)],
    )?;
    let momentum = n.f("momentum", 0.9) as f64;
    let mut outs = vec![Some(y)];
    for (k, (run, batch)) in [(mean, bm), (var, bv)].into_iter().enumerate() {
        if !n.p.output.get(k + 1).is_some_and(|o| imp.is_used(o)) {
            outs.push(None);
            continue;
        }
        let dt = imp.ty(run).dtype;
        let m = imp.scalar(dt, momentum);
        let m1 = imp.scalar(dt, 1.0 - momentum);
        let batch = cast(imp, r, n, batch, dt)?;
        let a = bin(imp, r, n, BinaryOp::Mul, run, m)?;
        let bb = bin(imp, r, n, BinaryOp::Mul, batch, m1)?;
        outs.push(Some(bin(imp, r, n, BinaryOp::Add, a, bb)?));
    }
    Ok(outs)
}
