//! ONNX ops with no kiln op of their own, expressed as small graphs of kiln
//! ops so that their meaning still comes from the existing lowerings.

use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{BinaryOp, ReduceOp, UnaryOp};
use kiln_ir::{DType, Op, Region, ValueId};

/// The ONNX ops this module expresses.
pub(crate) const OPS: &[&str] = &["RMSNormalization", "Swish"];

type Outs = Result<Vec<Option<ValueId>>, FrontendError>;

/// Adds an intermediate node named after the ONNX node.
fn node(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    op: Op,
    ins: Vec<Option<ValueId>>,
) -> Result<ValueId, FrontendError> {
    let nm = imp.fresh(&n.name);
    imp.add1(r, &nm, op, ins)
}

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
