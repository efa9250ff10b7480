//! Running a model through the native backend in-process: the same plan and
//! the same generated machine code as `kiln compile` for the host, loaded with
//! Cranelift's JIT instead of linked. `kiln run --backend native` and the test
//! suites use it, so every model and conformance case can be checked on the
//! real generated code.
//!
//! Generated code is static: every shape is fixed when it is compiled. So the
//! model is first bound to the given inputs: their shapes replace symbolic
//! dims, and inputs whose values decide shapes or op parameters (a Reshape's
//! target, a Slice's bounds, Resize's scales, Range's limits, …) become
//! constants, exactly as an ahead-of-time user would have to fix them.
//! Everything else stays a run-time input of the generated code.

use crate::aot::{plan_model, AotError};
use crate::exec::check_input;
use crate::passes::{self, PassError};
use kiln_ir::infer::specialize::specialize;
use kiln_ir::{Dim, Model, Storage, Tensor, TensorType, ValueId};
use kiln_targets::cpu::{CpuError, JitModel};
use kiln_targets::plan::AotProgram;
use std::collections::{HashMap, HashSet};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NativeError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Plan(#[from] AotError),
    #[error(transparent)]
    Backend(#[from] CpuError),
}

/// The graph inputs some op specialises on: with every input's value known,
/// the op drops them (their value decides a shape or a parameter).
fn specialised_inputs(model: &Model, values: &HashMap<ValueId, &Tensor>) -> HashSet<ValueId> {
    let mut found = HashSet::new();
    model.visit_nodes(&mut |n| {
        let types = model.input_types(&n.inputs);
        let consts: Vec<Option<&Tensor>> = n
            .inputs
            .iter()
            .map(|i| i.and_then(|v| values.get(&v).copied().or(model.consts.get(&v))))
            .collect();
        if let Ok(Some((_, keep))) = specialize(&n.op, &types, &consts) {
            for (i, inp) in n.inputs.iter().enumerate() {
                if let Some(v) = inp {
                    if values.contains_key(v) && !keep.contains(&i) {
                        found.insert(*v);
                    }
                }
            }
        }
    });
    found
}

/// The graph inputs that feed (directly or through other nodes) a node whose
/// output shapes stay symbolic although all its inputs have known shapes:
/// their values decide those shapes (Range's limits, OneHot's depth, …).
fn shape_deciding_inputs(model: &Model, params: &HashSet<ValueId>) -> HashSet<ValueId> {
    let mut producer: HashMap<ValueId, Vec<ValueId>> = HashMap::new();
    for n in &model.body.nodes {
        let ins: Vec<ValueId> = n.inputs.iter().flatten().copied().collect();
        for &o in &n.outputs {
            producer.insert(o, ins.clone());
        }
    }
    let mut stack: Vec<ValueId> = vec![];
    model.visit_nodes(&mut |n| {
        let outs_symbolic = n.outputs.iter().any(|&o| model.ty(o).dims().is_none());
        let ins_known = n
            .inputs
            .iter()
            .flatten()
            .all(|&v| model.ty(v).dims().is_some());
        if outs_symbolic && ins_known {
            stack.extend(n.inputs.iter().flatten());
        }
    });
    let mut seen = HashSet::new();
    let mut found = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if params.contains(&v) {
            found.insert(v);
        } else if let Some(ins) = producer.get(&v) {
            stack.extend(ins);
        }
    }
    found
}

