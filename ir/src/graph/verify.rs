//! The graph verifier: SSA form (each value defined once, before use, visible
//! in its region), arities, and types that agree with inference.

use super::{Model, Region, ValueId};
use crate::infer::infer_types;
use crate::shape::{Dim, TensorType};
use std::collections::HashSet;

/// Checks the whole model; the error names the node at fault.
pub fn verify(model: &Model) -> Result<(), String> {
    let mut defined: HashSet<ValueId> = model.consts.keys().copied().collect();
    for (id, t) in &model.consts {
        let ty = model
            .values
            .get(id.index())
            .ok_or_else(|| format!("constant {id:?} has no value entry"))?;
        if ty.ty.dims().as_deref() != Some(&t.shape[..]) || ty.ty.dtype != t.dtype() {
            return Err(format!(
                "constant '{}' is declared {} but holds {:?} {}",
                ty.name,
                ty.ty,
                t.shape,
                t.dtype()
            ));
        }
    }
    verify_region(model, &model.body, &mut defined)
}

fn verify_region(model: &Model, r: &Region, defined: &mut HashSet<ValueId>) -> Result<(), String> {
    let n_values = model.values.len();
    let check_id = |v: ValueId| -> Result<(), String> {
        if v.index() >= n_values {
            return Err(format!("value id {} does not exist", v.0));
        }
        Ok(())
    };
    let mut scope = defined.clone();
    for &p in &r.params {
        check_id(p)?;
        if !scope.insert(p) {
            return Err(format!(
                "region parameter '{}' is defined twice",
                model.value(p).name
            ));
        }
    }
    for n in &r.nodes {
        for v in n.inputs.iter().flatten() {
            check_id(*v)?;
            if !scope.contains(v) {
                return Err(format!(
                    "node '{}' ({}): input '{}' is used before it is defined",
                    n.name,
                    n.op.name(),
                    model.value(*v).name
                ));
            }
        }
        let mut region_results = vec![];
        for sub in &n.regions {
            verify_region(model, sub, &mut scope)?;
            region_results.push(
                sub.results
                    .iter()
                    .map(|&v| model.ty(v).clone())
                    .collect::<Vec<_>>(),
            );
        }
        let in_types = model.input_types(&n.inputs);
        let consts = model.input_consts(&n.inputs);
        let inferred = infer_types(&n.op, &in_types, &consts, n.outputs.len(), &region_results)
            .map_err(|e| e.at_node(&n.name, &n.op).to_string())?;
        for (k, &o) in n.outputs.iter().enumerate() {
            check_id(o)?;
            if !scope.insert(o) {
                return Err(format!(
                    "node '{}': output '{}' is defined twice",
                    n.name,
                    model.value(o).name
                ));
            }
            let declared = model.ty(o);
            if !compatible(declared, &inferred[k]) {
                return Err(format!(
                    "node '{}' ({}): output {k} is declared {declared} but infers to {}",
                    n.name,
                    n.op.name(),
                    inferred[k]
                ));
            }
        }
    }
    for &v in &r.results {
        check_id(v)?;
        if !scope.contains(&v) {
            return Err(format!(
                "region result '{}' is not defined",
                model.value(v).name
            ));
        }
    }
    // Values defined inside a region are not visible after it, except that the
    // caller keeps its own scope; nothing to propagate.
    Ok(())
}

/// Declared and inferred types agree where both are known.
fn compatible(a: &TensorType, b: &TensorType) -> bool {
    a.dtype == b.dtype
        && a.rank() == b.rank()
        && a.shape.iter().zip(&b.shape).all(|(x, y)| match (x, y) {
            (Dim::Known(p), Dim::Known(q)) => p == q,
            _ => true,
        })
}
