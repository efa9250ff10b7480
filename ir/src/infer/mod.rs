//! Type and shape inference for every op of the graph IR.
//!
//! Inference sees input types and, where known, input values (constants), so
//! shape-determining inputs resolve. A dim that cannot be known without
//! running the model becomes a fresh symbol (`?name`); `kiln run` specialises
//! such nodes on the values it is given.

mod data;
mod nn;
mod simple;
pub mod specialize;

pub use data::slice_range;

use crate::graph::Op;
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;
use thiserror::Error;

/// An inference failure: inconsistent shapes, wrong arity or dtype. Names the node once known.
#[derive(Debug, Clone, Error)]
#[error("{}{msg}", match (node, op) { (Some(n), Some(o)) => format!("node '{n}' ({o}): "), _ => String::new() })]
pub struct InferError {
    pub node: Option<String>,
    pub op: Option<String>,
    pub msg: String,
}

impl InferError {
    pub fn new(msg: impl Into<String>) -> InferError {
        InferError {
            node: None,
            op: None,
            msg: msg.into(),
        }
    }

    /// Attaches the node's name and op, unless already attached by an inner node.
    pub fn at_node(mut self, name: &str, op: &Op) -> InferError {
        if self.node.is_none() {
            self.node = Some(name.to_string());
            self.op = Some(op.name());
        }
        self
    }
}

pub type Result<T> = std::result::Result<T, InferError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::infer::InferError::new(format!($($t)*))) };
}
pub(crate) use bail;

/// What inference knows about one input.
pub(crate) struct Inputs<'a> {
    pub types: &'a [Option<TensorType>],
    pub consts: &'a [Option<&'a Tensor>],
}

impl<'a> Inputs<'a> {
    pub fn ty(&self, i: usize) -> Result<&'a TensorType> {
        match self.types.get(i) {
            Some(Some(t)) => Ok(t),
            _ => bail!("missing required input {i}"),
        }
    }

    pub fn opt_ty(&self, i: usize) -> Option<&'a TensorType> {
        self.types.get(i).and_then(|t| t.as_ref())
    }

    pub fn konst(&self, i: usize) -> Option<&'a Tensor> {
        self.consts.get(i).copied().flatten()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }
}

/// Infers the output types of `op` applied to inputs of `in_types`.
///
/// `consts[i]` is the value of input `i` when known. `region_results` gives the
/// result types of each nested region (control-flow ops take their output types
/// from them).
pub fn infer_types(
    op: &Op,
    in_types: &[Option<TensorType>],
    consts: &[Option<&Tensor>],
    num_outputs: usize,
    region_results: &[Vec<TensorType>],
) -> Result<Vec<TensorType>> {
    let inputs = Inputs {
        types: in_types,
        consts,
    };
    let out = match op {
        Op::Unary { .. }
        | Op::Binary { .. }
        | Op::Select
        | Op::Cast { .. }
        | Op::Identity
        | Op::Dropout { .. }
        | Op::Reduce { .. }
        | Op::ArgReduce { .. }
        | Op::CumSum { .. }
        | Op::Softmax { .. }
        | Op::Hardmax { .. }
        | Op::Shape { .. }
        | Op::Size
        | Op::ConstantOfShape { .. }
        | Op::Range
        | Op::NonZero
        | Op::EyeLike { .. } => simple::infer(op, &inputs)?,
        Op::MatMul
        | Op::Conv { .. }
        | Op::ConvTranspose { .. }
        | Op::Pool { .. }
        | Op::BatchNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::LayerNorm { .. }
        | Op::GroupNorm { .. }
        | Op::Lrn { .. }
        | Op::LpNorm { .. }
        | Op::MeanVarianceNorm { .. }
        | Op::Einsum { .. } => nn::infer(op, &inputs)?,
        Op::If | Op::Loop | Op::Scan { .. } => {
            control_flow(op, &inputs, num_outputs, region_results)?
        }
        Op::Fused => fused(region_results)?,
        _ => data::infer(op, &inputs, num_outputs)?,
    };
    if out.len() < num_outputs {
        bail!(
            "op produces {} outputs, node declares {num_outputs}",
            out.len()
        );
    }
    Ok(out)
}

