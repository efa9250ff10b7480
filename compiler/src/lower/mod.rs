//! Lowering: the one definition of every operator's meaning, as kernel IR.
//!
//! `lower` turns one graph node with fully known input and output types into
//! a [`KernelProgram`]. Its buffers follow one convention: an
//! [`BufferRole::Input`]`(i)` buffer for each present input `i` of the node (in
//! node input order), an [`BufferRole::Output`]`(k)` buffer for each output,
//! then any scratch. The reference interpreter runs the program as it is; the
//! native and C backends render the same program. Nothing else in kiln
//! computes an op: constant folding and `kiln run` go through here too.

mod data;
mod elementwise;
pub mod fused;
mod gen;
mod nn;
mod reduce;

use kiln_ir::kernel::build::ProgramBuilder;
use kiln_ir::kernel::{BufId, BufferRole, KernelProgram};
use kiln_ir::{Op, Tensor, TensorType};
use thiserror::Error;

/// A lowering failure names the node and op it was lowering.
#[derive(Debug, Error, Clone)]
#[error("node '{node}' ({op}): {msg}")]
pub struct LowerError {
    pub node: String,
    pub op: String,
    pub msg: String,
}

/// What a lowering sees of its node: the op, concrete input and output types, and constant inputs.
pub struct LowerCtx<'a> {
    pub node: &'a str,
    pub op: &'a Op,
    /// `None` for an omitted optional input.
    pub inputs: &'a [Option<TensorType>],
    pub outputs: &'a [TensorType],
    /// Values of inputs known at lowering time (weights, shape tensors).
    pub consts: &'a [Option<&'a Tensor>],
}

impl<'a> LowerCtx<'a> {
    pub fn err(&self, msg: impl Into<String>) -> LowerError {
        LowerError {
            node: self.node.to_string(),
            op: self.op.name(),
            msg: msg.into(),
        }
    }

    /// Concrete dims of input `i` (an error if absent or symbolic).
    pub fn in_dims(&self, i: usize) -> Result<Vec<usize>> {
        match self.inputs.get(i) {
            Some(Some(t)) => t
                .dims()
                .ok_or_else(|| self.err(format!("input {i} has symbolic shape {t}"))),
            _ => Err(self.err(format!("missing input {i}"))),
        }
    }

    pub fn in_type(&self, i: usize) -> Result<&'a TensorType> {
        match self.inputs.get(i) {
            Some(Some(t)) => Ok(t),
            _ => Err(self.err(format!("missing input {i}"))),
        }
    }

    pub fn has_input(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(_)))
    }

    pub fn out_dims(&self, k: usize) -> Result<Vec<usize>> {
        let t = self
            .outputs
            .get(k)
            .ok_or_else(|| self.err(format!("missing output {k}")))?;
        t.dims()
            .ok_or_else(|| self.err(format!("output {k} has symbolic shape {t}")))
    }

    pub fn konst(&self, i: usize) -> Option<&'a Tensor> {
        self.consts.get(i).copied().flatten()
    }

    /// Declares the node's buffers in the standard order: inputs, then outputs.
    pub fn io(&self, pb: &mut ProgramBuilder) -> Result<Io> {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (i, t) in self.inputs.iter().enumerate() {
            inputs.push(match t {
                Some(t) => {
                    let n = t
                        .num_elements()
                        .ok_or_else(|| self.err(format!("input {i} has symbolic shape {t}")))?;
                    Some(pb.buffer(format!("in{i}"), t.dtype, n, BufferRole::Input(i)))
                }
                None => None,
            });
        }
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (k, t) in self.outputs.iter().enumerate() {
            let n = t
                .num_elements()
                .ok_or_else(|| self.err(format!("output {k} has symbolic shape {t}")))?;
            outputs.push(pb.buffer(format!("out{k}"), t.dtype, n, BufferRole::Output(k)));
        }
        Ok(Io { inputs, outputs })
    }
}

/// The buffer ids of a node's inputs (`None` if omitted) and outputs.
pub struct Io {
    pub inputs: Vec<Option<BufId>>,
    pub outputs: Vec<BufId>,
}

impl Io {
    /// Input `i`'s buffer; lowerings call this only for inputs they require.
    pub fn input(&self, i: usize) -> BufId {
        self.inputs[i].expect("required input checked by inference")
    }
}

pub type Result<T> = std::result::Result<T, LowerError>;

/// Lowers one node. Ops with parameters still pending (`None`) must be specialised first.
pub fn lower(cx: &LowerCtx) -> Result<KernelProgram> {
    let mut pb = ProgramBuilder::new();
    match cx.op {
        Op::Dropout { .. } => elementwise::lower_dropout(cx, &mut pb)?,
        Op::Unary { .. } | Op::Binary { .. } | Op::Select | Op::Cast { .. } | Op::Identity => {
            elementwise::lower(cx, &mut pb)?
        }
        Op::Reduce { .. }
        | Op::ArgReduce { .. }
        | Op::CumSum { .. }
        | Op::Softmax { .. }
        | Op::Hardmax { .. }
        | Op::BatchNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::LayerNorm { .. }
        | Op::GroupNorm { .. }
        | Op::Lrn { .. }
        | Op::LpNorm { .. }
        | Op::MeanVarianceNorm { .. } => reduce::lower(cx, &mut pb)?,
        Op::MatMul
        | Op::Conv { .. }
        | Op::ConvTranspose { .. }
        | Op::Pool { .. }
        | Op::Einsum { .. } => nn::lower(cx, &mut pb)?,
        Op::Shape { .. }
        | Op::Size
        | Op::ConstantOfShape { .. }
        | Op::Range
        | Op::NonZero
        | Op::EyeLike { .. } => gen::lower(cx, &mut pb)?,
        Op::If | Op::Loop | Op::Scan { .. } => {
            return Err(cx.err(
                "control flow is run by the graph executor, not lowered to one kernel program",
            ))
        }
        Op::Fused => {
            return Err(
                cx.err("a fused group is lowered with its body, by lower::fused::lower_fused_node")
            )
        }
        _ => data::lower(cx, &mut pb)?,
    }
    let prog = pb.finish();
    if cfg!(debug_assertions) {
        kiln_ir::kernel::verify::verify(&prog)
            .map_err(|e| cx.err(format!("lowering produced invalid kernel IR: {e}")))?;
    }
    Ok(prog)
}
