//! Shape folding and constant folding. Constant folding runs nodes through
//! `exec::eval_op`, i.e. the op's lowering on the reference interpreter.

use super::PassError;
use crate::exec::eval_op;
use kiln_ir::graph::{Node, Op, Region, ValueId};
use kiln_ir::infer::specialize::specialize;
use kiln_ir::{Model, Tensor, TensorType};

/// Constants larger than this are not materialised by folding (bytes).
const MAX_FOLDED_BYTES: usize = 256 << 20;

/// `Shape` and `Size` of values whose shape is fully known become constants.
pub fn fold_shapes(model: &mut Model) -> bool {
    let mut found: Vec<(ValueId, Tensor)> = vec![];
    fn go(model: &Model, r: &Region, found: &mut Vec<(ValueId, Tensor)>) {
        for n in &r.nodes {
            for sub in &n.regions {
                go(model, sub, found);
            }
            let Some(Some(x)) = n.inputs.first() else {
                continue;
            };
            if !matches!(n.op, Op::Shape { .. } | Op::Size) || model.ty(*x).dims().is_none() {
                continue;
            }
            let types = model.input_types(&n.inputs);
            let Ok(mut t) = crate::exec::eval_from_types(&n.name, &n.op, &types) else {
                continue;
            };
            let t = t.remove(0);
            found.push((n.outputs[0], t));
        }
    }
    go(model, &model.body, &mut found);
    let changed = !found.is_empty();
    for (v, t) in found {
        make_const(model, v, t);
    }
    if changed {
        super::dce(model);
    }
    changed
}

/// Turns value `v` into a constant: its defining node becomes dead.
fn make_const(model: &mut Model, v: ValueId, t: Tensor) {
    model.values[v.index()].ty = TensorType::known(t.dtype(), &t.shape);
    model.consts.insert(v, t);
    fn drop_def(r: &mut Region, v: ValueId) {
        for n in &mut r.nodes {
            // A node stays while other outputs are live; its output `v` is shadowed by the constant.
            for sub in &mut n.regions {
                drop_def(sub, v);
            }
        }
        r.nodes
            .retain(|n| !(n.outputs.len() == 1 && n.outputs[0] == v));
    }
    drop_def(&mut model.body, v);
}

