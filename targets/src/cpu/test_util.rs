//! Helpers shared by the CPU backend's unit tests: kernel programs as whole
//! models, matrix views, a plain f32 matmul program, and the unary-op lists
//! the tests iterate over.

use super::fallback::Helper;
use crate::plan::AotProgram;
use kiln_ir::kernel::build::ProgramBuilder;
use kiln_ir::kernel::UnOp::{self, Abs, Ceil, Floor, IsInf, IsNan, Neg, Not, Round, Sqrt};
use kiln_ir::kernel::{BufferRole, Expr, KernelProgram, MatView, Matmul, Stmt};
use kiln_ir::DType;

/// One program as a whole model: inputs and outputs are the caller's buffers.
pub(super) fn single(p: &KernelProgram) -> AotProgram {
    AotProgram::single_step("n", p.clone())
}

/// A matrix view of `buf` at `offset` with row and column strides `rs`, `cs`.
pub(super) fn view(buf: u32, offset: Expr, rs: i64, cs: i64) -> MatView {
    MatView {
        buf,
        offset,
        row_stride: rs,
        col_stride: cs,
    }
}

/// `c = a · b` for row-major f32 `a` (m×k, input 0), `b` (k×n, input 1) and
/// `c` (m×n, output 0): the shape the benchmarks and code dumps look at.
pub(super) fn matmul_f32(m: usize, n: usize, k: usize) -> KernelProgram {
    let mut pb = ProgramBuilder::new();
    let a = pb.buffer("a", DType::F32, m * k, BufferRole::Input(0));
    let b = pb.buffer("b", DType::F32, k * n, BufferRole::Input(1));
    let c = pb.buffer("c", DType::F32, m * n, BufferRole::Output(0));
    pb.kernel(
        "mm",
        vec![Stmt::Matmul(Matmul {
            m: m as u64,
            n: n as u64,
            k: k as u64,
            a: view(a, Expr::i(0), k as i64, 1),
            b: view(b, Expr::i(0), n as i64, 1),
            c: view(c, Expr::i(0), n as i64, 1),
            accumulate: false,
        })],
    );
    pb.finish()
}

/// The unary ops whose generated code must match the interpreter bit for bit.
pub(super) const EXACT_UNARY: [UnOp; 9] = [Neg, Abs, Sqrt, Floor, Ceil, Round, Not, IsNan, IsInf];

/// The transcendental unary ops: those with a double-precision helper
/// function, taken from the backend's own list so a new helper is tested.
pub(super) fn transcendental_unary() -> Vec<UnOp> {
    Helper::all()
        .into_iter()
        .filter_map(|h| match h {
            Helper::Un(op) => Some(op),
            _ => None,
        })
        .collect()
}

/// Every unary op: the exact ones and the transcendental ones.
pub(super) fn all_unary() -> Vec<UnOp> {
    let mut v = EXACT_UNARY.to_vec();
    v.extend(transcendental_unary());
    v
}
