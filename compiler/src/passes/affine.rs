//! A per-channel scale or shift after a convolution folded into its
//! weights and bias: `Mul(Conv(x, W, b), s)` → `Conv(x, W·s, b·s)` and
//! `Add(Conv(x, W, b), t)` → `Conv(x, W, b + t)`, for constant `s`, `t`
//! holding one value per output channel (shape `[1, C, 1, …]` or
//! `[C, 1, …]`).
//!
//! Keras and TensorFlow exports write inference BatchNorm this way (a
//! `batchnorm/mul_1` after a bias-free conv), where ONNX exports from
//! PyTorch write a BatchNormalization node (folded by
//! `fold_batchnorm_into_conv`). Left in place, the multiply becomes an
//! epilogue that no GEMM or depthwise kernel takes, so the whole
//! convolution runs as generic loops. The folded weights are built as graph
//! ops for constant folding to evaluate, as the BatchNorm fold does.

use super::rewrite::{count_uses, dce, replace_uses};
use super::PassError;
use kiln_ir::graph::builder::Builder;
use kiln_ir::graph::{BinaryOp, Op, ValueId};
use kiln_ir::{Dim, Model};
use std::collections::HashMap;

/// Folds every such Mul and Add; returns whether anything changed.
pub fn fold_channel_affine_into_conv(model: &mut Model) -> Result<bool, PassError> {
    let mut changed = false;
    // One fold at a time: each splices nodes in, so the maps are rebuilt.
    while let Some((p, op, k, i)) = next(model) {
        fold(model, p, op, k, i)?;
        dce(model);
        changed = true;
    }
    Ok(changed)
}

/// The first foldable Mul/Add: `(conv node, op, constant, its node)`.
fn next(model: &Model) -> Option<(usize, BinaryOp, ValueId, usize)> {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    count_uses(&model.body, &mut uses);
    let producer: HashMap<ValueId, usize> = model
        .body
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.outputs.first().map(|&o| (o, i)))
        .collect();
    (0..model.body.nodes.len())
        .find_map(|i| candidate(model, i, &uses, &producer).map(|(p, op, k)| (p, op, k, i)))
}

/// Rewrites conv `p` to absorb node `i` (`op` with constant `k`) and
/// points the node's users at the conv.
fn fold(model: &mut Model, p: usize, op: BinaryOp, k: ValueId, i: usize) -> Result<(), PassError> {
    let node = &model.body.nodes[i];
    let (out, name) = (node.outputs[0], node.name.clone());
    let conv = &model.body.nodes[p];
    let (x, w, b) = (
        conv.inputs[0],
        conv.inputs[1],
        conv.inputs.get(2).copied().flatten(),
    );
    let Some(w) = w else {
        return Ok(());
    };
    let wt = model.ty(w).clone();
    let oc = wt.shape[0].clone();
    let mut bld = Builder::new(model);
    let err = |e: kiln_ir::infer::InferError| PassError::Node {
        node: name.clone(),
        op: "conv affine fold".into(),
        msg: e.to_string(),
    };
    let add = |bld: &mut Builder, op: Op, ins: Vec<ValueId>| -> Result<ValueId, PassError> {
        let n = bld.fresh_name(&format!("{name}.fold"));
        Ok(bld
            .add(n, op, ins.into_iter().map(Some).collect(), 1)
            .map_err(err)?[0])
    };
    let bin = |op| Op::Binary { op };
    // One value per channel, as a vector.
    let per_channel = add(
        &mut bld,
        Op::Reshape {
            shape: Some(vec![oc.clone()]),
        },
        vec![k],
    )?;
    let (w2, b2) = if op == BinaryOp::Mul {
        let mut col = vec![oc];
        col.extend((1..wt.rank()).map(|_| Dim::Known(1)));
        let s_col = add(
            &mut bld,
            Op::Reshape { shape: Some(col) },
            vec![per_channel],
        )?;
        let w2 = add(&mut bld, bin(BinaryOp::Mul), vec![w, s_col])?;
        let b2 = match b {
            Some(b) => Some(add(&mut bld, bin(BinaryOp::Mul), vec![b, per_channel])?),
            None => None,
        };
        (w2, b2)
    } else {
        let b2 = match b {
            Some(b) => add(&mut bld, bin(BinaryOp::Add), vec![b, per_channel])?,
            None => per_channel,
        };
        (w, Some(b2))
    };
    let new_nodes = bld.finish().nodes;
    let conv = &mut model.body.nodes[p];
    conv.inputs = vec![x, Some(w2), b2];
    let conv_out = conv.outputs[0];
    // The weight computations go before the conv, keeping the order topological.
    model.body.nodes.splice(p..p, new_nodes);
    replace_uses(model, out, conv_out);
    Ok(())
}

