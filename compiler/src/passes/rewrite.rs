//! Structural rewrites: use replacement, identity removal, CSE, DCE and the
//! BatchNorm-into-Conv rewrite (which builds the folded weights as graph ops
//! for constant folding to evaluate).

use super::PassError;
use kiln_ir::graph::builder::Builder;
use kiln_ir::graph::{BinaryOp, Node, Op, Region, UnaryOp, ValueId};
use kiln_ir::{Dim, Model, Tensor};
use std::collections::{HashMap, HashSet};

/// Replaces every use of `from` by `to`, in all regions.
pub fn replace_uses(model: &mut Model, from: ValueId, to: ValueId) {
    fn go(r: &mut Region, from: ValueId, to: ValueId) {
        for n in &mut r.nodes {
            for i in n.inputs.iter_mut().flatten() {
                if *i == from {
                    *i = to;
                }
            }
            for sub in &mut n.regions {
                go(sub, from, to);
            }
        }
        for v in &mut r.results {
            if *v == from {
                *v = to;
            }
        }
    }
    go(&mut model.body, from, to)
}

/// Removes Identity nodes by forwarding their input, except where that would
/// make a top-level graph output alias a graph input or another output.
pub fn remove_identities(model: &mut Model) -> bool {
    let mut pairs = vec![];
    collect_identities(&model.body, &mut pairs);
    let outputs: HashSet<ValueId> = model.body.results.iter().copied().collect();
    let inputs: HashSet<ValueId> = model.body.params.iter().copied().collect();
    let mut changed = false;
    for (from, to) in pairs {
        if outputs.contains(&from)
            && (inputs.contains(&to) || outputs.contains(&to) || model.consts.contains_key(&to))
        {
            continue;
        }
        replace_uses(model, from, to);
        changed = true;
    }
    if changed {
        dce(model);
    }
    changed
}

fn collect_identities(r: &Region, out: &mut Vec<(ValueId, ValueId)>) {
    for n in &r.nodes {
        if let (Op::Identity, [Some(i)], [o]) = (&n.op, n.inputs.as_slice(), n.outputs.as_slice()) {
            out.push((*o, *i));
        }
        for sub in &n.regions {
            collect_identities(sub, out);
        }
    }
}

/// Removes nodes none of whose outputs are used, and constants nothing uses.
pub fn dce(model: &mut Model) -> bool {
    let mut changed = false;
    loop {
        let mut used: HashSet<ValueId> = HashSet::new();
        collect_uses(&model.body, &mut used);
        let before = count_nodes(&model.body);
        let trimmed = trim_unused_outputs(&mut model.body, &used);
        retain_used(&mut model.body, &used);
        let after = count_nodes(&model.body);
        let consts_before = model.consts.len();
        model.consts.retain(|id, _| used.contains(id));
        if !trimmed && after == before && consts_before == model.consts.len() {
            break;
        }
        changed = true;
    }
    changed
}

fn collect_uses(r: &Region, used: &mut HashSet<ValueId>) {
    used.extend(r.results.iter().copied());
    for n in &r.nodes {
        used.extend(n.inputs.iter().flatten().copied());
        for sub in &n.regions {
            collect_uses(sub, used);
        }
    }
}

/// Drops optional trailing outputs nothing reads, so their lowering never
/// computes them: MaxPool's indices (exporters often declare them unused).
fn trim_unused_outputs(r: &mut Region, used: &HashSet<ValueId>) -> bool {
    let mut changed = false;
    for n in &mut r.nodes {
        let optional_tail = matches!(
            n.op,
            kiln_ir::Op::Pool {
                kind: kiln_ir::graph::PoolKind::Max,
                ..
            }
        );
        if optional_tail && n.outputs.len() == 2 && !used.contains(&n.outputs[1]) {
            n.outputs.truncate(1);
            changed = true;
        }
        for sub in &mut n.regions {
            changed |= trim_unused_outputs(sub, used);
        }
    }
    changed
}

