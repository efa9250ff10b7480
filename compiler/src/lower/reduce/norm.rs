//! Softmax, Hardmax and the normalisations. Each computes per-group
//! statistics into small buffers with one kernel (a nest over the groups with
//! reductions inside), then writes every output element with a second,
//! elementwise kernel that reads the statistics back.

use super::super::elementwise::broadcast_load;
use super::super::Io;
use super::{compute_type, load_as, norm_axis, stat_index, LowerCtx, Result, Split};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::call::{ExpRows, LibraryCall};
use kiln_ir::kernel::{BinOp, BufId, Expr, RedOp, Stmt, UnOp};
use kiln_ir::{DType, Op};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let dims = cx.in_dims(0)?;
    let t = cx.in_type(0)?.dtype;
    if !t.is_float() {
        return Err(cx.err(format!("dtype {t} not supported (needs a float type)")));
    }
    let ct = compute_type(t);
    let io = cx.io(pb)?;
    let n = Norm {
        x: io.input(0),
        y: io.outputs[0],
        t,
        ct,
        dims,
    };
    match cx.op {
        Op::Softmax { axis, log } => softmax(cx, pb, &n, *axis, *log),
        Op::Hardmax { axis } => hardmax(cx, pb, &n, *axis),
        Op::BatchNorm { epsilon } => batch_norm(cx, pb, &n, &io.inputs, *epsilon),
        Op::InstanceNorm { epsilon } => {
            if n.dims.len() < 2 {
                return Err(cx.err("input must have rank >= 2"));
            }
            let axes: Vec<usize> = (2..n.dims.len()).collect();
            let (mean, inv) = moments(pb, &n, cx.node, &axes, Eps::Var(*epsilon as f64), None);
            let (scale, bias) = (io.input(1), io.input(2));
            let (st, bt) = (cx.in_type(1)?.dtype, cx.in_type(2)?.dtype);
            affine(pb, &n, cx.node, &axes, mean, inv, ct, |idx, ct| {
                Some((
                    load_as(scale, idx[1].clone(), st, ct),
                    load_as(bias, idx[1].clone(), bt, ct),
                ))
            });
            Ok(())
        }
        Op::LayerNorm { axis, epsilon } => layer_norm(cx, pb, &n, &io, *axis, *epsilon),
        Op::GroupNorm {
            num_groups,
            epsilon,
        } => group_norm(cx, pb, &n, &io.inputs, *num_groups, *epsilon),
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => lrn(cx, pb, &n, *size, *alpha as f64, *beta as f64, *bias as f64),
        Op::LpNorm { axis, p } => lp_norm(cx, pb, &n, *axis, *p),
        Op::MeanVarianceNorm { axes } => {
            let rank = n.dims.len();
            let mut ax = axes
                .iter()
                .map(|&a| norm_axis(cx, a, rank))
                .collect::<Result<Vec<_>>>()?;
            ax.sort_unstable();
            ax.dedup();
            let (mean, inv) = moments(pb, &n, cx.node, &ax, Eps::Std(1e-9), None);
            affine(pb, &n, cx.node, &ax, mean, inv, ct, |_, _| None);
            Ok(())
        }
        _ => Err(cx.err("not a reduction-family op")),
    }
}

/// The data input and output of a normalisation, with the element and compute types.
struct Norm {
    x: BufId,
    y: BufId,
    t: DType,
    ct: DType,
    dims: Vec<usize>,
}

impl Norm {
    fn c(&self, v: f64) -> Expr {
        Expr::constant(self.ct, v)
    }

    /// Writes `f(idx, x[idx])` to every output element.
    fn map(
        &self,
        pb: &mut ProgramBuilder,
        name: &str,
        f: impl FnOnce(&mut ProgramBuilder, &[Expr], Expr) -> Expr,
    ) {
        let st = strides(&self.dims);
        let (x, y, t, ct) = (self.x, self.y, self.t, self.ct);
        let body = pb.nest(&self.dims, |pb, idx| {
            let i = linear_index(idx, &st);
            let v = f(pb, idx, load_as(x, i.clone(), t, ct));
            vec![Stmt::Store {
                buf: y,
                index: i,
                value: super::cast_to(v, ct, t),
            }]
        });
        pb.kernel(name, body);
    }
}

