//! Signal and geometry ONNX ops (DFT, AffineGrid, MaxUnpool) expressed as
//! constant matrices and existing kiln ops, so their meaning still comes from
//! the MatMul, Transpose and Scatter lowerings.

use super::emit::node;
use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::BinaryOp;
use kiln_ir::tensor::Storage;
use kiln_ir::{DType, Dim, Op, Region, Tensor, ValueId};

/// The ONNX ops this module expresses.
pub(crate) const OPS: &[&str] = &["AffineGrid", "DFT", "MaxUnpool"];

type Outs = Result<Vec<Option<ValueId>>, FrontendError>;

fn reshape(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    x: ValueId,
    shape: Vec<Dim>,
) -> Result<ValueId, FrontendError> {
    node(imp, r, n, Op::Reshape { shape: Some(shape) }, vec![Some(x)])
}

fn transpose(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    x: ValueId,
    perm: Vec<usize>,
) -> Result<ValueId, FrontendError> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x);
    }
    node(imp, r, n, Op::Transpose { perm }, vec![Some(x)])
}

fn known(n: &N, d: &Dim, what: &str) -> Result<usize, FrontendError> {
    match d {
        Dim::Known(v) => Ok(*v),
        _ => Err(n.shape_err(format!("{what} must have a known extent"))),
    }
}

/// A scalar integer input that must be constant (`None` when omitted).
fn const_int(imp: &Importer, n: &N, i: usize) -> Result<Option<i64>, FrontendError> {
    if imp.inp(n, i)?.is_none() {
        return Ok(None);
    }
    match imp.const_input(n, i)? {
        Some(t) => t
            .to_i64_vec()
            .first()
            .copied()
            .map(Some)
            .ok_or_else(|| n.bad(format!("input {i} is empty"))),
        None => Err(n.bad(format!("input {i} must be a constant"))),
    }
}

pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    match n.p.op_type.as_str() {
        "DFT" => dft(imp, r, n),
        "AffineGrid" => affine_grid(imp, r, n),
        "MaxUnpool" => max_unpool(imp, r, n),
        other => Err(n.bad(format!("op {other} has no mapping"))),
    }
}

/// The DFT as one real MatMul: the transformed axis and the complex pair are
/// flattened into the contraction dimension `m*C + c`, and the matrix maps
/// them to `k*C' + c'`, so complex arithmetic, truncation/zero-padding to
/// `dft_length`, one-sidedness and the inverse's Hermitian extension are all
/// folded into constant coefficients.
fn dft(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    let xt = imp.ty(x).clone();
    let rank = xt.rank();
    if rank < 2 {
        return Err(n.shape_err(format!("input must have rank >= 2, got {rank}")));
    }
    let c_in = known(n, &xt.shape[rank - 1], "the last axis")?;
    if c_in != 1 && c_in != 2 {
        return Err(n.shape_err(format!("last axis must be 1 or 2, got {c_in}")));
    }
    if imp.opset >= 20 && imp.inp(n, 2)?.is_some() && imp.const_input(n, 2)?.is_none() {
        return dft_runtime_axis(imp, r, n, x, rank);
    }
    let axis = if imp.opset >= 20 {
        const_int(imp, n, 2)?.unwrap_or(-2)
    } else {
        n.i("axis", 1)
    };
    let y = dft_along(imp, r, n, x, axis, true)?;
    Ok(vec![Some(y)])
}

