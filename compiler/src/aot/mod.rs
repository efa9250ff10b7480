//! Ahead-of-time planning: a static model becomes an [`AotProgram`] — every
//! node lowered to kernel IR once, weights as data, and all intermediate
//! tensors in one arena placed by lifetime — ready for a renderer in
//! `kiln-targets` (the C backend, later the CPU and firmware backends).

pub mod arena;
mod concat;
mod control;
pub mod inplace;
pub mod run;

use crate::lower::{lower, LowerCtx};
use crate::passes;
use arena::Interval;
use kiln_ir::infer::specialize::specialize;
use kiln_ir::kernel::BufferRole;
use kiln_ir::{Model, Op, Tensor, TensorType, ValueId};
use kiln_targets::plan::{AotIo, AotProgram, AotStep, AotWeight, BufferLoc, OutputCopy};
use std::collections::HashMap;
use thiserror::Error;

/// Why a model cannot be compiled ahead of time.
#[derive(Debug, Error)]
pub enum AotError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Model(String),
}

/// Where a value lives while planning (arena slots get offsets at the end).
#[derive(Clone, Copy)]
enum Place {
    Fixed(BufferLoc),
    Slot(usize),
    /// Bytes from the start of a slot: one input of a planned-away Concat.
    View(usize, usize),
}

/// A node's kernel program and the value each of its `Input(i)` buffers reads.
pub(crate) struct Lowered {
    pub program: kiln_ir::kernel::KernelProgram,
    pub inputs: Vec<Option<ValueId>>,
}

fn static_dims(m: &Model, v: ValueId) -> Result<Vec<usize>, String> {
    let info = m.value(v);
    info.ty
        .dims()
        .ok_or_else(|| format!("value '{}' has symbolic shape {}", info.name, info.ty))
}

/// Lowers one node with static shapes: ops through their lowering (after
/// specialising on constant inputs), If/Loop by composing their regions.
pub(crate) fn lower_node(m: &Model, n: &kiln_ir::Node) -> Result<Lowered, AotError> {
    let nerr = |msg: String| AotError::Node {
        node: n.name.clone(),
        op: n.op.name(),
        msg,
    };
    if matches!(n.op, Op::If | Op::Loop | Op::Scan { .. }) {
        return control::lower_control(m, n);
    }
    if matches!(n.op, Op::Fused) {
        let program = crate::lower::fused::lower_fused_node(m, n).map_err(|e| nerr(e.msg))?;
        return Ok(Lowered {
            program,
            inputs: n.inputs.clone(),
        });
    }
    let mut types: Vec<Option<TensorType>> = vec![];
    let mut consts: Vec<Option<&Tensor>> = vec![];
    for i in &n.inputs {
        match i {
            Some(v) => {
                let d = static_dims(m, *v).map_err(nerr)?;
                types.push(Some(TensorType::known(m.ty(*v).dtype, &d)));
                consts.push(m.consts.get(v));
            }
            None => {
                types.push(None);
                consts.push(None);
            }
        }
    }
    let (op, keep): (Op, Vec<usize>) =
        match specialize(&n.op, &types, &consts).map_err(|e| nerr(e.msg))? {
            Some((op, keep)) => (op, keep),
            None => (n.op.clone(), (0..n.inputs.len()).collect()),
        };
    let ktypes: Vec<Option<TensorType>> = keep
        .iter()
        .map(|&i| types.get(i).cloned().flatten())
        .collect();
    let kconsts: Vec<Option<&Tensor>> = keep
        .iter()
        .map(|&i| consts.get(i).copied().flatten())
        .collect();
    let inputs: Vec<Option<ValueId>> = keep
        .iter()
        .map(|&i| n.inputs.get(i).copied().flatten())
        .collect();
    let outs: Vec<TensorType> = n
        .outputs
        .iter()
        .map(|&v| static_dims(m, v).map(|d| TensorType::known(m.ty(v).dtype, &d)))
        .collect::<Result<_, _>>()
        .map_err(nerr)?;
    let cx = LowerCtx {
        node: &n.name,
        op: &op,
        inputs: &ktypes,
        outputs: &outs,
        consts: &kconsts,
    };
    let program = lower(&cx).map_err(|e| nerr(e.msg))?;
    Ok(Lowered { program, inputs })
}

