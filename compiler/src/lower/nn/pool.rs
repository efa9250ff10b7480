//! MaxPool, AveragePool and LpPool (with MaxPool's optional indices output).
//!
//! The input is padded once into scratch with the kind's neutral value (-inf
//! for max, 0 for sums), extended past the declared end pad where ceil_mode
//! lets the last window overrun, so the window reductions never test bounds.
//! Only the AveragePool divisor depends on which taps are real: it is counted
//! from the geometry, not from the data, once per output row and once per
//! output column (a small table the inner loop reads).
//!
//! Windows are visited one output row at a time with the last axis innermost
//! and small windows unrolled (see `window`), so a stride-1 pool is straight
//! vector code over contiguous input.

use super::super::{LowerCtx, Result};
use super::window::{
    fold_taps, kernels_with_call, over_taps, pad_source, row_nest, spatial_nest, tap_list, Source,
    Window, MAX_UNROLLED_TAPS,
};
use kiln_ir::graph::PoolKind;
use kiln_ir::kernel::build::{strides, ProgramBuilder};
use kiln_ir::kernel::call::{LibraryCall, MaxPool2d};
use kiln_ir::kernel::{BinOp, BufId, Expr, RedOp, Stmt, UnOp};
use kiln_ir::{DType, Op};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let Op::Pool {
        kind,
        kernel,
        strides: st,
        pads,
        dilations,
        ..
    } = cx.op
    else {
        return Err(cx.err("not a Pool"));
    };
    if cx.outputs.len() > 2 || (cx.outputs.len() == 2 && !matches!(kind, PoolKind::Max)) {
        return Err(cx.err("only MaxPool has a second (indices) output"));
    }
    let io = cx.io(pb)?;
    let (xd, od) = (cx.in_dims(0)?, cx.out_dims(0)?);
    let dt = cx.outputs[0].dtype;
    if cx.in_type(0)?.dtype != dt {
        return Err(cx.err("input and output dtypes differ"));
    }
    if !dt.is_float() && !matches!(kind, PoolKind::Max) {
        return Err(cx.err(format!(
            "average and Lp pooling need a float dtype, got {dt}"
        )));
    }
    let sp = xd.len() - 2;
    let (n, c) = (xd[0], xd[1]);
    let (isp, osp) = (&xd[2..], &od[2..]);
    let ospn: usize = osp.iter().product();
    let win = Window {
        kernel,
        strides: st,
        dilations,
        pads,
    };
    let end = win.end_pads(isp, osp);
    let fill = match kind {
        PoolKind::Max if dt.is_float() => Expr::constant(dt, f64::NEG_INFINITY),
        PoolKind::Max => Expr::constant(dt, dt.min_max().0),
        _ => Expr::constant(dt, 0.0),
    };
    let (x, y) = (io.input(0), io.outputs[0]);
    // The padded copy, a kernel apart where a library call reads it.
    let mut pad = vec![];
    let src = pad_source(
        pb,
        &mut pad,
        Source {
            buf: x,
            dims: xd.clone(),
        },
        dt,
        &pads[..sp],
        &end,
        fill,
    );
    let mut body = vec![];
    let ss = src.spatial_strides();
    let plane = src.plane();
    let kk: usize = kernel.iter().product();
    let padded = pads.iter().chain(&end).any(|&p| p != 0);
    let avg_counts = match *kind {
        PoolKind::Avg { count_include_pad } if padded => Some(count_include_pad),
        _ => None,
    };
    // AveragePool's divisor along the last axis, one per output column, so the
    // inner loop reads it (contiguously) instead of counting taps per lane.
    let col_count = match avg_counts {
        Some(include) if ospn > 1 => {
            let l = sp - 1;
            let buf = pb.scratch("count", dt, osp[l]);
            body.extend(pb.nest(&[osp[l]], |pb, i| {
                let n_l = taps_inside(pb, &win, isp, l, i[0].clone(), include);
                vec![Stmt::Store {
                    buf,
                    index: i[0].clone(),
                    value: n_l.cast(dt),
                }]
            }));
            Some(buf)
        }
        _ => None,
    };
    if ospn == 1 {
        // Global pooling: one window per channel, the channel loop innermost.
        body.extend(spatial_nest(pb, &[n * c], osp, |pb, o, _, _| {
            let tap = |t: &[Expr]| {
                let off = (0..sp).fold(o[0].clone() * plane, |acc, d| {
                    acc + t[d].clone() * (dilations[d] as i64 * ss[d])
                });
                Expr::load(src.buf, off)
            };
            let count = match avg_counts {
                Some(include) => {
                    let mut count = Expr::i(1);
                    for d in 0..sp {
                        count = count * taps_inside(pb, &win, isp, d, Expr::i(0), include);
                    }
                    count.cast(dt)
                }
                None => Expr::constant(dt, kk as f64),
            };
            let value = window_value(pb, *kind, kernel, dt, count, tap);
            vec![Stmt::Store {
                buf: y,
                index: o[0].clone(),
                value,
            }]
        }));
    } else if matches!(kind, PoolKind::Max)
        && sp == 2
        && kernel[0] * st[1] + kernel[1] <= kernel[0] * kernel[1]
    {
        body.extend(separable_max(pb, &src, (y, dt), n * c, osp, &win));
    } else {
        body.extend(row_nest(pb, &[n * c], osp, |pb, o, coords, flat| {
            let l = sp - 1;
            let rows = (0..l).fold(o[0].clone() * plane, |acc, d| {
                acc + coords[d].clone() * (st[d] as i64 * ss[d])
            });
            let rb = pb.var();
            let mut pre = vec![Stmt::Let {
                var: rb,
                value: rows,
            }];
            let col = coords[l].clone() * (st[l] as i64 * ss[l]);
            let tap = |t: &[Expr]| {
                let off = (0..sp).fold(Expr::i(0), |acc, d| {
                    acc + t[d].clone() * (dilations[d] as i64 * ss[d])
                });
                Expr::load(src.buf, Expr::var(rb) + col.clone() + off)
            };
            let count = match (avg_counts, col_count) {
                (Some(include), Some(cb)) => {
                    // Taps inside along the row axes, bound once per row, times the column's.
                    let mut rc = Expr::i(1);
                    for (d, q) in coords[..l].iter().enumerate() {
                        rc = rc * taps_inside(pb, &win, isp, d, q.clone(), include);
                    }
                    let rv = pb.var();
                    pre.push(Stmt::Let {
                        var: rv,
                        value: rc.cast(dt),
                    });
                    Expr::var(rv) * Expr::load(cb, coords[l].clone())
                }
                _ => Expr::constant(dt, kk as f64),
            };
            let value = window_value(pb, *kind, kernel, dt, count, tap);
            let store = Stmt::Store {
                buf: y,
                index: o[0].clone() * ospn as i64 + flat,
                value,
            };
            (pre, vec![store])
        }));
    }
    if cx.outputs.len() == 2 {
        if cx.outputs[1].dtype != DType::I64 {
            return Err(cx.err("MaxPool indices output must be int64"));
        }
        body.extend(max_indices(
            pb,
            &src,
            (y, io.outputs[1]),
            &xd,
            osp,
            &win,
            padded,
        ));
    }
    // 2-D max pooling is also the runtime's routine, for renderers that
    // have it: the padded copy is then a kernel of its own.
    if matches!(kind, PoolKind::Max) && sp == 2 && dt == DType::F32 && cx.outputs.len() == 1 {
        let u = |v: usize| v as u64;
        let call = LibraryCall::MaxPool2d(MaxPool2d {
            x: src.buf,
            y,
            planes: u(n * c),
            in_h: u(src.dims[2]),
            in_w: u(src.dims[3]),
            out_h: u(osp[0]),
            out_w: u(osp[1]),
            k_h: u(kernel[0]),
            k_w: u(kernel[1]),
            stride_h: u(st[0]),
            stride_w: u(st[1]),
            dil_h: u(dilations[0]),
            dil_w: u(dilations[1]),
        });
        kernels_with_call(pb, cx.node, pad, body, call);
        return Ok(());
    }
    pad.extend(body);
    pb.kernel(cx.node, pad);
    Ok(())
}

