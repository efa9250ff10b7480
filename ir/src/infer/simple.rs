//! Inference for elementwise ops, reductions, softmax and the shape/index generators.

use super::{bail, broadcast_shapes, known, norm_axis, unknown, Inputs, Result};
use crate::dtype::DType;
use crate::graph::{BinaryOp, Op, UnaryOp};
use crate::shape::{Dim, TensorType};

pub(super) fn infer(op: &Op, inp: &Inputs) -> Result<Vec<TensorType>> {
    Ok(match op {
        Op::Unary { op } => {
            let x = inp.ty(0)?;
            let dtype = match op {
                UnaryOp::IsNan | UnaryOp::IsInf { .. } => DType::Bool,
                _ => x.dtype,
            };
            check_unary_dtype(op, x.dtype)?;
            vec![TensorType::new(dtype, x.shape.clone())]
        }
        Op::Binary { op } => {
            let (a, b) = (inp.ty(0)?, inp.ty(1)?);
            let shape = broadcast_shapes(&a.shape, &b.shape)?;
            if a.dtype != b.dtype
                && !matches!(
                    op,
                    BinaryOp::Pow | BinaryOp::BitShiftLeft | BinaryOp::BitShiftRight
                )
            {
                bail!("input dtypes differ: {} and {}", a.dtype, b.dtype);
            }
            let dtype = if op.is_comparison() {
                DType::Bool
            } else {
                a.dtype
            };
            if matches!(op, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor) && a.dtype != DType::Bool
            {
                bail!("logical op needs bool inputs, got {}", a.dtype);
            }
            vec![TensorType::new(dtype, shape)]
        }
        Op::Select => {
            let (c, a, b) = (inp.ty(0)?, inp.ty(1)?, inp.ty(2)?);
            if c.dtype != DType::Bool {
                bail!("condition must be bool, got {}", c.dtype);
            }
            if a.dtype != b.dtype {
                bail!("branches have dtypes {} and {}", a.dtype, b.dtype);
            }
            let s = broadcast_shapes(&broadcast_shapes(&c.shape, &a.shape)?, &b.shape)?;
            vec![TensorType::new(a.dtype, s)]
        }
        Op::Cast { to } => vec![TensorType::new(*to, inp.ty(0)?.shape.clone())],
        Op::Identity => vec![inp.ty(0)?.clone()],
        Op::Dropout { .. } => {
            let x = inp.ty(0)?;
            vec![x.clone(), TensorType::new(DType::Bool, x.shape.clone())]
        }
        Op::Reduce {
            axes,
            keep_dims,
            noop_with_empty_axes,
            ..
        } => {
            let x = inp.ty(0)?;
            let Some(axes) = axes else {
                // Axes arrive at run time: the rank is known when keep_dims, or from
                // the length of the axes input (ONNX forbids repeated axes).
                let n_axes = inp
                    .opt_ty(1)
                    .and_then(|t| t.dims())
                    .and_then(|d| d.first().copied());
                let rank = match (*keep_dims, n_axes) {
                    (true, _) => x.rank(),
                    (false, Some(0)) if *noop_with_empty_axes => x.rank(),
                    (false, Some(0)) => 0,
                    (false, Some(k)) if k <= x.rank() => x.rank() - k,
                    _ => bail!("reduction axes must be known to infer the output rank"),
                };
                let shape = (0..rank).map(|i| unknown("reduce", i)).collect();
                return Ok(vec![TensorType::new(x.dtype, shape)]);
            };
            let axes = reduce_axes(axes, x.rank(), *noop_with_empty_axes)?;
            vec![TensorType::new(
                x.dtype,
                reduced_shape(&x.shape, &axes, *keep_dims),
            )]
        }
        Op::ArgReduce {
            axis, keep_dims, ..
        } => {
            let x = inp.ty(0)?;
            let a = norm_axis(*axis, x.rank())?;
            vec![TensorType::new(
                DType::I64,
                reduced_shape(&x.shape, &[a], *keep_dims),
            )]
        }
        Op::CumSum { .. } | Op::Softmax { .. } | Op::Hardmax { .. } => {
            let x = inp.ty(0)?;
            if let Op::Softmax { axis, .. } | Op::Hardmax { axis } = op {
                norm_axis(*axis, x.rank())?;
            }
            vec![x.clone()]
        }
        Op::Shape { start, end } => {
            let r = inp.ty(0)?.rank() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            vec![TensorType::known(DType::I64, &[(e - s).max(0) as usize])]
        }
        Op::Size => vec![TensorType::known(DType::I64, &[])],
        Op::ConstantOfShape { shape, value } => match shape {
            Some(s) => vec![TensorType::known(value.dtype, s)],
            None => {
                let n = match inp.opt_ty(0).and_then(|t| t.dims()) {
                    Some(d) if d.len() == 1 => d[0],
                    _ => bail!("shape input must be a 1-D tensor of known length"),
                };
                vec![TensorType::new(
                    value.dtype,
                    (0..n).map(|i| unknown("cos", i)).collect(),
                )]
            }
        },
        Op::Range => {
            let t = inp.ty(0)?;
            let len = match (inp.konst(0), inp.konst(1), inp.konst(2)) {
                (Some(s), Some(l), Some(d)) => {
                    let (s, l, d) = (s.data.get_f64(0), l.data.get_f64(0), d.data.get_f64(0));
                    if d == 0.0 {
                        bail!("Range delta is zero");
                    }
                    Dim::Known(((l - s) / d).ceil().max(0.0) as usize)
                }
                _ => unknown("range", 0),
            };
            vec![TensorType::new(t.dtype, vec![len])]
        }
        Op::NonZero => {
            let x = inp.ty(0)?;
            let n = match inp.konst(0) {
                Some(t) => Dim::Known((0..t.len()).filter(|&i| t.data.get_f64(i) != 0.0).count()),
                None => unknown("nonzero", 0),
            };
            vec![TensorType::new(DType::I64, vec![Dim::Known(x.rank()), n])]
        }
        Op::EyeLike { dtype, .. } => {
            let x = inp.ty(0)?;
            if x.rank() != 2 {
                bail!("EyeLike needs a 2-D input, got rank {}", x.rank());
            }
            vec![TensorType::new(dtype.unwrap_or(x.dtype), x.shape.clone())]
        }
        _ => unreachable!("not a simple op"),
    })
}

fn check_unary_dtype(op: &UnaryOp, dtype: DType) -> Result<()> {
    let ok = match op {
        UnaryOp::Not => dtype == DType::Bool,
        UnaryOp::BitwiseNot => dtype.is_int(),
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Relu => dtype != DType::Bool,
        _ => dtype.is_float(),
    };
    if !ok {
        bail!("dtype {dtype} not supported");
    }
    Ok(())
}

/// Normalised, sorted, deduplicated reduction axes; empty axes mean all (or none when `noop`).
pub fn reduce_axes(axes: &[i64], rank: usize, noop: bool) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok(if noop { vec![] } else { (0..rank).collect() });
    }
    let mut out = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub fn reduced_shape(shape: &[Dim], axes: &[usize], keep: bool) -> Vec<Dim> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (true, true) => Some(Dim::Known(1)),
            (true, false) => None,
            (false, _) => Some(d.clone()),
        })
        .collect()
}

#[allow(dead_code)]
pub(crate) fn same(x: &TensorType) -> Vec<TensorType> {
    vec![TensorType::new(x.dtype, known(&[]))]
}
