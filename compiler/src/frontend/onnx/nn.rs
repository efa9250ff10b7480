//! Convolution, pooling, Gemm, normalisation and softmax: the ops whose ONNX
//! forms need geometry resolved (auto_pad, output_shape) or legacy semantics
//! rewritten (opset < 13 softmax) before they fit kiln's op set.

use super::data::dim_product;
use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{BinaryOp, PoolKind, ReduceOp};
use kiln_ir::{Dim, Op, Region, ValueId};

type Outs = Result<Vec<Option<ValueId>>, FrontendError>;

fn one(v: ValueId) -> Outs {
    Ok(vec![Some(v)])
}

pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let name = n.name.as_str();
    match n.p.op_type.as_str() {
        "Conv" => conv(imp, r, n),
        "ConvTranspose" => conv_transpose(imp, r, n),
        "MaxPool" | "AveragePool" | "LpPool" => pool(imp, r, n),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => global_pool(imp, r, n),
        "Gemm" => gemm(imp, r, n),
        "BatchNormalization" => {
            if n.i("training_mode", 0) != 0 {
                return super::decomp::batch_norm_training(imp, r, n);
            }
            let ins = (0..5)
                .map(|i| imp.req(n, i).map(Some))
                .collect::<Result<Vec<_>, _>>()?;
            only_first(imp, n)?;
            one(imp.add1(
                r,
                name,
                Op::BatchNorm {
                    epsilon: n.f("epsilon", 1e-5),
                },
                ins,
            )?)
        }
        "InstanceNormalization" => {
            let ins = (0..3)
                .map(|i| imp.req(n, i).map(Some))
                .collect::<Result<Vec<_>, _>>()?;
            one(imp.add1(
                r,
                name,
                Op::InstanceNorm {
                    epsilon: n.f("epsilon", 1e-5),
                },
                ins,
            )?)
        }
        "LayerNormalization" => {
            let ins = vec![Some(imp.req(n, 0)?), Some(imp.req(n, 1)?), imp.inp(n, 2)?];
            let outs = imp.add(
                r,
                name,
                Op::LayerNorm {
                    axis: n.i("axis", -1),
                    epsilon: n.f("epsilon", 1e-5),
                },
                ins,
                n.n_out().clamp(1, 3),
            )?;
            Ok(outs.into_iter().map(Some).collect())
        }
        "GroupNormalization" => group_norm(imp, r, n),
        "LRN" => {
            let size = n.i("size", 0);
            if size <= 0 {
                return Err(n.bad("size must be positive"));
            }
            let op = Op::Lrn {
                size: size as usize,
                alpha: n.f("alpha", 1e-4),
                beta: n.f("beta", 0.75),
                bias: n.f("bias", 1.0),
            };
            one(imp.add1(r, name, op, vec![Some(imp.req(n, 0)?)])?)
        }
        "LpNormalization" => {
            let p = n.i("p", 2);
            if p != 1 && p != 2 {
                return Err(n.bad(format!("p = {p} must be 1 or 2")));
            }
            let op = Op::LpNorm {
                axis: n.i("axis", -1),
                p: p as u32,
            };
            one(imp.add1(r, name, op, vec![Some(imp.req(n, 0)?)])?)
        }
        "MeanVarianceNormalization" => {
            let op = Op::MeanVarianceNorm {
                axes: n.ints("axes").unwrap_or_else(|| vec![0, 2, 3]),
            };
            one(imp.add1(r, name, op, vec![Some(imp.req(n, 0)?)])?)
        }
        "Softmax" | "LogSoftmax" | "Hardmax" => softmax(imp, r, n),
        other => Err(n.bad(format!("op {other} has no mapping"))),
    }
}

/// Nodes whose extra outputs (training statistics) kiln does not compute.
fn only_first(imp: &Importer, n: &N) -> Result<(), FrontendError> {
    for (k, o) in n.p.output.iter().enumerate().skip(1) {
        if imp.is_used(o) {
            return Err(n.bad(format!("output {k} ('{o}') is not supported")));
        }
    }
    Ok(())
}

