//! Specialisation: an op whose parameters still arrive as inputs (`None` in
//! its attributes) becomes the static op once those inputs' values are known.
//! The frontend calls this for constant inputs, constant folding after shape
//! folding, and `kiln run` on the values it is given.

use super::{bail, Result};
use crate::graph::{Op, SliceAxis};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// The static op and which of the node's inputs it still takes, or `None` when
/// nothing can be specialised yet (or nothing needs to be).
pub fn specialize(
    op: &Op,
    in_types: &[Option<TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<Option<(Op, Vec<usize>)>> {
    let c = |i: usize| consts.get(i).copied().flatten();
    let present = |i: usize| in_types.get(i).is_some_and(|t| t.is_some());
    // An absent optional input is as good as known.
    let known_or_absent = |i: usize| c(i).is_some() || !present(i);
    let ints = |i: usize| c(i).map(|t| t.to_i64_vec());
    let x_shape = || {
        in_types
            .first()
            .cloned()
            .flatten()
            .map(|t| t.shape)
            .unwrap_or_default()
    };
    Ok(match op {
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
            let a = match axes {
                Some(a) => Some(a.clone()),
                None => ints(1),
            };
            match a {
                Some(a) => {
                    let shape = if matches!(op, Op::Squeeze { .. }) {
                        squeeze_shape(&x_shape(), &a)?
                    } else {
                        unsqueeze_shape(&x_shape(), &a)?
                    };
                    Some((Op::Reshape { shape: Some(shape) }, vec![0]))
                }
                None => None,
            }
        }
        Op::Dropout { active: None } if known_or_absent(1) && known_or_absent(2) => {
            let ratio = c(1)
                .filter(|t| !t.is_empty())
                .map(|t| t.data.get_f64(0))
                .unwrap_or(0.5);
            let training = c(2)
                .filter(|t| !t.is_empty())
                .is_some_and(|t| t.data.get_f64(0) != 0.0);
            Some((
                Op::Dropout {
                    active: Some(training && ratio > 0.0),
                },
                vec![0],
            ))
        }
        Op::Reshape { shape: None } => match ints(1) {
            Some(s) => Some((
                Op::Reshape {
                    shape: Some(resolve_reshape(&x_shape(), &s, false)?),
                },
                vec![0],
            )),
            None => None,
        },
        Op::Reduce {
            op: r,
            axes: None,
            keep_dims,
            noop_with_empty_axes,
        } if known_or_absent(1) => {
            let axes = ints(1).unwrap_or_default();
            let op = Op::Reduce {
                op: *r,
                axes: Some(axes),
                keep_dims: *keep_dims,
                noop_with_empty_axes: *noop_with_empty_axes,
            };
            Some((op, vec![0]))
        }
        Op::CumSum {
            axis: None,
            exclusive,
            reverse,
            prod,
        } => ints(1).map(|a| {
            (
                Op::CumSum {
                    axis: a.first().copied(),
                    exclusive: *exclusive,
                    reverse: *reverse,
                    prod: *prod,
                },
                vec![0],
            )
        }),
        Op::Split { axis, sizes: None } => ints(1).map(|s| {
            (
                Op::Split {
                    axis: *axis,
                    sizes: Some(s.iter().map(|&v| v.max(0) as usize).collect()),
                },
                vec![0],
            )
        }),
        Op::Slice { axes: None }
            if c(1).is_some() && c(2).is_some() && known_or_absent(3) && known_or_absent(4) =>
        {
            let (starts, ends) = (ints(1).unwrap_or_default(), ints(2).unwrap_or_default());
            let axes = ints(3).unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = ints(4).unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                bail!("starts, ends, axes and steps differ in length");
            }
            let spec = (0..starts.len())
                .map(|i| SliceAxis {
                    axis: axes[i],
                    start: starts[i],
                    end: ends[i],
                    step: steps[i],
                })
                .collect();
            Some((Op::Slice { axes: Some(spec) }, vec![0]))
        }
        Op::Pad {
            mode, pads: None, ..
        } if c(1).is_some() && known_or_absent(2) && known_or_absent(3) => {
            let rank = x_shape().len();
            let raw = ints(1).unwrap_or_default();
            let pads = match ints(3) {
                None => raw,
                Some(axes) => {
                    let mut full = vec![0i64; 2 * rank];
                    for (j, &a) in axes.iter().enumerate() {
                        let a = super::norm_axis(a, rank)?;
                        full[a] = raw.get(j).copied().unwrap_or(0);
                        full[rank + a] = raw.get(axes.len() + j).copied().unwrap_or(0);
                    }
                    full
                }
            };
            let value = c(2)
                .filter(|t| !t.is_empty())
                .map(|t| t.data.get_f64(0))
                .unwrap_or(0.0);
            Some((
                Op::Pad {
                    mode: *mode,
                    pads: Some(pads),
                    value,
                },
                vec![0],
            ))
        }
        Op::Expand { shape: None } => ints(1).map(|s| (Op::Expand { shape: Some(s) }, vec![0])),
        Op::Tile { repeats: None } => ints(1).map(|s| {
            (
                Op::Tile {
                    repeats: Some(s.iter().map(|&v| v.max(0) as usize).collect()),
                },
                vec![0],
            )
        }),
        Op::Trilu { upper, k: None } if known_or_absent(1) => Some((
            Op::Trilu {
                upper: *upper,
                k: Some(ints(1).and_then(|v| v.first().copied()).unwrap_or(0)),
            },
            vec![0],
        )),
        Op::ConstantOfShape { shape: None, value } => ints(0).map(|s| {
            (
                Op::ConstantOfShape {
                    shape: Some(s.iter().map(|&v| v.max(0) as usize).collect()),
                    value: *value,
                },
                vec![],
            )
        }),
        Op::TopK {
            axis,
            largest,
            sorted,
            k: None,
        } => ints(1).and_then(|k| k.first().copied()).map(|k| {
            (
                Op::TopK {
                    axis: *axis,
                    largest: *largest,
                    sorted: *sorted,
                    k: Some(k.max(0) as usize),
                },
                vec![0],
            )
        }),
        Op::OneHot { axis, depth: None } => c(1).map(|d| {
            (
                Op::OneHot {
                    axis: *axis,
                    depth: Some(d.data.get_f64(0).max(0.0) as usize),
                },
                vec![0, 2],
            )
        }),
        Op::Resize {
            mode,
            coord,
            nearest,
            cubic_coeff,
            exclude_outside,
            extrapolation_value,
            scales: None,
            sizes: None,
        } if known_or_absent(2) && known_or_absent(3) => {
            let dims = x_shape();
            let sizes = ints(3)
                .filter(|s| !s.is_empty())
                .map(|s| s.iter().map(|&v| v.max(0) as usize).collect::<Vec<_>>());
            let scales = c(2)
                .filter(|t| !t.is_empty())
                .map(|t| t.to_f64_vec().iter().map(|&v| v as f32).collect::<Vec<_>>());
            let (scales, sizes) = match (scales, sizes) {
                (_, Some(sz)) => {
                    let sc = sz
                        .iter()
                        .zip(&dims)
                        .map(|(&o, d)| match d {
                            Dim::Known(n) if *n > 0 => o as f32 / *n as f32,
                            _ => 1.0,
                        })
                        .collect();
                    (Some(sc), Some(sz))
                }
                (Some(sc), None) => (Some(sc), None),
                (None, None) => bail!("Resize needs scales or sizes"),
            };
            let op = Op::Resize {
                mode: *mode,
                coord: *coord,
                nearest: *nearest,
                cubic_coeff: *cubic_coeff,
                exclude_outside: *exclude_outside,
                extrapolation_value: *extrapolation_value,
                scales,
                sizes,
            };
            Some((op, vec![0, 1]))
        }
        _ => None,
    })
}

