//! Ops driven by index data: gathers, scatters, Compress, TopK and OneHot.

use super::{axis, check_const_indices, copy_nest, load_i64, param, wrap_clamp};
use crate::lower::{LowerCtx, Result};
use kiln_ir::graph::ScatterReduction;
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BinOp, Expr, RedOp, Stmt};
use kiln_ir::{DType, Op};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let io = cx.io(pb)?;
    let out = io.outputs[0];
    let x = io.input(0);
    let xd = cx.in_dims(0)?;
    let xs = strides(&xd);
    let od = cx.out_dims(0)?;
    let body = match cx.op {
        Op::Gather { axis: a } => {
            let a = axis(cx, *a, xd.len())?;
            let (ind, it) = (io.input(1), cx.in_type(1)?.dtype);
            let id = cx.in_dims(1)?;
            check_const_indices(cx, 1, xd[a])?;
            let is = strides(&id);
            let q = id.len();
            copy_nest(pb, out, &od, |_, idx| {
                let i = wrap_clamp(load_i64(ind, it, linear_index(&idx[a..a + q], &is)), xd[a]);
                let mut s = idx[..a].to_vec();
                s.push(i);
                s.extend_from_slice(&idx[a + q..]);
                Expr::load(x, linear_index(&s, &xs))
            })
        }
        Op::GatherElements { axis: a } => {
            let a = axis(cx, *a, xd.len())?;
            let (ind, it) = (io.input(1), cx.in_type(1)?.dtype);
            check_const_indices(cx, 1, xd[a])?;
            let is = strides(&cx.in_dims(1)?);
            copy_nest(pb, out, &od, |_, idx| {
                let mut s = idx.to_vec();
                s[a] = wrap_clamp(load_i64(ind, it, linear_index(idx, &is)), xd[a]);
                Expr::load(x, linear_index(&s, &xs))
            })
        }
        Op::GatherNd { batch_dims } => {
            let b = *batch_dims;
            let (ind, it) = (io.input(1), cx.in_type(1)?.dtype);
            let id = cx.in_dims(1)?;
            let k = *id
                .last()
                .ok_or_else(|| cx.err("indices must have rank >= 1"))?;
            check_nd_indices(cx, &xd[b..b + k])?;
            let is = strides(&id);
            let lead = id.len() - 1;
            copy_nest(pb, out, &od, |_, idx| {
                let mut s = idx[..b].to_vec();
                for j in 0..k {
                    let mut ii = idx[..lead].to_vec();
                    ii.push(Expr::i(j as i64));
                    s.push(wrap_clamp(
                        load_i64(ind, it, linear_index(&ii, &is)),
                        xd[b + j],
                    ));
                }
                s.extend_from_slice(&idx[lead..]);
                Expr::load(x, linear_index(&s, &xs))
            })
        }
        Op::ScatterElements { axis: a, reduction } => {
            let a = axis(cx, *a, xd.len())?;
            let (ind, it) = (io.input(1), cx.in_type(1)?.dtype);
            let upd = io.input(2);
            let ud = cx.in_dims(2)?;
            if cx.in_dims(1)? != ud {
                return Err(cx.err("indices and updates differ in shape"));
            }
            check_const_indices(cx, 1, xd[a])?;
            let us = strides(&ud);
            let mut body = copy_nest(pb, out, &xd, |_, idx| Expr::load(x, linear_index(idx, &xs)));
            let dt = cx.outputs[0].dtype;
            body.extend(pb.nest(&ud, |_, idx| {
                let mut t = idx.to_vec();
                t[a] = wrap_clamp(load_i64(ind, it, linear_index(idx, &us)), xd[a]);
                let t = linear_index(&t, &xs);
                let u = Expr::load(upd, linear_index(idx, &us));
                vec![Stmt::Store {
                    buf: out,
                    index: t.clone(),
                    value: combine(*reduction, Expr::load(out, t), u, dt),
                }]
            }));
            body
        }
        Op::ScatterNd { reduction } => {
            let (ind, it) = (io.input(1), cx.in_type(1)?.dtype);
            let upd = io.input(2);
            let id = cx.in_dims(1)?;
            let ud = cx.in_dims(2)?;
            let k = *id
                .last()
                .ok_or_else(|| cx.err("indices must have rank >= 1"))?;
            let lead = id.len() - 1;
            if k > xd.len() || ud.len() != lead + xd.len() - k {
                return Err(cx.err(format!(
                    "updates shape {ud:?} does not match indices {id:?} and data {xd:?}"
                )));
            }
            check_nd_indices(cx, &xd[..k])?;
            let (is, us) = (strides(&id), strides(&ud));
            let mut body = copy_nest(pb, out, &xd, |_, idx| Expr::load(x, linear_index(idx, &xs)));
            let dt = cx.outputs[0].dtype;
            body.extend(pb.nest(&ud, |_, idx| {
                let mut t = vec![];
                for (j, &n) in xd[..k].iter().enumerate() {
                    let mut ii = idx[..lead].to_vec();
                    ii.push(Expr::i(j as i64));
                    t.push(wrap_clamp(load_i64(ind, it, linear_index(&ii, &is)), n));
                }
                t.extend_from_slice(&idx[lead..]);
                let t = linear_index(&t, &xs);
                let u = Expr::load(upd, linear_index(idx, &us));
                vec![Stmt::Store {
                    buf: out,
                    index: t.clone(),
                    value: combine(*reduction, Expr::load(out, t), u, dt),
                }]
            }));
            body
        }
        Op::Compress { axis: a } => compress(cx, pb, *a, x, out, &xd, &od, io.input(1))?,
        Op::TopK {
            axis: a,
            largest,
            k,
            ..
        } => {
            let a = axis(cx, *a, xd.len())?;
            let k = *param(cx, k, "k")? as i64;
            let n = xd[a] as u64;
            let (vals, inds) = (out, io.outputs[1]);
            let os = strides(&od);
            let largest = *largest;
            pb.nest(&xd, |pb, idx| {
                let j = pb.var();
                let rank = pb.var();
                let me = Expr::load(x, linear_index(idx, &xs));
                let mut other = idx.to_vec();
                other[a] = Expr::var(j);
                let them = Expr::load(x, linear_index(&other, &xs));
                let beats = if largest {
                    them.clone().gt(me.clone())
                } else {
                    them.clone().lt(me.clone())
                };
                let tie = them.eq_(me.clone()).and(Expr::var(j).lt(idx[a].clone()));
                let count = Expr::select(beats.or(tie), Expr::i(1), Expr::i(0));
                let mut o = idx.to_vec();
                o[a] = Expr::var(rank);
                let oi = linear_index(&o, &os);
                vec![
                    Stmt::Let {
                        var: rank,
                        value: Expr::reduce(RedOp::Sum, j, n, count),
                    },
                    Stmt::If {
                        cond: Expr::var(rank).lt(Expr::i(k)),
                        then_body: vec![
                            Stmt::Store {
                                buf: vals,
                                index: oi.clone(),
                                value: me,
                            },
                            Stmt::Store {
                                buf: inds,
                                index: oi,
                                value: idx[a].clone(),
                            },
                        ],
                        else_body: vec![],
                    },
                ]
            })
        }
        Op::OneHot { axis: a, depth } => {
            let depth = *param(cx, depth, "depth")?;
            let a = axis(cx, *a, xd.len() + 1)?;
            let it = cx.in_type(0)?.dtype;
            let values = *io
                .inputs
                .last()
                .and_then(|v| *v)
                .as_ref()
                .ok_or_else(|| cx.err("missing values"))?;
            let d = depth as i64;
            copy_nest(pb, out, &od, |_, idx| {
                let mut s = idx[..a].to_vec();
                s.extend_from_slice(&idx[a + 1..]);
                let raw = Expr::load(x, linear_index(&s, &xs));
                let i = if it.is_float() {
                    raw.cast(DType::I64)
                } else {
                    load_i64_expr(raw, it)
                };
                let i = Expr::select(i.clone().lt(Expr::i(0)), i.clone() + d, i);
                let hot = i.eq_(idx[a].clone());
                Expr::select(
                    hot,
                    Expr::load(values, Expr::i(1)),
                    Expr::load(values, Expr::i(0)),
                )
            })
        }
        _ => return Err(cx.err("not an index op")),
    };
    pb.kernel(cx.node, body);
    Ok(())
}

