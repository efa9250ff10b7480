//! Library calls: a promise, attached to a kernel by its lowering, that the
//! kernel's body computes exactly what a named library routine computes.
//!
//! The body stays the definition: the interpreter and every renderer that
//! does not know the routine run the body, and the routine is checked
//! against the body in tests. A renderer that has a faster implementation
//! (the CPU backend's runtime kernels, written with 256/512-bit vectors
//! Cranelift cannot emit) may call it instead. Passes that rewrite a body
//! must keep the promise true or drop it: fusion that applies a clamp (or
//! one of the [`Activation`]s, then a clamp) to a kernel's stores records
//! it in [`Depthwise2d::act`] (and [`Depthwise2d::func`]; the same fields
//! of [`Conv2d`]), anything else drops the call.

use super::{BinOp, BufId, Expr, Stmt, UnOp, VarId};
use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryCall {
    Depthwise2d(Depthwise2d),
    Conv2d(Conv2d),
    MaxPool2d(MaxPool2d),
    ExpRows(ExpRows),
}

/// f32 2-D max pooling over an input its lowering has already padded (with
/// -inf, and past the end where `ceil_mode` lets a window overrun): for
/// every plane `p < planes`, `y[p, oy, ox] = max over ky < k_h, kx < k_w of
/// x[p, oy·stride_h + ky·dil_h, ox·stride_w + kx·dil_w]`. `x` holds
/// `planes` planes of `in_h × in_w`, `y` of `out_h × out_w`, all dense.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxPool2d {
    pub x: BufId,
    pub y: BufId,
    pub planes: u64,
    pub in_h: u64,
    pub in_w: u64,
    pub out_h: u64,
    pub out_w: u64,
    pub k_h: u64,
    pub k_w: u64,
    pub stride_h: u64,
    pub stride_w: u64,
    pub dil_h: u64,
    pub dil_w: u64,
}

/// f32 2-D convolution of one group, NCHW, over an input its lowering has
/// already padded: for every image `n < batch`, `y[n, co, oy, ox] =
/// clamp(func(bias[co] + Σ w[co, ci, ky, kx] · x[n, ci, oy·sh + ky·dh,
/// ox·sw + kx·dw]), act)` over `ci < cin`, `ky < k_h`, `kx < k_w`. `x`
/// holds `batch·cin` planes of `in_h × in_w` (the padded size; every window
/// lies inside), `w` is `cout × cin × k_h × k_w`, `y` `batch·cout` planes
/// of `out_h × out_w`, all dense. With `phases > 1` (equal to `stride_w`)
/// each padded row is stored phase-split, column `p` at `(p % phases)·(in_w
/// / phases) + p / phases` (the copy strided im2col convs read).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    pub x: BufId,
    pub w: BufId,
    pub bias: Option<BufId>,
    pub y: BufId,
    pub batch: u64,
    pub cin: u64,
    pub cout: u64,
    pub in_h: u64,
    pub in_w: u64,
    pub out_h: u64,
    pub out_w: u64,
    pub k_h: u64,
    pub k_w: u64,
    pub stride_h: u64,
    pub stride_w: u64,
    pub dil_h: u64,
    pub dil_w: u64,
    pub phases: u64,
    /// Clamp bounds applied last (±∞: none).
    pub act: (f32, f32),
    /// A function applied before the clamp (None: identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub func: Option<Activation>,
}

/// The exponentials of softmax: `y[r·len + j] = exp(x[r·len + j] − m[r])`
/// for `r < rows`, `j < len`, all f32 (`m` holds each row's maximum, so
/// every argument is at most 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpRows {
    pub x: BufId,
    pub m: BufId,
    pub y: BufId,
    pub rows: u64,
    pub len: u64,
}

/// f32 2-D depthwise convolution, NCHW, one input channel per output
/// channel: for every plane `p < batch·channels` (weights and bias of
/// channel `p % channels`), `y[p, oy, ox] = clamp(func(bias + Σ w[c, ky,
/// kx] · x[p, oy·sh − pad_top + ky·dh, ox·sw − pad_left + kx·dw]), act)`
/// with zeros outside the input. Planes are contiguous (`in_h·in_w` and
/// `out_h·out_w`).
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
    /// A function applied before the clamp (None: identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub func: Option<Activation>,
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

