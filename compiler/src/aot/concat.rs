//! Concatenations planned away: when every input of a Concat is a
//! temporary that nothing else reads, and each input is one contiguous
//! range of the output (all axes before the concatenation axis have extent
//! 1, e.g. a batch-1 channel concat), the producers write straight into
//! their ranges of the output's arena slot and the Concat step disappears.
//! Fire and inception modules otherwise copy every branch once more.
//!
//! Only the placement changes: the kernels stay as lowered (each writes its
//! whole, dense output buffer), so every renderer gets the saving.

use super::arena::align;
use kiln_ir::{Model, Op, ValueId};
use std::collections::{HashMap, HashSet};

/// Values written into part of a concatenation's output.
pub(super) struct Views {
    /// Input value → (the Concat's output, byte offset into it).
    pub parts: HashMap<ValueId, (ValueId, usize)>,
    /// Indices (in `m.body.nodes`) of the Concat nodes that emit no step.
    pub elided: HashSet<usize>,
}

/// Finds the Concat nodes of the top-level body that can be planned away.
pub(super) fn views(m: &Model) -> Views {
    // Reads of each value, graph outputs counted as one.
    let mut readers: HashMap<ValueId, usize> = HashMap::new();
    crate::passes::count_uses(&m.body, &mut readers);
    let produced: HashSet<ValueId> = m
        .body
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().copied())
        .collect();
    let outputs: HashSet<ValueId> = m.outputs().iter().copied().collect();
    let mut v = Views {
        parts: HashMap::new(),
        elided: HashSet::new(),
    };
    for (i, n) in m.body.nodes.iter().enumerate() {
        let (Op::Concat { axis }, [out]) = (&n.op, n.outputs.as_slice()) else {
            continue;
        };
        let Some(parts) = layout(m, *axis, &n.inputs, *out) else {
            continue;
        };
        let eligible = !outputs.contains(out)
            && parts.iter().all(|&(x, _)| {
                produced.contains(&x)
                    && !outputs.contains(&x)
                    && readers.get(&x) == Some(&1)
                    // A nested concatenation stays a step of its own.
                    && !v.parts.contains_key(&x)
                    && !v.parts.values().any(|(o, _)| *o == x)
            });
        if eligible {
            for (x, off) in parts {
                v.parts.insert(x, (*out, off));
            }
            v.elided.insert(i);
        }
    }
    v
}

/// Each input with its byte offset in the output, when every input is a
/// distinct, contiguous, aligned range of it.
fn layout(
    m: &Model,
    axis: i64,
    inputs: &[Option<ValueId>],
    out: ValueId,
) -> Option<Vec<(ValueId, usize)>> {
    let od = m.ty(out).dims()?;
    let rank = od.len() as i64;
    let a = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&a) || od[..a as usize].iter().product::<usize>() != 1 {
        return None;
    }
    let mut parts = vec![];
    let mut off = 0usize;
    for x in inputs {
        let x = (*x)?;
        if parts.iter().any(|&(y, _)| y == x) || m.ty(x).dtype != m.ty(out).dtype {
            return None;
        }
        let bytes = m.ty(x).byte_size()?;
        if off != align(off) {
            return None;
        }
        parts.push((x, off));
        off += bytes;
    }
    (off == m.ty(out).byte_size()?).then_some(parts)
}

#[cfg(test)]
mod tests {
    use crate::aot::{plan_model, run::run_plan};
    use kiln_ir::Tensor;

    /// Two branches of one input (128 bytes each, so the second starts
    /// aligned) concatenated, then a 1x1 conv (which no
    /// fusion absorbs the Concat into); `extra` adds a node that also
    /// reads the first branch, `axis` picks the axis.
    fn model(axis: i64, extra: bool) -> String {
        let (out, ch) = if axis == 1 {
            ("f32[1,4,4,4]", 4)
        } else {
            ("f32[1,2,8,4]", 2)
        };
        let w: Vec<String> = (0..ch * ch)
            .map(|i| format!("{}", i as f32 * 0.25 - 1.0))
            .collect();
        let (tail, ret) = if extra {
            ("  %e = unary(%a) {op: neg} : f32[1,2,4,4] @e\n", ", %e")
        } else {
            ("", "")
        };
        format!(
            "kiln 1\nmodel \"cat\"\nconst %w: f32[{ch},{ch},1,1] = dense<[{w}]>\n\
             func(%x: f32[1,2,4,4]) {{\n  \
             %a = unary(%x) {{op: relu}} : f32[1,2,4,4] @a\n  \
             %b = unary(%x) {{op: neg}} : f32[1,2,4,4] @b\n  \
             %c = concat(%a, %b) {{axis: {axis}}} : {out} @c\n  \
             %d = conv(%c, %w) {{kernel: [1, 1], strides: [1, 1], pads: [0, 0, 0, 0], \
             dilations: [1, 1], group: 1}} : {out} @d\n{tail}  return %d{ret}\n}}\n",
            w = w.join(", ")
        )
    }

    /// Whether the planned program still has the Concat step `c` (after
    /// checking it against the interpreter).
    fn concat_step(src: &str) -> bool {
        let m = kiln_ir::text::parse(src).expect("parse");
        let x = Tensor::from_f32(
            vec![1, 2, 4, 4],
            (0..32).map(|i| i as f32 * 0.5 - 7.0).collect(),
        );
        let want = crate::exec::run_model(&m, vec![x.clone()]).expect("interpreter");
        let p = plan_model(&m).expect("plan");
        let got = run_plan(&p, &[x]).expect("planned run");
        assert_eq!(got, want);
        p.steps.iter().any(|s| s.node == "c")
    }

    /// The branches write into the concatenation's slot: no Concat step,
    /// same result as the interpreter.
    #[test]
    fn channel_concat_is_planned_away() {
        assert!(!concat_step(&model(1, false)));
    }

    /// A branch someone else reads, or a concat whose inputs interleave in
    /// the output (axis 2 of a 2-channel tensor), stays a step.
    #[test]
    fn shared_or_interleaved_inputs_keep_the_step() {
        assert!(concat_step(&model(1, true)));
        assert!(concat_step(&model(2, false)));
    }
}