fn retain_used(r: &mut Region, used: &HashSet<ValueId>) {
    r.nodes
        .retain(|n| n.outputs.iter().any(|o| used.contains(o)));
    for n in &mut r.nodes {
        for sub in &mut n.regions {
            retain_used(sub, used);
        }
    }
}

fn count_nodes(r: &Region) -> usize {
    r.nodes
        .iter()
        .map(|n| 1 + n.regions.iter().map(count_nodes).sum::<usize>())
        .sum()
}

/// Merges nodes with the same op and inputs (regions excluded), within each region.
pub fn cse(model: &mut Model) -> bool {
    let mut replacements = vec![];
    cse_region(&model.body, &mut replacements);
    let changed = !replacements.is_empty();
    for (from, to) in replacements {
        replace_uses(model, from, to);
    }
    if changed {
        dce(model);
    }
    changed
}

fn cse_region(r: &Region, out: &mut Vec<(ValueId, ValueId)>) {
    let mut seen: HashMap<String, &Node> = HashMap::new();
    for n in &r.nodes {
        if n.op.has_regions() {
            for sub in &n.regions {
                cse_region(sub, out);
            }
            continue;
        }
        let key = format!("{:?}|{:?}|{}", n.op, n.inputs, n.outputs.len());
        match seen.get(&key) {
            Some(prev) => out.extend(n.outputs.iter().copied().zip(prev.outputs.iter().copied())),
            None => {
                seen.insert(key, n);
            }
        }
    }
}

