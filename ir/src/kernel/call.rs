//! Library calls: a promise, attached to a kernel by its lowering, that the
//! kernel's body computes exactly what a named library routine computes.
//!
//! The body stays the definition: the interpreter and every renderer that
//! does not know the routine run the body, and the routine is checked
//! against the body in tests. A renderer that has a faster implementation
//! (the CPU backend's runtime kernels, written with 256/512-bit vectors
//! Cranelift cannot emit) may call it instead. Passes that rewrite a body
//! must keep the promise true or drop it: fusion that applies a clamp to a
//! kernel's stores records it in [`Depthwise2d::act`], anything else drops
//! the call.

use super::{BinOp, BufId, Expr, Stmt, VarId};
use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryCall {
    Depthwise2d(Depthwise2d),
}

/// f32 2-D depthwise convolution, NCHW, one input channel per output
/// channel: for every plane `p < batch·channels` (weights and bias of
/// channel `p % channels`), `y[p, oy, ox] = clamp(bias + Σ w[c, ky, kx] ·
/// x[p, oy·sh − pad_top + ky·dh, ox·sw − pad_left + kx·dw], act)` with zeros
/// outside the input. Planes are contiguous (`in_h·in_w` and `out_h·out_w`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Depthwise2d {
    pub x: BufId,
    pub w: BufId,
    pub bias: Option<BufId>,
    pub y: BufId,
    pub batch: u64,
    pub channels: u64,
    pub in_h: u64,
    pub in_w: u64,
    pub out_h: u64,
    pub out_w: u64,
    pub k_h: u64,
    pub k_w: u64,
    pub stride_h: u64,
    pub stride_w: u64,
    pub pad_top: u64,
    pub pad_left: u64,
    pub dil_h: u64,
    pub dil_w: u64,
    /// Clamp bounds applied last (±∞: none).
    pub act: (f32, f32),
}

/// Reads a scalar of a constant buffer: `Load(buf, constant index)` → value.
pub type Consts<'a> = &'a dyn Fn(BufId, i64) -> Option<f32>;

fn constant(e: &Expr, consts: Consts) -> Option<f32> {
    let v = match e {
        Expr::F(v, DType::F32) => *v as f32,
        Expr::Load { buf, index } => match **index {
            Expr::I(i, _) => consts(*buf, i)?,
            _ => return None,
        },
        _ => return None,
    };
    (!v.is_nan()).then_some(v)
}

/// `value` as `(inner, lo, hi)`: the clamp `min(max(inner, lo), hi)` (or
/// one side of it) around `inner`, bounds being f32 constants or scalars of
/// constant buffers; `(value, −∞, ∞)` when there is none. NaN in `inner`
/// passes through such a clamp, as through the vector `max`/`min` of every
/// target, so a kernel may apply the bounds with those instructions.
pub fn peel_clamp<'e>(value: &'e Expr, consts: Consts) -> (&'e Expr, f32, f32) {
    match value {
        Expr::Binary(BinOp::Max, x, c) => {
            if let Some(lo) = constant(c, consts) {
                return (x, lo, f32::INFINITY);
            }
        }
        Expr::Binary(BinOp::Min, inner, h) => {
            if let Some(hi) = constant(h, consts) {
                if let Expr::Binary(BinOp::Max, x, l) = &**inner {
                    if let Some(lo) = constant(l, consts) {
                        return (x, lo, hi);
                    }
                }
                return (inner, f32::NEG_INFINITY, hi);
            }
        }
        _ => {}
    }
    (value, f32::NEG_INFINITY, f32::INFINITY)
}

/// `e` with let-bound variables replaced by their values and f32 casts
/// dropped (for matching the shape of a value computed in f32 throughout).
pub fn inline_lets(e: &Expr, lets: &HashMap<VarId, Expr>) -> Expr {
    match e {
        Expr::Var(v) => lets.get(v).cloned().unwrap_or_else(|| e.clone()),
        Expr::Cast(DType::F32, a) => inline_lets(a, lets),
        Expr::Binary(op, a, b) => Expr::Binary(
            *op,
            Box::new(inline_lets(a, lets)),
            Box::new(inline_lets(b, lets)),
        ),
        Expr::Unary(op, a) => Expr::Unary(*op, Box::new(inline_lets(a, lets))),
        Expr::Load { buf, index } => Expr::Load {
            buf: *buf,
            index: Box::new(inline_lets(index, lets)),
        },
        other => other.clone(),
    }
}

/// A straight-line body `let …; buf[index] = value` as its store with the
/// value's lets inlined (see [`inline_lets`]): `(buf, index, value)`.
pub fn final_store(body: &[Stmt]) -> Option<(BufId, &Expr, Expr)> {
    let (last, lets) = body.split_last()?;
    let mut env = HashMap::new();
    for s in lets {
        let Stmt::Let { var, value } = s else {
            return None;
        };
        let v = inline_lets(value, &env);
        env.insert(*var, v);
    }
    let Stmt::Store { buf, index, value } = last else {
        return None;
    };
    Some((*buf, index, inline_lets(value, &env)))
}
