//! Operator fusion: a node and the elementwise nodes applied to its output
//! become one `fused` node, lowered to one kernel program
//! ([`crate::lower::fused`]), so the intermediate tensors are never written
//! to memory: Conv/MatMul + bias + activation, residual Adds, and chains of
//! elementwise ops (GELU, SiLU, Clip, …).
//!
//! A group grows from a root node, in graph order, by elementwise nodes whose
//! inputs are group values (of the group's shape: no broadcast of a group
//! value) or values computed independently of the group. It is kept when
//! exactly one of its values is used outside it, the last member's output,
//! and its composed lowering succeeds; the largest such group wins. The
//! lowering is the judge of what can be fused, so the pass states no rule
//! about ops beyond "elementwise".

use super::PassError;
use crate::lower::fused::{group_from_nodes, lower_group};
use kiln_ir::{Model, Node, Op, Region, ValueId};
use std::collections::{HashMap, HashSet};

/// At most this many nodes per group: long chains gain little more, and each
/// candidate is lowered once to check it.
const MAX_MEMBERS: usize = 12;

/// Fuses groups in the model's top-level graph (control-flow bodies are left
/// as they are) and returns how many groups were formed. Values with
/// symbolic shapes are never fused.
pub fn fuse(model: &mut Model) -> Result<usize, PassError> {
    let nodes = &model.body.nodes;
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for &o in &n.outputs {
            producer.insert(o, i);
        }
    }
    // Users of each value; a graph output counts as a user outside every group.
    let mut users: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut used = HashSet::new();
        uses_of(n, &mut used);
        for v in used {
            users.entry(v).or_default().push(i);
        }
    }
    let outputs: HashSet<ValueId> = model.body.results.iter().copied().collect();

    let mut in_group = vec![false; nodes.len()];
    let mut groups: Vec<Vec<usize>> = vec![];
    for r in 0..nodes.len() {
        if in_group[r] || !can_be_root(model, &nodes[r]) {
            continue;
        }
        let Some(members) = grow(model, r, &producer, &users, &outputs, &in_group) else {
            continue;
        };
        for &m in &members {
            in_group[m] = true;
        }
        groups.push(members);
    }
    let formed = groups.len();
    let mut replacement: HashMap<usize, Node> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for g in &groups {
        let last = *g.iter().max().unwrap_or(&0);
        let node = build_fused(model, g);
        removed.extend(g.iter().copied());
        replacement.insert(last, node);
    }
    let old = std::mem::take(&mut model.body.nodes);
    for (i, n) in old.into_iter().enumerate() {
        if let Some(f) = replacement.remove(&i) {
            model.body.nodes.push(f);
        } else if !removed.contains(&i) {
            model.body.nodes.push(n);
        }
    }
    Ok(formed)
}

/// Every value a node reads, its nested regions' captures included.
fn uses_of(n: &Node, out: &mut HashSet<ValueId>) {
    out.extend(n.inputs.iter().flatten().copied());
    fn region(r: &Region, out: &mut HashSet<ValueId>) {
        for n in &r.nodes {
            uses_of(n, out);
        }
        out.extend(r.results.iter().copied());
    }
    for r in &n.regions {
        region(r, out);
    }
}

fn static_dims(model: &Model, v: ValueId) -> Option<Vec<usize>> {
    model.ty(v).dims()
}

fn can_be_root(model: &Model, n: &Node) -> bool {
    n.regions.is_empty()
        && !n.op.has_regions()
        && !matches!(n.op, Op::Fused)
        && n.outputs.len() == 1
        && static_dims(model, n.outputs[0]).is_some()
        && !model.consts.contains_key(&n.outputs[0])
}

/// The largest valid group rooted at node `r` with at least two members, by node index.
fn grow(
    model: &Model,
    r: usize,
    producer: &HashMap<ValueId, usize>,
    users: &HashMap<ValueId, Vec<usize>>,
    outputs: &HashSet<ValueId>,
    in_group: &[bool],
) -> Option<Vec<usize>> {
    let nodes = &model.body.nodes;
    let shape = static_dims(model, nodes[r].outputs[0])?;
    let mut members = vec![r];
    let mut gvals: HashSet<ValueId> = HashSet::from([nodes[r].outputs[0]]);
    let mut valid: Vec<Vec<usize>> = vec![];
    while members.len() < MAX_MEMBERS {
        let mut cands: Vec<usize> = gvals
            .iter()
            .flat_map(|v| users.get(v).into_iter().flatten().copied())
            .filter(|&u| !in_group[u] && !members.contains(&u))
            .collect();
        cands.sort_unstable();
        cands.dedup();
        let pick = cands
            .into_iter()
            .find(|&u| addable(model, &nodes[u], &shape, &gvals, r, &members, producer));
        let Some(u) = pick else { break };
        members.push(u);
        gvals.insert(nodes[u].outputs[0]);
        if closed(nodes, &members, &gvals, users, outputs) {
            valid.push(members.clone());
        }
    }
    // Largest first, with the root's permuted inputs folded in where
    // possible; the lowering decides.
    let pro = prologue(model, r, users, outputs, in_group);
    let lowers = |g: &[usize]| {
        let refs: Vec<&Node> = g.iter().map(|&i| &nodes[i]).collect();
        let ext = external_inputs(&refs);
        let name = &nodes[*g.last().unwrap_or(&r)].name;
        group_from_nodes(model, name, &ext, &ext, &refs)
            .and_then(|grp| lower_group(&grp))
            .is_ok()
    };
    for g in valid.into_iter().rev().chain(std::iter::once(vec![r])) {
        let mut with = [pro.clone(), g.clone()].concat();
        with.sort_unstable();
        if !pro.is_empty() && lowers(&with) {
            return Some(with);
        }
        let mut g = g;
        g.sort_unstable();
        if g.len() > 1 && lowers(&g) {
            return Some(g);
        }
    }
    None
}