fn softmax(cx: &LowerCtx, pb: &mut ProgramBuilder, n: &Norm, axis: i64, log: bool) -> Result<()> {
    let a = norm_axis(cx, axis, n.dims.len())?;
    let split = Split::new(&n.dims, &[a]);
    let (mx, sm) = (
        pb.scratch("max", n.ct, split.kept_count()),
        pb.scratch("sum", n.ct, split.kept_count()),
    );
    let (x, t, ct) = (n.x, n.t, n.ct);
    if !log && t == ct {
        return softmax_exp_once(cx, pb, n, a, &split, mx, sm);
    }
    let body = split.nest(pb, |pb, site| {
        let m = pb.var();
        let max = site.reduce(pb, RedOp::Max, |i, _| load_as(x, i, t, ct));
        let sum = site.reduce(pb, RedOp::Sum, |i, _| {
            (load_as(x, i, t, ct) - Expr::var(m)).un(UnOp::Exp)
        });
        vec![
            Stmt::Let { var: m, value: max },
            Stmt::Store {
                buf: mx,
                index: site.out.clone(),
                value: Expr::var(m),
            },
            Stmt::Store {
                buf: sm,
                index: site.out.clone(),
                value: sum,
            },
        ]
    });
    pb.kernel(format!("{}_stats", cx.node), body);
    let dims = n.dims.clone();
    n.map(pb, cx.node, |_, idx, v| {
        let s = stat_index(&dims, &[a], idx);
        let d = v - Expr::load(mx, s.clone());
        if log {
            d - Expr::load(sm, s).un(UnOp::Log)
        } else {
            d.un(UnOp::Exp).bin(BinOp::Div, Expr::load(sm, s))
        }
    });
    Ok(())
}

/// Softmax whose output holds the exponentials in the compute type: they
/// are computed once, stored, summed from the output and divided in place
/// (an `exp` costs more than the extra passes over a row in cache).
fn softmax_exp_once(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    n: &Norm,
    a: usize,
    split: &Split,
    mx: BufId,
    sm: BufId,
) -> Result<()> {
    let (x, y, t, ct) = (n.x, n.y, n.t, n.ct);
    stat_kernel(pb, split, format!("{}_max", cx.node), mx, |pb, site| {
        site.reduce(pb, RedOp::Max, |i, _| load_as(x, i, t, ct))
    });
    let dims = n.dims.clone();
    n.map(pb, &format!("{}_exp", cx.node), |_, idx, v| {
        (v - Expr::load(mx, stat_index(&dims, &[a], idx))).un(UnOp::Exp)
    });
    // Over the last axis in f32, the exponentials are rows a vectorised
    // routine may compute (the pass that costs most of a softmax).
    if a + 1 == dims.len() && t == DType::F32 && ct == DType::F32 {
        let len = dims[a] as u64;
        let rows = dims[..a].iter().product::<usize>() as u64;
        if let Some(k) = pb.program.kernels.last_mut() {
            k.call = Some(LibraryCall::ExpRows(ExpRows {
                x,
                m: mx,
                y,
                rows,
                len,
            }));
        }
    }
    stat_kernel(pb, split, format!("{}_sum", cx.node), sm, |pb, site| {
        site.reduce(pb, RedOp::Sum, |i, _| Expr::load(y, i))
    });
    let st = strides(&dims);
    let body = pb.nest(&dims, |_, idx| {
        let i = linear_index(idx, &st);
        let s = stat_index(&dims, &[a], idx);
        vec![Stmt::Store {
            buf: y,
            index: i.clone(),
            value: Expr::load(y, i).bin(BinOp::Div, Expr::load(sm, s)),
        }]
    });
    pb.kernel(cx.node, body);
    Ok(())
}

/// Kernel `name`: `buf[site] = stat(site)` for every site of `split`.
fn stat_kernel(
    pb: &mut ProgramBuilder,
    split: &Split,
    name: String,
    buf: BufId,
    stat: impl FnOnce(&mut ProgramBuilder, &super::Site) -> Expr,
) {
    let body = split.nest(pb, |pb, site| {
        vec![Stmt::Store {
            buf,
            index: site.out.clone(),
            value: stat(pb, site),
        }]
    });
    pb.kernel(name, body);
}