fn usizes(n: &N, k: &str, v: Vec<i64>) -> Result<Vec<usize>, FrontendError> {
    v.iter()
        .map(|&x| {
            if x < 0 {
                Err(n.bad(format!("{k} has a negative entry {x}")))
            } else {
                Ok(x as usize)
            }
        })
        .collect()
}

/// Strides, dilations and pads.
type Geometry = (Vec<usize>, Vec<usize>, Vec<usize>);

/// Strides, dilations and explicit pads of a windowed op, with auto_pad resolved
/// against the input's spatial extents.
fn geometry(n: &N, spatial: &[Dim], kernel: &[usize]) -> Result<Geometry, FrontendError> {
    let sp = kernel.len();
    let strides = usizes(
        n,
        "strides",
        n.ints("strides").unwrap_or_else(|| vec![1; sp]),
    )?;
    let dil = usizes(
        n,
        "dilations",
        n.ints("dilations").unwrap_or_else(|| vec![1; sp]),
    )?;
    if strides.len() != sp || dil.len() != sp {
        return Err(n.bad(format!(
            "strides {strides:?} / dilations {dil:?} do not match {sp} spatial dims"
        )));
    }
    let pads = match n.s("auto_pad", "NOTSET").as_str() {
        "NOTSET" => usizes(n, "pads", n.ints("pads").unwrap_or_else(|| vec![0; 2 * sp]))?,
        "VALID" => vec![0; 2 * sp],
        m @ ("SAME_UPPER" | "SAME_LOWER") => {
            let mut pads = vec![0; 2 * sp];
            for i in 0..sp {
                let Some(x) = spatial.get(i).and_then(Dim::known) else {
                    return Err(n.shape_err(format!("auto_pad {m} needs known spatial dims")));
                };
                let s = strides[i].max(1);
                let out = x.div_ceil(s);
                let need =
                    ((out.max(1) - 1) * s + (kernel[i].max(1) - 1) * dil[i] + 1).saturating_sub(x);
                let (lo, hi) = (need / 2, need - need / 2);
                (pads[i], pads[sp + i]) = if m == "SAME_UPPER" {
                    (lo, hi)
                } else {
                    (hi, lo)
                };
            }
            pads
        }
        o => return Err(n.bad(format!("unknown auto_pad '{o}'"))),
    };
    if pads.len() != 2 * sp {
        return Err(n.bad(format!("pads {pads:?} do not match {sp} spatial dims")));
    }
    Ok((strides, dil, pads))
}

fn kernel_of(imp: &Importer, n: &N, w: ValueId) -> Result<Vec<usize>, FrontendError> {
    if let Some(k) = n.ints("kernel_shape") {
        return usizes(n, "kernel_shape", k);
    }
    let wt = imp.ty(w);
    wt.shape
        .iter()
        .skip(2)
        .map(|d| {
            d.known()
                .ok_or_else(|| n.shape_err(format!("weight shape {wt} has symbolic kernel dims")))
        })
        .collect()
}

fn spatial(imp: &Importer, x: ValueId) -> Vec<Dim> {
    imp.ty(x).shape.iter().skip(2).cloned().collect()
}

/// The kiln Conv op for an ONNX Conv-like node's attributes (shared with
/// the quantised convolutions).
pub(crate) fn conv_op(imp: &Importer, n: &N, x: ValueId, w: ValueId) -> Result<Op, FrontendError> {
    let kernel = kernel_of(imp, n, w)?;
    let (strides, dilations, pads) = geometry(n, &spatial(imp, x), &kernel)?;
    let group = n.i("group", 1).max(1) as usize;
    Ok(Op::Conv {
        kernel,
        strides,
        pads,
        dilations,
        group,
    })
}

