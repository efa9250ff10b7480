//! Pure copies: each output element is one input element (or a constant)
//! at an index computed from the output index.

use super::{axis, copy_nest, load_i64, param};
use crate::lower::elementwise::broadcast_load;
use crate::lower::{LowerCtx, Result};
use kiln_ir::graph::PadMode;
use kiln_ir::infer::slice_range;
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BufId, Expr, Stmt};
use kiln_ir::Op;

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let io = cx.io(pb)?;
    let out = io.outputs[0];
    let x = io.input(0);
    let xd = cx.in_dims(0)?;
    let od = cx.out_dims(0)?;
    let xs = strides(&xd);
    let body = match cx.op {
        Op::Reshape { .. } => {
            let n = od.iter().product::<usize>();
            copy_nest(pb, out, &[n], |_, i| Expr::load(x, i[0].clone()))
        }
        Op::Transpose { perm } => copy_nest(pb, out, &od, |_, idx| {
            Expr::load(
                x,
                idx.iter()
                    .zip(perm)
                    .fold(Expr::i(0), |acc, (e, &p)| acc + e.clone() * xs[p]),
            )
        }),
        Op::Concat { axis: a } => {
            let a = axis(cx, *a, od.len())?;
            let os = strides(&od);
            let mut body = vec![];
            let mut off = 0i64;
            for i in 0..cx.inputs.len() {
                let d = cx.in_dims(i)?;
                let buf = io.input(i);
                if d.iter().product::<usize>() > 0 {
                    let ds = strides(&d);
                    body.extend(pb.nest(&d, |_, idx| {
                        let mut o = idx.to_vec();
                        o[a] = o[a].clone() + off;
                        vec![Stmt::Store {
                            buf: out,
                            index: linear_index(&o, &os),
                            value: Expr::load(buf, linear_index(idx, &ds)),
                        }]
                    }));
                }
                off += d[a] as i64;
            }
            body
        }
        Op::Split { axis: a, .. } => {
            let a = axis(cx, *a, xd.len())?;
            let mut body = vec![];
            let mut off = 0i64;
            for (k, &buf) in io.outputs.iter().enumerate() {
                let d = cx.out_dims(k)?;
                body.extend(copy_nest(pb, buf, &d, |_, idx| {
                    let mut s = idx.to_vec();
                    s[a] = s[a].clone() + off;
                    Expr::load(x, linear_index(&s, &xs))
                }));
                off += d[a] as i64;
            }
            body
        }
        Op::Slice { axes } => {
            let axes = param(cx, axes, "slice axes")?;
            let mut start = vec![0i64; xd.len()];
            let mut step = vec![1i64; xd.len()];
            for s in axes {
                let a = axis(cx, s.axis, xd.len())?;
                let (b, st, _) = slice_range(s, xd[a]).map_err(|e| cx.err(e.msg))?;
                start[a] = b;
                step[a] = st;
            }
            copy_nest(pb, out, &od, |_, idx| {
                let s: Vec<Expr> = idx
                    .iter()
                    .enumerate()
                    .map(|(k, e)| e.clone() * step[k] + start[k])
                    .collect();
                Expr::load(x, linear_index(&s, &xs))
            })
        }
        Op::Pad { mode, pads, value } => {
            let pads = param(cx, pads, "pads")?;
            pad(cx, pb, x, out, &xd, &od, *mode, pads, *value)?
        }
        Op::Expand { .. } => copy_nest(pb, out, &od, |_, idx| broadcast_load(x, &xd, &od, idx)),
        Op::Tile { .. } => copy_nest(pb, out, &od, |_, idx| {
            let s: Vec<Expr> = idx
                .iter()
                .zip(&xd)
                .zip(&od)
                .map(|((e, &n), &m)| {
                    if n == m {
                        e.clone()
                    } else {
                        e.clone() % n as i64
                    }
                })
                .collect();
            Expr::load(x, linear_index(&s, &xs))
        }),
        Op::DepthToSpace { block, crd } => {
            let b = *block as i64;
            let c_out = od[1] as i64;
            copy_nest(pb, out, &od, |_, idx| {
                let (h, by) = (idx[2].clone() / b, idx[2].clone() % b);
                let (w, bx) = (idx[3].clone() / b, idx[3].clone() % b);
                let c = if *crd {
                    idx[1].clone() * (b * b) + by * b + bx
                } else {
                    (by * b + bx) * c_out + idx[1].clone()
                };
                Expr::load(x, linear_index(&[idx[0].clone(), c, h, w], &xs))
            })
        }
        Op::SpaceToDepth { block } => {
            let b = *block as i64;
            let c_in = xd[1] as i64;
            copy_nest(pb, out, &od, |_, idx| {
                let c = idx[1].clone() % c_in;
                let blk = idx[1].clone() / c_in;
                let (by, bx) = (blk.clone() / b, blk % b);
                let h = idx[2].clone() * b + by;
                let w = idx[3].clone() * b + bx;
                Expr::load(x, linear_index(&[idx[0].clone(), c, h, w], &xs))
            })
        }
        Op::Trilu { upper, k } => {
            let k = *param(cx, k, "trilu k")?;
            let r = od.len();
            let zero = Expr::constant(cx.outputs[0].dtype, 0.0);
            copy_nest(pb, out, &od, |_, idx| {
                let diff = idx[r - 1].clone() - idx[r - 2].clone();
                let keep = if *upper {
                    diff.ge(Expr::i(k))
                } else {
                    diff.le(Expr::i(k))
                };
                Expr::select(keep, Expr::load(x, linear_index(idx, &xs)), zero)
            })
        }
        Op::ReverseSequence {
            batch_axis,
            time_axis,
        } => {
            let (ba, ta) = (*batch_axis, *time_axis);
            if ba >= xd.len() || ta >= xd.len() || ba == ta {
                return Err(cx.err(format!(
                    "batch_axis {ba} and time_axis {ta} invalid for rank {}",
                    xd.len()
                )));
            }
            let lens = io.input(1);
            let lt = cx.in_type(1)?.dtype;
            let t_max = xd[ta] as i64;
            copy_nest(pb, out, &od, |_, idx| {
                let len = load_i64(lens, lt, idx[ba].clone())
                    .max(Expr::i(0))
                    .min(Expr::i(t_max));
                let t = idx[ta].clone();
                let mut s = idx.to_vec();
                s[ta] = Expr::select(t.clone().lt(len.clone()), len - 1 - t.clone(), t);
                Expr::load(x, linear_index(&s, &xs))
            })
        }
        _ => return Err(cx.err("not a copy op")),
    };
    pb.kernel(cx.node, body);
    Ok(())
}

