//! Kernels replaced by the runtime's direct convolution: a kernel carrying
//! a [`Conv2d`] call, on an AVX-512 target, with its weights a constant,
//! becomes `kiln_conv2d_f32_avx512(const KilnConvArgs *)` (see
//! `kiln_runtime::conv`) per image, its work items (output rows times
//! 32-channel blocks) split over `kiln_parallel_for` with threads.
//!
//! The weights are packed here, at compile time, into the routine's
//! 32-channel panels (a local read-only blob); the original weight is then
//! read by nothing the object runs (see `gemm_weights.rs`).

use super::library::{
    address_or_null, args_slot, buffer_address, cg, declare_range_routine, emit_body,
    f32_and_sized, kernel_refs, per_image, store_act, store_words, Images,
};
use super::CpuError;
use crate::plan::{AotProgram, BufferLoc};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use kiln_ir::kernel::call::{Conv2d, LibraryCall};
use kiln_ir::kernel::BufId;
use kiln_ir::Storage;
use std::collections::HashMap;

/// Bytes of `KilnConvArgs`: 4 pointers, 15 sizes, 2 floats, a u32 (padded).
const ARGS_BYTES: u32 = 4 * 8 + 15 * 8 + 16;
const OFF_X: i32 = 0;
const OFF_W: i32 = 8;
const OFF_BIAS: i32 = 16;
const OFF_Y: i32 = 24;
const OFF_SIZES: i32 = 32;
/// `begin` and `end`, the last two sizes.
const OFF_BEGIN: i32 = OFF_SIZES + 13 * 8;
const OFF_ACT: i32 = OFF_SIZES + 15 * 8;
/// Images emitted as separate calls; more falls back to the body.
const MAX_BATCH: u64 = 16;

/// The direct-conv kernels of a program: their calls, packed weights, and
/// the routine (and, with threads, the task) they call.
pub(crate) struct ConvCalls {
    /// `(step, kernel)` → (the call, its packed weights).
    kernels: HashMap<(usize, usize), (Conv2d, DataId)>,
    routine: Option<FuncId>,
    task: Option<(FuncId, FuncId)>,
    /// Bytes of the packed weights.
    pub packed_bytes: usize,
}

impl ConvCalls {
    /// No kernel replaced.
    pub(crate) fn none() -> ConvCalls {
        ConvCalls {
            kernels: HashMap::new(),
            routine: None,
            task: None,
            packed_bytes: 0,
        }
    }