/// Resolves ONNX Reshape's 0 (copy) and -1 (infer) entries against the input shape.
pub fn resolve_reshape(input: &[Dim], target: &[i64], allow_zero: bool) -> Result<Vec<Dim>> {
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            -1 => {
                if infer_at.replace(i).is_some() {
                    bail!("reshape target {target:?} has more than one -1");
                }
                None
            }
            0 if !allow_zero => match input.get(i) {
                Some(d) => Some(d.clone()),
                None => bail!("reshape target {target:?} copies dim {i} the input does not have"),
            },
            t if t < 0 => bail!("reshape target {target:?} has a negative dim"),
            t => Some(Dim::Known(t as usize)),
        });
    }
    if let Some(at) = infer_at {
        let known_in: Option<usize> = input.iter().map(Dim::known).product();
        let known_out: Option<usize> = out.iter().flatten().map(Dim::known).product();
        out[at] = Some(match (known_in, known_out) {
            (Some(a), Some(b)) if b > 0 && a % b == 0 => Dim::Known(a / b),
            (Some(a), Some(b)) => bail!("cannot infer -1: {a} elements do not divide by {b}"),
            _ => {
                // One symbolic dim that passes through unchanged, e.g. [N, C, H, W] -> [N, -1]... the
                // symbol stays where it was; otherwise the dim is only known at run time.
                let syms: Vec<&Dim> = input.iter().filter(|d| d.known().is_none()).collect();
                let out_syms = out.iter().flatten().filter(|d| d.known().is_none()).count();
                match (syms.as_slice(), out_syms) {
                    ([s], 0) => {
                        let ki: usize = input.iter().filter_map(Dim::known).product();
                        let ko: usize = out.iter().flatten().filter_map(Dim::known).product();
                        if ko > 0 && ki == ko {
                            (*s).clone()
                        } else {
                            Dim::Sym("?reshape".into())
                        }
                    }
                    ([_], 1) => {
                        let ki: usize = input.iter().filter_map(Dim::known).product();
                        let ko: usize = out.iter().flatten().filter_map(Dim::known).product();
                        if ko > 0 && ki.is_multiple_of(ko) {
                            Dim::Known(ki / ko)
                        } else {
                            bail!("cannot infer -1 in reshape target {target:?}")
                        }
                    }
                    _ => Dim::Sym("?reshape".into()),
                }
            }
        });
    }
    Ok(out
        .into_iter()
        .map(|d| d.unwrap_or(Dim::Known(0)))
        .collect())
}

