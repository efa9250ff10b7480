//! Inference for data-movement ops: reshape, transpose, concat, slicing,
//! gathers and scatters, padding, tiling, resizing, TopK, OneHot.

use super::{bail, broadcast_shapes, fmt_dims, norm_axis, unknown, Inputs, Result};
use crate::dtype::DType;
use crate::graph::{Op, SliceAxis};
use crate::shape::{Dim, TensorType};

pub(super) fn infer(op: &Op, inp: &Inputs, num_outputs: usize) -> Result<Vec<TensorType>> {
    let x = inp.ty(0)?;
    let r = x.rank();
    let same_dtype = |shape: Vec<Dim>| vec![TensorType::new(x.dtype, shape)];
    Ok(match op {
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
            let squeeze = matches!(op, Op::Squeeze { .. });
            let resolved = match axes {
                Some(a) => Some(a.clone()),
                None => inp.konst(1).map(|t| t.to_i64_vec()),
            };
            if let Some(a) = resolved {
                let shape = if squeeze {
                    super::specialize::squeeze_shape(&x.shape, &a)?
                } else {
                    super::specialize::unsqueeze_shape(&x.shape, &a)?
                };
                return Ok(same_dtype(shape));
            }
            let n = match inp.opt_ty(1).and_then(|t| t.dims()) {
                Some(d) if d.len() == 1 => d[0],
                _ if squeeze => bail!("squeeze axes must be a 1-D tensor of known length"),
                _ => bail!("unsqueeze axes must be a 1-D tensor of known length"),
            };
            let rank = if squeeze {
                r.checked_sub(n)
            } else {
                Some(r + n)
            };
            let Some(rank) = rank else {
                bail!("squeezing {n} axes from rank {r}")
            };
            same_dtype((0..rank).map(|i| unknown("squeeze", i)).collect())
        }
        Op::Reshape { shape } => match shape {
            Some(s) => {
                if let (Some(a), Some(b)) = (x.num_elements(), known_product(s)) {
                    if a != b {
                        bail!(
                            "cannot reshape {} ({a} elements) to {} ({b} elements)",
                            fmt_dims(&x.shape),
                            fmt_dims(s)
                        );
                    }
                }
                // A single symbolic extent follows from the element count once the input is known.
                let mut out = s.clone();
                let syms: Vec<usize> = (0..s.len()).filter(|&i| s[i].known().is_none()).collect();
                if let ([i], Some(a)) = (syms.as_slice(), x.num_elements()) {
                    let rest: usize = s.iter().filter_map(Dim::known).product();
                    if rest > 0 && a % rest == 0 {
                        out[*i] = Dim::Known(a / rest);
                    }
                }
                same_dtype(out)
            }
            None => {
                let n = match inp.opt_ty(1).and_then(|t| t.dims()) {
                    Some(d) if d.len() == 1 => d[0],
                    _ => bail!("shape input must be a 1-D tensor of known length"),
                };
                same_dtype((0..n).map(|i| unknown("reshape", i)).collect())
            }
        },
        Op::Transpose { perm } => {
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..r).collect::<Vec<_>>() {
                bail!("perm {perm:?} is not a permutation of rank {r}");
            }
            same_dtype(perm.iter().map(|&p| x.shape[p].clone()).collect())
        }
        Op::Concat { axis } => {
            let a = norm_axis(*axis, r)?;
            let mut shape = x.shape.clone();
            let mut total = Some(0usize);
            for i in 0..inp.len() {
                let t = inp.ty(i)?;
                if t.rank() != r || t.dtype != x.dtype {
                    bail!("input {i} is {t}, input 0 is {x}");
                }
                for (d, (p, q)) in t.shape.iter().zip(&x.shape).enumerate() {
                    if d != a {
                        if let (Dim::Known(p), Dim::Known(q)) = (p, q) {
                            if p != q {
                                bail!("input {i} has dim {d} = {p}, input 0 has {q}");
                            }
                        }
                    }
                }
                total = match (total, t.shape[a].known()) {
                    (Some(s), Some(n)) => Some(s + n),
                    _ => None,
                };
            }
            shape[a] = total
                .map(Dim::Known)
                .unwrap_or_else(|| unknown("concat", 0));
            same_dtype(shape)
        }
        Op::Split { axis, sizes } => {
            let a = norm_axis(*axis, r)?;
            let sizes = match sizes {
                Some(s) => s.clone(),
                None => {
                    // Sizes given at run time: the split axis is unknown until specialisation.
                    return Ok((0..num_outputs)
                        .map(|k| {
                            let mut sh = x.shape.clone();
                            sh[a] = unknown("split", k);
                            TensorType::new(x.dtype, sh)
                        })
                        .collect());
                }
            };
            if let Some(n) = x.shape[a].known() {
                if sizes.iter().sum::<usize>() != n {
                    bail!("split sizes {sizes:?} do not sum to dim {n}");
                }
            }
            sizes
                .iter()
                .map(|&s| {
                    let mut sh = x.shape.clone();
                    sh[a] = Dim::Known(s);
                    TensorType::new(x.dtype, sh)
                })
                .collect()
        }
        Op::Slice { axes } => {
            let Some(axes) = axes else {
                return Ok(same_dtype((0..r).map(|i| unknown("slice", i)).collect()));
            };
            let mut shape = x.shape.clone();
            for s in axes {
                let a = norm_axis(s.axis, r)?;
                shape[a] = match x.shape[a] {
                    Dim::Known(n) => Dim::Known(slice_range(s, n)?.2),
                    _ => unknown("slice", a),
                };
            }
            same_dtype(shape)
        }
        Op::Gather { axis } => {
            let idx = inp.ty(1)?;
            check_index_dtype(idx.dtype)?;
            let a = norm_axis(*axis, r)?;
            let mut shape = x.shape[..a].to_vec();
            shape.extend(idx.shape.iter().cloned());
            shape.extend(x.shape[a + 1..].iter().cloned());
            same_dtype(shape)
        }
        Op::GatherElements { axis } => {
            let idx = inp.ty(1)?;
            check_index_dtype(idx.dtype)?;
            norm_axis(*axis, r)?;
            if idx.rank() != r {
                bail!("indices rank {} differs from data rank {r}", idx.rank());
            }
            same_dtype(idx.shape.clone())
        }
        Op::GatherNd { batch_dims } => {
            let idx = inp.ty(1)?;
            check_index_dtype(idx.dtype)?;
            let Some(Dim::Known(k)) = idx.shape.last().cloned() else {
                bail!("indices' last dim must be known")
            };
            if batch_dims + k > r {
                bail!("index depth {k} + batch dims {batch_dims} exceeds data rank {r}");
            }
            let mut shape = idx.shape[..idx.rank() - 1].to_vec();
            shape.extend(x.shape[batch_dims + k..].iter().cloned());
            same_dtype(shape)
        }
        Op::ScatterElements { axis, .. } => {
            norm_axis(*axis, r)?;
            check_index_dtype(inp.ty(1)?.dtype)?;
            vec![x.clone()]
        }
        Op::ScatterNd { .. } => {
            check_index_dtype(inp.ty(1)?.dtype)?;
            vec![x.clone()]
        }
        Op::Pad { pads, .. } => {
            let Some(pads) = pads else {
                return Ok(same_dtype((0..r).map(|i| unknown("pad", i)).collect()));
            };
            if pads.len() != 2 * r {
                bail!("pads has {} entries for rank {r}", pads.len());
            }
            let mut shape = x.shape.clone();
            for (i, d) in shape.iter_mut().enumerate() {
                if let Dim::Known(n) = *d {
                    let v = n as i64 + pads[i] + pads[r + i];
                    if v < 0 {
                        bail!("pads {pads:?} crop axis {i} below zero");
                    }
                    *d = Dim::Known(v as usize);
                }
            }
            same_dtype(shape)
        }
        Op::Expand { shape } => match shape {
            Some(s) => {
                let target: Vec<Dim> = s.iter().map(|&d| Dim::Known(d.max(0) as usize)).collect();
                same_dtype(broadcast_shapes(&x.shape, &target)?)
            }
            None => {
                let n = match inp.opt_ty(1).and_then(|t| t.dims()) {
                    Some(d) if d.len() == 1 => d[0].max(r),
                    _ => bail!("shape input must be a 1-D tensor of known length"),
                };
                // An input extent other than 1 survives any valid broadcast.
                let off = n - r;
                same_dtype(
                    (0..n)
                        .map(|i| match i.checked_sub(off).map(|j| &x.shape[j]) {
                            Some(Dim::Known(d)) if *d != 1 => Dim::Known(*d),
                            _ => unknown("expand", i),
                        })
                        .collect(),
                )
            }
        },
        Op::Tile { repeats } => match repeats {
            Some(rep) => {
                if rep.len() != r {
                    bail!("repeats has {} entries for rank {r}", rep.len());
                }
                same_dtype(
                    x.shape
                        .iter()
                        .zip(rep)
                        .map(|(d, &k)| mul_dim(d, k))
                        .collect(),
                )
            }
            None => same_dtype((0..r).map(|i| unknown("tile", i)).collect()),
        },
        Op::DepthToSpace { block, .. } | Op::SpaceToDepth { block } => {
            if r != 4 {
                bail!("input must be 4-D, got rank {r}");
            }
            let b = *block;
            let d2s = matches!(op, Op::DepthToSpace { .. });
            let dims = x.dims();
            let Some(d) = dims else {
                bail!("input dims must be known")
            };
            let shape = if d2s {
                if d[1] % (b * b) != 0 {
                    bail!("channels {} not divisible by block^2 = {}", d[1], b * b);
                }
                vec![d[0], d[1] / (b * b), d[2] * b, d[3] * b]
            } else {
                if d[2] % b != 0 || d[3] % b != 0 {
                    bail!("spatial dims {}x{} not divisible by block {b}", d[2], d[3]);
                }
                vec![d[0], d[1] * b * b, d[2] / b, d[3] / b]
            };
            vec![TensorType::known(x.dtype, &shape)]
        }
        Op::Trilu { .. } => {
            if r < 2 {
                bail!("input must have rank >= 2");
            }
            vec![x.clone()]
        }
        Op::Resize { scales, sizes, .. } => {
            let shape = match (sizes, scales) {
                (Some(s), _) => s.iter().map(|&n| Dim::Known(n)).collect(),
                (None, Some(sc)) => {
                    if sc.len() != r {
                        bail!("scales has {} entries for rank {r}", sc.len());
                    }
                    x.shape
                        .iter()
                        .zip(sc)
                        .enumerate()
                        .map(|(i, (d, &s))| match d {
                            Dim::Known(n) => Dim::Known((*n as f64 * s as f64).floor() as usize),
                            _ => unknown("resize", i),
                        })
                        .collect()
                }
                (None, None) => (0..r).map(|i| unknown("resize", i)).collect(),
            };
            same_dtype(shape)
        }
        Op::ReverseSequence { .. } => vec![x.clone()],
        Op::Compress { axis } => {
            let n = match inp.konst(1) {
                Some(c) => Dim::Known((0..c.len()).filter(|&i| c.data.get_f64(i) != 0.0).count()),
                None => unknown("compress", 0),
            };
            match axis {
                Some(a) => {
                    let a = norm_axis(*a, r)?;
                    let mut shape = x.shape.clone();
                    shape[a] = n;
                    same_dtype(shape)
                }
                None => same_dtype(vec![n]),
            }
        }
        Op::TopK { axis, k, .. } => {
            let a = norm_axis(*axis, r)?;
            let mut shape = x.shape.clone();
            shape[a] = match k {
                Some(k) => {
                    if let Dim::Known(n) = x.shape[a] {
                        if *k > n {
                            bail!("k = {k} exceeds axis extent {n}");
                        }
                    }
                    Dim::Known(*k)
                }
                None => unknown("topk", 0),
            };
            vec![
                TensorType::new(x.dtype, shape.clone()),
                TensorType::new(DType::I64, shape),
            ]
        }
        Op::OneHot { axis, depth } => {
            // `values` is input 2, or input 1 once specialisation has dropped `depth`.
            let vals = inp.ty(if depth.is_some() && inp.len() == 2 {
                1
            } else {
                2
            })?;
            let rr = r as i64 + 1;
            let a = if *axis < 0 { axis + rr } else { *axis };
            if a < 0 || a >= rr {
                bail!("axis {axis} out of range for output rank {rr}");
            }
            let mut shape = x.shape.clone();
            shape.insert(
                a as usize,
                depth
                    .map(Dim::Known)
                    .unwrap_or_else(|| unknown("onehot", 0)),
            );
            vec![TensorType::new(vals.dtype, shape)]
        }
        _ => bail!(
            "no shape inference for {} with {num_outputs} outputs",
            op.name()
        ),
    })
}

