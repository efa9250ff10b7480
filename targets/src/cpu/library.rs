//! Kernels replaced by a call into the runtime: a kernel whose lowering
//! attached a [`LibraryCall`] (its body computes exactly what the routine
//! computes) becomes a call of the runtime's hand-vectorised routine when
//! the target has one. The body is then not emitted.
//!
//! Depthwise convolution: `kiln_dwconv_f32_<variant>(const KilnDwArgs *)`
//! (see `kiln_runtime::dwconv`) over a range of channels. With threads the
//! channels of each image are split over `kiln_parallel_for` by one task
//! function per object, which narrows the argument block to its range.
//!
//! Softmax exponentials: `kiln_exp_rows_f32_avx512(x, m, y, rows, len)`
//! (see `kiln_runtime::func::exp_rows`), rows split over threads the same
//! way; with AVX-512 only, where 16 lanes beat the inline 4-lane `exp`.

use super::CpuError;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{
    AbiParam, FuncRef, InstBuilder, MemFlagsData, Signature, StackSlot, StackSlotData,
    StackSlotKind, TrapCode, UserFuncName, Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::kernel::call::{Depthwise2d, ExpRows, LibraryCall};
use kiln_ir::kernel::BufferDecl;
use kiln_ir::DType;
use target_lexicon::Architecture;

/// Bytes of `KilnDwArgs`: 4 pointers, 13 sizes, 2 floats, a u32 (padded).
const ARGS_BYTES: u32 = 4 * 8 + 13 * 8 + 16;
/// Offsets of the fields the task narrows.
const OFF_X: i32 = 0;
const OFF_W: i32 = 8;
const OFF_BIAS: i32 = 16;
const OFF_Y: i32 = 24;
const OFF_CHANNELS: i32 = 32;
const OFF_ACT: i32 = 32 + 13 * 8;
const OFF_FUNC: i32 = OFF_ACT + 8;
/// Images emitted as separate calls; more falls back to the body.
const MAX_BATCH: u64 = 16;
/// The trap code of a routine that refused its arguments or the CPU.
const DW_TRAP: u8 = 0x6c;

/// The routine variant the target's flags allow (None: render the body).
pub(crate) fn variant(isa: &dyn TargetIsa) -> Option<&'static str> {
    let flag = |n: &str| {
        isa.isa_flags()
            .iter()
            .any(|f| f.name == n && f.as_bool() == Some(true))
    };
    match isa.triple().architecture {
        Architecture::X86_64 if flag("has_avx512f") => Some("avx512"),
        Architecture::X86_64 if flag("has_avx2") && flag("has_fma") && flag("has_avx") => {
            Some("avx2")
        }
        Architecture::Aarch64(_) => Some("neon"),
        _ => None,
    }
}

/// The checks every routine call passes before it may replace a body: the
/// buffers `ids` (and `extra`, if there) hold f32, and no size is zero.
pub(super) fn f32_and_sized(
    bufs: &[BufferDecl],
    ids: &[u32],
    extra: Option<u32>,
    sizes: &[u64],
) -> bool {
    let f32_buf = |b: &u32| bufs.get(*b as usize).map(|x| x.dtype) == Some(DType::F32);
    ids.iter().all(f32_buf) && extra.as_ref().is_none_or(f32_buf) && !sizes.contains(&0)
}

/// The depthwise call of a kernel, if it can replace the body here.
pub(crate) fn depthwise<'k>(
    call: Option<&'k LibraryCall>,
    bufs: &[BufferDecl],
) -> Option<&'k Depthwise2d> {
    let Some(LibraryCall::Depthwise2d(d)) = call else {
        return None;
    };
    let sizes = [d.channels, d.stride_h, d.stride_w, d.dil_h, d.dil_w];
    let ok =
        f32_and_sized(bufs, &[d.x, d.w, d.y], d.bias, &sizes) && (1..=MAX_BATCH).contains(&d.batch);
    ok.then_some(d)
}

/// Channels per work item of a threaded depthwise call: a whole vector of
/// them, so that a share of narrow planes can still take the routine's
/// channels-last path (16 channels to a vector); split by channel, 8 of
/// them to a chunk ran KWS's 64-channel layers slower on two threads
/// (6.9 us) than on one (5.2 us).
const DW_GROUP: u64 = 16;

/// The imports and the shared task function of the depthwise calls.
pub(crate) struct Library {
    routine: FuncId,
    /// `NAME_dw_task(ctx, begin, end)` with threads.
    task: Option<(FuncId, FuncId)>,
}

pub(super) fn cg(e: impl std::fmt::Display) -> CpuError {
    CpuError::Codegen(e.to_string())
}