/// `(conv node, Mul or Add, the per-channel constant)` when node `i` is a
/// foldable Mul/Add of a convolution's only use.
fn candidate(
    model: &Model,
    i: usize,
    uses: &HashMap<ValueId, usize>,
    producer: &HashMap<ValueId, usize>,
) -> Option<(usize, BinaryOp, ValueId)> {
    let n = &model.body.nodes[i];
    let Op::Binary { op } = n.op else {
        return None;
    };
    if !matches!(op, BinaryOp::Mul | BinaryOp::Add) {
        return None;
    }
    let [Some(a), Some(b)] = n.inputs.as_slice() else {
        return None;
    };
    let (y, k) = if model.consts.contains_key(b) {
        (*a, *b)
    } else {
        (*b, *a)
    };
    let p = *producer.get(&y)?;
    let conv = &model.body.nodes[p];
    if !matches!(conv.op, Op::Conv { .. })
        || uses.get(&y).copied() != Some(1)
        || model.body.results.contains(&y)
        || conv.outputs.len() != 1
    {
        return None;
    }
    let w = conv.inputs.get(1).copied().flatten()?;
    let b = conv.inputs.get(2).copied().flatten();
    if !model.consts.contains_key(&w) || b.is_some_and(|b| !model.consts.contains_key(&b)) {
        return None;
    }
    let kt = model.consts.get(&k)?;
    let (yt, wt) = (model.ty(y), model.ty(w));
    let c = wt.dims()?.first().copied()?;
    let rank = yt.rank();
    // `[1, C, 1, …]` of the output's rank, or `[C, 1, …]` one shorter.
    let ks = &kt.shape;
    let per_channel = match ks.len() {
        l if l == rank => {
            ks.get(1) == Some(&c) && ks.iter().enumerate().all(|(d, &e)| d == 1 || e == 1)
        }
        l if l + 1 == rank => ks.first() == Some(&c) && ks[1..].iter().all(|&e| e == 1),
        _ => false,
    };
    (per_channel && kt.dtype() == wt.dtype && yt.dtype == wt.dtype).then_some((p, op, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::Tensor;

    /// A 2->3 channel conv (with or without bias), then `op` with a
    /// constant of shape `k_shape`, then ReLU.
    fn model(bias: bool, op: &str, k_shape: &[usize]) -> Model {
        let n: usize = k_shape.iter().product();
        let vals = |len: usize, a: f32| -> String {
            (0..len)
                .map(|i| format!("{}", a * (i as f32 - 2.5)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let dims = |d: &[usize]| {
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let b_const = if bias {
            format!("const %b: f32[3] = dense<[{}]>\n", vals(3, 0.3))
        } else {
            String::new()
        };
        let b_in = if bias { ", %b" } else { "" };
        let src = format!(
            "kiln 1\nmodel \"affine\"\nconst %w: f32[3,2,3,3] = dense<[{}]>\n{b_const}\
             const %k: f32[{}] = dense<[{}]>\nfunc(%x: f32[1,2,4,4]) {{\n  \
             %c = conv(%x, %w{b_in}) {{kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], \
             dilations: [1, 1], group: 1}} : f32[1,3,4,4] @c\n  \
             %m = binary(%c, %k) {{op: {op}}} : f32[1,3,4,4] @m\n  \
             %r = unary(%m) {{op: relu}} : f32[1,3,4,4] @r\n  return %r\n}}\n",
            vals(54, 0.05),
            dims(k_shape),
            vals(n, 0.7),
        );
        kiln_ir::text::parse(&src).expect("parse")
    }

    /// Folds (or not) and checks the result against the unfolded model.
    fn folds(m: Model) -> bool {
        let x = Tensor::from_f32(
            vec![1, 2, 4, 4],
            (0..32).map(|i| (i as f32).sin()).collect(),
        );
        let want = crate::exec::run_model(&m, vec![x.clone()]).expect("run");
        let mut f = m.clone();
        crate::passes::simplify(&mut f).expect("simplify");
        let got = crate::exec::run_model(&f, vec![x]).expect("run folded");
        let (g, w) = (&got[0].data, &want[0].data);
        assert_eq!(g.len(), w.len());
        for i in 0..w.len() {
            let (g, w) = (g.get_f64(i), w.get_f64(i));
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
        !f.body
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::Binary { .. }))
    }

    #[test]
    fn per_channel_scale_and_shift_fold_into_the_conv() {
        assert!(folds(model(false, "mul", &[1, 3, 1, 1])));
        assert!(folds(model(true, "mul", &[3, 1, 1])));
        assert!(folds(model(false, "add", &[1, 3, 1, 1])));
        assert!(folds(model(true, "add", &[3, 1, 1])));
    }

    #[test]
    fn other_constants_stay_a_separate_op() {
        // Per column, and one value for everything: not per channel.
        assert!(!folds(model(true, "mul", &[1, 1, 1, 4])));
        assert!(!folds(model(false, "add", &[1])));
    }
}