fn known_product(s: &[Dim]) -> Option<usize> {
    s.iter().map(Dim::known).product::<Option<usize>>()
}

fn mul_dim(d: &Dim, k: usize) -> Dim {
    match d {
        Dim::Known(n) => Dim::Known(n * k),
        _ if k == 1 => d.clone(),
        _ => Dim::Sym(format!("?{d}x{k}")),
    }
}

fn check_index_dtype(d: DType) -> Result<()> {
    if !matches!(d, DType::I32 | DType::I64) {
        bail!("indices must be i32 or i64, got {d}");
    }
    Ok(())
}

/// Clamped `(start, step, count)` of one Slice axis over an extent `n`, as ONNX defines it.
pub fn slice_range(s: &SliceAxis, n: usize) -> Result<(i64, i64, usize)> {
    if s.step == 0 {
        bail!("slice step is zero");
    }
    let n = n as i64;
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let (start, end) = (norm(s.start), norm(s.end));
    let (start, end) = if s.step > 0 {
        (start.clamp(0, n), end.clamp(0, n))
    } else {
        (start.clamp(-1, n - 1), end.clamp(-1, n - 1))
    };
    let count = if s.step > 0 {
        if end > start {
            (end - start + s.step - 1) / s.step
        } else {
            0
        }
    } else if start > end {
        (start - end + (-s.step) - 1) / (-s.step)
    } else {
        0
    };
    Ok((start, s.step, count as usize))
}