fn hardmax(cx: &LowerCtx, pb: &mut ProgramBuilder, n: &Norm, axis: i64) -> Result<()> {
    let a = norm_axis(cx, axis, n.dims.len())?;
    let len = n.dims[a] as i64;
    let split = Split::new(&n.dims, &[a]);
    let arg = pb.scratch("argmax", DType::I64, split.kept_count());
    let (x, t, ct) = (n.x, n.t, n.ct);
    let body = split.nest(pb, |pb, site| {
        let m = pb.var();
        let max = site.reduce(pb, RedOp::Max, |i, _| load_as(x, i, t, ct));
        let first = site.reduce(pb, RedOp::Min, |i, r| {
            let r = r.first().cloned().unwrap_or_else(|| Expr::i(0));
            Expr::select(load_as(x, i, t, ct).eq_(Expr::var(m)), r, Expr::i(len))
        });
        vec![
            Stmt::Let { var: m, value: max },
            Stmt::Store {
                buf: arg,
                index: site.out.clone(),
                value: first,
            },
        ]
    });
    pb.kernel(format!("{}_argmax", cx.node), body);
    let dims = n.dims.clone();
    let (one, zero) = (n.c(1.0), n.c(0.0));
    n.map(pb, cx.node, |_, idx, _| {
        Expr::select(
            idx[a]
                .clone()
                .eq_(Expr::load(arg, stat_index(&dims, &[a], idx))),
            one,
            zero,
        )
    });
    Ok(())
}

/// How epsilon enters the inverse standard deviation.
enum Eps {
    /// `1 / sqrt(var + eps)`
    Var(f64),
    /// `1 / (sqrt(var) + eps)` (MeanVarianceNormalization)
    Std(f64),
}

/// Computes the mean and inverse standard deviation of each group of `axes`
/// into `out` (buffers given, e.g. LayerNorm's optional outputs) or into scratch.
fn moments(
    pb: &mut ProgramBuilder,
    n: &Norm,
    name: &str,
    axes: &[usize],
    eps: Eps,
    out: Option<(BufId, BufId)>,
) -> (BufId, BufId) {
    let split = Split::new(&n.dims, axes);
    let (mean_b, inv_b) = out.unwrap_or_else(|| {
        (
            pb.scratch("mean", n.ct, split.kept_count()),
            pb.scratch("inv_std", n.ct, split.kept_count()),
        )
    });
    let (x, t, ct) = (n.x, n.t, n.ct);
    let count = n.c(split.count() as f64);
    let c = |v: f64| Expr::constant(ct, v);
    let body = split.nest(pb, |pb, site| {
        let (m, var) = (pb.var(), pb.var());
        let sum = site.reduce(pb, RedOp::Sum, |i, _| load_as(x, i, t, ct));
        let sq = site.reduce(pb, RedOp::Sum, |i, _| {
            let d = load_as(x, i, t, ct) - Expr::var(m);
            d.clone() * d
        });
        let inv = match eps {
            Eps::Var(e) => c(1.0).bin(BinOp::Div, (Expr::var(var) + c(e)).un(UnOp::Sqrt)),
            Eps::Std(e) => c(1.0).bin(BinOp::Div, Expr::var(var).un(UnOp::Sqrt) + c(e)),
        };
        vec![
            Stmt::Let {
                var: m,
                value: sum.bin(BinOp::Div, count.clone()),
            },
            Stmt::Let {
                var,
                value: sq.bin(BinOp::Div, count.clone()),
            },
            Stmt::Store {
                buf: mean_b,
                index: site.out.clone(),
                value: Expr::var(m),
            },
            Stmt::Store {
                buf: inv_b,
                index: site.out.clone(),
                value: inv,
            },
        ]
    });
    pb.kernel(format!("{name}_moments"), body);
    (mean_b, inv_b)
}

/// `y = (x - mean) * inv_std [* scale + bias]`, with the statistics indexed by the groups of `axes`.
#[allow(clippy::too_many_arguments)]
fn affine(
    pb: &mut ProgramBuilder,
    n: &Norm,
    name: &str,
    axes: &[usize],
    mean: BufId,
    inv: BufId,
    stat_t: DType,
    scale_bias: impl Fn(&[Expr], DType) -> Option<(Expr, Expr)>,
) {
    let dims = n.dims.clone();
    let ct = n.ct;
    n.map(pb, name, |_, idx, v| {
        let s = stat_index(&dims, axes, idx);
        let z = (v - load_as(mean, s.clone(), stat_t, ct)) * load_as(inv, s, stat_t, ct);
        match scale_bias(idx, ct) {
            Some((sc, b)) => z * sc + b,
            None => z,
        }
    });
}

