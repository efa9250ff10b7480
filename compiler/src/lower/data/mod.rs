//! Lowering of data-movement ops: copies with computed source indices,
//! gathers and scatters, padding, resizing, TopK and OneHot.
//!
//! Every copy loops over the output with its last dim innermost, so the
//! interpreter runs the contiguous stores as vectors. Index tensors are data:
//! they are loaded inside the kernel, wrapped (negative counts from the end)
//! and clamped so no load can leave its buffer; where the index values are
//! known at lowering time an out-of-range index is reported as an error.

mod copy;
mod index;
mod resize;

use super::{LowerCtx, Result};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BufId, Expr, Stmt};
use kiln_ir::{DType, Op};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    match cx.op {
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Expand { .. }
        | Op::Tile { .. }
        | Op::DepthToSpace { .. }
        | Op::SpaceToDepth { .. }
        | Op::Trilu { .. }
        | Op::ReverseSequence { .. } => copy::lower(cx, pb),
        Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::GatherNd { .. }
        | Op::ScatterElements { .. }
        | Op::ScatterNd { .. }
        | Op::Compress { .. }
        | Op::TopK { .. }
        | Op::OneHot { .. } => index::lower(cx, pb),
        Op::Resize { .. } => resize::lower(cx, pb),
        op => Err(cx.err(format!("no lowering for {}", op.name()))),
    }
}

/// Normalises a possibly negative axis against `rank`.
fn axis(cx: &LowerCtx, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r.max(1) {
        return Err(cx.err(format!("axis {a} out of range for rank {rank}")));
    }
    Ok(v as usize)
}

/// A parameter that specialisation should have resolved.
fn param<'a, T>(cx: &LowerCtx, p: &'a Option<T>, what: &str) -> Result<&'a T> {
    p.as_ref()
        .ok_or_else(|| cx.err(format!("{what} is not known: specialise the node first")))
}

/// Loads an index element as i64, whatever its integer type.
fn load_i64(buf: BufId, dtype: DType, index: Expr) -> Expr {
    let e = Expr::load(buf, index);
    if dtype == DType::I64 {
        e
    } else {
        e.cast(DType::I64)
    }
}

/// Wraps a negative index by the extent `n` and clamps it into `0..n`.
fn wrap_clamp(i: Expr, n: usize) -> Expr {
    let n = n as i64;
    Expr::select(i.clone().lt(Expr::i(0)), i.clone() + n, i)
        .max(Expr::i(0))
        .min(Expr::i(n - 1))
}

/// A loop nest over `dims` storing `value(idx)` into `out` at the row-major position of `idx`.
fn copy_nest(
    pb: &mut ProgramBuilder,
    out: BufId,
    dims: &[usize],
    value: impl FnOnce(&mut ProgramBuilder, &[Expr]) -> Expr,
) -> Vec<Stmt> {
    let st = strides(dims);
    pb.nest(dims, |pb, idx| {
        let v = value(pb, idx);
        vec![Stmt::Store {
            buf: out,
            index: linear_index(idx, &st),
            value: v,
        }]
    })
}

/// Checks that constant index values lie in `-n..n`.
fn check_const_indices(cx: &LowerCtx, input: usize, n: usize) -> Result<()> {
    if let Some(t) = cx.konst(input) {
        let n = n as i64;
        if let Some(v) = t.to_i64_vec().into_iter().find(|&v| v < -n || v >= n) {
            return Err(cx.err(format!("index {v} out of range for axis extent {n}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
