//! Data-movement ops whose ONNX form needs resolving: Flatten, Squeeze and
//! Unsqueeze as reshapes, Split sizes, Pad and Resize across opsets.

use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{
    BinaryOp, CoordTransform, NearestMode, PadMode, ReduceOp, ResizeMode, ScalarValue, UnaryOp,
};
use kiln_ir::{DType, Dim, Op, Region, Tensor, ValueId};

type Outs = Result<Vec<Option<ValueId>>, FrontendError>;

fn one(v: ValueId) -> Outs {
    Ok(vec![Some(v)])
}

/// The product of some dims as one dim: known, or a single symbol times 1.
pub(crate) fn dim_product(d: &[Dim]) -> Option<Dim> {
    let known: usize = d.iter().filter_map(Dim::known).product();
    let syms: Vec<&Dim> = d.iter().filter(|x| x.known().is_none()).collect();
    match syms.as_slice() {
        [] => Some(Dim::Known(known)),
        [s] if known == 1 => Some((*s).clone()),
        _ => None,
    }
}

/// Flatten, Squeeze and Unsqueeze are reshapes whose target the frontend computes.
pub(crate) fn reshape_like(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    let shape = imp.ty(x).shape.clone();
    let rank = shape.len();
    let axes_arg = |imp: &Importer| -> Result<Option<Vec<i64>>, FrontendError> {
        if imp.opset < 13 {
            return Ok(n.ints("axes"));
        }
        match imp.inp(n, 1)? {
            None => Ok(None),
            Some(v) => Ok(imp.konst(v).map(|c| c.to_i64_vec())),
        }
    };
    // Axes known only at run time: the dynamic op, specialised into a Reshape later.
    if n.p.op_type != "Flatten" && imp.opset >= 13 {
        if let Some(axes) = imp.inp(n, 1)?.filter(|&v| imp.konst(v).is_none()) {
            let op = if n.p.op_type == "Squeeze" {
                Op::Squeeze { axes: None }
            } else {
                Op::Unsqueeze { axes: None }
            };
            return one(imp.add1(r, &n.name, op, vec![Some(x), Some(axes)])?);
        }
    }
    let target: Vec<Dim> = match n.p.op_type.as_str() {
        "Flatten" => {
            let axis = n.i("axis", 1);
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            if a < 0 || a > rank as i64 {
                return Err(n.bad(format!("axis {axis} out of range for rank {rank}")));
            }
            let (p, q) = shape.split_at(a as usize);
            match (dim_product(p), dim_product(q)) {
                (Some(p), Some(q)) => vec![p, q],
                _ => {
                    return Err(n.shape_err(format!(
                        "cannot flatten {} with more than one symbolic dim per side",
                        fmt(&shape)
                    )))
                }
            }
        }
        "Squeeze" => match axes_arg(imp)? {
            None => shape
                .iter()
                .filter(|d| **d != Dim::Known(1))
                .cloned()
                .collect(),
            Some(axes) => {
                let axes = norm_axes(n, &axes, rank)?;
                for &a in &axes {
                    if let Dim::Known(k) = shape[a] {
                        if k != 1 {
                            return Err(
                                n.shape_err(format!("cannot squeeze axis {a} of extent {k}"))
                            );
                        }
                    }
                }
                shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect()
            }
        },
        _ => {
            let axes = axes_arg(imp)?.ok_or_else(|| n.bad("missing axes"))?;
            let out_rank = rank + axes.len();
            let axes = norm_axes(n, &axes, out_rank)?;
            let mut it = shape.iter();
            (0..out_rank)
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::Known(1)
                    } else {
                        it.next().cloned().unwrap_or(Dim::Known(1))
                    }
                })
                .collect()
        }
    };
    one(imp.add1(
        r,
        &n.name,
        Op::Reshape {
            shape: Some(target),
        },
        vec![Some(x)],
    )?)
}

fn fmt(d: &[Dim]) -> String {
    kiln_ir::infer::fmt_dims(d)
}

fn norm_axes(n: &N, axes: &[i64], rank: usize) -> Result<Vec<usize>, FrontendError> {
    axes.iter()
        .map(|&a| kiln_ir::infer::norm_axis(a, rank).map_err(|e| n.bad(e.msg)))
        .collect()
}