fn batch_norm(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    n: &Norm,
    ins: &[Option<BufId>],
    eps: f32,
) -> Result<()> {
    if n.dims.len() < 2 {
        return Err(cx.err("input must have rank >= 2"));
    }
    let mut p = vec![];
    for i in 1..5 {
        let b = ins
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| cx.err(format!("missing input {i}")))?;
        p.push((b, cx.in_type(i)?.dtype));
    }
    let ct = n.ct;
    let e = n.c(eps as f64);
    let one = n.c(1.0);
    n.map(pb, cx.node, |_, idx, v| {
        let ch = idx[1].clone();
        let ld = |k: usize| load_as(p[k].0, ch.clone(), p[k].1, ct);
        let inv = one.bin(BinOp::Div, (ld(3) + e).un(UnOp::Sqrt));
        (v - ld(2)) * inv * ld(0) + ld(1)
    });
    Ok(())
}

fn layer_norm(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    n: &Norm,
    io: &Io,
    axis: i64,
    eps: f32,
) -> Result<()> {
    let ins = &io.inputs;
    let rank = n.dims.len();
    let a = norm_axis(cx, axis, rank)?;
    let axes: Vec<usize> = (a..rank).collect();
    let mut params = vec![];
    for i in 1..3 {
        let Some(b) = ins.get(i).copied().flatten() else {
            continue;
        };
        let d = cx.in_dims(i)?;
        let ok = d.len() <= rank
            && d.iter()
                .rev()
                .zip(n.dims.iter().rev())
                .all(|(&p, &x)| p == 1 || p == x);
        if !ok {
            return Err(cx.err(format!(
                "input {i} of shape {d:?} does not broadcast to {:?}",
                n.dims
            )));
        }
        params.push(Some((b, d, cx.in_type(i)?.dtype)));
    }
    params.resize(2, None);
    // Optional outputs 1 and 2 (Mean, InvStdDev) hold exactly the statistics.
    let (stats, stat_t) = match (cx.outputs.get(1), cx.outputs.get(2)) {
        (Some(m), Some(s)) if m.dtype == s.dtype => (Some((io.outputs[1], io.outputs[2])), m.dtype),
        _ => (None, n.ct),
    };
    let (mean, inv) = moments(pb, n, cx.node, &axes, Eps::Var(eps as f64), stats);
    let dims = n.dims.clone();
    affine(pb, n, cx.node, &axes, mean, inv, stat_t, |idx, ct| {
        let ld = |p: &Option<(BufId, Vec<usize>, DType)>, dflt: f64| match p {
            Some((b, d, t)) => super::cast_to(broadcast_load(*b, d, &dims, idx), *t, ct),
            None => Expr::constant(ct, dflt),
        };
        Some((ld(&params[0], 1.0), ld(&params[1], 0.0)))
    });
    Ok(())
}

