//! The ahead-of-time plan a renderer consumes: every node lowered to kernel IR,
//! and where each of its buffers lives (caller-provided input/output memory,
//! constant weights, or one shared arena at a fixed byte offset).

use kiln_ir::kernel::{BufferDecl, BufferRole, KernelProgram};
use kiln_ir::{DType, Storage};

/// Where a kernel-program buffer lives at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferLoc {
    /// Graph input `i` (read-only memory given by the caller).
    Input(usize),
    /// Graph output `i` (memory given by the caller).
    Output(usize),
    /// Weight `i` of [`AotProgram::weights`].
    Weight(usize),
    /// The arena, at this byte offset (a multiple of the arena alignment).
    Arena(usize),
}

/// One node's program and the location of each of its buffers.
#[derive(Clone, Debug)]
pub struct AotStep {
    /// The graph node's name, kept for comments and errors.
    pub node: String,
    pub program: KernelProgram,
    /// One location per entry of `program.buffers`, in the same order.
    pub bindings: Vec<BufferLoc>,
}

/// A constant tensor emitted as data.
#[derive(Clone, Debug)]
pub struct AotWeight {
    pub name: String,
    pub data: Storage,
}

/// A graph input or output as the caller sees it.
#[derive(Clone, Debug)]
pub struct AotIo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl AotIo {
    /// Size in bytes of the caller's buffer.
    pub fn byte_size(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// A graph output that no step writes directly (it is a graph input, a weight,
/// or a value already bound to another output), so it is copied after the steps.
#[derive(Clone, Debug)]
pub struct OutputCopy {
    pub output: usize,
    pub from: BufferLoc,
    pub bytes: usize,
}

/// A whole model ready to render: steps in execution order plus the memory plan.
#[derive(Clone, Debug)]
pub struct AotProgram {
    /// The model's name (renderers sanitise it into identifiers).
    pub name: String,
    pub steps: Vec<AotStep>,
    pub weights: Vec<AotWeight>,
    pub inputs: Vec<AotIo>,
    pub outputs: Vec<AotIo>,
    pub output_copies: Vec<OutputCopy>,
    /// Bytes of arena the steps need (intermediates and scratch).
    pub arena_size: usize,
    /// The peak of simultaneously live (aligned) bytes: no placement can use less.
    pub arena_lower_bound: usize,
}

/// Byte alignment of every arena offset (and of the arena itself).
pub const ARENA_ALIGN: usize = 64;

impl AotProgram {
    /// One kernel program as a whole model, so a kernel can be compiled and
    /// checked on its own: its input and output buffers become the model's
    /// (flat, ordered by index, named `v0, v1, …`) and its scratch buffers are
    /// laid out one after another in the arena. `node` names the step.
    pub fn single_step(node: &str, program: KernelProgram) -> AotProgram {
        let mut arena = 0;
        let mut ins = vec![];
        let mut outs = vec![];
        let bindings = program
            .buffers
            .iter()
            .map(|b| match b.role {
                BufferRole::Input(i) => {
                    ins.push((i, b));
                    BufferLoc::Input(i)
                }
                BufferRole::Output(k) => {
                    outs.push((k, b));
                    BufferLoc::Output(k)
                }
                BufferRole::Scratch => {
                    let at = arena;
                    arena += (b.len * b.dtype.size()).div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
                    BufferLoc::Arena(at)
                }
            })
            .collect();
        ins.sort_by_key(|x| x.0);
        outs.sort_by_key(|x| x.0);
        let io = |(i, b): &(usize, &BufferDecl)| AotIo {
            name: format!("v{i}"),
            dtype: b.dtype,
            shape: vec![b.len],
        };
        let (inputs, outputs) = (ins.iter().map(io).collect(), outs.iter().map(io).collect());
        AotProgram {
            name: node.into(),
            steps: vec![AotStep {
                node: node.into(),
                program,
                bindings,
            }],
            weights: vec![],
            inputs,
            outputs,
            output_copies: vec![],
            arena_size: arena,
            arena_lower_bound: arena,
        }
    }
}