pub(crate) fn split(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    let axis = n.i("axis", 0);
    let k = n.n_out();
    let sizes: Option<Vec<i64>> = if imp.opset < 13 {
        n.ints("split")
    } else {
        match imp.inp(n, 1)? {
            Some(v) => match imp.konst(v) {
                Some(c) => Some(c.to_i64_vec()),
                None => {
                    let outs = imp.add(
                        r,
                        &n.name,
                        Op::Split { axis, sizes: None },
                        vec![Some(x), Some(v)],
                        k,
                    )?;
                    return Ok(outs.into_iter().map(Some).collect());
                }
            },
            None => None,
        }
    };
    let sizes: Vec<usize> = match sizes {
        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
        None => {
            let rank = imp.ty(x).rank();
            let a = kiln_ir::infer::norm_axis(axis, rank).map_err(|e| n.bad(e.msg))?;
            let Some(total) = imp.ty(x).shape[a].known() else {
                return Err(n.shape_err("equal split of a symbolic axis"));
            };
            let parts = if imp.opset >= 18 {
                n.i("num_outputs", k as i64).max(1) as usize
            } else {
                k.max(1)
            };
            // Opset 18: the last chunk may be smaller.
            let chunk = total.div_ceil(parts);
            (0..parts)
                .map(|i| chunk.min(total.saturating_sub(i * chunk)))
                .collect()
        }
    };
    let outs = imp.add(
        r,
        &n.name,
        Op::Split {
            axis,
            sizes: Some(sizes),
        },
        vec![Some(x)],
        k,
    )?;
    Ok(outs.into_iter().map(Some).collect())
}

pub(crate) fn pad(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let mode = match n.s("mode", "constant").as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        o => return Err(n.bad(format!("unknown mode '{o}'"))),
    };
    let x = imp.req(n, 0)?;
    if imp.opset < 11 {
        let pads = n
            .ints("pads")
            .or_else(|| n.ints("paddings"))
            .ok_or_else(|| n.bad("missing attribute pads"))?;
        let value = n.f("value", 0.0) as f64;
        return one(imp.add1(
            r,
            &n.name,
            Op::Pad {
                mode,
                pads: Some(pads),
                value,
            },
            vec![Some(x)],
        )?);
    }
    let ins = vec![
        Some(x),
        Some(imp.req(n, 1)?),
        imp.inp(n, 2)?,
        imp.inp(n, 3)?,
    ];
    one(imp.add1(
        r,
        &n.name,
        Op::Pad {
            mode,
            pads: None,
            value: 0.0,
        },
        ins,
    )?)
}

pub(crate) fn resize(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let legacy = n.p.op_type == "Upsample" || imp.opset < 11;
    let mode = match n.s("mode", "nearest").as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        "cubic" => ResizeMode::Cubic,
        o => return Err(n.bad(format!("unknown mode '{o}'"))),
    };
    let coord = if legacy {
        CoordTransform::Asymmetric
    } else {
        match n.s("coordinate_transformation_mode", "half_pixel").as_str() {
            "half_pixel" => CoordTransform::HalfPixel,
            "half_pixel_symmetric" => CoordTransform::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordTransform::PytorchHalfPixel,
            "align_corners" => CoordTransform::AlignCorners,
            "asymmetric" => CoordTransform::Asymmetric,
            "tf_crop_and_resize" => CoordTransform::TfCropAndResize,
            o => return Err(n.bad(format!("unknown coordinate_transformation_mode '{o}'"))),
        }
    };
    let nearest = if legacy {
        NearestMode::Floor
    } else {
        match n.s("nearest_mode", "round_prefer_floor").as_str() {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            o => return Err(n.bad(format!("unknown nearest_mode '{o}'"))),
        }
    };
    if n.i("antialias", 0) != 0 {
        return Err(n.bad("antialias = 1 is not supported"));
    }
    let x = imp.req(n, 0)?;
    let mut scales = None;
    let ins = if n.p.op_type == "Upsample" && imp.opset < 9 {
        scales = Some(
            n.floats("scales")
                .ok_or_else(|| n.bad("missing attribute scales"))?,
        );
        vec![Some(x)]
    } else if legacy {
        vec![Some(x), None, Some(imp.req(n, 1)?)]
    } else if n.attr("axes").is_some() || n.s("keep_aspect_ratio_policy", "stretch") != "stretch" {
        resize_full_rank(imp, r, n, x)?
    } else {
        vec![Some(x), imp.inp(n, 1)?, imp.inp(n, 2)?, imp.inp(n, 3)?]
    };
    let op = Op::Resize {
        mode,
        coord,
        nearest,
        cubic_coeff: n.f("cubic_coeff_a", -0.75),
        exclude_outside: n.i("exclude_outside", 0) != 0,
        extrapolation_value: n.f("extrapolation_value", 0.0),
        scales,
        sizes: None,
    };
    one(imp.add1(r, &n.name, op, ins)?)
}