/// 2-D max pooling as two 1-D passes per output row: the maximum down the
/// window's rows for every input column the row's windows touch (contiguous
/// loads, into a per-plane scratch row), then across each window's columns
/// of that row. Per output that is `k_h·s_w + k_w` loads instead of
/// `k_h·k_w`, taken where it is no more (3x3 at stride 1: 6 against 9; at
/// stride 2: 9 against 9, but every load contiguous, so vector code
/// instead of gathers: squeezenet's pools 0.33 -> 0.21 ms for 64x111x111;
/// 2x2 at stride 2 stays direct: 6 against 4). Max is exact in any order,
/// so the result is the same as the direct form.
fn separable_max(
    pb: &mut ProgramBuilder,
    src: &Source,
    (y, dt): (BufId, DType),
    planes: usize,
    osp: &[usize],
    win: &Window,
) -> Vec<Stmt> {
    let (ss, plane) = (src.spatial_strides(), src.plane());
    let (st, dil, k) = (win.strides, win.dilations, win.kernel);
    let (oh, ow) = (osp[0], osp[1]);
    let span = (ow - 1) * st[1] + (k[1] - 1) * dil[1] + 1;
    let rows = pb.scratch("rowmax", dt, planes * span);
    pb.nest(&[planes, oh], |pb, i| {
        let (o, oy) = (i[0].clone(), i[1].clone());
        let rb = pb.var();
        let (j, x) = (pb.var(), pb.var());
        let down = fold_taps(pb, &k[..1], RedOp::Max, |t| {
            let at = Expr::var(rb) + t[0].clone() * (dil[0] as i64 * ss[0]) + Expr::var(j);
            Expr::load(src.buf, at)
        });
        let across = fold_taps(pb, &k[1..], RedOp::Max, |t| {
            let at = o.clone() * span as i64
                + Expr::var(x) * st[1] as i64
                + t[0].clone() * dil[1] as i64;
            Expr::load(rows, at)
        });
        vec![
            Stmt::Let {
                var: rb,
                value: o.clone() * plane + oy.clone() * (st[0] as i64 * ss[0]),
            },
            Stmt::For {
                var: j,
                extent: span as u64,
                body: vec![Stmt::Store {
                    buf: rows,
                    index: o.clone() * span as i64 + Expr::var(j),
                    value: down,
                }],
            },
            Stmt::For {
                var: x,
                extent: ow as u64,
                body: vec![Stmt::Store {
                    buf: y,
                    index: o * (oh * ow) as i64 + oy * ow as i64 + Expr::var(x),
                    value: across,
                }],
            },
        ]
    })
}

