//! The statements around a GEMM that the kernel call absorbs.
//!
//! Lowerings express a GEMM's epilogue in plain kernel IR, so every
//! renderer computes it; this backend recognises two shapes and hands them
//! to the runtime kernel, which applies them while `C` is still in
//! registers (`C = act(A·B + residual + bias)`):
//! - a **bias fill** right before an accumulating matmul,
//!   `for i in 0..m { for j in 0..n { C[f] = bias[o + i] } }` (one value per
//!   row: convolution channels) or `bias[o + j]` (per column); the call then
//!   overwrites `C` instead of accumulating, and the fill is not emitted;
//! - an **epilogue** right after it, over the same tile:
//!   `for i { for j { C[f] = act(C[f] + R[r + i·ldr + j] + bias[…]) } }`
//!   (lets inlined, f32 casts of f32 values ignored), where every term but
//!   `C[f]` is optional and `act` is ReLU or a clip whose bounds are f32
//!   constants or scalars of weights (`max(x, lo)`, `min(x, hi)`,
//!   `min(max(x, lo), hi)`), possibly around a sigmoid, SiLU, GELU or tanh
//!   ([`peel_activation`]), which the kernels evaluate 8 or 16 lanes wide.
//!   NaN passes through the kernels' clamp as through the interpreter's
//!   `max`/`min`.
//!
//! `f = offset + i·row_stride + j·col_stride` of the matmul's `C` view; with
//! `m = 1` the `i` loop may be absent. Anything else is left alone.

use kiln_ir::kernel::call::{
    final_store, flatten, peel_activation, peel_clamp, Activation, Consts,
};
use kiln_ir::kernel::interp::affine_coeff;
use kiln_ir::kernel::rewrite::subst_zero;
use kiln_ir::kernel::{BinOp, BufId, Expr, Matmul, Stmt, VarId};

/// A vector or matrix operand of the epilogue: its buffer and the element
/// offset of the tile's origin (may use enclosing loop variables).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Operand {
    pub buf: BufId,
    pub offset: Expr,
}

/// What the call absorbs.
#[derive(Clone, Debug)]
pub(super) struct Fold {
    /// The matmul's own accumulate flag, after a folded bias fill.
    pub accumulate: bool,
    /// The bias and whether it has one value per row (else per column).
    pub bias: Option<(Operand, bool)>,
    /// The residual and its row stride.
    pub residual: Option<(Operand, i64)>,
    /// Clamp bounds (±∞: none).
    pub act: (f32, f32),
    /// A transcendental activation applied before the clamp.
    pub func: Option<Activation>,
    /// Addresses of the statements not to emit.
    pub skip: Vec<usize>,
}

/// The tile loop nest of `s` over `mm`'s `C`: (row var or None, column var, body).
fn tile_nest<'s>(mm: &Matmul, s: &'s Stmt) -> Option<(Option<VarId>, VarId, &'s [Stmt])> {
    let Stmt::For {
        var: outer,
        extent,
        body,
    } = s
    else {
        return None;
    };
    if let [Stmt::For {
        var: j,
        extent: n,
        body: inner,
    }] = body.as_slice()
    {
        if *extent == mm.m && *n == mm.n {
            return Some((Some(*outer), *j, inner));
        }
    }
    (mm.m == 1 && *extent == mm.n).then_some((None, *outer, body.as_slice()))
}

/// The flat index of `C(i, j)` in the tile nest's variables.
fn c_index(mm: &Matmul, i: Option<VarId>, j: VarId) -> Expr {
    let row = match i {
        Some(i) => mm.c.offset.clone() + Expr::var(i) * mm.c.row_stride,
        None => mm.c.offset.clone(),
    };
    row + Expr::var(j) * mm.c.col_stride
}

/// `index` as `offset + ci·i + cj·j` with `offset` free of `i` and `j`.
fn split(index: &Expr, i: Option<VarId>, j: VarId) -> Option<(Expr, i64, i64)> {
    let ci = match i {
        Some(i) => affine_coeff(index, i)?,
        None => 0,
    };
    let cj = affine_coeff(index, j)?;
    let mut off = subst_zero(index.clone(), j);
    if let Some(i) = i {
        off = subst_zero(off, i);
    }
    Some((off, ci, cj))
}