fn control_flow(
    op: &Op,
    inputs: &Inputs,
    num_outputs: usize,
    region_results: &[Vec<TensorType>],
) -> Result<Vec<TensorType>> {
    match op {
        Op::If => {
            let [then_r, else_r] = region_results else {
                bail!("If needs two regions")
            };
            if then_r.len() != else_r.len() {
                bail!(
                    "If branches return {} and {} values",
                    then_r.len(),
                    else_r.len()
                );
            }
            // Branches may disagree on dims; the output dim is then a symbol.
            Ok(then_r
                .iter()
                .zip(else_r)
                .enumerate()
                .map(|(i, (a, b))| merge_types(a, b, &format!("if_out{i}")))
                .collect())
        }
        Op::Loop => {
            let [body] = region_results else {
                bail!("Loop needs one region")
            };
            let n_carried = inputs.len().saturating_sub(2);
            if body.len() < 1 + n_carried {
                bail!(
                    "Loop body returns {} values for {n_carried} carried values",
                    body.len()
                );
            }
            let mut out: Vec<TensorType> = Vec::with_capacity(num_outputs);
            for (i, t) in body[1..1 + n_carried].iter().enumerate() {
                out.push(match inputs.opt_ty(2 + i) {
                    Some(init) => merge_types(init, t, &format!("loop_carried{i}")),
                    None => t.clone(),
                });
            }
            for (i, t) in body[1 + n_carried..].iter().enumerate() {
                let mut shape = vec![Dim::Sym(format!("?loop_iters{i}"))];
                shape.extend(t.shape.iter().cloned());
                out.push(TensorType::new(t.dtype, shape));
            }
            Ok(out)
        }
        Op::Scan {
            num_scan_inputs,
            output_axes,
            ..
        } => {
            let [body] = region_results else {
                bail!("Scan needs one region")
            };
            let n_states = inputs.len().saturating_sub(*num_scan_inputs);
            let seq = match inputs.opt_ty(n_states) {
                Some(t) => t.shape.first().cloned().unwrap_or(Dim::Known(1)),
                None => Dim::Sym("?scan_len".into()),
            };
            let mut out: Vec<TensorType> = body[..n_states.min(body.len())].to_vec();
            for (i, t) in body.iter().skip(n_states).enumerate() {
                let axis = output_axes.get(i).copied().unwrap_or(0);
                let r = t.rank() as i64 + 1;
                let axis = if axis < 0 { axis + r } else { axis } as usize;
                let mut shape = t.shape.clone();
                shape.insert(axis.min(shape.len()), seq.clone());
                out.push(TensorType::new(t.dtype, shape));
            }
            Ok(out)
        }
        _ => unreachable!(),
    }
}

/// A fused group's outputs are its body's results.
fn fused(region_results: &[Vec<TensorType>]) -> Result<Vec<TensorType>> {
    let [body] = region_results else {
        bail!("fused needs one region (its body)")
    };
    if body.is_empty() {
        bail!("fused body returns no value");
    }
    Ok(body.clone())
}

/// The type both `a` and `b` fit: equal dims stay, differing dims become a symbol.
pub fn merge_types(a: &TensorType, b: &TensorType, sym: &str) -> TensorType {
    if a.rank() != b.rank() {
        return TensorType::new(
            a.dtype,
            (0..a.rank())
                .map(|i| Dim::Sym(format!("?{sym}_{i}")))
                .collect(),
        );
    }
    let shape = a
        .shape
        .iter()
        .zip(&b.shape)
        .enumerate()
        .map(|(i, (x, y))| {
            if x == y {
                x.clone()
            } else {
                Dim::Sym(format!("?{sym}_{i}"))
            }
        })
        .collect();
    TensorType::new(a.dtype, shape)
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) {
        bail!("axis {axis} out of range for rank {rank}");
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            &a[i + a.len() - n]
        } else {
            &Dim::Known(1)
        };
        let db = if i + b.len() >= n {
            &b[i + b.len() - n]
        } else {
            &Dim::Known(1)
        };
        out.push(match (da, db) {
            (x, y) if x == y => x.clone(),
            (Dim::Known(1), y) => y.clone(),
            (x, Dim::Known(1)) => x.clone(),
            (Dim::Known(x), Dim::Known(y)) => {
                bail!(
                    "shapes {} and {} do not broadcast (dim {x} vs {y})",
                    fmt_dims(a),
                    fmt_dims(b)
                )
            }
            (Dim::Known(x), Dim::Sym(_)) | (Dim::Sym(_), Dim::Known(x)) => Dim::Known(*x),
            (x, Dim::Sym(_)) => x.clone(),
        });
    }
    Ok(out)
}

pub fn fmt_dims(d: &[Dim]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// A dim from a concrete size.
pub(crate) fn known(dims: &[usize]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

/// A fresh unknown dim, for values only a run can determine.
pub(crate) fn unknown(tag: &str, i: usize) -> Dim {
    Dim::Sym(format!("?{tag}{i}"))
}