/// Specialises nodes whose parameter inputs are constant, then evaluates nodes
/// whose inputs are all constant.
pub fn fold_constants(model: &mut Model) -> Result<bool, PassError> {
    let mut changed = specialize_all(model)?;
    if changed {
        reinfer_types(model)?;
    }
    let mut todo: Vec<(ValueId, Tensor)> = vec![];
    let mut err = None;
    let consts = &model.consts;
    let region_params = all_region_params(&model.body);
    for n in &model.body.nodes {
        if !foldable(n, consts, &region_params) {
            continue;
        }
        let vals: Vec<Option<&Tensor>> = n
            .inputs
            .iter()
            .map(|i| i.and_then(|v| consts.get(&v)))
            .collect();
        let out_bytes: Option<usize> = n.outputs.iter().map(|&o| model.ty(o).byte_size()).sum();
        if out_bytes.is_none_or(|b| b > MAX_FOLDED_BYTES) {
            continue;
        }
        match eval_op(&n.name, &n.op, &vals, n.outputs.len()) {
            Ok(outs) => todo.extend(n.outputs.iter().copied().zip(outs)),
            Err(msg) => {
                err = Some(PassError::Node {
                    node: n.name.clone(),
                    op: n.op.name(),
                    msg,
                });
                break;
            }
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    if !todo.is_empty() {
        changed = true;
        let folded: std::collections::HashSet<ValueId> = todo.iter().map(|(v, _)| *v).collect();
        for (v, t) in todo {
            model.values[v.index()].ty = TensorType::known(t.dtype(), &t.shape);
            model.consts.insert(v, t);
        }
        model
            .body
            .nodes
            .retain(|n| !n.outputs.iter().all(|o| folded.contains(o)));
        super::dce(model);
    }
    Ok(changed)
}

fn all_region_params(r: &Region) -> std::collections::HashSet<ValueId> {
    let mut s = std::collections::HashSet::new();
    fn go(r: &Region, s: &mut std::collections::HashSet<ValueId>) {
        for n in &r.nodes {
            for sub in &n.regions {
                s.extend(sub.params.iter().copied());
                go(sub, s);
            }
        }
    }
    go(r, &mut s);
    s
}

fn foldable(
    n: &Node,
    consts: &std::collections::BTreeMap<ValueId, Tensor>,
    _params: &std::collections::HashSet<ValueId>,
) -> bool {
    !n.op.has_regions()
        && !n.inputs.is_empty()
        && n.inputs.iter().flatten().all(|v| consts.contains_key(v))
        || matches!(n.op, Op::ConstantOfShape { shape: Some(_), .. })
            && n.inputs.iter().flatten().next().is_none()
}

/// Rewrites nodes whose pending parameters (`None`) now have constant inputs, in every region.
fn specialize_all(model: &mut Model) -> Result<bool, PassError> {
    let mut changed = false;
    let mut edits: Vec<(Vec<usize>, usize, Op, Vec<usize>)> = vec![];
    fn go(
        model: &Model,
        r: &Region,
        path: &mut Vec<usize>,
        edits: &mut Vec<(Vec<usize>, usize, Op, Vec<usize>)>,
    ) -> Result<(), PassError> {
        for (k, n) in r.nodes.iter().enumerate() {
            for (ri, sub) in n.regions.iter().enumerate() {
                path.push(k);
                path.push(ri);
                go(model, sub, path, edits)?;
                path.pop();
                path.pop();
            }
            let types = model.input_types(&n.inputs);
            let consts = model.input_consts(&n.inputs);
            let spec = specialize(&n.op, &types, &consts).map_err(|e| PassError::Node {
                node: n.name.clone(),
                op: n.op.name(),
                msg: e.msg,
            })?;
            if let Some((op, keep)) = spec {
                edits.push((path.clone(), k, op, keep));
            }
        }
        Ok(())
    }
    go(model, &model.body, &mut vec![], &mut edits)?;
    for (path, k, op, keep) in edits {
        let mut r = &mut model.body;
        for pair in path.chunks(2) {
            r = &mut r.nodes[pair[0]].regions[pair[1]];
        }
        let n = &mut r.nodes[k];
        n.op = op;
        n.inputs = keep
            .iter()
            .map(|&i| n.inputs.get(i).copied().flatten())
            .collect();
        changed = true;
    }
    Ok(changed)
}

/// Recomputes every node's output types from its inputs (after specialisation
/// made shapes known), keeping a declared known dim where inference has only a symbol.
pub fn reinfer_types(model: &mut Model) -> Result<(), PassError> {
    fn go(model: &mut Model, path: &mut Vec<usize>) -> Result<(), PassError> {
        let n_nodes = region_at(&model.body, path).nodes.len();
        for k in 0..n_nodes {
            let n_regions = region_at(&model.body, path).nodes[k].regions.len();
            for ri in 0..n_regions {
                path.push(k);
                path.push(ri);
                go(model, path)?;
                path.pop();
                path.pop();
            }
            let n = &region_at(&model.body, path).nodes[k];
            let types = model.input_types(&n.inputs);
            let consts = model.input_consts(&n.inputs);
            let region_results: Vec<Vec<TensorType>> = n
                .regions
                .iter()
                .map(|r| r.results.iter().map(|&v| model.ty(v).clone()).collect())
                .collect();
            let inferred = kiln_ir::infer::infer_types(
                &n.op,
                &types,
                &consts,
                n.outputs.len(),
                &region_results,
            )
            .map_err(|e| PassError::Node {
                node: n.name.clone(),
                op: n.op.name(),
                msg: e.msg,
            })?;
            let outs = n.outputs.clone();
            for (o, t) in outs.into_iter().zip(inferred) {
                let old = &model.values[o.index()].ty;
                let merged = if old.rank() == t.rank() {
                    let shape = old
                        .shape
                        .iter()
                        .zip(&t.shape)
                        .map(|(a, b)| {
                            if b.known().is_some() {
                                b.clone()
                            } else {
                                a.clone()
                            }
                        })
                        .collect();
                    TensorType::new(t.dtype, shape)
                } else {
                    t
                };
                model.values[o.index()].ty = merged;
            }
        }
        Ok(())
    }
    go(model, &mut vec![])
}

fn region_at<'a>(body: &'a Region, path: &[usize]) -> &'a Region {
    let mut r = body;
    for pair in path.chunks(2) {
        r = &r.nodes[pair[0]].regions[pair[1]];
    }
    r
}