/// The pooled value of one window; `count` is AveragePool's divisor.
fn window_value(
    pb: &mut ProgramBuilder,
    kind: PoolKind,
    kernel: &[usize],
    dt: DType,
    count: Expr,
    tap: impl Fn(&[Expr]) -> Expr,
) -> Expr {
    let c = |v: f64| Expr::constant(dt, v);
    match kind {
        PoolKind::Max => fold_taps(pb, kernel, RedOp::Max, tap),
        PoolKind::Avg { .. } => fold_taps(pb, kernel, RedOp::Sum, tap).bin(BinOp::Div, count),
        PoolKind::Lp { p } => {
            let p = p as f64;
            if p == 1.0 {
                fold_taps(pb, kernel, RedOp::Sum, |t| tap(t).un(UnOp::Abs))
            } else if p == 2.0 {
                fold_taps(pb, kernel, RedOp::Sum, |t| {
                    let v = tap(t);
                    v.clone() * v
                })
                .un(UnOp::Sqrt)
            } else {
                fold_taps(pb, kernel, RedOp::Sum, |t| {
                    tap(t).un(UnOp::Abs).bin(BinOp::Pow, c(p))
                })
                .bin(BinOp::Pow, c(1.0 / p))
            }
        }
    }
}

/// How many taps of the window at output coordinate `pos` of axis `d` fall
/// inside the input, or (`include_pad`) inside the declared padding; never the
/// ceil_mode overrun beyond it. An i64 expression.
fn taps_inside(
    pb: &mut ProgramBuilder,
    win: &Window,
    isp: &[usize],
    d: usize,
    pos: Expr,
    include_pad: bool,
) -> Expr {
    let sp = win.rank();
    let k = pb.var();
    let at = pos * win.strides[d] as i64 + Expr::var(k) * win.dilations[d] as i64;
    let (lo, hi) = if include_pad {
        (0, (win.pads[d] + isp[d] + win.pads[sp + d]) as i64)
    } else {
        (win.pads[d] as i64, (win.pads[d] + isp[d]) as i64)
    };
    let ok = at.clone().ge(Expr::i(lo)).and(at.lt(Expr::i(hi)));
    Expr::reduce(
        RedOp::Sum,
        k,
        win.kernel[d] as u64,
        Expr::select(ok, Expr::i(1), Expr::i(0)),
    )
}