/// A transcendental activation a fast routine may apply in place of the
/// expression that defines it (see [`peel_activation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `1 / (1 + exp(-x))`
    Sigmoid,
    /// `x · sigmoid(x)` (SiLU, Swish)
    Silu,
    /// `x/2 · (1 + erf(x/√2))`
    GeluErf,
    /// `tanh(x)`
    Tanh,
}

/// `value` as `(x, f)` with `value = f(x)` for one of the [`Activation`]s,
/// in the shapes the lowerings and ONNX exporters write them: sigmoid as
/// `1 / (1 + exp(-x))`; SiLU as `x · sigmoid(x)` (either order) or
/// `x / (1 + exp(-x))`; GELU as the product, in any order and grouping, of
/// `x`, `0.5` and `1 + erf(x / √2)` (or `erf(x · (1/√2))`), constants
/// being f32 literals or scalars of constant buffers. None for anything
/// else; `x` is the same expression at every occurrence.
pub fn peel_activation<'e>(value: &'e Expr, consts: Consts) -> Option<(&'e Expr, Activation)> {
    if let Expr::Unary(UnOp::Tanh, x) = value {
        return Some((x, Activation::Tanh));
    }
    if let Some(x) = sigmoid_of(value, consts) {
        return Some((x, Activation::Sigmoid));
    }
    match value {
        // x / (1 + exp(-x))
        Expr::Binary(BinOp::Div, x, d) => {
            let e = one_plus(d, consts)?;
            match e {
                Expr::Unary(UnOp::Exp, n) if matches!(&**n, Expr::Unary(UnOp::Neg, y) if y == x) => {
                    return Some((x, Activation::Silu))
                }
                _ => return None,
            }
        }
        Expr::Binary(BinOp::Mul, a, b) => {
            for (x, s) in [(a, b), (b, a)] {
                if sigmoid_of(s, consts) == Some(&**x) {
                    return Some((x, Activation::Silu));
                }
            }
        }
        _ => return None,
    }
    gelu_of(value, consts).map(|x| (x, Activation::GeluErf))
}

/// The constant `e` is, if it is one (an f32 literal or a scalar of a
/// constant buffer), within 1e-6 relative of `want`.
fn is_const(e: &Expr, want: f64, consts: Consts) -> bool {
    constant(e, consts).is_some_and(|v| ((v as f64) - want).abs() <= 1e-6 * want.abs())
}

/// `y` of `1 + y` or `y + 1`.
fn one_plus<'e>(e: &'e Expr, consts: Consts) -> Option<&'e Expr> {
    let Expr::Binary(BinOp::Add, a, b) = e else {
        return None;
    };
    if is_const(a, 1.0, consts) {
        Some(b)
    } else if is_const(b, 1.0, consts) {
        Some(a)
    } else {
        None
    }
}

/// `x` of `1 / (1 + exp(-x))`.
fn sigmoid_of<'e>(e: &'e Expr, consts: Consts) -> Option<&'e Expr> {
    let Expr::Binary(BinOp::Div, n, d) = e else {
        return None;
    };
    if !is_const(n, 1.0, consts) {
        return None;
    }
    match one_plus(d, consts)? {
        Expr::Unary(UnOp::Exp, m) => match &**m {
            Expr::Unary(UnOp::Neg, x) => Some(x),
            _ => None,
        },
        _ => None,
    }
}

/// The operands of a tree of `op` (`a op b op …` in any grouping), in order.
pub fn flatten<'e>(e: &'e Expr, op: BinOp, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Binary(o, a, b) if *o == op => {
            flatten(a, op, out);
            flatten(b, op, out);
        }
        _ => out.push(e),
    }
}