/// A static copy of `model` for these inputs. Returns the model and, for each
/// of its remaining inputs, the index into `inputs` it takes.
pub fn bind_static(model: &Model, inputs: &[Tensor]) -> Result<(Model, Vec<usize>), NativeError> {
    let params = model.inputs().to_vec();
    if params.len() != inputs.len() {
        return Err(NativeError::Input(format!(
            "the model takes {} inputs, got {}",
            params.len(),
            inputs.len()
        )));
    }
    let mut m = model.clone();
    for (&p, t) in params.iter().zip(inputs) {
        check_input(&m, p, t).map_err(|e| NativeError::Input(e.to_string()))?;
        let dtype = m.ty(p).dtype;
        m.values[p.index()].ty = TensorType {
            dtype,
            shape: t.shape.iter().map(|&d| Dim::Known(d)).collect(),
        };
    }
    let values: HashMap<ValueId, &Tensor> = params.iter().copied().zip(inputs).collect();
    let mut frozen = specialised_inputs(&m, &values);
    // Freeze, re-infer, and repeat while a symbolic shape is decided by an input's value.
    loop {
        let mut f = m.clone();
        for &p in &frozen {
            f.consts.insert(p, values[&p].clone());
        }
        f.body.params = params
            .iter()
            .copied()
            .filter(|p| !frozen.contains(p))
            .collect();
        passes::reinfer_types(&mut f)?;
        passes::simplify(&mut f)?;
        let live: HashSet<ValueId> = f.body.params.iter().copied().collect();
        let more: Vec<ValueId> = shape_deciding_inputs(&f, &live)
            .into_iter()
            .filter(|p| !frozen.contains(p))
            .collect();
        if more.is_empty() {
            m = f;
            break;
        }
        frozen.extend(more);
    }
    let kept: Vec<usize> = params
        .iter()
        .enumerate()
        .filter(|(_, p)| !frozen.contains(p))
        .map(|(k, _)| k)
        .collect();
    Ok((m, kept))
}

/// A model compiled for the host and loaded, ready to run many times.
pub struct NativeModel {
    program: AotProgram,
    jit: JitModel,
    /// For each input of the generated code, the index of the caller's input it takes.
    kept: Vec<usize>,
}

impl NativeModel {
    /// Binds `model` to these inputs' shapes (see [`bind_static`]), plans and compiles it.
    pub fn compile(model: &Model, inputs: &[Tensor]) -> Result<NativeModel, NativeError> {
        Self::compile_with(model, inputs, false)
    }

    /// As [`Self::compile`]; with `profile` the code reports each step's start
    /// to `kiln_targets::cpu::profile`.
    pub fn compile_with(
        model: &Model,
        inputs: &[Tensor],
        profile: bool,
    ) -> Result<NativeModel, NativeError> {
        let (m, kept) = bind_static(model, inputs)?;
        let program = plan_model(&m)?;
        let jit = JitModel::compile_with(&program, profile)?;
        Ok(NativeModel { program, jit, kept })
    }

    pub fn program(&self) -> &AotProgram {
        &self.program
    }

    pub fn jit(&self) -> &JitModel {
        &self.jit
    }

    /// The caller's inputs as the generated code's raw input buffers.
    pub fn input_bytes(&self, inputs: &[Tensor]) -> Vec<Vec<u8>> {
        self.kept
            .iter()
            .map(|&k| inputs[k].data.to_le_bytes())
            .collect()
    }

    /// Runs once; `inputs` are the same tensors (or same-shaped ones) it was compiled for.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NativeError> {
        let in_bytes = self.input_bytes(inputs);
        let in_refs: Vec<&[u8]> = in_bytes.iter().map(|b| b.as_slice()).collect();
        let mut out_bytes: Vec<Vec<u8>> = self
            .program
            .outputs
            .iter()
            .map(|o| vec![0u8; o.byte_size()])
            .collect();
        let mut out_refs: Vec<&mut [u8]> = out_bytes.iter_mut().map(|b| b.as_mut_slice()).collect();
        self.jit.run(&in_refs, &mut out_refs)?;
        self.program
            .outputs
            .iter()
            .zip(out_bytes)
            .map(|(o, b)| {
                let data = Storage::from_le_bytes(o.dtype, &b).ok_or_else(|| {
                    NativeError::Input(format!(
                        "output '{}': {} bytes do not make {}",
                        o.name,
                        b.len(),
                        o.dtype
                    ))
                })?;
                Tensor::new(o.shape.clone(), data).ok_or_else(|| {
                    NativeError::Input(format!(
                        "output '{}': size does not match its shape",
                        o.name
                    ))
                })
            })
            .collect()
    }
}

/// Compiles `model` for the host and runs it once on `inputs`.
pub fn run_native(model: &Model, inputs: &[Tensor]) -> Result<Vec<Tensor>, NativeError> {
    NativeModel::compile(model, inputs)?.run(inputs)
}
