//! Lowering of reductions (Reduce, ArgReduce, CumSum) and of the ops built on
//! per-group statistics (softmax and the normalisations, in [`norm`]).
//!
//! A reduction is an [`Expr::reduce`] inside a loop nest over the kept
//! positions, so the innermost loop of every nest stays free of loop-carried
//! dependences and the interpreter runs it as a vector. Adjacent reduced axes
//! are merged into one reduction (and adjacent kept axes into one loop), which
//! makes the common cases (reduce over the trailing axes) a single long
//! reduction.

mod norm;
#[cfg(test)]
mod tests;

use super::{LowerCtx, Result};
use kiln_ir::graph::ReduceOp;
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BufId, Expr, RedOp, Stmt, UnOp, VarId};
use kiln_ir::{DType, Op};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    match cx.op {
        Op::Reduce { .. } => reduce(cx, pb),
        Op::ArgReduce { .. } => arg_reduce(cx, pb),
        Op::CumSum { .. } => cumsum(cx, pb),
        _ => norm::lower(cx, pb),
    }
}

/// Narrow floats are computed in f32 (as the interpreter and renderers do anyway);
/// the statistics scratch buffers use this type too.
fn compute_type(t: DType) -> DType {
    match t {
        DType::F16 | DType::BF16 => DType::F32,
        t => t,
    }
}

/// Loads `buf[index]` (of dtype `t`) converted to the compute type `ct`.
fn load_as(buf: BufId, index: Expr, t: DType, ct: DType) -> Expr {
    let e = Expr::load(buf, index);
    if t == ct {
        e
    } else {
        e.cast(ct)
    }
}

fn cast_to(e: Expr, from: DType, to: DType) -> Expr {
    if from == to {
        e
    } else {
        e.cast(to)
    }
}

/// A possibly negative axis, normalised against `rank`.
fn norm_axis(cx: &LowerCtx, axis: i64, rank: usize) -> Result<usize> {
    kiln_ir::infer::norm_axis(axis, rank).map_err(|e| cx.err(e.msg))
}

/// Normalised, sorted, deduplicated axes (`ReduceOp` semantics: empty means all, or none with `noop`).
fn reduce_axes(cx: &LowerCtx, axes: &[i64], rank: usize, noop: bool) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok(if noop { vec![] } else { (0..rank).collect() });
    }
    let mut out = axes
        .iter()
        .map(|&a| norm_axis(cx, a, rank))
        .collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A tensor's dims split into kept and reduced runs: adjacent axes of the same
/// kind are merged, which leaves the row-major layout of both the input and
/// the reduced result unchanged.
struct Split {
    dims: Vec<usize>,
    reduced: Vec<bool>,
}

impl Split {
    fn new(dims: &[usize], axes: &[usize]) -> Split {
        let mut s = Split {
            dims: vec![],
            reduced: vec![],
        };
        for (i, &d) in dims.iter().enumerate() {
            let r = axes.contains(&i);
            if s.reduced.last() == Some(&r) {
                if let Some(last) = s.dims.last_mut() {
                    *last *= d;
                }
            } else {
                s.dims.push(d);
                s.reduced.push(r);
            }
        }
        s
    }

    fn kept_dims(&self) -> Vec<usize> {
        self.dims
            .iter()
            .zip(&self.reduced)
            .filter(|(_, &r)| !r)
            .map(|(&d, _)| d)
            .collect()
    }

    /// Number of elements folded into each result.
    fn count(&self) -> usize {
        self.dims
            .iter()
            .zip(&self.reduced)
            .filter(|(_, &r)| r)
            .map(|(&d, _)| d)
            .product()
    }

    /// Number of results.
    fn kept_count(&self) -> usize {
        self.kept_dims().iter().product()
    }

    /// Loops over the kept positions; `f` builds the body from the [`Site`].
    fn nest(
        &self,
        pb: &mut ProgramBuilder,
        f: impl FnOnce(&mut ProgramBuilder, &Site) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let kd = self.kept_dims();
        pb.nest(&kd, |pb, idx| {
            let site = Site {
                split: self,
                idx: idx.to_vec(),
                out: linear_index(idx, &strides(&kd)),
            };
            f(pb, &site)
        })
    }
}

/// One kept position inside [`Split::nest`].
struct Site<'a> {
    split: &'a Split,
    idx: Vec<Expr>,
    /// Linear index of this position in the reduced result.
    out: Expr,
}