pub(super) fn ptr_sig(cc: cranelift_codegen::isa::CallConv, n: usize, ret: bool) -> Signature {
    let mut s = Signature::new(cc);
    for _ in 0..n {
        s.params.push(AbiParam::new(I64));
    }
    if ret {
        s.returns.push(AbiParam::new(I32));
    }
    s
}

impl Library {
    /// Declares the routine (and, with threads, defines the task).
    pub(crate) fn declare<M: Module>(
        module: &mut M,
        name: &str,
        variant: &str,
        threads: bool,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<Library, CpuError> {
        let (routine, task) = declare_with_task(
            module,
            (&format!("kiln_dwconv_f32_{variant}"), 1),
            threads.then(|| format!("{name}_dw_task")),
            (ctx, fctx),
            define_task,
        )?;
        Ok(Library { routine, task })
    }

    /// Defines kernel `id` (`(table)`) as the calls computing `d`, reading
    /// the buffer addresses from the step's table.
    pub(crate) fn define_depthwise<M: Module>(
        &self,
        module: &mut M,
        id: FuncId,
        d: &Depthwise2d,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<usize, CpuError> {
        let (routine, task) = kernel_refs(module, id, (self.routine, self.task), ctx);
        emit_body(module, id, (ctx, fctx), |b, ps| {
            let table = ps[0];
            let base = |b: &mut FunctionBuilder, buf: u32| buffer_address(b, table, buf);
            let (x, w, y) = (base(b, d.x), base(b, d.w), base(b, d.y));
            let bias = address_or_null(b, table, d.bias);
            let slot = args_slot(b, ARGS_BYTES);
            let sizes = [
                d.channels, d.in_h, d.in_w, d.out_h, d.out_w, d.k_h, d.k_w, d.stride_h, d.stride_w,
                d.pad_top, d.pad_left, d.dil_h, d.dil_w,
            ];
            store_words(b, slot, OFF_CHANNELS, &sizes);
            store_act(b, slot, OFF_ACT, d.act, d.func);
            b.ins().stack_store(I64, w, slot, OFF_W);
            b.ins().stack_store(I64, bias, slot, OFF_BIAS);
            let in_img = d.channels * d.in_h * d.in_w * 4;
            let out_img = d.channels * d.out_h * d.out_w * 4;
            let images = Images {
                x: (x, OFF_X, in_img),
                y: (y, OFF_Y, out_img),
                batch: d.batch,
                work: d.channels * d.out_h * d.out_w * d.k_h * d.k_w,
            };
            per_image(
                b,
                slot,
                images,
                (routine, task),
                d.channels.div_ceil(DW_GROUP),
            );
        })
    }
}

/// Starts kernel `id` (`(table)`): its signature and name, and references
/// to the routine and, with threads, to the task and `kiln_parallel_for`.
pub(super) fn kernel_refs<M: Module>(
    module: &mut M,
    id: FuncId,
    (routine, task): (FuncId, Option<(FuncId, FuncId)>),
    ctx: &mut Context,
) -> (FuncRef, Option<(FuncRef, FuncRef)>) {
    let cc = module.isa().default_call_conv();
    ctx.func.signature = ptr_sig(cc, 1, false);
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let routine = module.declare_func_in_func(routine, &mut ctx.func);
    let task = task.map(|(t, p)| {
        (
            module.declare_func_in_func(t, &mut ctx.func),
            module.declare_func_in_func(p, &mut ctx.func),
        )
    });
    (routine, task)
}

/// The address of buffer `buf` from the step's table.
pub(super) fn buffer_address(b: &mut FunctionBuilder, table: Value, buf: u32) -> Value {
    let fl = MemFlagsData::trusted().with_readonly();
    b.ins().load(I64, fl, table, (buf as i32) * 8)
}

/// Starts task function `id` (`(ctx, begin, end)`): its signature and
/// name, and a reference to the routine it calls.
pub(super) fn task_refs<M: Module>(
    module: &mut M,
    id: FuncId,
    routine: FuncId,
    ctx: &mut Context,
) -> FuncRef {
    let cc = module.isa().default_call_conv();
    ctx.func.signature = ptr_sig(cc, 3, false);
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    module.declare_func_in_func(routine, &mut ctx.func)
}

/// Imports `routine` (`args` pointer-sized arguments, an `i32` status) and,
/// with `task` named, `kiln_parallel_for` and the local task function
/// `define_task` defines around the routine.
fn declare_with_task<M: Module>(
    module: &mut M,
    (routine, args): (&str, usize),
    task: Option<String>,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    define_task: impl FnOnce(
        &mut M,
        FuncId,
        FuncId,
        &mut Context,
        &mut FunctionBuilderContext,
    ) -> Result<usize, CpuError>,
) -> Result<(FuncId, Option<(FuncId, FuncId)>), CpuError> {
    let cc = module.isa().default_call_conv();
    let routine = module
        .declare_function(routine, Linkage::Import, &ptr_sig(cc, args, true))
        .map_err(cg)?;
    let Some(task) = task else {
        return Ok((routine, None));
    };
    let par = module
        .declare_function("kiln_parallel_for", Linkage::Import, &ptr_sig(cc, 3, false))
        .map_err(cg)?;
    let id = module
        .declare_function(&task, Linkage::Local, &ptr_sig(cc, 3, false))
        .map_err(cg)?;
    define_task(module, id, routine, ctx, fctx)?;
    Ok((routine, Some((id, par))))
}

pub(super) fn define<M: Module>(
    module: &mut M,
    id: FuncId,
    ctx: &mut Context,
) -> Result<usize, CpuError> {
    super::emit::define(module, id, ctx).map_err(CpuError::Codegen)
}

/// `task(ctx, begin, end)`: the routine on channels `begin..end` of the
/// argument block at `ctx` (copied, then narrowed).
fn define_task<M: Module>(
    module: &mut M,
    id: FuncId,
    routine: FuncId,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<usize, CpuError> {
    let routine = task_refs(module, id, routine, ctx);
    emit_body(module, id, (ctx, fctx), |b, ps| {
        let (src, begin, end) = (ps[0], ps[1], ps[2]);
        let fl = MemFlagsData::trusted();
        let slot = args_slot(b, ARGS_BYTES);
        let field = |b: &mut FunctionBuilder, off: i32| -> Value {
            let v = b.ins().load(I64, fl, src, off);
            b.ins().stack_store(I64, v, slot, off);
            v
        };
        let x = field(b, OFF_X);
        let w = field(b, OFF_W);
        let bias = field(b, OFF_BIAS);
        let y = field(b, OFF_Y);
        let mut sizes = vec![];
        for i in 0..13 {
            sizes.push(field(b, OFF_CHANNELS + 8 * i));
        }
        let act = b.ins().load(I64, fl, src, OFF_ACT);
        b.ins().stack_store(I64, act, slot, OFF_ACT);
        let func = b.ins().load(I32, fl, src, OFF_FUNC);
        b.ins().stack_store(I64, func, slot, OFF_FUNC);
        let (in_h, in_w, out_h, out_w, k_h, k_w) =
            (sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6]);
        // Items are groups of `DW_GROUP` channels (the last one short).
        let begin = b.ins().imul_imm_s(begin, DW_GROUP as i64);
        let end = b.ins().imul_imm_s(end, DW_GROUP as i64);
        // Move each per-channel pointer to channel `begin`.
        let advance = |b: &mut FunctionBuilder, p: Value, per: Value, off: i32| {
            let bytes = b.ins().imul(begin, per);
            let bytes = b.ins().ishl_imm_s(bytes, 2);
            let q = b.ins().iadd(p, bytes);
            b.ins().stack_store(I64, q, slot, off);
        };
        let in_plane = b.ins().imul(in_h, in_w);
        let out_plane = b.ins().imul(out_h, out_w);
        let taps = b.ins().imul(k_h, k_w);
        advance(b, x, in_plane, OFF_X);
        advance(b, y, out_plane, OFF_Y);
        advance(b, w, taps, OFF_W);
        // A bias is moved only if there is one (null stays null).
        let moved = b.ins().ishl_imm_s(begin, 2);
        let moved = b.ins().iadd(bias, moved);
        let nb = b.ins().select(bias, moved, bias);
        b.ins().stack_store(I64, nb, slot, OFF_BIAS);
        let end = b.ins().umin(end, sizes[0]);
        let n = b.ins().isub(end, begin);
        b.ins().stack_store(I64, n, slot, OFF_CHANNELS);
        let args = b.ins().stack_addr(I64, slot, 0);
        call_routine(b, routine, &[args]);
    })
}

/// `routine(args…)`, trapping when it refuses them (non-zero status).
pub(super) fn call_routine(b: &mut FunctionBuilder, routine: FuncRef, args: &[Value]) {
    let inst = b.ins().call(routine, args);
    let rc = b.inst_results(inst)[0];
    b.ins().trapnz(rc, TrapCode::unwrap_user(DW_TRAP));
}

/// The exponential-rows call of a kernel, if it can replace the body here
/// (f32 buffers and an AVX-512 target).
pub(crate) fn exp_rows<'k>(
    call: Option<&'k LibraryCall>,
    bufs: &[BufferDecl],
    variant: Option<&str>,
) -> Option<&'k ExpRows> {
    let Some(LibraryCall::ExpRows(e)) = call else {
        return None;
    };
    let f32_buf = |b: u32| bufs.get(b as usize).map(|x| x.dtype) == Some(DType::F32);
    let ok = variant == Some("avx512") && f32_buf(e.x) && f32_buf(e.m) && f32_buf(e.y) && e.len > 0;
    ok.then_some(e)
}

