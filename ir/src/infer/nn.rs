//! Inference for MatMul, convolution, pooling, normalisation and Einsum.

use super::{bail, broadcast_shapes, fmt_dims, norm_axis, Inputs, Result};
use crate::dtype::DType;
use crate::graph::Op;
use crate::shape::{Dim, TensorType};

pub(super) fn infer(op: &Op, inp: &Inputs) -> Result<Vec<TensorType>> {
    Ok(match op {
        Op::MatMul => {
            let (a, b) = (inp.ty(0)?, inp.ty(1)?);
            if a.dtype != b.dtype {
                bail!("input dtypes differ: {} and {}", a.dtype, b.dtype);
            }
            vec![TensorType::new(a.dtype, matmul_shape(&a.shape, &b.shape)?)]
        }
        Op::Conv {
            kernel,
            strides,
            pads,
            dilations,
            group,
        } => {
            let (x, w) = (inp.ty(0)?, inp.ty(1)?);
            let sp = x.rank().checked_sub(2).filter(|&s| s >= 1);
            let Some(sp) = sp else {
                bail!("input must have rank >= 3, got {}", x.rank())
            };
            if w.rank() != x.rank() {
                bail!(
                    "weight rank {} differs from input rank {}",
                    w.rank(),
                    x.rank()
                );
            }
            check_geometry(sp, kernel, strides, pads, dilations)?;
            if let (Some(c), Some(wc)) = (x.shape[1].known(), w.shape[1].known()) {
                if c != wc * group {
                    bail!(
                        "input has {c} channels, weight expects {} x group {group}",
                        wc
                    );
                }
            }
            let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
            for i in 0..sp {
                shape.push(window_out(
                    &x.shape[2 + i],
                    kernel[i],
                    strides[i],
                    pads[i],
                    pads[sp + i],
                    dilations[i],
                    false,
                )?);
            }
            vec![TensorType::new(x.dtype, shape)]
        }
        Op::ConvTranspose {
            kernel,
            strides,
            pads,
            dilations,
            group,
            output_padding,
        } => {
            let (x, w) = (inp.ty(0)?, inp.ty(1)?);
            let sp = x.rank().saturating_sub(2);
            check_geometry(sp, kernel, strides, pads, dilations)?;
            let oc = match w.shape.get(1) {
                Some(Dim::Known(c)) => Dim::Known(c * group),
                _ => bail!("weight must have a known output-channel dim"),
            };
            let mut shape = vec![x.shape[0].clone(), oc];
            for i in 0..sp {
                shape.push(match x.shape[2 + i] {
                    Dim::Known(n) => {
                        let full = strides[i] * (n.max(1) - 1)
                            + output_padding.get(i).copied().unwrap_or(0)
                            + (kernel[i] - 1) * dilations[i]
                            + 1;
                        let p = pads[i] + pads[sp + i];
                        if full < p {
                            bail!("padding {p} exceeds the output extent {full}");
                        }
                        Dim::Known(full - p)
                    }
                    _ => super::unknown("convt", i),
                });
            }
            vec![TensorType::new(x.dtype, shape)]
        }
        Op::Pool {
            kind,
            kernel,
            strides,
            pads,
            dilations,
            ceil_mode,
        } => {
            let x = inp.ty(0)?;
            let sp = x.rank().checked_sub(2).filter(|&s| s >= 1);
            let Some(sp) = sp else {
                bail!("input must have rank >= 3, got {}", x.rank())
            };
            check_geometry(sp, kernel, strides, pads, dilations)?;
            let mut shape = x.shape[..2].to_vec();
            for i in 0..sp {
                shape.push(window_out(
                    &x.shape[2 + i],
                    kernel[i],
                    strides[i],
                    pads[i],
                    pads[sp + i],
                    dilations[i],
                    *ceil_mode,
                )?);
            }
            // MaxPool's optional second output: flat NCHW indices of the maxima.
            if matches!(kind, crate::graph::PoolKind::Max) {
                vec![
                    TensorType::new(x.dtype, shape.clone()),
                    TensorType::new(crate::dtype::DType::I64, shape),
                ]
            } else {
                vec![TensorType::new(x.dtype, shape)]
            }
        }
        Op::BatchNorm { .. } | Op::InstanceNorm { .. } | Op::GroupNorm { .. } => {
            let x = inp.ty(0)?;
            if x.rank() < 2 {
                bail!("input must have rank >= 2, got {}", x.rank());
            }
            vec![x.clone()]
        }
        Op::LayerNorm { axis, .. } => {
            let x = inp.ty(0)?;
            let a = norm_axis(*axis, x.rank())?;
            // Optional outputs Mean and InvStdDev: x's shape with the normalised dims set to 1,
            // in the stash type (f32).
            let mut stat = x.shape.clone();
            for d in &mut stat[a..] {
                *d = Dim::Known(1);
            }
            let stat = TensorType::new(DType::F32, stat);
            vec![x.clone(), stat.clone(), stat]
        }
        Op::Lrn { .. } | Op::MeanVarianceNorm { .. } => vec![inp.ty(0)?.clone()],
        Op::LpNorm { axis, .. } => {
            let x = inp.ty(0)?;
            norm_axis(*axis, x.rank())?;
            vec![x.clone()]
        }
        Op::Einsum { equation } => vec![einsum_type(equation, inp)?],
        _ => unreachable!("not an nn op"),
    })
}