impl Site<'_> {
    /// Folds `body(input index, reduction variables)` over the reduced positions with `op`.
    fn reduce(
        &self,
        pb: &mut ProgramBuilder,
        op: RedOp,
        body: impl FnOnce(Expr, &[Expr]) -> Expr,
    ) -> Expr {
        let s = self.split;
        let st = strides(&s.dims);
        let mut vars: Vec<(VarId, u64)> = vec![];
        let mut kept = self.idx.iter();
        let mut index = Expr::i(0);
        for (k, (&d, &r)) in s.dims.iter().zip(&s.reduced).enumerate() {
            let e = if r {
                let v = pb.var();
                vars.push((v, d as u64));
                Expr::var(v)
            } else {
                kept.next().cloned().unwrap_or_else(|| Expr::i(0))
            };
            index = index + e * st[k];
        }
        let rv: Vec<Expr> = vars.iter().map(|&(v, _)| Expr::var(v)).collect();
        let mut e = body(index, &rv);
        for &(v, n) in vars.iter().rev() {
            e = Expr::reduce(op, v, n, e);
        }
        e
    }
}

/// Linear index into a per-group statistics buffer (the reduced shape) from a full index.
fn stat_index(dims: &[usize], axes: &[usize], idx: &[Expr]) -> Expr {
    let kept: Vec<usize> = (0..dims.len()).filter(|a| !axes.contains(a)).collect();
    let kd: Vec<usize> = kept.iter().map(|&a| dims[a]).collect();
    let ki: Vec<Expr> = kept.iter().map(|&a| idx[a].clone()).collect();
    linear_index(&ki, &strides(&kd))
}

fn reduce(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let Op::Reduce {
        op,
        axes,
        noop_with_empty_axes,
        ..
    } = cx.op
    else {
        unreachable!()
    };
    let axes = axes
        .as_ref()
        .ok_or_else(|| cx.err("reduction axes must be known (specialise first)"))?;
    let dims = cx.in_dims(0)?;
    let t = cx.in_type(0)?.dtype;
    let axes = reduce_axes(cx, axes, dims.len(), *noop_with_empty_axes)?;
    let io = cx.io(pb)?;
    let (x, y) = (io.input(0), io.outputs[0]);
    let split = Split::new(&dims, &axes);
    let n = split.count();
    let needs_float = matches!(
        op,
        ReduceOp::Mean | ReduceOp::L2 | ReduceOp::LogSum | ReduceOp::LogSumExp
    );
    let ct = if t.is_float() {
        compute_type(t)
    } else if needs_float {
        DType::F64
    } else if t == DType::Bool {
        // Max and Min of bools are any and all: computed on 0/1 integers.
        if !matches!(op, ReduceOp::Max | ReduceOp::Min) {
            return Err(cx.err(format!("{op:?} of bool tensors is not supported")));
        }
        DType::I64
    } else {
        t
    };
    let c = |v: f64| Expr::constant(ct, v);
    let op = *op;
    let body = split.nest(pb, |pb, site| {
        let ld = |i: Expr| load_as(x, i, t, ct);
        let sum = |pb: &mut ProgramBuilder, f: &dyn Fn(Expr) -> Expr| {
            site.reduce(pb, RedOp::Sum, |i, _| f(ld(i)))
        };
        let mut pre = vec![];
        let value = match op {
            ReduceOp::Sum => sum(pb, &|v| v),
            ReduceOp::Mean => sum(pb, &|v| v).bin(kiln_ir::kernel::BinOp::Div, c(n as f64)),
            ReduceOp::Prod => site.reduce(pb, RedOp::Prod, |i, _| ld(i)),
            ReduceOp::Max | ReduceOp::Min if n == 0 => {
                // The empty reduction's identity in the element type (not the interpreter's i64 one).
                let (lo, hi) = t.min_max();
                let v = match (op, t.is_float()) {
                    (ReduceOp::Max, true) => f64::NEG_INFINITY,
                    (ReduceOp::Max, false) => lo,
                    (_, true) => f64::INFINITY,
                    (_, false) => hi,
                };
                Expr::constant(ct, v)
            }
            ReduceOp::Max => site.reduce(pb, RedOp::Max, |i, _| ld(i)),
            ReduceOp::Min => site.reduce(pb, RedOp::Min, |i, _| ld(i)),
            ReduceOp::L1 => sum(pb, &|v| v.un(UnOp::Abs)),
            ReduceOp::L2 => sum(pb, &|v| v.clone() * v).un(UnOp::Sqrt),
            ReduceOp::LogSum => sum(pb, &|v| v).un(UnOp::Log),
            ReduceOp::SumSquare => sum(pb, &|v| v.clone() * v),
            ReduceOp::LogSumExp => {
                // Shift by the max for stability; an infinite max shifts by 0 so that
                // all--inf gives -inf and any +inf gives +inf, as the unshifted formula does.
                let m = pb.var();
                pre.push(Stmt::Let {
                    var: m,
                    value: site.reduce(pb, RedOp::Max, |i, _| ld(i)),
                });
                let mv = Expr::var(m);
                let shift = Expr::select(mv.clone().un(UnOp::IsInf), c(0.0), mv);
                let s = sum(pb, &|v| (v - shift.clone()).un(UnOp::Exp));
                s.un(UnOp::Log) + shift
            }
        };
        pre.push(Stmt::Store {
            buf: y,
            index: site.out.clone(),
            value: cast_to(value, ct, t),
        });
        pre
    });
    pb.kernel(cx.node, body);
    Ok(())
}

