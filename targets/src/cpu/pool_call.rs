//! Kernels replaced by the runtime's max pooling: a kernel carrying a
//! [`MaxPool2d`] call, on an AVX-512 target, becomes
//! `kiln_maxpool2d_f32_avx512(const KilnMaxPoolArgs *)` (see
//! `kiln_runtime::maxpool`) over all planes, split over
//! `kiln_parallel_for` with threads.

use super::library::{
    args_slot, buffer_address, declare_range_routine, emit_body, f32_and_sized, kernel_refs,
    per_image, store_words, Images,
};
use super::CpuError;
use crate::plan::AotProgram;
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{FuncId, Module};
use kiln_ir::kernel::call::{LibraryCall, MaxPool2d};
use std::collections::HashMap;

/// Bytes of `KilnMaxPoolArgs`: 2 pointers, 13 sizes.
const ARGS_BYTES: u32 = 2 * 8 + 13 * 8;
const OFF_X: i32 = 0;
const OFF_Y: i32 = 8;
const OFF_SIZES: i32 = 16;
/// `begin` and `end`, the last two sizes.
const OFF_BEGIN: i32 = OFF_SIZES + 11 * 8;

/// The max-pool kernels of a program and the routine (and, with threads,
/// the task) they call.
pub(crate) struct PoolCalls {
    kernels: HashMap<(usize, usize), MaxPool2d>,
    routine: Option<(FuncId, Option<(FuncId, FuncId)>)>,
}

impl PoolCalls {
    /// Finds the kernels the routine can replace (`variant` is the
    /// library's, see [`super::library::variant`]) and declares it.
    pub(crate) fn plan<M: Module>(
        module: &mut M,
        prog: &AotProgram,
        (name, variant, threads): (&str, Option<&str>, bool),
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<PoolCalls, CpuError> {
        let mut calls = PoolCalls {
            kernels: HashMap::new(),
            routine: None,
        };
        if variant != Some("avx512") {
            return Ok(calls);
        }
        for (si, step) in prog.steps.iter().enumerate() {
            for (ki, k) in step.program.kernels.iter().enumerate() {
                let Some(LibraryCall::MaxPool2d(p)) = &k.call else {
                    continue;
                };
                let sizes = [
                    p.in_h, p.in_w, p.out_h, p.out_w, p.k_h, p.k_w, p.stride_h, p.stride_w,
                    p.dil_h, p.dil_w,
                ];
                let span = (p.out_w.saturating_sub(1))
                    .saturating_mul(p.stride_w)
                    .saturating_add(p.k_w.saturating_sub(1).saturating_mul(p.dil_w))
                    .saturating_add(1);
                // Rows of any width: with its maxima kept in registers the
                // routine wins even on one masked vector a row (SqueezeNet's
                // 13-wide pool: 56 -> 42 us alone; a row buffer lost there).
                if f32_and_sized(&step.program.buffers, &[p.x, p.y], None, &sizes)
                    && p.planes > 0
                    && span <= kiln_runtime::maxpool::MAX_SPAN as u64
                {
                    calls.kernels.insert((si, ki), p.clone());
                }
            }
        }
        if !calls.kernels.is_empty() {
            calls.routine = Some(declare_range_routine(
                module,
                "kiln_maxpool2d_f32_avx512",
                threads.then(|| format!("{name}_maxpool_task")),
                (ARGS_BYTES, OFF_BEGIN),
                (ctx, fctx),
            )?);
        }
        Ok(calls)
    }

    /// Whether kernel `ki` of step `si` is a call of the routine.
    pub(crate) fn replaces(&self, si: usize, ki: usize) -> bool {
        self.kernels.contains_key(&(si, ki))
    }

    /// Defines kernel `id` (`(table)`) as the call of kernel `ki` of step
    /// `si`. Returns the code bytes, or None when it is not such a call.
    pub(crate) fn define<M: Module>(
        &self,
        module: &mut M,
        (si, ki): (usize, usize),
        id: FuncId,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<Option<usize>, CpuError> {
        let (Some(p), Some(routine)) = (self.kernels.get(&(si, ki)), self.routine) else {
            return Ok(None);
        };
        let (routine, task) = kernel_refs(module, id, routine, ctx);
        emit_body(module, id, (ctx, fctx), |b, ps| {
            let table = ps[0];
            let x = buffer_address(b, table, p.x);
            let y = buffer_address(b, table, p.y);
            let slot = args_slot(b, ARGS_BYTES);
            let sizes = [
                p.in_h, p.in_w, p.out_h, p.out_w, p.k_h, p.k_w, p.stride_h, p.stride_w, p.dil_h,
                p.dil_w, p.planes, 0, p.planes,
            ];
            store_words(b, slot, OFF_SIZES, &sizes);
            let images = Images {
                x: (x, OFF_X, 0),
                y: (y, OFF_Y, 0),
                batch: 1,
                work: p.planes * p.out_h * p.out_w * p.k_h * p.k_w,
            };
            per_image(b, slot, images, (routine, task), p.planes);
        })
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use kiln_runtime::maxpool::KilnMaxPoolArgs;

    /// The block the generated code fills is the runtime's struct.
    #[test]
    fn argument_block_matches_the_runtime() {
        assert_eq!(OFF_X as usize, offset_of!(KilnMaxPoolArgs, x));
        assert_eq!(OFF_Y as usize, offset_of!(KilnMaxPoolArgs, y));
        assert_eq!(OFF_SIZES as usize, offset_of!(KilnMaxPoolArgs, hp));
        assert_eq!(
            OFF_SIZES as usize + 10 * 8,
            offset_of!(KilnMaxPoolArgs, planes)
        );
        assert_eq!(OFF_BEGIN as usize, offset_of!(KilnMaxPoolArgs, begin));
        assert_eq!(OFF_BEGIN as usize + 8, offset_of!(KilnMaxPoolArgs, end));
        assert_eq!(ARGS_BYTES as usize, size_of::<KilnMaxPoolArgs>());
    }
}