fn group_norm(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    n: &Norm,
    ins: &[Option<BufId>],
    groups: usize,
    eps: f32,
) -> Result<()> {
    if n.dims.len() < 2 {
        return Err(cx.err("input must have rank >= 2"));
    }
    let ch = n.dims[1];
    if groups == 0 || !ch.is_multiple_of(groups) {
        return Err(cx.err(format!("{ch} channels do not split into {groups} groups")));
    }
    let per = ch / groups;
    let spatial: usize = n.dims[2..].iter().product();
    // The statistics see x as [N, groups, per * spatial]: each group is contiguous.
    let view = Norm {
        dims: vec![n.dims[0], groups, per * spatial],
        ..*n
    };
    let (mean, inv) = moments(pb, &view, cx.node, &[2], Eps::Var(eps as f64), None);
    let mut params = vec![];
    for i in 1..3 {
        let b = ins
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| cx.err(format!("missing input {i}")))?;
        let len = cx.in_type(i)?.num_elements().unwrap_or(0);
        // Opset 21 has per-channel scale and bias; opset 18 had per-group ones.
        let per_group = if len == ch {
            false
        } else if len == groups {
            true
        } else {
            return Err(cx.err(format!(
                "input {i} has {len} elements; expected {ch} (channels)"
            )));
        };
        params.push((b, cx.in_type(i)?.dtype, per_group));
    }
    let ct = n.ct;
    let (g, per_i) = (groups as i64, per as i64);
    n.map(pb, cx.node, |_, idx, v| {
        let grp = idx[1].clone() / per_i;
        let s = idx[0].clone() * g + grp.clone();
        let z = (v - Expr::load(mean, s.clone())) * Expr::load(inv, s);
        let ld = |k: usize| {
            let (b, t, pg) = params[k];
            load_as(b, if pg { grp.clone() } else { idx[1].clone() }, t, ct)
        };
        z * ld(0) + ld(1)
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn lrn(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    n: &Norm,
    size: usize,
    alpha: f64,
    beta: f64,
    bias: f64,
) -> Result<()> {
    if n.dims.len() < 2 || size == 0 {
        return Err(cx.err("LRN needs rank >= 2 and size >= 1"));
    }
    let chans = n.dims[1] as i64;
    let lo = ((size - 1) / 2) as i64;
    let st = strides(&n.dims);
    let (x, t, ct) = (n.x, n.t, n.ct);
    let c = |v: f64| Expr::constant(ct, v);
    n.map(pb, cx.node, |pb, idx, v| {
        let r = pb.var();
        let cc = idx[1].clone() - lo + Expr::var(r);
        let valid = cc.clone().ge(Expr::i(0)).and(cc.clone().lt(Expr::i(chans)));
        let mut src = idx.to_vec();
        src[1] = cc.max(Expr::i(0)).min(Expr::i(chans - 1));
        let xv = load_as(x, linear_index(&src, &st), t, ct);
        let sq = Expr::reduce(
            RedOp::Sum,
            r,
            size as u64,
            Expr::select(valid, xv.clone() * xv, c(0.0)),
        );
        let base = c(bias) + c(alpha / size as f64) * sq;
        v.bin(BinOp::Div, power(base, beta, ct))
    });
    Ok(())
}

/// `base^beta` for a base that is never negative (LRN's `bias + α/n·Σx²`),
/// without a general `pow`: the usual exponents as square roots (3/4 is
/// AlexNet's and GoogLeNet's), any other as `exp(β·ln base)`. A general
/// `pow` handles negative bases and integer exponents, and costs a call per
/// element on targets without a vector `pow`; these cost a few vector
/// instructions, within 2 ulp of the rounded power.
fn power(base: Expr, beta: f64, ct: DType) -> Expr {
    let sqrt = |e: Expr| e.un(UnOp::Sqrt);
    if beta == 0.75 {
        let b = base.un(UnOp::Sqrt);
        b.clone() * sqrt(b)
    } else if beta == 0.5 {
        sqrt(base)
    } else if beta == 1.0 {
        base
    } else {
        (Expr::constant(ct, beta) * base.un(UnOp::Log)).un(UnOp::Exp)
    }
}

fn lp_norm(cx: &LowerCtx, pb: &mut ProgramBuilder, n: &Norm, axis: i64, p: u32) -> Result<()> {
    if p != 1 && p != 2 {
        return Err(cx.err(format!("p must be 1 or 2, got {p}")));
    }
    let a = norm_axis(cx, axis, n.dims.len())?;
    let split = Split::new(&n.dims, &[a]);
    let nb = pb.scratch("norm", n.ct, split.kept_count());
    let (x, t, ct) = (n.x, n.t, n.ct);
    stat_kernel(pb, &split, format!("{}_norm", cx.node), nb, |pb, site| {
        if p == 1 {
            site.reduce(pb, RedOp::Sum, |i, _| load_as(x, i, t, ct).un(UnOp::Abs))
        } else {
            site.reduce(pb, RedOp::Sum, |i, _| {
                let e = load_as(x, i, t, ct);
                e.clone() * e
            })
            .un(UnOp::Sqrt)
        }
    });
    let dims = n.dims.clone();
    let zero = n.c(0.0);
    n.map(pb, cx.node, |_, idx, v| {
        let d = Expr::load(nb, stat_index(&dims, &[a], idx));
        // A zero norm gives 0, not 0/0 (as the ONNX reference does).
        Expr::select(d.clone().eq_(zero.clone()), zero, v.bin(BinOp::Div, d))
    });
    Ok(())
}