fn arg_reduce(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let Op::ArgReduce {
        max,
        axis,
        select_last_index,
        ..
    } = cx.op
    else {
        unreachable!()
    };
    let dims = cx.in_dims(0)?;
    let t = cx.in_type(0)?.dtype;
    let a = norm_axis(cx, *axis, dims.len())?;
    let n = dims.get(a).copied().unwrap_or(1);
    if n == 0 {
        return Err(cx.err("ArgMax/ArgMin over an empty axis"));
    }
    let ct = compute_type(t);
    let io = cx.io(pb)?;
    let (x, y) = (io.input(0), io.outputs[0]);
    let split = Split::new(&dims, &[a]);
    let (max, last) = (*max, *select_last_index);
    let body = split.nest(pb, |pb, site| {
        let ld = |i: Expr| load_as(x, i, t, ct);
        let m = pb.var();
        let best = site.reduce(pb, if max { RedOp::Max } else { RedOp::Min }, |i, _| ld(i));
        let pos = site.reduce(pb, if last { RedOp::Max } else { RedOp::Min }, |i, r| {
            let r = r.first().cloned().unwrap_or_else(|| Expr::i(0));
            Expr::select(
                ld(i).eq_(Expr::var(m)),
                r,
                Expr::i(if last { -1 } else { n as i64 }),
            )
        });
        // No element equals the extreme only when it is NaN: then the answer is the first NaN.
        let nan_pos = site.reduce(pb, RedOp::Min, |i, r| {
            let r = r.first().cloned().unwrap_or_else(|| Expr::i(0));
            Expr::select(ld(i).un(UnOp::IsNan), r, Expr::i(n as i64))
        });
        let value = if ct.is_float() {
            Expr::select(Expr::var(m).un(UnOp::IsNan), nan_pos, pos)
        } else {
            pos
        };
        vec![
            Stmt::Let {
                var: m,
                value: best,
            },
            Stmt::Store {
                buf: y,
                index: site.out.clone(),
                value,
            },
        ]
    });
    pb.kernel(cx.node, body);
    Ok(())
}

fn cumsum(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let Op::CumSum {
        axis,
        exclusive,
        reverse,
        prod,
    } = cx.op
    else {
        unreachable!()
    };
    let (red, unit) = if *prod {
        (RedOp::Prod, 1.0)
    } else {
        (RedOp::Sum, 0.0)
    };
    let axis = axis.ok_or_else(|| cx.err("CumSum axis must be known (specialise first)"))?;
    let dims = cx.in_dims(0)?;
    let t = cx.in_type(0)?.dtype;
    let a = norm_axis(cx, axis, dims.len())?;
    let ct = compute_type(t);
    let io = cx.io(pb)?;
    let (x, y) = (io.input(0), io.outputs[0]);
    let st = strides(&dims);
    let (exclusive, reverse) = (*exclusive, *reverse);
    // Each output is a masked sum over the whole axis: quadratic in the axis
    // length, but vectorised, where a running sum would be a scalar loop.
    let body = pb.nest(&dims, |pb, idx| {
        let j = pb.var();
        let k = idx[a].clone();
        let mut src = idx.to_vec();
        src[a] = Expr::var(j);
        let jv = Expr::var(j);
        let take = match (exclusive, reverse) {
            (false, false) => jv.le(k),
            (true, false) => jv.lt(k),
            (false, true) => jv.ge(k),
            (true, true) => jv.gt(k),
        };
        let term = Expr::select(
            take,
            load_as(x, linear_index(&src, &st), t, ct),
            Expr::constant(ct, unit),
        );
        let value = Expr::reduce(red, j, dims[a] as u64, term);
        vec![Stmt::Store {
            buf: y,
            index: linear_index(idx, &st),
            value: cast_to(value, ct, t),
        }]
    });
    pb.kernel(cx.node, body);
    Ok(())
}
