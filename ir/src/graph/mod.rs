//! The graph IR: SSA values with a dtype and a (possibly symbolic) shape, nodes
//! from kiln's normalised op set, and nested regions for control flow.
//!
//! All values of a model, including those defined inside regions, live in one
//! arena (`Model::values`), so a region refers to outer values by id the way
//! ONNX subgraphs capture outer names. Weights are values with an entry in
//! `Model::consts`.

pub mod builder;
pub mod op;
pub mod verify;

use crate::shape::TensorType;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use op::*;

/// Index of a value in `Model::values`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A value's name (kept from the source model for error messages and output files) and type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueInfo {
    pub name: String,
    pub ty: TensorType,
}

/// One operation. `inputs` may hold `None` for omitted optional inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The source node's name (ONNX node name, or a generated one), used in errors.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// Nested regions (If: then, else; Loop and Scan: body).
    pub regions: Vec<Region>,
}

/// A sequence of nodes in topological order with parameters and results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub params: Vec<ValueId>,
    pub nodes: Vec<Node>,
    pub results: Vec<ValueId>,
}

/// A whole model: the value arena, the constants, and the top-level region whose
/// params are the graph inputs and whose results are the graph outputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    pub values: Vec<ValueInfo>,
    pub consts: BTreeMap<ValueId, Tensor>,
    pub body: Region,
}

impl Model {
    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.index()]
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.values[id.index()].ty
    }

    /// The types of a node's inputs (`None` for omitted optional inputs), as inference takes them.
    pub fn input_types(&self, inputs: &[Option<ValueId>]) -> Vec<Option<TensorType>> {
        inputs
            .iter()
            .map(|i| i.map(|v| self.ty(v).clone()))
            .collect()
    }

    /// The values of a node's constant inputs, as inference and specialisation take them.
    pub fn input_consts(&self, inputs: &[Option<ValueId>]) -> Vec<Option<&Tensor>> {
        inputs
            .iter()
            .map(|i| i.and_then(|v| self.consts.get(&v)))
            .collect()
    }

    pub fn add_value(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(ValueInfo {
            name: name.into(),
            ty,
        });
        id
    }

    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let ty = TensorType::known(t.dtype(), &t.shape);
        let id = self.add_value(name, ty);
        self.consts.insert(id, t);
        id
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.body.params
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.body.results
    }

    /// Calls `f` on every node, regions included, outer nodes before their regions' nodes.
    pub fn visit_nodes<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        fn go<'a>(r: &'a Region, f: &mut impl FnMut(&'a Node)) {
            for n in &r.nodes {
                f(n);
                for sub in &n.regions {
                    go(sub, f);
                }
            }
        }
        go(&self.body, f)
    }

    /// Count of nodes per op name, regions included.
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        self.visit_nodes(&mut |n| *h.entry(n.op.name()).or_insert(0) += 1);
        h
    }

    /// Total elements and bytes of the constants.
    pub fn param_stats(&self) -> (usize, usize) {
        self.consts
            .values()
            .fold((0, 0), |(e, b), t| (e + t.len(), b + t.byte_len()))
    }
}