/// Producers of the root's inputs that could be folded into how the root
/// reads them (a transpose read through a GEMM's strides): single-output,
/// not elementwise, used by the root alone, not graph outputs.
fn prologue(
    model: &Model,
    r: usize,
    users: &HashMap<ValueId, Vec<usize>>,
    outputs: &HashSet<ValueId>,
    in_group: &[bool],
) -> Vec<usize> {
    let nodes = &model.body.nodes;
    let mut out = vec![];
    for v in nodes[r].inputs.iter().flatten() {
        let Some(p) = nodes[..r].iter().rposition(|n| n.outputs.contains(v)) else {
            continue;
        };
        let n = &nodes[p];
        if !in_group[p]
            && can_be_root(model, n)
            && !n.op.is_elementwise()
            && n.inputs.iter().flatten().count() == 1
            && !outputs.contains(v)
            && users.get(v).is_some_and(|us| us.iter().all(|&u| u == r))
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// An elementwise node of the group's shape whose group-value inputs are
/// read at the same element and whose other inputs do not depend on the group.
fn addable(
    model: &Model,
    u: &Node,
    shape: &[usize],
    gvals: &HashSet<ValueId>,
    root: usize,
    members: &[usize],
    producer: &HashMap<ValueId, usize>,
) -> bool {
    if !u.op.is_elementwise() || u.outputs.len() != 1 || !u.regions.is_empty() {
        return false;
    }
    if static_dims(model, u.outputs[0]).as_deref() != Some(shape) {
        return false;
    }
    u.inputs.iter().all(|i| match i {
        None => true,
        Some(v) if gvals.contains(v) => static_dims(model, *v).as_deref() == Some(shape),
        Some(v) => !depends_on(model, *v, root, members, producer),
    })
}

/// Whether `v` is computed from a member's output (only nodes after the root can be).
fn depends_on(
    model: &Model,
    v: ValueId,
    root: usize,
    members: &[usize],
    producer: &HashMap<ValueId, usize>,
) -> bool {
    let mut stack = vec![v];
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        let Some(&p) = producer.get(&v) else { continue };
        if p < root || !seen.insert(p) {
            continue;
        }
        if members.contains(&p) {
            return true;
        }
        let mut used = HashSet::new();
        uses_of(&model.body.nodes[p], &mut used);
        stack.extend(used);
    }
    false
}

/// Exactly one group value escapes (is used outside or is a graph output), and
/// it is the output of the member that comes last in graph order.
fn closed(
    nodes: &[Node],
    members: &[usize],
    gvals: &HashSet<ValueId>,
    users: &HashMap<ValueId, Vec<usize>>,
    outputs: &HashSet<ValueId>,
) -> bool {
    let last = match members.iter().max() {
        Some(&l) => nodes[l].outputs[0],
        None => return false,
    };
    gvals.iter().all(|v| {
        let escapes = outputs.contains(v)
            || users
                .get(v)
                .is_some_and(|us| us.iter().any(|u| !members.contains(u)));
        !escapes || *v == last
    })
}

/// Values the members read that no member computes, in first-use order.
fn external_inputs(members: &[&Node]) -> Vec<ValueId> {
    let defined: HashSet<ValueId> = members
        .iter()
        .flat_map(|n| n.outputs.iter().copied())
        .collect();
    let mut ext = vec![];
    for n in members {
        for v in n.inputs.iter().flatten() {
            if !defined.contains(v) && !ext.contains(v) {
                ext.push(*v);
            }
        }
    }
    ext
}

/// The `fused` node for members `g` (sorted): region params stand for the
/// external inputs, and the last member's output inside the body is a fresh
/// value so that the node itself keeps defining the original one.
fn build_fused(model: &mut Model, g: &[usize]) -> Node {
    let members: Vec<Node> = g.iter().map(|&i| model.body.nodes[i].clone()).collect();
    let refs: Vec<&Node> = members.iter().collect();
    let ext = external_inputs(&refs);
    let mut subst: HashMap<ValueId, ValueId> = HashMap::new();
    let mut params = vec![];
    for &v in &ext {
        let info = model.value(v).clone();
        let p = model.add_value(info.name, info.ty);
        subst.insert(v, p);
        params.push(p);
    }
    let mut body_nodes = members;
    let last = body_nodes.len() - 1;
    let out = body_nodes[last].outputs[0];
    let info = model.value(out).clone();
    let inner = model.add_value(info.name, info.ty);
    body_nodes[last].outputs[0] = inner;
    for n in &mut body_nodes {
        for v in n.inputs.iter_mut().flatten() {
            if let Some(p) = subst.get(v) {
                *v = *p;
            }
        }
    }
    let name = body_nodes[last].name.clone();
    Node {
        name: format!("{name}.fused"),
        op: Op::Fused,
        inputs: ext.into_iter().map(Some).collect(),
        outputs: vec![out],
        regions: vec![Region {
            params,
            nodes: body_nodes,
            results: vec![inner],
        }],
    }
}

/// The fused groups of a model's top-level graph by pattern (`conv+binary.add+unary.relu`)
/// and count, for reports.
pub fn fused_patterns(model: &Model) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for n in &model.body.nodes {
        if let (Op::Fused, [body]) = (&n.op, n.regions.as_slice()) {
            let pat: Vec<String> = body.nodes.iter().map(|m| m.op.name()).collect();
            *out.entry(pat.join("+")).or_insert(0) += 1;
        }
    }
    out
}