/// `x` of GELU's product `x · 0.5 · (1 + erf(x/√2))`.
fn gelu_of<'e>(e: &'e Expr, consts: Consts) -> Option<&'e Expr> {
    let mut fs = vec![];
    flatten(e, BinOp::Mul, &mut fs);
    let [a, b, c] = fs[..] else {
        return None;
    };
    let sqrt2 = std::f64::consts::SQRT_2;
    for (half, erf1, x) in [
        (a, b, c),
        (a, c, b),
        (b, a, c),
        (b, c, a),
        (c, a, b),
        (c, b, a),
    ] {
        if !is_const(half, 0.5, consts) {
            continue;
        }
        let Some(Expr::Unary(UnOp::Erf, arg)) = one_plus(erf1, consts) else {
            continue;
        };
        let scaled = match &**arg {
            Expr::Binary(BinOp::Div, y, k) => **y == *x && is_const(k, sqrt2, consts),
            Expr::Binary(BinOp::Mul, y, k) if **y == *x => is_const(k, 1.0 / sqrt2, consts),
            Expr::Binary(BinOp::Mul, k, y) if **y == *x => is_const(k, 1.0 / sqrt2, consts),
            _ => false,
        };
        if scaled {
            return Some(x);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    fn x() -> Expr {
        Expr::Load {
            buf: 3,
            index: Box::new(Expr::Var(0)),
        }
    }
    fn f(v: f64) -> Box<Expr> {
        Box::new(Expr::F(v, DType::F32))
    }
    fn bin(op: BinOp, a: Expr, b: Box<Expr>) -> Expr {
        Expr::Binary(op, Box::new(a), b)
    }
    fn un(op: UnOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    fn sigmoid(a: Expr) -> Expr {
        Expr::Binary(
            BinOp::Div,
            f(1.0),
            Box::new(bin(BinOp::Add, un(UnOp::Exp, un(UnOp::Neg, a)), f(1.0))),
        )
    }
    fn no_consts(_: BufId, _: i64) -> Option<f32> {
        None
    }

    #[test]
    fn activations_are_recognised_in_the_shapes_exporters_write() {
        let peel = |e: &Expr| peel_activation(e, &no_consts).map(|(a, f)| (a.clone(), f));
        assert_eq!(peel(&sigmoid(x())), Some((x(), Activation::Sigmoid)));
        let silu = bin(BinOp::Mul, x(), Box::new(sigmoid(x())));
        assert_eq!(peel(&silu), Some((x(), Activation::Silu)));
        let silu = bin(BinOp::Mul, sigmoid(x()), Box::new(x()));
        assert_eq!(peel(&silu), Some((x(), Activation::Silu)));
        assert_eq!(peel(&un(UnOp::Tanh, x())), Some((x(), Activation::Tanh)));
        // BERT's export: (x * (erf(x / 1.4142135) + 1)) * 0.5
        let erf = un(
            UnOp::Erf,
            bin(BinOp::Div, x(), f(std::f32::consts::SQRT_2 as f64)),
        );
        let gelu = bin(
            BinOp::Mul,
            bin(BinOp::Mul, x(), Box::new(bin(BinOp::Add, erf, f(1.0)))),
            f(0.5),
        );
        assert_eq!(peel(&gelu), Some((x(), Activation::GeluErf)));
        // ONNX Gelu's lowering: 0.5 * x * (1 + erf(x * 0.70710678))
        let erf = un(
            UnOp::Erf,
            bin(BinOp::Mul, x(), f(std::f64::consts::FRAC_1_SQRT_2)),
        );
        let gelu = bin(
            BinOp::Mul,
            bin(BinOp::Mul, Expr::F(0.5, DType::F32), Box::new(x())),
            Box::new(Expr::Binary(BinOp::Add, f(1.0), Box::new(erf))),
        );
        assert_eq!(peel(&gelu), Some((x(), Activation::GeluErf)));
    }

    #[test]
    fn near_misses_are_not_activations() {
        let peel = |e: &Expr| peel_activation(e, &no_consts).map(|(a, f)| (a.clone(), f));
        let other = Expr::Load {
            buf: 4,
            index: Box::new(Expr::Var(0)),
        };
        // x · sigmoid(y) is not SiLU.
        assert_eq!(peel(&bin(BinOp::Mul, x(), Box::new(sigmoid(other)))), None);
        // 2 / (1 + exp(-x)) is not a sigmoid.
        let two = Expr::Binary(
            BinOp::Div,
            f(2.0),
            Box::new(bin(BinOp::Add, un(UnOp::Exp, un(UnOp::Neg, x())), f(1.0))),
        );
        assert_eq!(peel(&two), None);
        // GELU with the wrong scale inside erf.
        let erf = un(UnOp::Erf, bin(BinOp::Div, x(), f(2.0)));
        let gelu = bin(
            BinOp::Mul,
            bin(BinOp::Mul, x(), Box::new(bin(BinOp::Add, erf, f(1.0)))),
            f(0.5),
        );
        assert_eq!(peel(&gelu), None);
        assert_eq!(peel(&un(UnOp::Exp, x())), None);
    }
}
