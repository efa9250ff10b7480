//! Resize: each output element is a weighted sum of input taps, per axis
//! 1 (nearest), 2 (linear) or 4 (cubic), over the product of the axes that
//! actually change. Coordinates and weights are computed in f64, matching
//! the ONNX reference, and the sum is rounded to the output type once.
//!
//! The tap window and weights follow the reference exactly: for a source
//! coordinate `x` with integer part `f`, a non-integer `x` uses taps starting
//! at `f - (n/2 - 1)` with ratio `x - f`; an integer `x` uses the window one
//! to the left with ratio 1 (which puts full weight on `x`). Taps past the
//! border repeat the edge; `exclude_outside` drops them and renormalises.

use crate::lower::{LowerCtx, Result};
use kiln_ir::graph::{CoordTransform, NearestMode, ResizeMode};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BinOp, BufId, Expr, Stmt, UnOp};
use kiln_ir::{DType, Op};

fn f(v: f64) -> Expr {
    Expr::F(v, DType::F64)
}

/// How the source coordinate of one axis is found.
struct AxisMap {
    a: usize,
    n_in: usize,
    scale: f64,
    /// The real-valued output length `scale * n_in` (the exact size when sizes were given).
    out_w: f64,
    out_n: usize,
}

/// The taps of one axis for the current output element: (index, weight) pairs, and
/// whether the coordinate fell outside the input (tf_crop_and_resize only).
struct Taps {
    taps: Vec<(Expr, Expr)>,
    outside: Option<Expr>,
}

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let Op::Resize {
        mode,
        coord,
        nearest,
        cubic_coeff,
        exclude_outside,
        extrapolation_value,
        scales,
        sizes,
    } = cx.op
    else {
        return Err(cx.err("not a resize"));
    };
    let io = cx.io(pb)?;
    let (x, out) = (io.input(0), io.outputs[0]);
    let xd = cx.in_dims(0)?;
    let od = cx.out_dims(0)?;
    let r = xd.len();
    if od.len() != r {
        return Err(cx.err(format!(
            "output rank {} differs from input rank {r}",
            od.len()
        )));
    }
    let scales = scales
        .as_ref()
        .ok_or_else(|| cx.err("scales are not known: specialise the node first"))?;
    if scales.len() != r {
        return Err(cx.err(format!("{} scales for rank {r}", scales.len())));
    }
    let roi = match io.inputs.get(1).copied().flatten() {
        Some(b) if cx.in_dims(1)?.iter().product::<usize>() >= 2 * r => {
            Some((b, cx.in_type(1)?.dtype))
        }
        _ => None,
    };
    if *coord == CoordTransform::TfCropAndResize && roi.is_none() {
        return Err(cx.err("tf_crop_and_resize needs a roi of 2 * rank values"));
    }
    let roi_const: Option<Vec<f64>> = cx.konst(1).map(|t| t.to_f64_vec());
    let mut maps = vec![];
    for a in 0..r {
        let (n_in, out_n) = (xd[a], od[a]);
        let (scale, out_w) = match sizes {
            Some(_) if n_in > 0 => (out_n as f64 / n_in as f64, out_n as f64),
            _ => (scales[a] as f64, scales[a] as f64 * n_in as f64),
        };
        let roi_trivial = match &roi_const {
            Some(v) if v.len() >= 2 * r => (v[a]).abs() < 1e-9 && (v[a + r] - 1.0).abs() < 1e-9,
            Some(_) => true,
            None => roi.is_none(),
        };
        let identity = (scale - 1.0).abs() <= 1e-9 && out_n == n_in && roi_trivial;
        if identity || out_n == 0 {
            continue;
        }
        if n_in == 0 {
            return Err(cx.err(format!("cannot resize an empty axis {a} to {out_n}")));
        }
        maps.push(AxisMap {
            a,
            n_in,
            scale,
            out_w,
            out_n,
        });
    }
    let xs = strides(&xd);
    let ot = cx.outputs[0].dtype;
    let a_coef = *cubic_coeff as f64;
    let os = strides(&od);
    let body = pb.nest(&od, |pb, idx| {
        let mut lets = vec![];
        let mut per_axis: Vec<(usize, Taps)> = vec![];
        for m in &maps {
            let t = axis_taps(
                pb,
                &mut lets,
                m,
                idx,
                *mode,
                *coord,
                *nearest,
                a_coef,
                *exclude_outside,
                roi,
                r,
            );
            per_axis.push((m.a, t));
        }
        // Sum over the product of all axes' taps.
        let mut terms: Vec<(Vec<Expr>, Option<Expr>)> = vec![(idx.to_vec(), None)];
        for (a, t) in &per_axis {
            let mut next = vec![];
            for (ix, w) in &terms {
                for (ti, tw) in &t.taps {
                    let mut ix = ix.clone();
                    ix[*a] = ti.clone();
                    let w = match w {
                        None => tw.clone(),
                        Some(w) => w.clone() * tw.clone(),
                    };
                    next.push((ix, Some(w)));
                }
            }
            terms = next;
        }
        let mut sum: Option<Expr> = None;
        for (ix, w) in terms {
            let v = Expr::load(x, linear_index(&ix, &xs));
            let term = match w {
                None => v,
                Some(w) => w * v.cast(DType::F64),
            };
            sum = Some(match sum {
                None => term,
                Some(s) => s + term,
            });
        }
        let mut v = sum.unwrap_or_else(|| f(0.0));
        if maps.is_empty() {
            // Pure copy: no arithmetic, so integer and narrow types stay exact.
            return store(lets, out, linear_index(idx, &os), v);
        }
        let outside = per_axis
            .iter()
            .filter_map(|(_, t)| t.outside.clone())
            .reduce(|a, b| a.or(b));
        if let Some(o) = outside {
            v = Expr::select(o, f(*extrapolation_value as f64), v);
        }
        if !ot.is_float() && ot != DType::Bool {
            v = v.un(UnOp::Round);
        }
        store(lets, out, linear_index(idx, &os), v.cast(ot))
    });
    pb.kernel(cx.node, body);
    Ok(())
}