/// Pad: the source index along each axis is the output index minus the
/// leading pad, mapped back into range by the mode (constant mode uses the
/// fill value outside). Negative pads crop, which is the same formula.
#[allow(clippy::too_many_arguments)]
fn pad(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    x: BufId,
    out: BufId,
    xd: &[usize],
    od: &[usize],
    mode: PadMode,
    pads: &[i64],
    value: f64,
) -> Result<Vec<Stmt>> {
    let r = xd.len();
    if pads.len() != 2 * r {
        return Err(cx.err(format!("pads has {} entries for rank {r}", pads.len())));
    }
    let fill = Expr::constant(cx.outputs[0].dtype, value);
    let xs = strides(xd);
    let empty = xd.iter().product::<usize>() == 0;
    if empty {
        if mode != PadMode::Constant && od.iter().product::<usize>() > 0 {
            return Err(cx.err(format!("{mode:?} padding of an empty tensor")));
        }
        return Ok(copy_nest(pb, out, od, |_, _| fill));
    }
    Ok(copy_nest(pb, out, od, |_, idx| {
        let mut src = Vec::with_capacity(r);
        let mut inside = Expr::B(true);
        for k in 0..r {
            let n = xd[k] as i64;
            let s = idx[k].clone() - pads[k];
            let needs_map = pads[k] > 0 || od[k] as i64 - pads[k] > n;
            if !needs_map {
                src.push(s);
                continue;
            }
            let m = match mode {
                PadMode::Constant => {
                    inside = inside
                        .and(s.clone().ge(Expr::i(0)))
                        .and(s.clone().lt(Expr::i(n)));
                    s.max(Expr::i(0)).min(Expr::i(n - 1))
                }
                PadMode::Edge => s.max(Expr::i(0)).min(Expr::i(n - 1)),
                PadMode::Wrap => (s % n + n) % n,
                PadMode::Reflect if n == 1 => Expr::i(0),
                PadMode::Reflect => {
                    let p = 2 * (n - 1);
                    let m = (s % p + p) % p;
                    Expr::select(m.clone().lt(Expr::i(n)), m.clone(), Expr::i(p) - m)
                }
            };
            src.push(m);
        }
        let v = Expr::load(x, linear_index(&src, &xs));
        Expr::select(inside, v, fill)
    }))
}