    /// Finds the kernels the routine can replace (`variant` is the
    /// library's, see [`super::library::variant`]), packs their weights
    /// and declares the routine.
    pub(crate) fn plan<M: Module>(
        module: &mut M,
        prog: &AotProgram,
        (name, variant, threads): (&str, Option<&str>, bool),
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<ConvCalls, CpuError> {
        let mut calls = ConvCalls::none();
        if variant != Some("avx512") {
            return Ok(calls);
        }
        // One blob per weight, shared by the steps that bind it.
        let mut blobs: HashMap<usize, DataId> = HashMap::new();
        for (si, step) in prog.steps.iter().enumerate() {
            for (ki, k) in step.program.kernels.iter().enumerate() {
                let Some(LibraryCall::Conv2d(c)) = &k.call else {
                    continue;
                };
                let sizes = [
                    c.cin, c.cout, c.in_h, c.in_w, c.out_h, c.out_w, c.k_h, c.k_w, c.stride_h,
                    c.stride_w, c.dil_h, c.dil_w,
                ];
                let ok = f32_and_sized(&step.program.buffers, &[c.x, c.y], c.bias, &sizes)
                    && (1..=MAX_BATCH).contains(&c.batch);
                let Some(BufferLoc::Weight(wi)) = step.bindings.get(c.w as usize) else {
                    continue;
                };
                let Some(Storage::F32(data)) = prog.weights.get(*wi).map(|w| &w.data) else {
                    continue;
                };
                let (cout, depth) = (c.cout as usize, (c.cin * c.k_h * c.k_w) as usize);
                if !ok || data.len() != cout * depth {
                    continue;
                }
                let id = match blobs.get(wi) {
                    Some(id) => *id,
                    None => {
                        let packed = kiln_runtime::conv::pack_weights_vec(cout, depth, data)
                            .map_err(|e| CpuError::Kernel {
                                node: step.node.clone(),
                                kernel: k.name.clone(),
                                msg: format!("packing conv weights: {e:?}"),
                            })?;
                        let bytes: Vec<u8> = packed.iter().flat_map(|x| x.to_le_bytes()).collect();
                        calls.packed_bytes += bytes.len();
                        let id = module
                            .declare_data(
                                &format!("{name}_conv_w{}", blobs.len()),
                                Linkage::Local,
                                false,
                                false,
                            )
                            .map_err(cg)?;
                        let mut d = DataDescription::new();
                        d.define(bytes.into_boxed_slice());
                        d.set_align(64);
                        module.define_data(id, &d).map_err(cg)?;
                        blobs.insert(*wi, id);
                        id
                    }
                };
                calls.kernels.insert((si, ki), (c.clone(), id));
            }
        }
        if calls.kernels.is_empty() {
            return Ok(calls);
        }
        let (routine, task) = declare_range_routine(
            module,
            "kiln_conv2d_f32_avx512",
            threads.then(|| format!("{name}_conv_task")),
            (ARGS_BYTES, OFF_BEGIN),
            (ctx, fctx),
        )?;
        calls.routine = Some(routine);
        calls.task = task;
        Ok(calls)
    }

    /// Whether kernel `ki` of step `si` is a call of the routine.
    pub(crate) fn replaces(&self, si: usize, ki: usize) -> bool {
        self.kernels.contains_key(&(si, ki))
    }

    /// The weight buffer kernel `ki` of step `si` reads only through its
    /// packed copy, if it is a call of the routine.
    pub(crate) fn packed_weight(&self, si: usize, ki: usize) -> Option<BufId> {
        self.kernels.get(&(si, ki)).map(|(c, _)| c.w)
    }

    /// Defines kernel `id` (`(table)`) as the calls of kernel `ki` of step
    /// `si`, one per image. Returns the code bytes, or None when the kernel
    /// is not such a call.
    pub(crate) fn define<M: Module>(
        &self,
        module: &mut M,
        (si, ki): (usize, usize),
        id: FuncId,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<Option<usize>, CpuError> {
        let (Some((c, blob)), Some(routine)) = (self.kernels.get(&(si, ki)), self.routine) else {
            return Ok(None);
        };
        let (routine, task) = kernel_refs(module, id, (routine, self.task), ctx);
        let wgv = module.declare_data_in_func(*blob, &mut ctx.func);
        emit_body(module, id, (ctx, fctx), |b, ps| {
            let table = ps[0];
            let base = |b: &mut FunctionBuilder, buf: u32| buffer_address(b, table, buf);
            let (x, y) = (base(b, c.x), base(b, c.y));
            let w = b.ins().symbol_value(I64, wgv);
            let bias = address_or_null(b, table, c.bias);
            let slot = args_slot(b, ARGS_BYTES);
            let items = c.out_h * c.cout.div_ceil(kiln_runtime::conv::CHANNEL_BLOCK as u64);
            let sizes = [
                c.cin, c.in_h, c.in_w, c.cout, c.out_h, c.out_w, c.k_h, c.k_w, c.stride_h,
                c.stride_w, c.dil_h, c.dil_w, c.phases, 0, items,
            ];
            store_words(b, slot, OFF_SIZES, &sizes);
            store_act(b, slot, OFF_ACT, c.act, c.func);
            b.ins().stack_store(I64, w, slot, OFF_W);
            b.ins().stack_store(I64, bias, slot, OFF_BIAS);
            let images = Images {
                x: (x, OFF_X, c.cin * c.in_h * c.in_w * 4),
                y: (y, OFF_Y, c.cout * c.out_h * c.out_w * 4),
                batch: c.batch,
                work: c.cout * c.out_h * c.out_w * c.cin * c.k_h * c.k_w,
            };
            per_image(b, slot, images, (routine, task), items);
        })
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use kiln_runtime::conv::KilnConvArgs;

    /// The block the generated code fills is the runtime's struct.
    #[test]
    fn argument_block_matches_the_runtime() {
        assert_eq!(OFF_X as usize, offset_of!(KilnConvArgs, x));
        assert_eq!(OFF_W as usize, offset_of!(KilnConvArgs, w));
        assert_eq!(OFF_BIAS as usize, offset_of!(KilnConvArgs, bias));
        assert_eq!(OFF_Y as usize, offset_of!(KilnConvArgs, y));
        assert_eq!(OFF_SIZES as usize, offset_of!(KilnConvArgs, cin));
        assert_eq!(
            OFF_SIZES as usize + 12 * 8,
            offset_of!(KilnConvArgs, phases)
        );
        assert_eq!(OFF_BEGIN as usize, offset_of!(KilnConvArgs, begin));
        assert_eq!(OFF_BEGIN as usize + 8, offset_of!(KilnConvArgs, end));
        assert_eq!(OFF_ACT as usize, offset_of!(KilnConvArgs, act_min));
        assert_eq!(OFF_ACT as usize + 4, offset_of!(KilnConvArgs, act_max));
        assert_eq!(OFF_ACT as usize + 8, offset_of!(KilnConvArgs, func));
        assert_eq!(ARGS_BYTES as usize, size_of::<KilnConvArgs>());
    }
}