fn load_i64_expr(e: Expr, t: DType) -> Expr {
    if t == DType::I64 {
        e
    } else {
        e.cast(DType::I64)
    }
}

/// The value a scatter stores: the update, or the update combined with the current element.
fn combine(r: ScatterReduction, old: Expr, u: Expr, dt: DType) -> Expr {
    match r {
        ScatterReduction::None => u,
        ScatterReduction::Add if dt == DType::Bool => old.bin(BinOp::Or, u),
        ScatterReduction::Mul if dt == DType::Bool => old.bin(BinOp::And, u),
        ScatterReduction::Add => old + u,
        ScatterReduction::Mul => old * u,
        ScatterReduction::Max => old.max(u),
        ScatterReduction::Min => old.min(u),
    }
}

/// Checks constant N-d indices (last dim = depth) against the extents they index.
fn check_nd_indices(cx: &LowerCtx, extents: &[usize]) -> Result<()> {
    if let Some(t) = cx.konst(1) {
        let k = extents.len().max(1);
        for (p, v) in t.to_i64_vec().into_iter().enumerate() {
            let n = extents.get(p % k).copied().unwrap_or(0) as i64;
            if v < -n || v >= n {
                return Err(cx.err(format!("index {v} out of range for axis extent {n}")));
            }
        }
    }
    Ok(())
}