/// `BatchNorm(Conv(x, w, b))` with constant parameters becomes `Conv(x, w', b')`
/// where `s = scale / sqrt(var + eps)`, `w' = w * s` (per output channel) and
/// `b' = (b - mean) * s + bias`. The new weights are built as graph nodes on the
/// constants so that constant folding computes them through the lowerings.
pub fn fold_batchnorm_into_conv(model: &mut Model) -> Result<bool, PassError> {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    count_uses(&model.body, &mut uses);
    let mut changed = false;
    let mut i = 0;
    while i < model.body.nodes.len() {
        let bn = &model.body.nodes[i];
        let Op::BatchNorm { epsilon } = bn.op else {
            i += 1;
            continue;
        };
        let (Some(Some(x)), true) = (bn.inputs.first(), bn.inputs.len() == 5) else {
            i += 1;
            continue;
        };
        let params: Vec<ValueId> = bn.inputs[1..].iter().flatten().copied().collect();
        let producer = model
            .body
            .nodes
            .iter()
            .position(|n| n.outputs.first() == Some(x));
        let Some(p) = producer else {
            i += 1;
            continue;
        };
        let conv = &model.body.nodes[p];
        let is_conv = matches!(conv.op, Op::Conv { .. });
        let w = conv.inputs.get(1).copied().flatten();
        let b = conv.inputs.get(2).copied().flatten();
        let all_const = params.len() == 4
            && params.iter().all(|v| model.consts.contains_key(v))
            && w.is_some_and(|w| model.consts.contains_key(&w))
            && b.is_none_or(|b| model.consts.contains_key(&b));
        if !is_conv
            || !all_const
            || uses.get(x).copied().unwrap_or(0) != 1
            || model.body.results.contains(x)
        {
            i += 1;
            continue;
        }
        let (w, x, bn_out, bn_name) = (w.unwrap_or(ValueId(0)), *x, bn.outputs[0], bn.name.clone());
        let dtype = model.ty(w).dtype;
        let w_rank = model.ty(w).rank();
        let oc = model.ty(w).shape[0].clone();
        let [scale, bias, mean, var] = [params[0], params[1], params[2], params[3]];
        let mut bld = Builder::new(model);
        let err = |e: kiln_ir::infer::InferError| PassError::Node {
            node: bn_name.clone(),
            op: "batch_norm".into(),
            msg: e.to_string(),
        };
        let eps = bld.model.add_const(
            format!("{bn_name}.eps"),
            Tensor::scalar_f64(dtype, epsilon as f64),
        );
        let bin = |bld: &mut Builder,
                   op: BinaryOp,
                   a: ValueId,
                   b: ValueId|
         -> Result<ValueId, PassError> {
            let name = bld.fresh_name(&format!("{bn_name}.fold"));
            Ok(bld
                .add(name, Op::Binary { op }, vec![Some(a), Some(b)], 1)
                .map_err(err)?[0])
        };
        let ve = bin(&mut bld, BinaryOp::Add, var, eps)?;
        let name = bld.fresh_name(&format!("{bn_name}.fold"));
        let sd = bld
            .add(name, Op::Unary { op: UnaryOp::Sqrt }, vec![Some(ve)], 1)
            .map_err(err)?[0];
        let s = bin(&mut bld, BinaryOp::Div, scale, sd)?;
        let mut shape = vec![oc];
        shape.extend((1..w_rank).map(|_| Dim::Known(1)));
        let name = bld.fresh_name(&format!("{bn_name}.fold"));
        let s_col = bld
            .add(name, Op::Reshape { shape: Some(shape) }, vec![Some(s)], 1)
            .map_err(err)?[0];
        let w2 = bin(&mut bld, BinaryOp::Mul, w, s_col)?;
        let centred = match b {
            Some(b) => bin(&mut bld, BinaryOp::Sub, b, mean)?,
            None => {
                let name = bld.fresh_name(&format!("{bn_name}.fold"));
                bld.add(name, Op::Unary { op: UnaryOp::Neg }, vec![Some(mean)], 1)
                    .map_err(err)?[0]
            }
        };
        let scaled = bin(&mut bld, BinaryOp::Mul, centred, s)?;
        let b2 = bin(&mut bld, BinaryOp::Add, scaled, bias)?;
        let new_nodes = bld.finish().nodes;
        let conv = &mut model.body.nodes[p];
        conv.inputs = vec![Some(x_input(conv)), Some(w2), Some(b2)];
        let conv_out = conv.outputs[0];
        let n_new = new_nodes.len();
        // The weight computations go before the conv so the region stays topologically ordered.
        model.body.nodes.splice(p..p, new_nodes);
        replace_uses(model, bn_out, conv_out);
        let _ = x;
        changed = true;
        i += n_new + 1;
    }
    if changed {
        dce(model);
    }
    Ok(changed)
}

fn x_input(conv: &Node) -> ValueId {
    conv.inputs[0].unwrap_or(ValueId(0))
}

/// Reads of every value in `r` and its subregions (a region's results count).
pub fn count_uses(r: &Region, uses: &mut HashMap<ValueId, usize>) {
    for n in &r.nodes {
        for v in n.inputs.iter().flatten() {
            *uses.entry(*v).or_insert(0) += 1;
        }
        for sub in &n.regions {
            count_uses(sub, uses);
        }
    }
    for v in &r.results {
        *uses.entry(*v).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOLS: &str = r#"kiln 1
model "pools"
func(%x: f32[1,2,6,6]) {
  %y, %unused = pool(%x) {kind: max, kernel: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil_mode: false} : f32[1,2,3,3], i64[1,2,3,3] @p1
  %z, %idx = pool(%y) {kind: max, kernel: [1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], ceil_mode: false} : f32[1,2,3,3], i64[1,2,3,3] @p2
  return %z, %idx
}
"#;

    /// Unread MaxPool indices are dropped; indices a graph output needs stay.
    #[test]
    fn dce_drops_unread_maxpool_indices_only() {
        let mut m = kiln_ir::text::parse(POOLS).expect("parse");
        assert!(dce(&mut m));
        let outs: Vec<usize> = m.body.nodes.iter().map(|n| n.outputs.len()).collect();
        assert_eq!(outs, vec![1, 2]);
    }
}