/// An axis known only at run time: one DFT per candidate axis, chosen by a
/// chain of Ifs (branches may differ in shape; the If output takes a symbol).
/// Axes whose DFT is ill-formed (e.g. a default one-sided inverse length of
/// 0) are left out, and the last candidate is taken without a test.
fn dft_runtime_axis(imp: &mut Importer, r: &mut Region, n: &N, x: ValueId, rank: usize) -> Outs {
    let mut cands: Vec<(usize, Region)> = Vec::new();
    let mut first_err = None;
    for a in 0..rank - 1 {
        let mut reg = Region::default();
        match dft_along(imp, &mut reg, n, x, a as i64, false) {
            Ok(y) => {
                reg.results = vec![y];
                cands.push((a, reg));
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let Some((_, mut tail)) = cands.pop() else {
        return Err(first_err.unwrap_or_else(|| n.bad("no axis to transform")));
    };
    if cands.is_empty() {
        let y = tail.results[0];
        r.nodes.append(&mut tail.nodes);
        let nm = n.name.clone();
        return Ok(vec![Some(imp.add1(r, &nm, Op::Identity, vec![Some(y)])?)]);
    }
    let axis = imp.req(n, 2)?;
    let axis = node(imp, r, n, Op::Cast { to: DType::I64 }, vec![Some(axis)])?;
    let axis = reshape(imp, r, n, axis, vec![])?;
    let eq = Op::Binary {
        op: BinaryOp::Equal,
    };
    let or = Op::Binary { op: BinaryOp::Or };
    while let Some((a, then_r)) = cands.pop() {
        let pos = imp.scalar(DType::I64, a as f64);
        let neg = imp.scalar(DType::I64, a as f64 - rank as f64);
        let c1 = node(imp, r, n, eq.clone(), vec![Some(axis), Some(pos)])?;
        let c2 = node(imp, r, n, eq.clone(), vec![Some(axis), Some(neg)])?;
        let cond = node(imp, r, n, or.clone(), vec![Some(c1), Some(c2)])?;
        let regions = vec![then_r, tail];
        if cands.is_empty() {
            let nm = n.name.clone();
            let ids = imp.add_control(r, &nm, Op::If, vec![Some(cond)], 1, regions)?;
            return Ok(vec![Some(ids[0])]);
        }
        let nm = imp.fresh(&n.name);
        let mut host = Region::default();
        let ids = imp.add_control(&mut host, &nm, Op::If, vec![Some(cond)], 1, regions)?;
        host.results = vec![ids[0]];
        tail = host;
    }
    Err(n.bad("internal: empty DFT axis chain"))
}

fn dft_along(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    x: ValueId,
    axis: i64,
    named: bool,
) -> Result<ValueId, FrontendError> {
    let xt = imp.ty(x).clone();
    let rank = xt.rank();
    let c_in = known(n, &xt.shape[rank - 1], "the last axis")?;
    let axis = axis.rem_euclid(rank as i64) as usize;
    if axis == rank - 1 {
        return Err(n.bad("axis must not be the last (complex) axis"));
    }
    let m = known(n, &xt.shape[axis], "the transformed axis")?;
    let inverse = n.i("inverse", 0) != 0;
    let onesided = n.i("onesided", 0) != 0;
    let len = match const_int(imp, n, 1)? {
        Some(l) if l > 0 => l as usize,
        Some(l) => return Err(n.bad(format!("dft_length must be positive, got {l}"))),
        None if inverse && onesided => 2 * m.saturating_sub(1),
        None => m,
    };
    if len == 0 {
        return Err(n.bad("dft_length is 0"));
    }
    let (k_out, c_out) = match (inverse, onesided) {
        (false, true) => (len / 2 + 1, 2),
        (true, true) => (len, 1),
        _ => (len, 2),
    };
    let w = dft_matrix(m, c_in, len, k_out, c_out, inverse, onesided);
    let dtype = xt.dtype;
    let wt = Tensor::new(vec![m * c_in, k_out * c_out], Storage::from_f64s(dtype, w))
        .ok_or_else(|| n.bad("internal: DFT matrix size"))?;
    let wv = imp.add_const(&n.name, wt);

    let mut perm: Vec<usize> = (0..rank - 1).filter(|&d| d != axis).collect();
    let batch: Vec<Dim> = perm.iter().map(|&d| xt.shape[d].clone()).collect();
    perm.push(axis);
    perm.push(rank - 1);
    let xp = transpose(imp, r, n, x, perm.clone())?;
    let mut flat = batch.clone();
    flat.push(Dim::Known(m * c_in));
    let xf = reshape(imp, r, n, xp, flat)?;
    let y = node(imp, r, n, Op::MatMul, vec![Some(xf), Some(wv)])?;
    let mut split = batch;
    split.push(Dim::Known(k_out));
    split.push(Dim::Known(c_out));
    let y = reshape(imp, r, n, y, split)?;
    let mut inv = vec![0; rank];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let nm = if named {
        n.name.clone()
    } else {
        imp.fresh(&n.name)
    };
    if inv.iter().enumerate().all(|(i, &p)| i == p) {
        imp.add1(r, &nm, Op::Identity, vec![Some(y)])
    } else {
        imp.add1(r, &nm, Op::Transpose { perm: inv }, vec![Some(y)])
    }
}

/// Row-major `[m*c_in, k_out*c_out]` coefficients. Forward: `X_k = Σ x_j
/// e^{-2πi jk/L}`; inverse: `x_k = (1/L) Σ X_j e^{+2πi jk/L}`; the one-sided
/// inverse counts each non-self-conjugate bin twice and keeps the real part.
fn dft_matrix(
    m: usize,
    c_in: usize,
    len: usize,
    k_out: usize,
    c_out: usize,
    inverse: bool,
    onesided: bool,
) -> Vec<f64> {
    let cols = k_out * c_out;
    let mut w = vec![0.0; m * c_in * cols];
    let sign = if inverse { 1.0 } else { -1.0 };
    let scale = if inverse { 1.0 / len as f64 } else { 1.0 };
    // Inputs beyond dft_length are truncated; a one-sided inverse reads bins 0..=L/2.
    let used = if inverse && onesided {
        m.min(len / 2 + 1)
    } else {
        m.min(len)
    };
    for j in 0..used {
        let weight = if inverse && onesided && j != 0 && !(len.is_multiple_of(2) && j == len / 2) {
            2.0
        } else {
            1.0
        };
        for k in 0..k_out {
            // Reduce j*k mod L exactly before the trigonometry.
            let ph = ((j * k) % len) as f64 * 2.0 * std::f64::consts::PI / len as f64;
            let (s, c) = (sign * ph.sin(), ph.cos());
            let f = scale * weight;
            // (a + ib)(c + is) = (ac - bs) + i(as + bc)
            let row_re = (j * c_in) * cols + k * c_out;
            w[row_re] = f * c;
            if c_out == 2 {
                w[row_re + 1] = f * s;
            }
            if c_in == 2 {
                let row_im = (j * c_in + 1) * cols + k * c_out;
                w[row_im] = -f * s;
                if c_out == 2 {
                    w[row_im + 1] = f * c;
                }
            }
        }
    }
    w
}

/// Inserts unit axes so that `x`'s dims land at `at` in a rank-`rank` result.
fn place(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    x: ValueId,
    rank: usize,
    at: &[usize],
) -> Result<ValueId, FrontendError> {
    let xs = imp.ty(x).shape.clone();
    let mut shape = vec![Dim::Known(1); rank];
    for (d, &a) in xs.into_iter().zip(at) {
        shape[a] = d;
    }
    reshape(imp, r, n, x, shape)
}

/// `grid[n, (d,) h, w] = theta[n] · (x_w, y_h, (z_d,) 1)`, as a broadcast sum of
/// theta's columns times per-axis coordinate vectors built from the runtime
/// `size` (`(2j + 1)/S - 1`, or `2j/(S - 1) - 1` with aligned corners).
fn affine_grid(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (theta, size) = (imp.req(n, 0)?, imp.req(n, 1)?);
    let tt = imp.ty(theta).clone();
    if tt.rank() != 3 {
        return Err(n.shape_err(format!("theta must have rank 3, got {}", tt.rank())));
    }
    let s = known(n, &tt.shape[1], "theta's axis 1")?;
    if s != 2 && s != 3 {
        return Err(n.shape_err(format!(
            "theta must be [N, 2, 3] or [N, 3, 4], got {s} rows"
        )));
    }
    let dt = tt.dtype;
    let align = n.i("align_corners", 0) != 0;
    let rank = s + 2;
    let size = node(imp, r, n, Op::Cast { to: DType::I64 }, vec![Some(size)])?;
    let mut acc: Option<ValueId> = None;
    for col in 0..=s {
        let k = imp.add_const(&n.name, Tensor::from_i64(vec![], vec![col as i64]));
        let tc = node(
            imp,
            r,
            n,
            Op::Gather { axis: 2 },
            vec![Some(theta), Some(k)],
        )?;
        let tc = place(imp, r, n, tc, rank, &[0, rank - 1])?;
        let term = if col == s {
            tc
        } else {
            // Column 0 pairs with the last spatial axis (x), column 1 with the one before.
            let sp = s - 1 - col;
            let idx = imp.add_const(&n.name, Tensor::from_i64(vec![], vec![2 + sp as i64]));
            let ext = node(
                imp,
                r,
                n,
                Op::Gather { axis: 0 },
                vec![Some(size), Some(idx)],
            )?;
            // j along axis 1+sp of a [1, .., S, .., 1] tensor: an exclusive running
            // sum of ones, so the runtime extent needs no symbolic reshape.
            let mut e = vec![0i64; rank];
            e[1 + sp] = 1;
            let mut pick = vec![0i64; rank];
            pick[1 + sp] = 2 + sp as i64;
            let pick = imp.add_const(&n.name, Tensor::from_i64(vec![rank], pick));
            let picked = node(
                imp,
                r,
                n,
                Op::Gather { axis: 0 },
                vec![Some(size), Some(pick)],
            )?;
            let keep = imp.add_const(&n.name, Tensor::from_i64(vec![rank], e.clone()));
            let ones: Vec<i64> = e.iter().map(|v| 1 - v).collect();
            let ones = imp.add_const(&n.name, Tensor::from_i64(vec![rank], ones));
            let mul_i = Op::Binary { op: BinaryOp::Mul };
            let sh = node(imp, r, n, mul_i, vec![Some(picked), Some(keep)])?;
            let sh = node(
                imp,
                r,
                n,
                Op::Binary { op: BinaryOp::Add },
                vec![Some(sh), Some(ones)],
            )?;
            let value = kiln_ir::graph::ScalarValue {
                dtype: dt,
                value: 1.0,
            };
            let fill = node(
                imp,
                r,
                n,
                Op::ConstantOfShape { shape: None, value },
                vec![Some(sh)],
            )?;
            let cs = Op::CumSum {
                axis: Some(1 + sp as i64),
                exclusive: true,
                reverse: false,
                prod: false,
            };
            let j = node(imp, r, n, cs, vec![Some(fill)])?;
            let ext = node(imp, r, n, Op::Cast { to: dt }, vec![Some(ext)])?;
            let one_f = imp.scalar(dt, 1.0);
            let two = imp.scalar(dt, 2.0);
            let mul = Op::Binary { op: BinaryOp::Mul };
            let j2 = node(imp, r, n, mul.clone(), vec![Some(j), Some(two)])?;
            let (num, den) = if align {
                let d = node(
                    imp,
                    r,
                    n,
                    Op::Binary { op: BinaryOp::Sub },
                    vec![Some(ext), Some(one_f)],
                )?;
                let d = node(
                    imp,
                    r,
                    n,
                    Op::Binary { op: BinaryOp::Max },
                    vec![Some(d), Some(one_f)],
                )?;
                (j2, d)
            } else {
                let nm = node(
                    imp,
                    r,
                    n,
                    Op::Binary { op: BinaryOp::Add },
                    vec![Some(j2), Some(one_f)],
                )?;
                (nm, ext)
            };
            let c = node(
                imp,
                r,
                n,
                Op::Binary { op: BinaryOp::Div },
                vec![Some(num), Some(den)],
            )?;
            let c = node(
                imp,
                r,
                n,
                Op::Binary { op: BinaryOp::Sub },
                vec![Some(c), Some(one_f)],
            )?;
            node(imp, r, n, mul, vec![Some(tc), Some(c)])?
        };
        acc = Some(match acc {
            None => term,
            Some(a) => node(
                imp,
                r,
                n,
                Op::Binary { op: BinaryOp::Add },
                vec![Some(a), Some(term)],
            )?,
        });
    }
    let acc = acc.ok_or_else(|| n.bad("internal: empty affine sum"))?;
    let nm = n.name.clone();
    Ok(vec![Some(imp.add1(
        r,
        &nm,
        Op::Identity,
        vec![Some(acc)],
    )?)])
}

/// Scatters X into a flat zero tensor of the inferred unpooled shape at the
/// (whole-tensor, flat) indices I, then zero-pads at the end of each axis up to
/// a given `output_shape`, which may arrive at run time.
fn max_unpool(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (x, idx) = (imp.req(n, 0)?, imp.req(n, 1)?);
    let xt = imp.ty(x).clone();
    let rank = xt.rank();
    let kernel = n
        .ints("kernel_shape")
        .ok_or_else(|| n.bad("kernel_shape is required"))?;
    let k = kernel.len();
    if rank != k + 2 {
        return Err(n.shape_err(format!("input rank {rank} does not match {k} kernel dims")));
    }
    let strides = n.ints("strides").unwrap_or_else(|| vec![1; k]);
    let pads = n.ints("pads").unwrap_or_else(|| vec![0; 2 * k]);
    if strides.len() != k || pads.len() != 2 * k {
        return Err(n.bad("strides/pads do not match kernel_shape"));
    }
    let dims = xt
        .shape
        .iter()
        .map(|d| known(n, d, "every input axis"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut inferred = dims[..2].to_vec();
    for d in 0..k {
        let v = (dims[d + 2] as i64 - 1) * strides[d] - (pads[d] + pads[k + d]) + kernel[d];
        if v <= 0 {
            return Err(n.shape_err(format!("unpooled axis {} has extent {v}", d + 2)));
        }
        inferred.push(v as usize);
    }
    let total: usize = inferred.iter().product();
    let numel: usize = dims.iter().product();
    let zeros = imp.add_const(&n.name, Tensor::zeros(xt.dtype, vec![total]));
    let flat = vec![Dim::Known(numel)];
    let xf = reshape(imp, r, n, x, flat.clone())?;
    let idx = node(imp, r, n, Op::Cast { to: DType::I64 }, vec![Some(idx)])?;
    let i_f = reshape(imp, r, n, idx, flat)?;
    let sc = Op::ScatterElements {
        axis: 0,
        reduction: kiln_ir::graph::ScatterReduction::None,
    };
    let y = node(imp, r, n, sc, vec![Some(zeros), Some(i_f), Some(xf)])?;
    let shape: Vec<Dim> = inferred.iter().map(|&v| Dim::Known(v)).collect();
    let nm = n.name.clone();
    let Some(os) = imp.inp(n, 2)? else {
        return Ok(vec![Some(imp.add1(
            r,
            &nm,
            Op::Reshape { shape: Some(shape) },
            vec![Some(y)],
        )?)]);
    };
    let y = reshape(imp, r, n, y, shape)?;
    let os = node(imp, r, n, Op::Cast { to: DType::I64 }, vec![Some(os)])?;
    let inf = imp.add_const(
        &n.name,
        Tensor::from_i64(vec![rank], inferred.iter().map(|&v| v as i64).collect()),
    );
    let after = node(
        imp,
        r,
        n,
        Op::Binary { op: BinaryOp::Sub },
        vec![Some(os), Some(inf)],
    )?;
    let before = imp.add_const(&n.name, Tensor::from_i64(vec![rank], vec![0; rank]));
    let pads = node(
        imp,
        r,
        n,
        Op::Concat { axis: 0 },
        vec![Some(before), Some(after)],
    )?;
    let op = Op::Pad {
        mode: kiln_ir::graph::PadMode::Constant,
        pads: None,
        value: 0.0,
    };
    Ok(vec![Some(imp.add1(
        r,
        &nm,
        op,
        vec![Some(y), Some(pads)],
    )?)])
}

#[cfg(test)]
mod tests {
    use super::dft_matrix;

    /// `x · W`: a row vector through a row-major `[rows, cols]` matrix.
    fn apply(x: &[f64], w: &[f64], cols: usize) -> Vec<f64> {
        (0..cols)
            .map(|c| x.iter().enumerate().map(|(r, v)| v * w[r * cols + c]).sum())
            .collect()
    }

    #[test]
    fn inverse_undoes_forward() {
        let x = [1.0, 0.5, -2.0, 0.0, 3.0, 1.5, 0.25, -1.0, 2.0, 0.0];
        let f = dft_matrix(5, 2, 5, 5, 2, false, false);
        let i = dft_matrix(5, 2, 5, 5, 2, true, false);
        let back = apply(&apply(&x, &f, 10), &i, 10);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-9, "{x:?} != {back:?}");
        }
    }

    #[test]
    fn onesided_inverse_recovers_real_signal() {
        let x = [1.0, -0.5, 2.0, 0.75, 3.0, -1.0];
        let f = dft_matrix(6, 1, 6, 4, 2, false, true);
        let i = dft_matrix(4, 2, 6, 6, 1, true, true);
        let back = apply(&apply(&x, &f, 8), &i, 6);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-9, "{x:?} != {back:?}");
        }
    }
}