/// The per-axis `Let`s, then the store.
fn store(mut lets: Vec<Stmt>, buf: BufId, index: Expr, value: Expr) -> Vec<Stmt> {
    lets.push(Stmt::Store { buf, index, value });
    lets
}

#[allow(clippy::too_many_arguments)]
fn axis_taps(
    pb: &mut ProgramBuilder,
    lets: &mut Vec<Stmt>,
    m: &AxisMap,
    idx: &[Expr],
    mode: ResizeMode,
    coord: CoordTransform,
    nearest: NearestMode,
    a_coef: f64,
    exclude_outside: bool,
    roi: Option<(BufId, DType)>,
    rank: usize,
) -> Taps {
    let mut bind = |lets: &mut Vec<Stmt>, e: Expr| {
        let v = pb.var();
        lets.push(Stmt::Let { var: v, value: e });
        Expr::var(v)
    };
    let y = idx[m.a].clone().cast(DType::F64);
    let n_in = m.n_in as f64;
    let mut outside = None;
    let x_ori = match coord {
        CoordTransform::AlignCorners => {
            if m.out_w == 1.0 {
                f(0.0)
            } else {
                (y * f(n_in - 1.0)).bin(BinOp::Div, f(m.out_w - 1.0))
            }
        }
        CoordTransform::Asymmetric => y.bin(BinOp::Div, f(m.scale)),
        CoordTransform::TfCropAndResize => {
            let (rb, rt) = roi.expect("checked by the caller");
            let load = |i: usize| {
                let e = Expr::load(rb, Expr::i(i as i64));
                if rt == DType::F64 {
                    e
                } else {
                    e.cast(DType::F64)
                }
            };
            let (s, e) = (load(m.a), load(m.a + rank));
            let span = e - s.clone();
            let base = if m.out_w == 1.0 {
                (span * f(n_in - 1.0)).bin(BinOp::Div, f(2.0))
            } else {
                (y * span * f(n_in - 1.0)).bin(BinOp::Div, f(m.out_w - 1.0))
            };
            let xv = bind(lets, base + s * f(n_in - 1.0));
            outside = Some(xv.clone().lt(f(0.0)).or(xv.clone().gt(f(n_in - 1.0))));
            xv
        }
        CoordTransform::PytorchHalfPixel => {
            if m.out_w == 1.0 {
                f(-0.5)
            } else {
                (y + f(0.5)).bin(BinOp::Div, f(m.scale)) - f(0.5)
            }
        }
        CoordTransform::HalfPixel => (y + f(0.5)).bin(BinOp::Div, f(m.scale)) - f(0.5),
        CoordTransform::HalfPixelSymmetric => {
            let adjustment = m.out_n as f64 / m.out_w;
            let offset = n_in / 2.0 * (1.0 - adjustment);
            f(offset) + (y + f(0.5)).bin(BinOp::Div, f(m.scale)) - f(0.5)
        }
    };
    let xv = bind(lets, x_ori);
    let fl = bind(lets, xv.clone().un(UnOp::Floor));
    let is_int = xv.clone().bin(BinOp::Eq, fl.clone());
    let ratio = bind(lets, Expr::select(is_int.clone(), f(1.0), xv - fl.clone()));
    let fli = bind(lets, fl.cast(DType::I64));
    let hi = m.n_in as i64 - 1;
    let clamp = |e: Expr| e.max(Expr::i(0)).min(Expr::i(hi));
    if mode == ResizeMode::Nearest {
        let up = match nearest {
            NearestMode::RoundPreferFloor => ratio.gt(f(0.5)),
            NearestMode::RoundPreferCeil => ratio.ge(f(0.5)),
            NearestMode::Floor => Expr::B(false),
            NearestMode::Ceil => Expr::B(true),
        };
        let step = Expr::select(is_int.or(up.un(UnOp::Not)), Expr::i(0), Expr::i(1));
        let i = bind(lets, clamp(fli + step));
        return Taps {
            taps: vec![(i, f(1.0))],
            outside,
        };
    }
    let (n, weights): (i64, Vec<Expr>) = match mode {
        ResizeMode::Linear => (2, vec![f(1.0) - ratio.clone(), ratio.clone()]),
        _ => {
            let a = a_coef;
            let r = ratio.clone();
            let s = f(1.0) - ratio.clone();
            let far = |t: Expr| {
                ((f(a) * t.clone() - f(5.0 * a)) * t.clone() + f(8.0 * a)) * t - f(4.0 * a)
            };
            let near = |t: Expr| (f(a + 2.0) * t.clone() - f(a + 3.0)) * t.clone() * t + f(1.0);
            (
                4,
                vec![
                    far(r.clone() + f(1.0)),
                    near(r),
                    near(s.clone()),
                    far(s + f(1.0)),
                ],
            )
        }
    };
    let start = bind(
        lets,
        fli + Expr::select(is_int, Expr::i(-n / 2), Expr::i(1 - n / 2)),
    );
    let raw: Vec<Expr> = (0..n).map(|t| start.clone() + t).collect();
    let mut ws: Vec<Expr> = weights.into_iter().map(|w| bind(lets, w)).collect();
    if exclude_outside {
        ws = ws
            .into_iter()
            .zip(&raw)
            .map(|(w, i)| {
                Expr::select(
                    i.clone().ge(Expr::i(0)).and(i.clone().le(Expr::i(hi))),
                    w,
                    f(0.0),
                )
            })
            .map(|w| bind(lets, w))
            .collect();
        let total = ws
            .iter()
            .cloned()
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| f(1.0));
        let total = bind(lets, total);
        let total = bind(lets, Expr::select(total.clone().eq_(f(0.0)), f(1.0), total));
        ws = ws
            .into_iter()
            .map(|w| bind(lets, w.bin(BinOp::Div, total.clone())))
            .collect();
    }
    let taps = raw.into_iter().map(clamp).zip(ws).collect();
    Taps { taps, outside }
}