/// Dropout is the identity (with an all-true mask) unless it trains with a
/// non-zero ratio; random dropout is not supported.
pub(crate) fn dropout(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    if imp.opset >= 12 {
        let ratio_zero = imp
            .const_input(n, 1)?
            .is_some_and(|t| t.len() == 1 && t.data.get_f64(0) == 0.0);
        let training = match imp.inp(n, 2)? {
            None => Some(false),
            Some(_) => imp
                .const_input(n, 2)?
                .map(|t| t.len() == 1 && t.data.get_f64(0) != 0.0),
        };
        match training {
            Some(false) => {}
            _ if ratio_zero => {}
            Some(true) => {
                return Err(n.bad("training_mode = true (random dropout) is not supported"))
            }
            None => {
                // The training flag arrives at run time: decided when the node is specialised.
                let ins = vec![Some(x), imp.inp(n, 1)?, imp.inp(n, 2)?];
                let nm = imp.fresh(&n.name);
                let outs = imp.add(r, &nm, Op::Dropout { active: None }, ins, 2)?;
                return Ok(vec![Some(outs[0]), Some(outs[1])]);
            }
        }
    }
    let mask = match n.p.output.get(1) {
        Some(o) if imp.is_used(o) => {
            let nm = imp.fresh(&n.name);
            let shape = imp.add1(
                r,
                &nm,
                Op::Shape {
                    start: 0,
                    end: None,
                },
                vec![Some(x)],
            )?;
            let op = Op::ConstantOfShape {
                shape: None,
                value: ScalarValue {
                    dtype: DType::Bool,
                    value: 1.0,
                },
            };
            Some(imp.add1(r, &nm, op, vec![Some(shape)])?)
        }
        _ => None,
    };
    Ok(vec![Some(x), mask])
}