/// numpy matmul shape rules, including 1-D promotion.
pub fn matmul_shape(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        bail!("MatMul inputs must have rank >= 1");
    }
    let a2: Vec<Dim> = if a.len() == 1 {
        vec![Dim::Known(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Vec<Dim> = if b.len() == 1 {
        vec![b[0].clone(), Dim::Known(1)]
    } else {
        b.to_vec()
    };
    let (ka, kb) = (&a2[a2.len() - 1], &b2[b2.len() - 2]);
    if let (Dim::Known(x), Dim::Known(y)) = (ka, kb) {
        if x != y {
            bail!("inner dims differ: {} x {}", fmt_dims(a), fmt_dims(b));
        }
    }
    let mut out = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Ok(out)
}

fn check_geometry(
    sp: usize,
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dil: &[usize],
) -> Result<()> {
    if kernel.len() != sp || strides.len() != sp || dil.len() != sp || pads.len() != 2 * sp {
        bail!(
            "window attributes do not match {sp} spatial dims (kernel {kernel:?}, strides {strides:?}, pads {pads:?}, dilations {dil:?})"
        );
    }
    if kernel.contains(&0) || strides.contains(&0) || dil.contains(&0) {
        bail!("kernel, strides and dilations must be positive");
    }
    Ok(())
}

/// Output extent of a sliding window.
pub fn window_out(
    d: &Dim,
    k: usize,
    s: usize,
    pb: usize,
    pe: usize,
    dil: usize,
    ceil: bool,
) -> Result<Dim> {
    let Dim::Known(n) = d else {
        return Ok(d.clone());
    };
    let span = dil * (k - 1) + 1;
    let total = n + pb + pe;
    if total < span {
        bail!("window of extent {span} does not fit input extent {n} with padding {pb}+{pe}");
    }
    let mut out = if ceil {
        (total - span).div_ceil(s) + 1
    } else {
        (total - span) / s + 1
    };
    // With ceil_mode the last window must start inside the input or its begin padding.
    if ceil && (out - 1) * s >= n + pb {
        out -= 1;
    }
    Ok(Dim::Known(out))
}

fn einsum_type(eq: &str, inp: &Inputs) -> Result<TensorType> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != inp.len() {
        bail!(
            "equation has {} operands, node has {} inputs",
            terms.len(),
            inp.len()
        );
    }
    let mut sizes: std::collections::BTreeMap<char, Dim> = Default::default();
    let mut counts: std::collections::BTreeMap<char, usize> = Default::default();
    let mut ell: Vec<Dim> = vec![];
    let mut dtype = None;
    for (i, term) in terms.iter().enumerate() {
        let t = inp.ty(i)?;
        dtype = Some(t.dtype);
        let labels: Vec<char> = term.chars().collect();
        let has_ell = term.contains("...");
        let named: Vec<char> = labels
            .iter()
            .copied()
            .filter(|c| c.is_alphabetic())
            .collect();
        let n_ell = if has_ell {
            t.rank().checked_sub(named.len())
        } else {
            Some(0)
        };
        let Some(n_ell) = n_ell.filter(|&n| has_ell || t.rank() == named.len() + n) else {
            bail!(
                "operand {i} has rank {}, term '{term}' names {} dims",
                t.rank(),
                named.len()
            )
        };
        let mut d = 0;
        let mut seen_ell = false;
        for c in labels {
            if c == '.' {
                if !seen_ell {
                    let e = t.shape[d..d + n_ell].to_vec();
                    ell = broadcast_shapes(&ell, &e)?;
                    d += n_ell;
                    seen_ell = true;
                }
                continue;
            }
            sizes.entry(c).or_insert_with(|| t.shape[d].clone());
            if let (Some(Dim::Known(1)), Dim::Known(_)) = (sizes.get(&c), &t.shape[d]) {
                sizes.insert(c, t.shape[d].clone());
            }
            *counts.entry(c).or_insert(0) += 1;
            d += 1;
        }
    }
    let out_labels: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => {
            let mut v: Vec<char> = if lhs.contains("...") {
                vec!['.']
            } else {
                vec![]
            };
            v.extend(counts.iter().filter(|(_, &n)| n == 1).map(|(&c, _)| c));
            v
        }
    };
    let mut shape = vec![];
    let mut ell_done = false;
    for c in out_labels {
        if c == '.' {
            if !ell_done {
                shape.extend(ell.iter().cloned());
                ell_done = true;
            }
        } else {
            match sizes.get(&c) {
                Some(d) => shape.push(d.clone()),
                None => bail!("output label '{c}' does not appear in the inputs"),
            }
        }
    }
    Ok(TensorType::new(
        dtype.unwrap_or(crate::dtype::DType::F32),
        shape,
    ))
}