/// The shape after removing `axes` (all size-1 axes when empty).
pub fn squeeze_shape(input: &[Dim], axes: &[i64]) -> Result<Vec<Dim>> {
    let r = input.len();
    let axes: Vec<usize> = if axes.is_empty() {
        (0..r).filter(|&i| input[i] == Dim::Known(1)).collect()
    } else {
        axes.iter()
            .map(|&a| super::norm_axis(a, r))
            .collect::<Result<_>>()?
    };
    for &a in &axes {
        if let Dim::Known(n) = input[a] {
            if n != 1 {
                bail!("cannot squeeze axis {a} of extent {n}");
            }
        }
    }
    Ok((0..r)
        .filter(|i| !axes.contains(i))
        .map(|i| input[i].clone())
        .collect())
}

/// The shape after inserting size-1 axes at `axes` (positions in the output).
pub fn unsqueeze_shape(input: &[Dim], axes: &[i64]) -> Result<Vec<Dim>> {
    let out_rank = input.len() + axes.len();
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| super::norm_axis(a, out_rank))
        .collect::<Result<_>>()?;
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        bail!("unsqueeze axes repeat");
    }
    let mut it = input.iter();
    Ok((0..out_rank)
        .map(|i| {
            if axes.contains(&i) {
                Dim::Known(1)
            } else {
                it.next().cloned().unwrap_or(Dim::Known(1))
            }
        })
        .collect())
}