/// MaxPool's indices: the first tap (in window order) holding the maximum, as a
/// flat NCHW index into the unpadded input. Small windows are unrolled into a
/// chain of selects, last tap innermost, one output row at a time; the bounds
/// tests are left out when no window reaches into padding.
fn max_indices(
    pb: &mut ProgramBuilder,
    src: &Source,
    (y, yi): (BufId, BufId),
    xd: &[usize],
    osp: &[usize],
    win: &Window,
    padded: bool,
) -> Vec<Stmt> {
    let sp = xd.len() - 2;
    let (ss, xs) = (src.spatial_strides(), strides(&xd[2..]));
    let (plane, xplane) = (src.plane(), xd[2..].iter().product::<usize>() as i64);
    let ospn: usize = osp.iter().product();
    let kk: usize = win.kernel.iter().product();
    // The tap's padded-source offset, flat input index and whether it is inside the input.
    let tap = |o: &Expr, coords: &[Expr], t: &[Expr]| {
        let mut inside = Expr::B(true);
        let mut at = o.clone() * plane;
        let mut flat_x = o.clone() * xplane;
        for d in 0..sp {
            let pos =
                coords[d].clone() * win.strides[d] as i64 + t[d].clone() * win.dilations[d] as i64;
            at = at + pos.clone() * ss[d];
            let real = pos - win.pads[d] as i64;
            if padded {
                inside = inside
                    .and(real.clone().ge(Expr::i(0)))
                    .and(real.clone().lt(Expr::i(xd[2 + d] as i64)));
            }
            flat_x = flat_x + real * xs[d];
        }
        (at, flat_x, inside)
    };
    if ospn == 1 || kk > MAX_UNROLLED_TAPS {
        return spatial_nest(pb, &[xd[0] * xd[1]], osp, |pb, o, coords, flat| {
            let out = o[0].clone() * ospn as i64 + flat;
            let best = Expr::load(y, out.clone());
            let idx = over_taps(pb, win.kernel, RedOp::Min, |t| {
                let (at, flat_x, inside) = tap(&o[0], coords, t);
                let hit = inside.and(Expr::load(src.buf, at).eq_(best.clone()));
                Expr::select(hit, flat_x, Expr::i(i64::MAX))
            });
            vec![Stmt::Store {
                buf: yi,
                index: out,
                value: idx,
            }]
        });
    }
    row_nest(pb, &[xd[0] * xd[1]], osp, |pb, o, coords, flat| {
        let out = o[0].clone() * ospn as i64 + flat;
        let best = pb.var();
        let mut idx = Expr::i(i64::MAX);
        for t in tap_list(win.kernel).iter().rev() {
            let t: Vec<Expr> = t.iter().map(|&i| Expr::i(i as i64)).collect();
            let (at, flat_x, inside) = tap(&o[0], coords, &t);
            let hit = inside.and(Expr::load(src.buf, at).eq_(Expr::var(best)));
            idx = Expr::select(hit, flat_x, idx);
        }
        let body = vec![
            Stmt::Let {
                var: best,
                value: Expr::load(y, out.clone()),
            },
            Stmt::Store {
                buf: yi,
                index: out,
                value: idx,
            },
        ];
        (vec![], body)
    })
}
