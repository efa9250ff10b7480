//! LSTM, GRU and RNN, unrolled over their (static) sequence length into
//! MatMul, elementwise and data-movement ops, so that no recurrent kernel is
//! needed on any target. The input projection of all time steps is one MatMul;
//! each step adds the recurrent MatMul and the gate arithmetic.

use super::emit::Emit as Ctx;
use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{BinaryOp, SliceAxis, UnaryOp};
use kiln_ir::{Dim, Op, Region, Tensor, ValueId};

type Res<T> = Result<T, FrontendError>;

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
    Rnn,
}

/// One activation function with its (optional) parameters.
#[derive(Clone)]
struct Act {
    kind: String,
    alpha: f32,
    beta: f32,
}

impl Ctx<'_, '_> {
    /// `x[i]` along axis 0, dropping that axis.
    fn pick(&mut self, x: ValueId, i: usize) -> Res<ValueId> {
        let idx = self
            .imp
            .add_const("idx", Tensor::from_i64(vec![], vec![i as i64]));
        self.op(Op::Gather { axis: 0 }, vec![x, idx])
    }
    /// `x[..., start..end]`.
    fn cols(&mut self, x: ValueId, start: usize, end: usize) -> Res<ValueId> {
        let s = SliceAxis {
            axis: -1,
            start: start as i64,
            end: end as i64,
            step: 1,
        };
        self.op(
            Op::Slice {
                axes: Some(vec![s]),
            },
            vec![x],
        )
    }
    /// Prepends a unit axis at position `at`.
    fn unsqueeze(&mut self, x: ValueId, at: usize) -> Res<ValueId> {
        let mut s = self.imp.ty(x).shape.clone();
        s.insert(at, Dim::Known(1));
        self.op(Op::Reshape { shape: Some(s) }, vec![x])
    }
    fn concat(&mut self, xs: Vec<ValueId>, axis: i64) -> Res<ValueId> {
        if xs.len() == 1 {
            return Ok(xs[0]);
        }
        self.op(Op::Concat { axis }, xs)
    }
    fn add_opt(&mut self, a: ValueId, b: Option<ValueId>) -> Res<ValueId> {
        match b {
            Some(b) => self.bin(BinaryOp::Add, a, b),
            None => Ok(a),
        }
    }
    fn act(&mut self, a: &Act, x: ValueId) -> Res<ValueId> {
        let dtype = self.imp.ty(x).dtype;
        let u = match a.kind.to_ascii_lowercase().as_str() {
            "sigmoid" => UnaryOp::Sigmoid,
            "tanh" => UnaryOp::Tanh,
            "relu" => UnaryOp::Relu,
            "softsign" => UnaryOp::Softsign,
            "softplus" => UnaryOp::Softplus,
            "leakyrelu" => UnaryOp::LeakyRelu { alpha: a.alpha },
            "thresholdedrelu" => UnaryOp::ThresholdedRelu { alpha: a.alpha },
            "hardsigmoid" => UnaryOp::HardSigmoid {
                alpha: a.alpha,
                beta: a.beta,
            },
            "elu" => UnaryOp::Elu { alpha: a.alpha },
            "affine" => {
                let (al, be) = (
                    self.imp.scalar(dtype, a.alpha as f64),
                    self.imp.scalar(dtype, a.beta as f64),
                );
                let y = self.bin(BinaryOp::Mul, x, al)?;
                return self.bin(BinaryOp::Add, y, be);
            }
            "scaledtanh" => {
                let (al, be) = (
                    self.imp.scalar(dtype, a.alpha as f64),
                    self.imp.scalar(dtype, a.beta as f64),
                );
                let y = self.bin(BinaryOp::Mul, x, be)?;
                let y = self.un(UnaryOp::Tanh, y)?;
                return self.bin(BinaryOp::Mul, y, al);
            }
            o => return Err(self.n.bad(format!("unsupported activation '{o}'"))),
        };
        self.un(u, x)
    }
}

