//! Lowering of shape and index generators: Shape, Size, ConstantOfShape, Range, NonZero, EyeLike.

use super::{LowerCtx, Result};
use kiln_ir::kernel::build::ProgramBuilder;

pub(super) fn lower(cx: &LowerCtx, _pb: &mut ProgramBuilder) -> Result<()> {
    Err(cx.err("not lowered yet"))
}
