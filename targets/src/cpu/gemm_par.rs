//! Multi-threaded GEMM calls: a large planned matmul is split by rows of A
//! and C (or, when one operand is packed at compile time and the split by
//! rows would be coarse, by columns of B and C) over the runtime's
//! `kiln_parallel_for`.
//!
//! The call site stores the three operand addresses in a small stack block
//! and passes it as the loop's context; a task function per matmul takes a
//! range of `MR`-row blocks and runs the same calls as the single-threaded
//! path over its rows, with its own stack scratch (and, for activation B,
//! its own packed copy: each task packs what it reads, which costs `k·n`
//! copies against `2·rows·k·n` flops). Calls from inside a task run inline,
//! so a split matmul inside an already parallel loop stays correct.

use super::gemm::{body, Gemms, How, Operands, Plan};
use super::kernel::KernelCx;
use super::CpuError;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{
    AbiParam, FuncRef, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind,
    UserFuncName, Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::kernel::Matmul;
use std::collections::HashMap;

/// Multiply-adds below which a matmul stays on one thread. Splitting saves
/// half the product's time and costs a hand-off plus reading what the other
/// core wrote, a few microseconds: measured, a keyword-spotting model's
/// 64x64 pointwise convs over 125 pixels (0.51M MACs, ~11 us) gain split
/// (kws_dscnn on two threads 0.080 -> 0.068 ms), a LeNet's 16x100x200 conv
/// GEMM (0.32M MACs, ~7 us) loses (mnist_cnn 0.031 -> 0.035 ms).
pub(super) const MIN_SPLIT_MACS: u64 = 400_000;

/// Multiply-adds from which a one-row product over weights (a batch-1
/// dense layer, a recurrent cell's matrix-vector product) is split: it
/// streams its weights from L2 at a few flops per byte, so two cores, each
/// keeping its half of a 256 KiB matrix in its own L2 from one call to the
/// next, halve it at a fraction of the compute a GEMM needs to pay for the
/// hand-off.
const MIN_SPLIT_ROW_MACS: u64 = 1 << 16;

/// One row-block task to define.
pub(crate) struct Task {
    id: FuncId,
    mm: Matmul,
    plan: Plan,
    /// The folded bias and residual operands.
    ops: Operands,
}

/// `(ctx, begin, end)`, the task signature of `kiln_parallel_for`.
fn task_sig(cc: cranelift_codegen::isa::CallConv) -> Signature {
    let mut s = Signature::new(cc);
    for _ in 0..3 {
        s.params.push(AbiParam::new(I64));
    }
    s
}

fn cg(e: impl std::fmt::Display) -> CpuError {
    CpuError::Codegen(e.to_string())
}

impl Gemms {
    /// Declares a task function for `mm` when it is worth splitting.
    pub(super) fn split<M: Module>(
        &mut self,
        module: &mut M,
        name: &str,
        mm: &Matmul,
        plan: Plan,
        ops: Operands,
    ) -> Result<Option<FuncId>, CpuError> {
        let macs = mm.m.saturating_mul(mm.n).saturating_mul(mm.k);
        let least = if mm.m == 1 && matches!(plan.how, How::Weight(_)) {
            MIN_SPLIT_ROW_MACS
        } else {
            MIN_SPLIT_MACS
        };
        if blocks(mm, &plan) < 2 || macs < least {
            return Ok(None);
        }
        let cc = module.isa().default_call_conv();
        if self.par_for.is_none() {
            let id = module
                .declare_function("kiln_parallel_for", Linkage::Import, &task_sig(cc))
                .map_err(cg)?;
            self.par_for = Some(id);
        }
        let id = module
            .declare_function(
                &format!("{name}_gemm_t{}", self.tasks.len()),
                Linkage::Local,
                &task_sig(cc),
            )
            .map_err(cg)?;
        self.tasks.push(Task {
            id,
            mm: mm.clone(),
            plan: Plan {
                split: Some(id),
                ..plan
            },
            ops,
        });
        Ok(Some(id))
    }

    /// Defines every declared task; returns the code bytes and functions.
    pub(crate) fn define_tasks<M: Module>(
        &self,
        module: &mut M,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<(usize, usize), CpuError> {
        let cc = module.isa().default_call_conv();
        let fcfg = module.target_config();
        let mut bytes = 0;
        for t in &self.tasks {
            ctx.func.signature = task_sig(cc);
            ctx.func.name = UserFuncName::user(0, t.id.as_u32());
            let kid = *self
                .imports
                .get(&t.plan.import())
                .ok_or_else(|| cg("matmul task: kernel not declared"))?;
            let func = module.declare_func_in_func(kid, &mut ctx.func);
            {
                let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
                let ps = super::emit::entry(&mut b);
                let fl = MemFlagsData::trusted().with_readonly();
                let ld = |b: &mut FunctionBuilder, off: i32| b.ins().load(I64, fl, ps[0], off);
                let (pa, pb, pc) = (ld(&mut b, 0), ld(&mut b, 8), ld(&mut b, 16));
                let (pbias, pres) = (ld(&mut b, 24), ld(&mut b, 32));
                let by_cols = by_cols(&t.mm, &t.plan);
                // Packed A moves by whole panels: `r0` rows are `r0 * k` floats on.
                let a_stride = match t.plan.how {
                    How::WeightA(_) => t.mm.k as i64,
                    _ => t.mm.a.row_stride,
                };
                let bl = t.plan.variant.blocking();
                let (unit, total) = if by_cols {
                    (bl.nr as i64, t.mm.n as i64)
                } else {
                    (bl.mr as i64, t.mm.m as i64)
                };
                let r0 = b.ins().imul_imm_s(ps[1], unit);
                let r1 = b.ins().imul_imm_s(ps[2], unit);
                let lim = b.ins().iconst(I64, total);
                let r1 = b.ins().umin(r1, lim);
                let part = b.ins().isub(r1, r0);
                // Move a present operand by `r0` times `stride` floats.
                let at = |b: &mut FunctionBuilder, p: Value, stride: i64, present: bool| {
                    if present {
                        let o = b.ins().imul_imm_s(r0, stride * 4);
                        b.ins().iadd(p, o)
                    } else {
                        p
                    }
                };
                let has_bias = t.ops.bias.is_some();
                let has_res = t.ops.residual.is_some();
                let (pa, pb, pc, pbias, pres, mn) = if by_cols {
                    let m = b.ins().iconst(I64, t.mm.m as i64);
                    // Pre-packed B is panel-major: column j0 starts at j0·k.
                    let b_stride = match t.plan.how {
                        How::Weight(_) => t.mm.k as i64,
                        _ => 1,
                    };
                    (
                        pa,
                        at(&mut b, pb, b_stride, true),
                        at(&mut b, pc, 1, true),
                        at(&mut b, pbias, 1, has_bias && !t.plan.bias_rows),
                        at(&mut b, pres, 1, has_res),
                        [m, part],
                    )
                } else {
                    let n = b.ins().iconst(I64, t.mm.n as i64);
                    (
                        at(&mut b, pa, a_stride, true),
                        pb,
                        at(&mut b, pc, t.mm.c.row_stride, true),
                        at(&mut b, pbias, 1, has_bias && t.plan.bias_rows),
                        at(&mut b, pres, t.plan.ldr, has_res),
                        [part, n],
                    )
                };
                let size = u32::try_from(t.plan.stack_bytes())
                    .map_err(|_| cg("matmul task: scratch too large"))?;
                let slot = b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    size,
                    4,
                ));
                let helpers = HashMap::new();
                let mut kc = KernelCx::new(&mut b, &[], vec![], &helpers, true);
                body(
                    &mut kc,
                    &t.mm,
                    t.plan,
                    func,
                    slot,
                    [pa, pb, pc],
                    [pbias, pres],
                    mn,
                )
                .map_err(|e| cg(format!("matmul task: {e}")))?;
                b.ins().return_(&[]);
                b.finalize(fcfg);
            }
            bytes += super::emit::define(module, t.id, ctx).map_err(cg)?;
        }
        Ok((bytes, self.tasks.len()))
    }
}