/// Whether `a` and `b` compute the same index (structurally, after folding).
fn same_index(a: &Expr, b: &Expr, i: Option<VarId>, j: VarId) -> bool {
    match (split(a, i, j), split(b, i, j)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// `prev` as a bias fill of `mm`'s tile.
fn bias_fill(mm: &Matmul, prev: &Stmt) -> Option<(Operand, bool)> {
    let (i, j, body) = tile_nest(mm, prev)?;
    let [Stmt::Store { buf, index, value }] = body else {
        return None;
    };
    if *buf != mm.c.buf || !same_index(index, &c_index(mm, i, j), i, j) {
        return None;
    }
    let Expr::Load { buf: b, index } = value else {
        return None;
    };
    vector_operand(*b, index, i, j, mm)
}

/// A load of a bias vector inside the tile nest: `o + i` or `o + j`.
fn vector_operand(
    buf: BufId,
    index: &Expr,
    i: Option<VarId>,
    j: VarId,
    mm: &Matmul,
) -> Option<(Operand, bool)> {
    let (offset, ci, cj) = split(index, i, j)?;
    let op = Operand { buf, offset };
    match (ci, cj) {
        (1, 0) => Some((op, true)),
        (0, 1) => Some((op, false)),
        // One row: a per-row bias is one value, which the kernel reads as
        // bias[0] of a per-row vector.
        (0, 0) if mm.m == 1 && mm.n == 1 => Some((op, false)),
        _ => None,
    }
}

/// What an epilogue loop applies to the product: the residual and bias it
/// adds, then the function, then the clamp.
struct Tail {
    residual: Option<(Operand, i64)>,
    bias: Option<(Operand, bool)>,
    func: Option<Activation>,
    act: (f32, f32),
}

/// The epilogue after `mm`.
fn epilogue(mm: &Matmul, next: &Stmt, consts: Consts) -> Option<Tail> {
    let (i, j, body) = tile_nest(mm, next)?;
    let (buf, index, value) = final_store(body)?;
    let flat = c_index(mm, i, j);
    if buf != mm.c.buf || !same_index(index, &flat, i, j) {
        return None;
    }
    let (inner, lo, hi) = peel_clamp(&value, consts);
    if lo > hi {
        return None;
    }
    let (sum, func) = match peel_activation(inner, consts) {
        Some((x, f)) => (x, Some(f)),
        None => (inner, None),
    };
    let mut ts = vec![];
    flatten(sum, BinOp::Add, &mut ts);
    let (mut own, mut residual, mut bias) = (false, None, None);
    for t in ts {
        let Expr::Load { buf, index } = t else {
            return None;
        };
        if *buf == mm.c.buf {
            if own || !same_index(index, &flat, i, j) {
                return None;
            }
            own = true;
            continue;
        }
        let (offset, ci, cj) = split(index, i, j)?;
        let ldr_ok = |ci: i64| mm.m == 1 || ci >= mm.n as i64;
        if cj == 1 && ci != 0 && ldr_ok(ci) && residual.is_none() {
            residual = Some((Operand { buf: *buf, offset }, ci));
        } else if cj == 1 && ci == 0 && mm.m == 1 && residual.is_none() && bias.is_some() {
            // One row: a second row-free term is a residual row.
            residual = Some((Operand { buf: *buf, offset }, mm.n as i64));
        } else if bias.is_none() {
            bias = Some(vector_operand(*buf, index, i, j, mm)?);
        } else {
            return None;
        }
    }
    own.then_some(Tail {
        residual,
        bias,
        func,
        act: (lo, hi),
    })
}

/// What the call of `mm` absorbs from the statements before and after it.
pub(super) fn fold(mm: &Matmul, prev: Option<&Stmt>, next: Option<&Stmt>, consts: Consts) -> Fold {
    let key = |s: &Stmt| s as *const Stmt as usize;
    let mut f = Fold {
        accumulate: mm.accumulate,
        bias: None,
        residual: None,
        act: super::gemm::NO_ACT,
        func: None,
        skip: vec![],
    };
    if mm.accumulate {
        if let Some(p) = prev {
            if let Some(b) = bias_fill(mm, p) {
                f.bias = Some(b);
                f.accumulate = false;
                f.skip.push(key(p));
            }
        }
    }
    if let Some(n) = next {
        if let Some(t) = epilogue(mm, n, consts) {
            // A residual replaces the accumulation's source; a second bias
            // has no slot.
            let clash =
                t.residual.is_some() && f.accumulate || t.bias.is_some() && f.bias.is_some();
            if !clash {
                f.residual = t.residual;
                if t.bias.is_some() {
                    f.bias = t.bias;
                }
                f.act = t.act;
                f.func = t.func;
                f.skip.push(key(n));
            }
        }
    }
    f
}
