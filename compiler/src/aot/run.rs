//! Runs an [`AotProgram`] on the reference interpreter, with its memory plan:
//! every step reads and writes the caller's buffers, the weights and one byte
//! arena at the planned offsets. A plan whose placement lets a live tensor be
//! overwritten computes wrong outputs here, so tests of the planner (and of
//! fusion) check against reference outputs through this.

use kiln_ir::kernel::interp::run_program;
use kiln_ir::kernel::BufferRole;
use kiln_ir::{Storage, Tensor};
use kiln_targets::plan::{AotProgram, BufferLoc};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("step '{step}': {msg}")]
pub struct RunError {
    pub step: String,
    pub msg: String,
}

/// Runs the plan on `inputs` (graph-input order) and returns the outputs.
pub fn run_plan(p: &AotProgram, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
    let top = |msg: String| RunError {
        step: "<inputs>".into(),
        msg,
    };
    if inputs.len() != p.inputs.len() {
        return Err(top(format!(
            "{} inputs given, the model takes {}",
            inputs.len(),
            p.inputs.len()
        )));
    }
    for (t, io) in inputs.iter().zip(&p.inputs) {
        if t.dtype() != io.dtype || t.shape != io.shape {
            return Err(top(format!(
                "input '{}' must be {:?} {}, got {:?} {}",
                io.name,
                io.shape,
                io.dtype,
                t.shape,
                t.dtype()
            )));
        }
    }
    let mut arena = vec![0u8; p.arena_size];
    let mut outs: Vec<Vec<u8>> = p.outputs.iter().map(|o| vec![0u8; o.byte_size()]).collect();
    let in_bytes: Vec<Vec<u8>> = inputs.iter().map(|t| t.data.to_le_bytes()).collect();
    for s in &p.steps {
        let err = |msg: String| RunError {
            step: s.node.clone(),
            msg,
        };
        if s.bindings.len() != s.program.buffers.len() {
            return Err(err("bindings and buffers differ in number".into()));
        }
        let mut args: Vec<(usize, Storage)> = vec![];
        for (b, loc) in s.program.buffers.iter().zip(&s.bindings) {
            let BufferRole::Input(i) = b.role else {
                continue;
            };
            let n = b.len * b.dtype.size();
            let bytes: &[u8] = match *loc {
                BufferLoc::Input(k) => in_bytes.get(k).map(|v| v.as_slice()).unwrap_or(&[]),
                BufferLoc::Output(k) => outs.get(k).map(|v| v.as_slice()).unwrap_or(&[]),
                BufferLoc::Weight(k) => {
                    let w = p
                        .weights
                        .get(k)
                        .ok_or_else(|| err(format!("weight {k} does not exist")))?;
                    args.push((i, w.data.clone()));
                    continue;
                }
                BufferLoc::Arena(o) => arena.get(o..o + n).unwrap_or(&[]),
            };
            let bytes = bytes
                .get(..n)
                .ok_or_else(|| err(format!("buffer '{}' lies outside its memory", b.name)))?;
            let st = Storage::from_le_bytes(b.dtype, bytes)
                .ok_or_else(|| err(format!("buffer '{}' has a bad size", b.name)))?;
            args.push((i, st));
        }
        let n_in = args.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        let mut ordered: Vec<Option<&Storage>> = vec![None; n_in];
        for (i, st) in &args {
            ordered[*i] = Some(st);
        }
        let results = run_program(&s.program, &ordered).map_err(|e| err(e.to_string()))?;
        let out_locs = s
            .program
            .buffers
            .iter()
            .zip(&s.bindings)
            .filter_map(|(b, l)| match b.role {
                BufferRole::Output(k) => Some((k, *l)),
                _ => None,
            });
        for (k, loc) in out_locs {
            let data = results
                .get(k)
                .ok_or_else(|| err(format!("output {k} missing")))?
                .to_le_bytes();
            let dst: &mut [u8] = match loc {
                BufferLoc::Output(j) => {
                    outs.get_mut(j).map(|v| v.as_mut_slice()).unwrap_or(&mut [])
                }
                BufferLoc::Arena(o) => arena.get_mut(o..).unwrap_or(&mut []),
                _ => return Err(err(format!("output {k} is bound to read-only memory"))),
            };
            dst.get_mut(..data.len())
                .ok_or_else(|| err(format!("output {k} lies outside its memory")))?
                .copy_from_slice(&data);
        }
    }
    for c in &p.output_copies {
        let src: Vec<u8> = match c.from {
            BufferLoc::Input(k) => in_bytes.get(k).cloned().unwrap_or_default(),
            BufferLoc::Output(k) => outs.get(k).cloned().unwrap_or_default(),
            BufferLoc::Weight(k) => p
                .weights
                .get(k)
                .map(|w| w.data.to_le_bytes())
                .unwrap_or_default(),
            BufferLoc::Arena(o) => arena
                .get(o..o + c.bytes)
                .map(|s| s.to_vec())
                .unwrap_or_default(),
        };
        let dst = outs.get_mut(c.output).and_then(|v| v.get_mut(..c.bytes));
        match (dst, src.get(..c.bytes)) {
            (Some(d), Some(s)) => d.copy_from_slice(s),
            _ => return Err(top(format!("output copy {} out of bounds", c.output))),
        }
    }
    p.outputs
        .iter()
        .zip(outs)
        .map(|(io, bytes)| {
            let st = Storage::from_le_bytes(io.dtype, &bytes)
                .ok_or_else(|| top(format!("output '{}' has a bad size", io.name)))?;
            Tensor::new(io.shape.clone(), st)
                .ok_or_else(|| top(format!("output '{}' has a bad shape", io.name)))
        })
        .collect()
}