/// The units a split matmul's range counts: `MR`-row blocks, or `NR`-column
/// blocks when A is the packed operand and C has at least as many of those
/// (each thread then packs only its columns of B). A conv over a small image
/// (7x7: 49 columns, two blocks of 32) splits by rows of its many output
/// channels instead, each thread packing all of B.
pub(super) fn blocks(mm: &Matmul, plan: &Plan) -> u64 {
    let bl = plan.variant.blocking();
    let (rows, cols) = (mm.m.div_ceil(bl.mr as u64), mm.n.div_ceil(bl.nr as u64));
    if by_cols(mm, plan) {
        cols
    } else {
        rows
    }
}

/// Whether a split matmul splits by columns (see [`blocks`]). With B
/// packed at compile time, too when A has few row blocks and B more column
/// panels: a small image's transposed conv (49 pixel rows, five 12-row
/// blocks, 3 against 2 on two threads) then splits its 512 output channels
/// evenly, each thread packing all of A (`m·k` copies against `2·m·k·n/2`
/// flops).
fn by_cols(mm: &Matmul, plan: &Plan) -> bool {
    let bl = plan.variant.blocking();
    let (rows, cols) = (mm.m.div_ceil(bl.mr as u64), mm.n.div_ceil(bl.nr as u64));
    match plan.how {
        How::WeightA(_) => cols >= rows.min(COL_SPLIT_ENOUGH),
        How::Weight(_) => rows < COL_SPLIT_ENOUGH && cols > rows,
        How::Raw => false,
    }
}

/// Column blocks enough to split a packed-`A` matmul by columns: with two
/// threads, 8 blocks leave one at most an eighth idle.
const COL_SPLIT_ENOUGH: u64 = 8;

/// `kiln_parallel_for(blocks, task, &{a, b, c, bias, residual})` for a split matmul.
pub(super) fn call(cx: &mut KernelCx, blocks: i64, ptrs: [Value; 5], task: FuncRef, par: FuncRef) {
    let slot =
        cx.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 40, 3));
    for (i, p) in ptrs.into_iter().enumerate() {
        cx.b.ins().stack_store(I64, p, slot, i as i32 * 8);
    }
    let ctx = cx.b.ins().stack_addr(I64, slot, 0);
    let f = cx.b.ins().func_addr(I64, task);
    let n = cx.b.ins().iconst(I64, blocks);
    cx.b.ins().call(par, &[n, f, ctx]);
}
