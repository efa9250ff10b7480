//! A builder that appends nodes to a region of a model and infers their output
//! types as it goes, so frontends and passes never create an untyped value.

use super::{Model, Node, Op, Region, ValueId};
use crate::infer::{infer_types, InferError};
use crate::shape::TensorType;
use crate::tensor::Tensor;

/// Appends nodes to `region`, creating output values in `model`.
pub struct Builder<'m> {
    pub model: &'m mut Model,
    pub region: Region,
    counter: usize,
}

impl<'m> Builder<'m> {
    pub fn new(model: &'m mut Model) -> Builder<'m> {
        Builder {
            model,
            region: Region::default(),
            counter: 0,
        }
    }

    /// Adds a node whose output types are inferred from its inputs. Constant
    /// inputs are offered to inference so shape-determining values resolve.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        num_outputs: usize,
    ) -> Result<Vec<ValueId>, InferError> {
        let name = name.into();
        let in_types: Vec<Option<TensorType>> = inputs
            .iter()
            .map(|i| i.map(|v| self.model.ty(v).clone()))
            .collect();
        let consts: Vec<Option<&Tensor>> = inputs
            .iter()
            .map(|i| i.and_then(|v| self.model.consts.get(&v)))
            .collect();
        let out_types = infer_types(&op, &in_types, &consts, num_outputs, &[])
            .map_err(|e| e.at_node(&name, &op))?;
        Ok(self.add_typed(name, op, inputs, out_types, vec![]))
    }

    /// Adds a node with explicitly given output types (control flow, or when the
    /// source model's declared types are authoritative).
    pub fn add_typed(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        out_types: Vec<TensorType>,
        regions: Vec<Region>,
    ) -> Vec<ValueId> {
        let name = name.into();
        let outputs: Vec<ValueId> = out_types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| {
                let vname = if i == 0 {
                    name.clone()
                } else {
                    format!("{name}:{i}")
                };
                self.model.add_value(vname, ty)
            })
            .collect();
        self.region.nodes.push(Node {
            name,
            op,
            inputs,
            outputs: outputs.clone(),
            regions,
        });
        outputs
    }

    /// A fresh node name with the given prefix, for nodes a frontend or pass invents.
    pub fn fresh_name(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    pub fn finish(self) -> Region {
        self.region
    }
}