fn conv(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (x, w, b) = (imp.req(n, 0)?, imp.req(n, 1)?, imp.inp(n, 2)?);
    let kernel = kernel_of(imp, n, w)?;
    let (strides, dilations, pads) = geometry(n, &spatial(imp, x), &kernel)?;
    let group = n.i("group", 1).max(1) as usize;
    let op = Op::Conv {
        kernel,
        strides,
        pads,
        dilations,
        group,
    };
    one(imp.add1(r, &n.name, op, vec![Some(x), Some(w), b])?)
}

fn conv_transpose(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (x, w, b) = (imp.req(n, 0)?, imp.req(n, 1)?, imp.inp(n, 2)?);
    let kernel = kernel_of(imp, n, w)?;
    let sp = kernel.len();
    let strides = usizes(
        n,
        "strides",
        n.ints("strides").unwrap_or_else(|| vec![1; sp]),
    )?;
    let dilations = usizes(
        n,
        "dilations",
        n.ints("dilations").unwrap_or_else(|| vec![1; sp]),
    )?;
    let mut output_padding = usizes(
        n,
        "output_padding",
        n.ints("output_padding").unwrap_or_else(|| vec![0; sp]),
    )?;
    if strides.len() != sp || dilations.len() != sp || output_padding.len() != sp {
        return Err(n.bad("strides, dilations or output_padding do not match the kernel rank"));
    }
    let auto_pad = n.s("auto_pad", "NOTSET");
    let xs = spatial(imp, x);
    let target: Option<Vec<usize>> = match n.ints("output_shape") {
        Some(os) => {
            let os = usizes(n, "output_shape", os)?;
            Some(os[os.len().saturating_sub(sp)..].to_vec())
        }
        None if auto_pad.starts_with("SAME") => Some(
            (0..sp)
                .map(|i| xs.get(i).and_then(Dim::known).map(|d| d * strides[i]))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| n.shape_err("auto_pad SAME needs known spatial dims"))?,
        ),
        None => None,
    };
    let pads = match target {
        Some(t) => {
            if t.len() != sp {
                return Err(n.bad("output_shape does not match the kernel rank"));
            }
            let mut pads = vec![0; 2 * sp];
            for i in 0..sp {
                let Some(inp) = xs.get(i).and_then(Dim::known) else {
                    return Err(n.shape_err("output_shape needs known spatial dims"));
                };
                let full = (strides[i] * (inp.max(1) - 1)
                    + output_padding[i]
                    + (kernel[i] - 1) * dilations[i]
                    + 1) as i64;
                let total = full - t[i] as i64;
                if total < 0 {
                    output_padding[i] += (-total) as usize;
                    continue;
                }
                let total = total as usize;
                (pads[i], pads[sp + i]) = if auto_pad == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
            }
            pads
        }
        None if auto_pad == "VALID" => vec![0; 2 * sp],
        None => usizes(n, "pads", n.ints("pads").unwrap_or_else(|| vec![0; 2 * sp]))?,
    };
    let group = n.i("group", 1).max(1) as usize;
    let op = Op::ConvTranspose {
        kernel,
        strides,
        pads,
        dilations,
        group,
        output_padding,
    };
    one(imp.add1(r, &n.name, op, vec![Some(x), Some(w), b])?)
}