/// Opset 18's `axes` and `keep_aspect_ratio_policy`, resolved into full-rank
/// roi, scales and sizes (identity on the axes not named). The inputs may be
/// run-time values, so the expansion is built from graph ops (folded when constant).
fn resize_full_rank(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    x: ValueId,
) -> Result<Vec<Option<ValueId>>, FrontendError> {
    let shape = imp.ty(x).shape.clone();
    let rank = shape.len();
    let axes = match n.ints("axes") {
        Some(a) => norm_axes(n, &a, rank)?,
        None => (0..rank).collect(),
    };
    let k = axes.len();
    // An input given as an empty constant counts as absent.
    let present = |imp: &Importer, i: usize| -> Result<Option<ValueId>, FrontendError> {
        Ok(imp
            .inp(n, i)?
            .filter(|&v| imp.konst(v).is_none_or(|t| !t.is_empty())))
    };
    let (roi, scales, sizes) = (present(imp, 1)?, present(imp, 2)?, present(imp, 3)?);
    let pick = |imp: &mut Importer, r: &mut Region, v: ValueId, i: usize| {
        let idx = imp.add_const(&n.name, Tensor::from_i64(vec![1], vec![i as i64]));
        let nm = imp.fresh(&n.name);
        imp.add1(r, &nm, Op::Gather { axis: 0 }, vec![Some(v), Some(idx)])
    };
    let fill = |imp: &mut Importer, dtype: DType, v: f64| {
        imp.add_const(
            &n.name,
            Tensor {
                shape: vec![1],
                data: kiln_ir::tensor::Storage::from_f64s(dtype, [v]),
            },
        )
    };
    let concat = |imp: &mut Importer, r: &mut Region, parts: Vec<ValueId>| {
        let nm = imp.fresh(&n.name);
        imp.add1(
            r,
            &nm,
            Op::Concat { axis: 0 },
            parts.into_iter().map(Some).collect(),
        )
    };
    let roi = match roi {
        Some(v) => {
            let dt = imp.ty(v).dtype;
            let mut parts = vec![];
            for (base, default) in [(0, 0.0), (k, 1.0)] {
                for a in 0..rank {
                    parts.push(match axes.iter().position(|&b| b == a) {
                        Some(i) => pick(imp, r, v, base + i)?,
                        None => fill(imp, dt, default),
                    });
                }
            }
            Some(concat(imp, r, parts)?)
        }
        None => None,
    };
    if let Some(sz) = sizes {
        let in_dim = |a: usize| {
            shape[a]
                .known()
                .ok_or_else(|| n.shape_err(format!("axis {a} must be known")))
        };
        let policy = n.s("keep_aspect_ratio_policy", "stretch");
        let red = match policy.as_str() {
            "stretch" => None,
            "not_larger" => Some(ReduceOp::Min),
            "not_smaller" => Some(ReduceOp::Max),
            o => return Err(n.bad(format!("unknown keep_aspect_ratio_policy '{o}'"))),
        };
        let mut parts = vec![];
        match red {
            None => {
                for a in 0..rank {
                    parts.push(match axes.iter().position(|&b| b == a) {
                        Some(i) => pick(imp, r, sz, i)?,
                        None => fill(imp, DType::I64, in_dim(a)? as f64),
                    });
                }
            }
            Some(red) => {
                // scale = min/max over the axes of sizes / in; out = round_half_up(scale * in).
                let ins: Vec<f64> = axes
                    .iter()
                    .map(|&a| in_dim(a).map(|d| d as f64))
                    .collect::<Result<_, _>>()?;
                let in_t = imp.add_const(
                    &n.name,
                    Tensor::from_f32(vec![k], ins.iter().map(|&v| v as f32).collect()),
                );
                let nm = imp.fresh(&n.name);
                let szf = imp.add1(r, &nm, Op::Cast { to: DType::F32 }, vec![Some(sz)])?;
                let nm = imp.fresh(&n.name);
                let ratio = imp.add1(
                    r,
                    &nm,
                    Op::Binary { op: BinaryOp::Div },
                    vec![Some(szf), Some(in_t)],
                )?;
                let nm = imp.fresh(&n.name);
                let scale = imp.add1(
                    r,
                    &nm,
                    Op::Reduce {
                        op: red,
                        axes: Some(vec![0]),
                        keep_dims: true,
                        noop_with_empty_axes: false,
                    },
                    vec![Some(ratio)],
                )?;
                for a in 0..rank {
                    let d = fill(imp, DType::F32, in_dim(a)? as f64);
                    if !axes.contains(&a) {
                        parts.push(fill(imp, DType::I64, in_dim(a)? as f64));
                        continue;
                    }
                    let half = fill(imp, DType::F32, 0.5);
                    let nm = imp.fresh(&n.name);
                    let o = imp.add1(
                        r,
                        &nm,
                        Op::Binary { op: BinaryOp::Mul },
                        vec![Some(scale), Some(d)],
                    )?;
                    let nm = imp.fresh(&n.name);
                    let o = imp.add1(
                        r,
                        &nm,
                        Op::Binary { op: BinaryOp::Add },
                        vec![Some(o), Some(half)],
                    )?;
                    let nm = imp.fresh(&n.name);
                    let o = imp.add1(r, &nm, Op::Unary { op: UnaryOp::Floor }, vec![Some(o)])?;
                    let nm = imp.fresh(&n.name);
                    parts.push(imp.add1(r, &nm, Op::Cast { to: DType::I64 }, vec![Some(o)])?);
                }
            }
        }
        let sizes = concat(imp, r, parts)?;
        return Ok(vec![Some(x), roi, None, Some(sizes)]);
    }
    let sc = scales.ok_or_else(|| n.bad("Resize needs scales or sizes"))?;
    let dt = imp.ty(sc).dtype;
    let mut parts = vec![];
    for a in 0..rank {
        parts.push(match axes.iter().position(|&b| b == a) {
            Some(i) => pick(imp, r, sc, i)?,
            None => fill(imp, dt, 1.0),
        });
    }
    let scales = concat(imp, r, parts)?;
    Ok(vec![Some(x), roi, Some(scales), None])
}