/// The step at which each value is last read (graph outputs: never dead).
fn last_uses(m: &Model) -> HashMap<ValueId, usize> {
    fn reads(n: &kiln_ir::Node, out: &mut Vec<ValueId>) {
        out.extend(n.inputs.iter().flatten().copied());
        for r in &n.regions {
            for x in &r.nodes {
                reads(x, out);
            }
            out.extend(r.results.iter().copied());
        }
    }
    let mut last = HashMap::new();
    for (si, n) in m.body.nodes.iter().enumerate() {
        let mut vs = vec![];
        reads(n, &mut vs);
        for v in vs {
            last.insert(v, si);
        }
    }
    for &v in m.outputs() {
        last.insert(v, usize::MAX);
    }
    last
}

/// An arena slot that output `k` of step `si` may take over: that of an input
/// value read for the last time by this step, when the kernel program
/// provably reads each element of it before overwriting it ([`inplace`]).
fn reusable_slot(
    prog: &kiln_ir::kernel::KernelProgram,
    kvals: &[Option<ValueId>],
    k: usize,
    si: usize,
    places: &HashMap<ValueId, Place>,
    last_use: &HashMap<ValueId, usize>,
    taken: &[usize],
) -> Option<usize> {
    let out = prog
        .buffers
        .iter()
        .position(|b| b.role == BufferRole::Output(k))? as u32;
    for v in kvals.iter().flatten() {
        let Some(&Place::Slot(s)) = places.get(v) else {
            continue;
        };
        if last_use.get(v) != Some(&si) || taken.contains(&s) {
            continue;
        }
        let bufs: Vec<u32> = prog
            .buffers
            .iter()
            .enumerate()
            .filter(
                |(_, b)| matches!(b.role, BufferRole::Input(i) if kvals.get(i) == Some(&Some(*v))),
            )
            .map(|(i, _)| i as u32)
            .collect();
        if inplace::can_overwrite(prog, out, &bufs) {
            return Some(s);
        }
    }
    None
}

/// A new arena slot for value `v`, live from step `si` (its uses extend
/// it); None when the value's size is symbolic.
fn open_slot(slots: &mut Vec<Interval>, m: &Model, v: ValueId, si: usize) -> Option<usize> {
    slots.push(Interval {
        size: m.ty(v).byte_size()?,
        start: si,
        end: si,
    });
    Some(slots.len() - 1)
}