fn pool(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    // MaxPool's indices output is computed in row-major order only.
    let with_indices = n.p.op_type == "MaxPool" && n.p.output.get(1).is_some_and(|o| !o.is_empty());
    if !with_indices || n.i("storage_order", 0) != 0 {
        only_first(imp, n)?;
    }
    let kernel = usizes(
        n,
        "kernel_shape",
        n.ints("kernel_shape")
            .ok_or_else(|| n.bad("missing attribute kernel_shape"))?,
    )?;
    let (strides, dilations, pads) = geometry(n, &spatial(imp, x), &kernel)?;
    let kind = match n.p.op_type.as_str() {
        "MaxPool" => PoolKind::Max,
        "AveragePool" => PoolKind::Avg {
            count_include_pad: n.i("count_include_pad", 0) != 0,
        },
        _ => PoolKind::Lp { p: lp_p(n) },
    };
    let op = Op::Pool {
        kind,
        kernel,
        strides,
        pads,
        dilations,
        ceil_mode: n.i("ceil_mode", 0) != 0,
    };
    let k = if with_indices && n.i("storage_order", 0) == 0 {
        2
    } else {
        1
    };
    let outs = imp.add(r, &n.name, op, vec![Some(x)], k)?;
    Ok(outs.into_iter().map(Some).collect())
}

/// LpPool's `p` was a float before opset 2 and an int since.
fn lp_p(n: &N) -> f32 {
    match n.attr("p") {
        Some(a) if a.i != 0 => a.i as f32,
        Some(a) if a.f != 0.0 => a.f,
        _ => 2.0,
    }
}

fn global_pool(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    let rank = imp.ty(x).rank();
    if rank < 3 {
        return Err(n.shape_err(format!("input must have rank >= 3, got {rank}")));
    }
    let axes: Vec<i64> = (2..rank as i64).collect();
    let red = match n.p.op_type.as_str() {
        "GlobalAveragePool" => ReduceOp::Mean,
        "GlobalMaxPool" => ReduceOp::Max,
        _ => match lp_p(n) {
            1.0 => ReduceOp::L1,
            2.0 => ReduceOp::L2,
            p => {
                let kernel = spatial(imp, x)
                    .iter()
                    .map(Dim::known)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        n.shape_err("GlobalLpPool with p other than 1, 2 needs known spatial dims")
                    })?;
                let sp = kernel.len();
                let op = Op::Pool {
                    kind: PoolKind::Lp { p },
                    kernel,
                    strides: vec![1; sp],
                    pads: vec![0; 2 * sp],
                    dilations: vec![1; sp],
                    ceil_mode: false,
                };
                return one(imp.add1(r, &n.name, op, vec![Some(x)])?);
            }
        },
    };
    let op = Op::Reduce {
        op: red,
        axes: Some(axes),
        keep_dims: true,
        noop_with_empty_axes: false,
    };
    one(imp.add1(r, &n.name, op, vec![Some(x)])?)
}

/// `alpha * A' B' + beta * C` from Transpose, MatMul, Mul and Add.
fn gemm(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (mut a, mut b, c) = (imp.req(n, 0)?, imp.req(n, 1)?, imp.inp(n, 2)?);
    let (alpha, beta) = (n.f("alpha", 1.0), n.f("beta", 1.0));
    let t = Op::Transpose { perm: vec![1, 0] };
    if n.i("transA", 0) != 0 {
        let nm = imp.fresh(&format!("{}/transA", n.name));
        a = imp.add1(r, &nm, t.clone(), vec![Some(a)])?;
    }
    if n.i("transB", 0) != 0 {
        let nm = imp.fresh(&format!("{}/transB", n.name));
        b = imp.add1(r, &nm, t, vec![Some(b)])?;
    }
    let dtype = imp.ty(a).dtype;
    let last_mm = c.is_none() && alpha == 1.0;
    let nm = if last_mm {
        n.name.clone()
    } else {
        imp.fresh(&format!("{}/matmul", n.name))
    };
    let mut y = imp.add1(r, &nm, Op::MatMul, vec![Some(a), Some(b)])?;
    if alpha != 1.0 {
        let k = imp.scalar(dtype, alpha as f64);
        let nm = if c.is_none() {
            n.name.clone()
        } else {
            imp.fresh(&format!("{}/alpha", n.name))
        };
        y = imp.add1(
            r,
            &nm,
            Op::Binary { op: BinaryOp::Mul },
            vec![Some(y), Some(k)],
        )?;
    }
    if let Some(mut c) = c {
        if beta != 1.0 {
            let k = imp.scalar(dtype, beta as f64);
            let nm = imp.fresh(&format!("{}/beta", n.name));
            c = imp.add1(
                r,
                &nm,
                Op::Binary { op: BinaryOp::Mul },
                vec![Some(c), Some(k)],
            )?;
        }
        y = imp.add1(
            r,
            &n.name,
            Op::Binary { op: BinaryOp::Add },
            vec![Some(y), Some(c)],
        )?;
    }
    one(y)
}