fn activations(n: &N, cell: Cell, dirs: usize) -> Res<Vec<Act>> {
    let defaults: &[&str] = match cell {
        Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        Cell::Gru => &["Sigmoid", "Tanh"],
        Cell::Rnn => &["Tanh"],
    };
    let names: Vec<String> = match n.strings("activations") {
        Some(v) if !v.is_empty() => v,
        _ => (0..dirs)
            .flat_map(|_| defaults.iter().map(|s| s.to_string()))
            .collect(),
    };
    if names.len() != defaults.len() * dirs {
        return Err(n.bad(format!(
            "{} activations given, {} expected",
            names.len(),
            defaults.len() * dirs
        )));
    }
    let (alphas, betas) = (
        n.floats("activation_alpha").unwrap_or_default(),
        n.floats("activation_beta").unwrap_or_default(),
    );
    let (mut ai, mut bi) = (0, 0);
    let mut out = vec![];
    for k in names {
        let lk = k.to_ascii_lowercase();
        let (da, db) = match lk.as_str() {
            "leakyrelu" => (Some(0.01), None),
            "thresholdedrelu" | "elu" => (Some(1.0), None),
            "hardsigmoid" => (Some(0.2), Some(0.5)),
            "affine" => (Some(1.0), Some(0.0)),
            "scaledtanh" => (Some(1.0), Some(1.0)),
            _ => (None, None),
        };
        let take = |list: &Vec<f32>, i: &mut usize, d: Option<f32>| {
            d.map(|d| {
                let v = list.get(*i).copied().unwrap_or(d);
                *i += 1;
                v
            })
            .unwrap_or(0.0)
        };
        let alpha = take(&alphas, &mut ai, da);
        let beta = take(&betas, &mut bi, db);
        out.push(Act {
            kind: k,
            alpha,
            beta,
        });
    }
    Ok(out)
}

pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Res<Vec<Option<ValueId>>> {
    let cell = match n.p.op_type.as_str() {
        "LSTM" => Cell::Lstm,
        "GRU" => Cell::Gru,
        _ => Cell::Rnn,
    };
    let gates = match cell {
        Cell::Lstm => 4,
        Cell::Gru => 3,
        Cell::Rnn => 1,
    };
    let dirs = match n.s("direction", "forward").as_str() {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => return Err(n.bad(format!("unknown direction '{d}'"))),
    };
    let reverse_only = n.s("direction", "forward") == "reverse";
    let acts = activations(n, cell, dirs)?;
    let layout = n.i("layout", 0);
    if layout != 0 && layout != 1 {
        return Err(n.bad(format!("layout {layout} must be 0 or 1")));
    }
    if n.i("input_forget", 0) != 0 {
        return Err(n.bad("input_forget = 1 is not supported"));
    }
    let clip = n.attr("clip").map(|a| a.f);
    let lbr = n.i("linear_before_reset", 0) != 0;

    let (x, w, rw) = (imp.req(n, 0)?, imp.req(n, 1)?, imp.req(n, 2)?);
    let b = imp.inp(n, 3)?;
    let init_h = imp.inp(n, 5)?;
    let init_c = if cell == Cell::Lstm {
        imp.inp(n, 6)?
    } else {
        None
    };
    let peep = if cell == Cell::Lstm {
        imp.inp(n, 7)?
    } else {
        None
    };
    let dtype = imp.ty(x).dtype;

    let mut cx = Ctx { imp, r, n };
    let (x, init_h, init_c) = if layout == 1 {
        let x = cx.transpose(x, vec![1, 0, 2])?;
        let h = init_h.map(|h| cx.transpose(h, vec![1, 0, 2])).transpose()?;
        let c = init_c.map(|c| cx.transpose(c, vec![1, 0, 2])).transpose()?;
        (x, h, c)
    } else {
        (x, init_h, init_c)
    };
    let xt = cx.imp.ty(x).clone();
    if xt.rank() != 3 {
        return Err(n.shape_err(format!("X must be 3-D, got {xt}")));
    }
    let Some(seq) = xt.shape[0].known() else {
        return Err(n.shape_err(format!(
            "the sequence length of X ({xt}) must be static to unroll"
        )));
    };
    let hidden = match (
        n.attr("hidden_size").map(|a| a.i),
        cx.imp.ty(rw).shape.get(2).and_then(Dim::known),
    ) {
        (Some(h), _) if h > 0 => h as usize,
        (_, Some(h)) => h,
        _ => return Err(n.bad("hidden_size is missing and R's shape is unknown")),
    };
    // Per-batch sequence lengths shorter than X: a step past an entry's length
    // keeps its state and outputs zeros (forward direction only).
    let mut seq_lens = None;
    if let Some(sl) = cx.imp.inp(n, 4)? {
        match cx.imp.konst(sl) {
            Some(t) if t.to_i64_vec().iter().all(|&v| v == seq as i64) => {}
            _ if dirs == 1 && !reverse_only => seq_lens = Some(sl),
            _ => {
                return Err(n.bad(
                    "sequence_lens shorter than X is supported only for the forward direction",
                ))
            }
        }
    }
    let h = hidden;
    let acts_per = acts.len() / dirs;

    let mut ys = vec![];
    let mut last_h = vec![];
    let mut last_c = vec![];
    for d in 0..dirs {
        let a = &acts[d * acts_per..(d + 1) * acts_per];
        let wd = cx.pick(w, d)?;
        let wt = cx.transpose(wd, vec![1, 0])?;
        let rd = cx.pick(rw, d)?;
        let rt = cx.transpose(rd, vec![1, 0])?;
        let mut xw = cx.op(Op::MatMul, vec![x, wt])?;
        let bd = b.map(|b| cx.pick(b, d)).transpose()?;
        // The bias of the recurrent h-gate of GRU stays separate (it is reset-gated).
        let mut rbh = None;
        if let Some(bd) = bd {
            let g = gates * h;
            let wb = cx.cols(bd, 0, g)?;
            let bias = match cell {
                Cell::Gru => {
                    let rzr = cx.cols(bd, g, g + 2 * h)?;
                    rbh = Some(cx.cols(bd, g + 2 * h, 2 * g)?);
                    let z = cx.imp.add_const("zeros", Tensor::zeros(dtype, vec![h]));
                    let rb = cx.concat(vec![rzr, z], 0)?;
                    cx.bin(BinaryOp::Add, wb, rb)?
                }
                _ => {
                    let rb = cx.cols(bd, g, 2 * g)?;
                    cx.bin(BinaryOp::Add, wb, rb)?
                }
            };
            xw = cx.bin(BinaryOp::Add, xw, bias)?;
        }
        let (rzr, rh) = if cell == Cell::Gru {
            (
                Some(cx.cols(rt, 0, 2 * h)?),
                Some(cx.cols(rt, 2 * h, 3 * h)?),
            )
        } else {
            (None, None)
        };
        let peeps = match peep {
            Some(p) => {
                let pd = cx.pick(p, d)?;
                Some((
                    cx.cols(pd, 0, h)?,
                    cx.cols(pd, h, 2 * h)?,
                    cx.cols(pd, 2 * h, 3 * h)?,
                ))
            }
            None => None,
        };
        let mut hp = init_h.map(|v| cx.pick(v, d)).transpose()?;
        let mut cp = init_c.map(|v| cx.pick(v, d)).transpose()?;
        let reverse = reverse_only || d == 1;
        let mut outs: Vec<Option<ValueId>> = vec![None; seq];
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            let (h_before, c_before) = (hp, cp);
            let xt = cx.pick(xw, t)?;
            let clipv = |cx: &mut Ctx, v: ValueId| -> Res<ValueId> {
                match clip {
                    Some(c) => {
                        let (lo, hi) = (
                            cx.imp.scalar(dtype, -c as f64),
                            cx.imp.scalar(dtype, c as f64),
                        );
                        let v = cx.bin(BinaryOp::Max, v, lo)?;
                        cx.bin(BinaryOp::Min, v, hi)
                    }
                    None => Ok(v),
                }
            };
            let hn = match cell {
                Cell::Rnn | Cell::Lstm => {
                    let rec = hp.map(|hv| cx.op(Op::MatMul, vec![hv, rt])).transpose()?;
                    let g = cx.add_opt(xt, rec)?;
                    let g = clipv(&mut cx, g)?;
                    if cell == Cell::Rnn {
                        cx.act(&a[0], g)?
                    } else {
                        let parts = split_last(&mut cx, g, 4, h)?;
                        let (gi, go, gf, gc) = (parts[0], parts[1], parts[2], parts[3]);
                        let peep_term = |cx: &mut Ctx,
                                         p: Option<ValueId>,
                                         c: Option<ValueId>,
                                         g: ValueId|
                         -> Res<ValueId> {
                            match (p, c) {
                                (Some(p), Some(c)) => {
                                    let pc = cx.bin(BinaryOp::Mul, p, c)?;
                                    cx.bin(BinaryOp::Add, g, pc)
                                }
                                _ => Ok(g),
                            }
                        };
                        let gi = peep_term(&mut cx, peeps.map(|p| p.0), cp, gi)?;
                        let gf = peep_term(&mut cx, peeps.map(|p| p.2), cp, gf)?;
                        let i = cx.act(&a[0], gi)?;
                        let f = cx.act(&a[0], gf)?;
                        let ct = cx.act(&a[1], gc)?;
                        let ic = cx.bin(BinaryOp::Mul, i, ct)?;
                        let c = match cp {
                            Some(cv) => {
                                let fc = cx.bin(BinaryOp::Mul, f, cv)?;
                                cx.bin(BinaryOp::Add, fc, ic)?
                            }
                            None => ic,
                        };
                        let go = peep_term(&mut cx, peeps.map(|p| p.1), Some(c), go)?;
                        let o = cx.act(&a[0], go)?;
                        let hc = cx.act(&a[2], c)?;
                        cp = Some(c);
                        cx.bin(BinaryOp::Mul, o, hc)?
                    }
                }
                Cell::Gru => {
                    let parts = split_last(&mut cx, xt, 3, h)?;
                    let (xz, xr, xh) = (parts[0], parts[1], parts[2]);
                    let (z, r) = match hp {
                        Some(hv) => {
                            let hzr = cx.op(Op::MatMul, vec![hv, rzr.unwrap_or(rt)])?;
                            let hp2 = split_last(&mut cx, hzr, 2, h)?;
                            let gz = cx.bin(BinaryOp::Add, xz, hp2[0])?;
                            let gr = cx.bin(BinaryOp::Add, xr, hp2[1])?;
                            (clipv(&mut cx, gz)?, clipv(&mut cx, gr)?)
                        }
                        None => (clipv(&mut cx, xz)?, clipv(&mut cx, xr)?),
                    };
                    let z = cx.act(&a[0], z)?;
                    let rg = cx.act(&a[0], r)?;
                    let rh_term = match (hp, lbr) {
                        (Some(hv), false) => {
                            let rhv = cx.bin(BinaryOp::Mul, rg, hv)?;
                            let m = cx.op(Op::MatMul, vec![rhv, rh.unwrap_or(rt)])?;
                            Some(cx.add_opt(m, rbh)?)
                        }
                        (Some(hv), true) => {
                            let m = cx.op(Op::MatMul, vec![hv, rh.unwrap_or(rt)])?;
                            let m = cx.add_opt(m, rbh)?;
                            Some(cx.bin(BinaryOp::Mul, rg, m)?)
                        }
                        (None, false) => rbh,
                        (None, true) => rbh.map(|b| cx.bin(BinaryOp::Mul, rg, b)).transpose()?,
                    };
                    let gh = cx.add_opt(xh, rh_term)?;
                    let gh = clipv(&mut cx, gh)?;
                    let ht = cx.act(&a[1], gh)?;
                    // H = ht + z * (h_prev - ht)
                    let diff = match hp {
                        Some(hv) => cx.bin(BinaryOp::Sub, hv, ht)?,
                        None => cx.un(UnaryOp::Neg, ht)?,
                    };
                    let zd = cx.bin(BinaryOp::Mul, z, diff)?;
                    cx.bin(BinaryOp::Add, ht, zd)?
                }
            };
            let hn = match seq_lens {
                Some(sl) => {
                    let sl_t = cx.imp.ty(sl).dtype;
                    let tc = cx.imp.scalar(sl_t, t as f64);
                    let live = cx.bin(BinaryOp::Less, tc, sl)?;
                    let live = cx.unsqueeze(live, 1)?;
                    let zero = cx.imp.scalar(dtype, 0.0);
                    let y = cx.op(Op::Select, vec![live, hn, zero])?;
                    outs[t] = Some(y);
                    if let (Some(c), true) = (cp, cell == Cell::Lstm) {
                        cp = Some(cx.op(Op::Select, vec![live, c, c_before.unwrap_or(zero)])?);
                    }
                    cx.op(Op::Select, vec![live, hn, h_before.unwrap_or(zero)])?
                }
                None => {
                    outs[t] = Some(hn);
                    hn
                }
            };
            hp = Some(hn);
        }
        let hs: Vec<ValueId> = outs.into_iter().flatten().collect();
        if cx
            .imp
            .is_used(n.p.output.first().map(String::as_str).unwrap_or(""))
        {
            let mut parts = vec![];
            for &v in &hs {
                parts.push(cx.unsqueeze(v, 0)?);
            }
            let yd = cx.concat(parts, 0)?;
            ys.push(cx.unsqueeze(yd, 1)?);
        }
        if let Some(hv) = hp {
            last_h.push(cx.unsqueeze(hv, 0)?);
        }
        if let Some(cv) = cp {
            last_c.push(cx.unsqueeze(cv, 0)?);
        }
    }
    let y = if ys.is_empty() {
        None
    } else {
        Some(cx.concat(ys, 1)?)
    };
    let yh = if last_h.len() == dirs {
        Some(cx.concat(last_h, 0)?)
    } else {
        None
    };
    let yc = if last_c.len() == dirs && cell == Cell::Lstm {
        Some(cx.concat(last_c, 0)?)
    } else {
        None
    };
    let (y, yh, yc) = if layout == 1 {
        (
            y.map(|v| cx.transpose(v, vec![2, 0, 1, 3])).transpose()?,
            yh.map(|v| cx.transpose(v, vec![1, 0, 2])).transpose()?,
            yc.map(|v| cx.transpose(v, vec![1, 0, 2])).transpose()?,
        )
    } else {
        (y, yh, yc)
    };
    Ok(vec![y, yh, yc])
}

fn split_last(cx: &mut Ctx, x: ValueId, k: usize, h: usize) -> Res<Vec<ValueId>> {
    let nm = cx.imp.fresh(&cx.n.name);
    cx.imp.add(
        cx.r,
        &nm,
        Op::Split {
            axis: -1,
            sizes: Some(vec![h; k]),
        },
        vec![Some(x)],
        k,
    )
}
