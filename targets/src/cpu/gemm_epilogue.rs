//! A clamp right after a GEMM, folded into the kernel call.
//!
//! Fusion leaves an activation of a GEMM's output as an epilogue loop over
//! the tile the GEMM has just written (`compiler/src/lower/fused`):
//! `for i in 0..m { for j in 0..n { C[f] = act(C[f]) } }` with
//! `f = offset + i·row_stride + j·col_stride`. When `act` is ReLU or a
//! clip — `max(x, lo)`, `min(x, hi)` or `min(max(x, lo), hi)` with f32
//! constants — the kernels apply the same clamp as they store C (NaN passes
//! through both, as the interpreter's `max`/`min` propagate it), and the
//! loop is not emitted. Any other shape is left alone.

use kiln_ir::kernel::{BinOp, Expr, Matmul, Stmt};
use kiln_ir::DType;

/// The clamp bounds of the epilogue `next` of `mm`, and the address of that
/// loop statement (the key under which it is skipped).
pub(super) fn clamp(mm: &Matmul, next: Option<&Stmt>) -> Option<(f32, f32, usize)> {
    let s = next?;
    let Stmt::For {
        var: i,
        extent,
        body,
    } = s
    else {
        return None;
    };
    let [Stmt::For {
        var: j,
        extent: n,
        body: inner,
    }] = body.as_slice()
    else {
        return None;
    };
    let [Stmt::Store { buf, index, value }] = inner.as_slice() else {
        return None;
    };
    if *extent != mm.m || *n != mm.n || *buf != mm.c.buf {
        return None;
    }
    let flat =
        mm.c.offset.clone() + Expr::var(*i) * mm.c.row_stride + Expr::var(*j) * mm.c.col_stride;
    if *index != flat {
        return None;
    }
    let load = Expr::Load {
        buf: mm.c.buf,
        index: Box::new(flat),
    };
    let constant = |e: &Expr| match e {
        Expr::F(v, DType::F32) if !v.is_nan() => Some(*v as f32),
        _ => None,
    };
    let (lo, hi) = match value {
        Expr::Binary(BinOp::Max, x, c) if **x == load => (constant(c)?, f32::INFINITY),
        Expr::Binary(BinOp::Min, x, c) if **x == load => (f32::NEG_INFINITY, constant(c)?),
        Expr::Binary(BinOp::Min, inner, h) => match &**inner {
            Expr::Binary(BinOp::Max, x, l) if **x == load => (constant(l)?, constant(h)?),
            _ => return None,
        },
        _ => return None,
    };
    (lo <= hi).then_some((lo, hi, s as *const Stmt as usize))
}
