//! Running a model through the native backend in-process: the same plan and
//! the same generated machine code as `kiln compile` for the host, loaded with
//! Cranelift's JIT instead of linked. `kiln run --backend native` and the test
//! suites use it, so every model and conformance case can be checked on the
//! real generated code.
//!
//! Generated code is static: every shape is fixed when it is compiled. So the
//! model is first bound to the given inputs: their shapes replace symbolic
//! dims, and integer inputs that decide shapes (a Reshape's target, a Slice's
//! bounds, …) become constants, exactly as an ahead-of-time user would have
//! to fix them. Everything else stays a run-time input of the generated code.

use crate::aot::{plan_model, AotError};
use crate::exec::check_input;
use crate::passes::{self, PassError};
use kiln_ir::infer::specialize::specialize;
use kiln_ir::{Dim, Model, Storage, Tensor, TensorType, ValueId};
use kiln_targets::cpu::{CpuError, JitModel};
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

/// Whether graph input `p` decides a shape: some node that reads it drops it
/// when it is known (the op specialises on its value).
fn decides_shape(model: &Model, p: ValueId, value: &Tensor) -> bool {
    let mut found = false;
    model.visit_nodes(&mut |n| {
        if found {
            return;
        }
        for (i, inp) in n.inputs.iter().enumerate() {
            if *inp != Some(p) {
                continue;
            }
            let types = model.input_types(&n.inputs);
            let mut consts = model.input_consts(&n.inputs);
            consts[i] = Some(value);
            if let Ok(Some((_, keep))) = specialize(&n.op, &types, &consts) {
                if !keep.contains(&i) {
                    found = true;
                }
            }
        }
    });
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
    let mut kept = vec![];
    let mut new_params = vec![];
    for (k, (&p, t)) in params.iter().zip(inputs).enumerate() {
        if !t.dtype().is_float() && decides_shape(&m, p, t) {
            m.consts.insert(p, t.clone());
        } else {
            new_params.push(p);
            kept.push(k);
        }
    }
    m.body.params = new_params;
    passes::reinfer_types(&mut m)?;
    passes::simplify(&mut m)?;
    Ok((m, kept))
}

/// Compiles `model` for the host and runs it once on `inputs`.
pub fn run_native(model: &Model, inputs: &[Tensor]) -> Result<Vec<Tensor>, NativeError> {
    let (m, kept) = bind_static(model, inputs)?;
    let prog = plan_model(&m)?;
    let jit = JitModel::compile(&prog)?;
    let in_bytes: Vec<Vec<u8>> = kept.iter().map(|&k| inputs[k].data.to_le_bytes()).collect();
    let in_refs: Vec<&[u8]> = in_bytes.iter().map(|b| b.as_slice()).collect();
    let mut out_bytes: Vec<Vec<u8>> = prog
        .outputs
        .iter()
        .map(|o| vec![0u8; o.byte_size()])
        .collect();
    let mut out_refs: Vec<&mut [u8]> = out_bytes.iter_mut().map(|b| b.as_mut_slice()).collect();
    jit.run(&in_refs, &mut out_refs)?;
    prog.outputs
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