/// Bytes of the block a softmax-rows task reads: x, m, y, len.
const EXP_BLOCK: u32 = 4 * 8;

/// The import and the task function of the exponential-rows calls.
pub(crate) struct ExpLibrary {
    routine: FuncId,
    /// `NAME_exp_task(ctx, begin, end)` and `kiln_parallel_for`, with threads.
    task: Option<(FuncId, FuncId)>,
}

impl ExpLibrary {
    /// Declares the routine (and, with threads, defines the task).
    pub(crate) fn declare<M: Module>(
        module: &mut M,
        name: &str,
        threads: bool,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<ExpLibrary, CpuError> {
        let (routine, task) = declare_with_task(
            module,
            ("kiln_exp_rows_f32_avx512", 5),
            threads.then(|| format!("{name}_exp_task")),
            (ctx, fctx),
            define_exp_task,
        )?;
        Ok(ExpLibrary { routine, task })
    }

    /// Defines kernel `id` (`(table)`) as the call computing `e`.
    pub(crate) fn define<M: Module>(
        &self,
        module: &mut M,
        id: FuncId,
        e: &ExpRows,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<usize, CpuError> {
        let (routine, task) = kernel_refs(module, id, (self.routine, self.task), ctx);
        emit_body(module, id, (ctx, fctx), |b, ps| {
            let table = ps[0];
            let base = |b: &mut FunctionBuilder, buf: u32| buffer_address(b, table, buf);
            let (x, m, y) = (base(b, e.x), base(b, e.m), base(b, e.y));
            let rows = b.ins().iconst(I64, e.rows as i64);
            let len = b.ins().iconst(I64, e.len as i64);
            match task {
                Some((t, par)) => {
                    let slot = args_slot(b, EXP_BLOCK);
                    for (i, v) in [x, m, y, len].into_iter().enumerate() {
                        b.ins().stack_store(I64, v, slot, 8 * i as i32);
                    }
                    let block = b.ins().stack_addr(I64, slot, 0);
                    let f = b.ins().func_addr(I64, t);
                    b.ins().call(par, &[rows, f, block]);
                }
                None => {
                    call_routine(b, routine, &[x, m, y, rows, len]);
                }
            }
        })
    }
}

/// `task(ctx, begin, end)`: the routine on rows `begin..end` of the block
/// at `ctx` (x, m, y, len).
fn define_exp_task<M: Module>(
    module: &mut M,
    id: FuncId,
    routine: FuncId,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<usize, CpuError> {
    let routine = task_refs(module, id, routine, ctx);
    emit_body(module, id, (ctx, fctx), |b, ps| {
        let (src, begin, end) = (ps[0], ps[1], ps[2]);
        let fl = MemFlagsData::trusted();
        let x = b.ins().load(I64, fl, src, 0);
        let m = b.ins().load(I64, fl, src, 8);
        let y = b.ins().load(I64, fl, src, 16);
        let len = b.ins().load(I64, fl, src, 24);
        // Row `begin`: x and y advance by begin·len floats, m by begin.
        let elems = b.ins().imul(begin, len);
        let bytes = b.ins().ishl_imm_s(elems, 2);
        let x = b.ins().iadd(x, bytes);
        let y = b.ins().iadd(y, bytes);
        let mb = b.ins().ishl_imm_s(begin, 2);
        let m = b.ins().iadd(m, mb);
        let rows = b.ins().isub(end, begin);
        call_routine(b, routine, &[x, m, y, rows, len]);
    })
}

/// Imports `routine` (one argument block, an `i32` status) and, with
/// `task` named, `kiln_parallel_for` and the local task
/// `task(ctx, begin, end)`: the routine on a copy of the `bytes`-byte block
/// at `ctx` with `begin` and `end` stored at `range_at` and 8 bytes on.
pub(super) fn declare_range_routine<M: Module>(
    module: &mut M,
    routine: &str,
    task: Option<String>,
    (bytes, range_at): (u32, i32),
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
) -> Result<(FuncId, Option<(FuncId, FuncId)>), CpuError> {
    let define_task = |module: &mut M, id, routine, ctx: &mut Context, fctx: &mut _| {
        let r = task_refs(module, id, routine, ctx);
        emit_body(module, id, (ctx, fctx), |b, ps| {
            let (src, begin, end) = (ps[0], ps[1], ps[2]);
            let fl = MemFlagsData::trusted();
            let slot = args_slot(b, bytes);
            for off in (0..bytes as i32).step_by(8) {
                let v = b.ins().load(I64, fl, src, off);
                b.ins().stack_store(I64, v, slot, off);
            }
            b.ins().stack_store(I64, begin, slot, range_at);
            b.ins().stack_store(I64, end, slot, range_at + 8);
            let args = b.ins().stack_addr(I64, slot, 0);
            call_routine(b, r, &[args]);
        })
    };
    declare_with_task(module, (routine, 1), task, (ctx, fctx), define_task)
}

/// Stores `words` as 64-bit values at `at`, `at + 8`, … of `slot`.
pub(super) fn store_words(b: &mut FunctionBuilder, slot: StackSlot, at: i32, words: &[u64]) {
    for (i, v) in words.iter().enumerate() {
        let c = b.ins().iconst(I64, *v as i64);
        b.ins().stack_store(I64, c, slot, at + 8 * i as i32);
    }
}

/// Stores a routine's clamp bounds (two f32 at `at`) and function code
/// (a u32 at `at + 8`).
pub(super) fn store_act(
    b: &mut FunctionBuilder,
    slot: StackSlot,
    at: i32,
    (lo, hi): (f32, f32),
    func: Option<kiln_ir::kernel::call::Activation>,
) {
    let lo = b.ins().f32const(lo);
    let hi = b.ins().f32const(hi);
    b.ins().stack_store(I64, lo, slot, at);
    b.ins().stack_store(I64, hi, slot, at + 4);
    let func = b.ins().iconst(I32, super::gemm::func_code(func) as i64);
    b.ins().stack_store(I64, func, slot, at + 8);
}

/// The images of a call: input and output base addresses, where the
/// argument block holds them, and bytes per image.
pub(super) struct Images {
    pub x: (Value, i32, u64),
    pub y: (Value, i32, u64),
    pub batch: u64,
    /// Multiply-adds (or comparisons) per image: below
    /// [`super::gemm_par::MIN_SPLIT_MACS`] the call stays on one thread
    /// (KWS's 64-channel depthwise layers, 72K multiply-adds, took 5.2 us
    /// on one thread and 8.5 split over two).
    pub work: u64,
}

/// Per image, the argument block at `slot` pointed at the image, then the
/// routine over its `items` work items: split over `kiln_parallel_for` by
/// the task with threads and enough work, else one checked call.
pub(super) fn per_image(
    b: &mut FunctionBuilder,
    slot: StackSlot,
    images: Images,
    (routine, task): (FuncRef, Option<(FuncRef, FuncRef)>),
    items: u64,
) {
    let args = b.ins().stack_addr(I64, slot, 0);
    for img in 0..images.batch as i64 {
        for (base, at, bytes) in [images.x, images.y] {
            let p = b.ins().iadd_imm_s(base, img * bytes as i64);
            b.ins().stack_store(I64, p, slot, at);
        }
        match task {
            Some((t, par)) if images.work >= super::gemm_par::MIN_SPLIT_MACS => {
                let n = b.ins().iconst(I64, items as i64);
                let f = b.ins().func_addr(I64, t);
                b.ins().call(par, &[n, f, args]);
            }
            _ => call_routine(b, routine, &[args]),
        }
    }
}

/// Emits the body of function `id` (its signature and imports already in
/// `ctx.func`) with `body`, given its parameters, then returns and
/// defines it.
pub(super) fn emit_body<M: Module>(
    module: &mut M,
    id: FuncId,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    body: impl FnOnce(&mut FunctionBuilder, &[Value]),
) -> Result<usize, CpuError> {
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let ps = super::emit::entry(&mut b);
        body(&mut b, &ps);
        b.ins().return_(&[]);
        b.finalize(module.target_config());
    }
    define(module, id, ctx)
}

/// An argument block of `bytes` on the stack (8-byte aligned).
pub(super) fn args_slot(b: &mut FunctionBuilder, bytes: u32) -> StackSlot {
    b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 3))
}

/// The address of buffer `buf` from the step's table, or null for none.
pub(super) fn address_or_null(b: &mut FunctionBuilder, table: Value, buf: Option<u32>) -> Value {
    match buf {
        Some(buf) => buffer_address(b, table, buf),
        None => b.ins().iconst(I64, 0),
    }
}
