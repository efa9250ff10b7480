//! The graph-building vocabulary the ONNX decompositions share (recurrent
//! cells, losses and Attention, quantisation): each call appends one kiln node,
//! named after the ONNX node it stands for, so errors still point at the
//! user's node.

use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{BinaryOp, UnaryOp};
use kiln_ir::{DType, Op, Region, ValueId};

type Res<T> = Result<T, FrontendError>;

/// Adds one intermediate node named after the ONNX node `n` (for decompositions
/// written as free functions).
pub(crate) fn node(
    imp: &mut Importer,
    r: &mut Region,
    n: &N,
    op: Op,
    ins: Vec<Option<ValueId>>,
) -> Res<ValueId> {
    let nm = imp.fresh(&n.name);
    imp.add1(r, &nm, op, ins)
}

/// Appends nodes for one ONNX node `n` to region `r`.
pub(crate) struct Emit<'a, 'n> {
    pub imp: &'a mut Importer,
    pub r: &'a mut Region,
    pub n: &'a N<'n>,
}

impl Emit<'_, '_> {
    /// A node with all inputs present.
    pub fn op(&mut self, op: Op, ins: Vec<ValueId>) -> Res<ValueId> {
        self.op_opt(op, ins.into_iter().map(Some).collect())
    }

    /// A node whose optional inputs may be absent.
    pub fn op_opt(&mut self, op: Op, ins: Vec<Option<ValueId>>) -> Res<ValueId> {
        node(self.imp, self.r, self.n, op, ins)
    }

    pub fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Res<ValueId> {
        self.op(Op::Binary { op }, vec![a, b])
    }

    pub fn un(&mut self, op: UnaryOp, a: ValueId) -> Res<ValueId> {
        self.op(Op::Unary { op }, vec![a])
    }

    /// A rank-0 constant.
    pub fn scalar(&mut self, dtype: DType, v: f64) -> ValueId {
        self.imp.scalar(dtype, v)
    }

    /// `x` converted to `to` (no node when it already is).
    pub fn cast(&mut self, x: ValueId, to: DType) -> Res<ValueId> {
        if self.imp.ty(x).dtype == to {
            return Ok(x);
        }
        self.op(Op::Cast { to }, vec![x])
    }

    pub fn transpose(&mut self, x: ValueId, perm: Vec<usize>) -> Res<ValueId> {
        self.op(Op::Transpose { perm }, vec![x])
    }

    /// The static shape of `x`, which most decompositions need.
    pub fn dims(&self, x: ValueId) -> Res<Vec<usize>> {
        let t = self.imp.ty(x);
        t.dims().ok_or_else(|| {
            self.n
                .shape_err(format!("needs a static input shape, got {t}"))
        })
    }
}