/// Opset 18 GroupNormalization scales per group; kiln (like opset 21) per channel.
fn group_norm(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let (x, mut scale, mut bias) = (imp.req(n, 0)?, imp.req(n, 1)?, imp.req(n, 2)?);
    let g = n.i("num_groups", 0);
    if g <= 0 {
        return Err(n.bad("num_groups must be positive"));
    }
    let g = g as usize;
    if imp.opset < 21 {
        let c = imp
            .ty(x)
            .shape
            .get(1)
            .and_then(Dim::known)
            .ok_or_else(|| n.shape_err("channel dim must be known"))?;
        if c % g != 0 {
            return Err(n.shape_err(format!("{c} channels do not divide into {g} groups")));
        }
        if c != g {
            for v in [&mut scale, &mut bias] {
                let nm = imp.fresh(&n.name);
                let s = imp.add1(
                    r,
                    &nm,
                    Op::Reshape {
                        shape: Some(vec![Dim::Known(g), Dim::Known(1)]),
                    },
                    vec![Some(*v)],
                )?;
                let e = imp.add1(
                    r,
                    &nm,
                    Op::Expand {
                        shape: Some(vec![g as i64, (c / g) as i64]),
                    },
                    vec![Some(s)],
                )?;
                *v = imp.add1(
                    r,
                    &nm,
                    Op::Reshape {
                        shape: Some(vec![Dim::Known(c)]),
                    },
                    vec![Some(e)],
                )?;
            }
        }
    }
    let op = Op::GroupNorm {
        num_groups: g,
        epsilon: n.f("epsilon", 1e-5),
    };
    one(imp.add1(r, &n.name, op, vec![Some(x), Some(scale), Some(bias)])?)
}

/// Before opset 13 these ops flatten the input to 2-D at `axis` and work on the
/// second dim; kiln works on one axis, so a non-last axis becomes reshape → op → reshape.
fn softmax(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    let shape = imp.ty(x).shape.clone();
    let rank = shape.len();
    let mk = |axis: i64| match n.p.op_type.as_str() {
        "Softmax" => Op::Softmax { axis, log: false },
        "LogSoftmax" => Op::Softmax { axis, log: true },
        _ => Op::Hardmax { axis },
    };
    if imp.opset >= 13 {
        return one(imp.add1(r, &n.name, mk(n.i("axis", -1)), vec![Some(x)])?);
    }
    let axis = kiln_ir::infer::norm_axis(n.i("axis", 1), rank.max(1)).map_err(|e| n.bad(e.msg))?;
    if axis + 1 >= rank {
        return one(imp.add1(r, &n.name, mk(rank.max(1) as i64 - 1), vec![Some(x)])?);
    }
    let (p, q) = shape.split_at(axis);
    let (Some(p), Some(q)) = (dim_product(p), dim_product(q)) else {
        return Err(n.shape_err("cannot flatten the input to 2-D with several symbolic dims"));
    };
    let nm = imp.fresh(&n.name);
    let flat = imp.add1(
        r,
        &nm,
        Op::Reshape {
            shape: Some(vec![p, q]),
        },
        vec![Some(x)],
    )?;
    let nm = imp.fresh(&n.name);
    let y = imp.add1(r, &nm, mk(1), vec![Some(flat)])?;
    one(imp.add1(
        r,
        &n.name,
        Op::Reshape { shape: Some(shape) },
        vec![Some(y)],
    )?)
}