/// Compress: a sequential pass over the condition records the source
/// position of each kept slice in a scratch table, then a copy reads
/// through the table. Condition entries beyond the axis extent are ignored.
#[allow(clippy::too_many_arguments)]
fn compress(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    a: Option<i64>,
    x: kiln_ir::kernel::BufId,
    out: kiln_ir::kernel::BufId,
    xd: &[usize],
    od: &[usize],
    cond: kiln_ir::kernel::BufId,
) -> Result<Vec<Stmt>> {
    let (dims, a) = match a {
        Some(a) => (xd.to_vec(), axis(cx, a, xd.len())?),
        None => (vec![xd.iter().product()], 0),
    };
    let ct = cx.in_type(1)?.dtype;
    let clen = cx.in_dims(1)?.iter().product::<usize>();
    let n = clen.min(dims[a]);
    let m = od.get(a).copied().unwrap_or(0);
    let pos = pb.scratch("pos", DType::I64, m.max(1));
    let cnt = pb.scratch("count", DType::I64, 1);
    let mut body = vec![Stmt::Store {
        buf: cnt,
        index: Expr::i(0),
        value: Expr::i(0),
    }];
    body.extend(pb.nest(&[n], |_, p| {
        let c = Expr::load(cond, p[0].clone());
        let c = if ct == DType::Bool {
            c
        } else {
            c.bin(BinOp::Ne, Expr::constant(ct, 0.0))
        };
        let k = Expr::load(cnt, Expr::i(0));
        vec![Stmt::If {
            cond: c.and(k.clone().lt(Expr::i(m as i64))),
            then_body: vec![
                Stmt::Store {
                    buf: pos,
                    index: k.clone(),
                    value: p[0].clone(),
                },
                Stmt::Store {
                    buf: cnt,
                    index: Expr::i(0),
                    value: k + 1,
                },
            ],
            else_body: vec![],
        }]
    }));
    let mut odims = dims.clone();
    odims[a] = m;
    let ds = strides(&dims);
    body.extend(copy_nest(pb, out, &odims, |_, idx| {
        let mut s = idx.to_vec();
        s[a] = Expr::load(pos, idx[a].clone());
        Expr::load(x, linear_index(&s, &ds))
    }));
    Ok(body)
}
