//! Lowering of the compute-heavy ops: MatMul, Conv, ConvTranspose, Pool, Einsum.
//!
//! These carry almost all of a network's multiply-adds, so each lowering is
//! shaped for speed as well as meaning: GEMM-like work goes through
//! [`Stmt::Matmul`](kiln_ir::kernel::Stmt::Matmul) (directly, or after an
//! im2col into scratch), and the rest are loop nests whose innermost loop runs
//! along the contiguous output row with reductions as `Expr::reduce`.

mod conv;
mod einsum;
mod matmul;
mod pool;
mod window;

use super::{LowerCtx, Result};
use kiln_ir::kernel::build::ProgramBuilder;
use kiln_ir::Op;

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    match cx.op {
        Op::MatMul => matmul::lower(cx, pb)?,
        Op::Conv { .. } => conv::lower_conv(cx, pb)?,
        Op::ConvTranspose { .. } => conv::lower_conv_transpose(cx, pb)?,
        Op::Pool { .. } => pool::lower(cx, pb)?,
        Op::Einsum { equation } => return einsum::lower(cx, pb, equation),
        _ => return Err(cx.err("not an nn op")),
    }
    // Every shape of these lowerings stores each output element (bias
    // fills, GEMMs, window reductions) and fills its padded copies and
    // im2col blocks before reading them: their buffers need no zeroing,
    // which for a CNN is tens of megabytes of memset per run.
    pb.mark_written_first();
    Ok(())
}

#[cfg(test)]
mod tests;