/// Simplifies a copy of `model` and plans it. Shapes must be fully static;
/// If, Loop and Scan are compiled (see [`control`]).
pub fn plan_model(model: &Model) -> Result<AotProgram, AotError> {
    let mut m = model.clone();
    passes::optimize(&mut m).map_err(|e| AotError::Model(format!("optimize: {e}")))?;
    let dims_of = |v: ValueId| -> Result<Vec<usize>, String> {
        let info = m.value(v);
        info.ty
            .dims()
            .ok_or_else(|| format!("value '{}' has symbolic shape {}", info.name, info.ty))
    };
    let io = |v: ValueId| -> Result<AotIo, AotError> {
        let info = m.value(v);
        Ok(AotIo {
            name: info.name.clone(),
            dtype: info.ty.dtype,
            shape: dims_of(v).map_err(AotError::Model)?,
        })
    };
    let inputs: Vec<AotIo> = m
        .inputs()
        .iter()
        .map(|&v| io(v))
        .collect::<Result<_, _>>()?;
    let outputs: Vec<AotIo> = m
        .outputs()
        .iter()
        .map(|&v| io(v))
        .collect::<Result<_, _>>()?;

    let mut places: HashMap<ValueId, Place> = HashMap::new();
    for (i, &v) in m.inputs().iter().enumerate() {
        places.insert(v, Place::Fixed(BufferLoc::Input(i)));
    }
    let mut weights: Vec<AotWeight> = vec![];
    let mut weight_of: HashMap<ValueId, usize> = HashMap::new();
    let mut weight = |v: ValueId, t: &Tensor, weights: &mut Vec<AotWeight>| -> usize {
        *weight_of.entry(v).or_insert_with(|| {
            weights.push(AotWeight {
                name: m.value(v).name.clone(),
                data: t.data.clone(),
            });
            weights.len() - 1
        })
    };
    // Graph outputs computed by a node are written straight into the caller's buffer.
    let mut out_of: HashMap<ValueId, usize> = HashMap::new();
    let mut copies: Vec<(usize, ValueId)> = vec![];
    let produced: std::collections::HashSet<ValueId> = m
        .body
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().copied())
        .collect();
    for (k, &v) in m.outputs().iter().enumerate() {
        if produced.contains(&v) && !out_of.contains_key(&v) {
            out_of.insert(v, k);
        } else {
            copies.push((k, v));
        }
    }

    let last_use = last_uses(&m);
    let views = concat::views(&m);
    let mut slots: Vec<Interval> = vec![];
    let mut steps: Vec<(String, kiln_ir::kernel::KernelProgram, Vec<Place>)> = vec![];
    for (si, n) in m.body.nodes.iter().enumerate() {
        let nerr = |msg: String| AotError::Node {
            node: n.name.clone(),
            op: n.op.name(),
            msg,
        };
        if views.elided.contains(&si) {
            // Its inputs were written into place; the output lives on.
            if let Some(Place::Slot(s)) = n.outputs.first().and_then(|o| places.get(o)) {
                slots[*s].end = slots[*s].end.max(si);
            }
            continue;
        }
        let Lowered {
            program: mut prog,
            inputs: kvals,
        } = lower_node(&m, n)?;
        for k in &mut prog.kernels {
            k.body = kiln_ir::kernel::rewrite::peel_unit_loops(std::mem::take(&mut k.body));
        }
        let mut reused: Vec<usize> = vec![];
        for (k, &v) in n.outputs.iter().enumerate() {
            let place = if let Some(&k) = out_of.get(&v) {
                Place::Fixed(BufferLoc::Output(k))
            } else if let Some(&(whole, off)) = views.parts.get(&v) {
                // The first part written opens the concatenation's slot.
                let s = match places.get(&whole) {
                    Some(Place::Slot(s)) => *s,
                    _ => {
                        let s = open_slot(&mut slots, &m, whole, si)
                            .ok_or_else(|| nerr("symbolic concat output".into()))?;
                        places.insert(whole, Place::Slot(s));
                        s
                    }
                };
                slots[s].end = slots[s].end.max(si);
                Place::View(s, off)
            } else if let Some(s) = reusable_slot(&prog, &kvals, k, si, &places, &last_use, &reused)
            {
                reused.push(s);
                Place::Slot(s)
            } else {
                let s = open_slot(&mut slots, &m, v, si)
                    .ok_or_else(|| nerr("symbolic output".into()))?;
                Place::Slot(s)
            };
            places.insert(v, place);
        }
        let mut binds = Vec::with_capacity(prog.buffers.len());
        for b in &prog.buffers {
            binds.push(match b.role {
                BufferRole::Input(i) => {
                    let v = kvals
                        .get(i)
                        .copied()
                        .flatten()
                        .ok_or_else(|| nerr(format!("program input {i} has no value")))?;
                    if let Some(t) = m.consts.get(&v) {
                        Place::Fixed(BufferLoc::Weight(weight(v, t, &mut weights)))
                    } else {
                        let p = *places.get(&v).ok_or_else(|| {
                            nerr(format!("input '{}' is never computed", m.value(v).name))
                        })?;
                        if let Place::Slot(s) | Place::View(s, _) = p {
                            slots[s].end = slots[s].end.max(si);
                        }
                        p
                    }
                }
                BufferRole::Output(k) => {
                    let v = *n
                        .outputs
                        .get(k)
                        .ok_or_else(|| nerr(format!("program output {k} has no value")))?;
                    places[&v]
                }
                BufferRole::Scratch => {
                    slots.push(Interval {
                        size: b.len * b.dtype.size(),
                        start: si,
                        end: si,
                    });
                    Place::Slot(slots.len() - 1)
                }
            });
        }
        steps.push((n.name.clone(), prog, binds));
    }

    let mut output_copies = vec![];
    for (k, v) in copies {
        let from = if let Some(t) = m.consts.get(&v) {
            BufferLoc::Weight(weight(v, t, &mut weights))
        } else {
            match places.get(&v) {
                Some(Place::Fixed(l)) => *l,
                _ => {
                    return Err(AotError::Model(format!(
                        "output '{}' is never computed",
                        m.value(v).name
                    )))
                }
            }
        };
        output_copies.push(OutputCopy {
            output: k,
            from,
            bytes: outputs[k].byte_size(),
        });
    }
    let (offs, arena_size) = arena::plan(&slots);
    let arena_lower_bound = arena::lower_bound(&slots, m.body.nodes.len());
    let resolve = |p: Place| match p {
        Place::Fixed(l) => l,
        Place::Slot(s) => BufferLoc::Arena(offs[s]),
        Place::View(s, off) => BufferLoc::Arena(offs[s] + off),
    };
    let steps = steps
        .into_iter()
        .map(|(node, program, binds)| AotStep {
            node,
            program,
            bindings: binds.into_iter().map(resolve).collect(),
        })
        .collect();
    Ok(AotProgram {
        name: m.name.clone(),
        steps,
        weights,
        inputs,
        outputs,
        output_copies,
        arena_size,
        arena_lower_bound,
    })
}
