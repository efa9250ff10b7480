//! Module-level emission shared by the object writer and the JIT: weights as
//! read-only data, the size tables, one local function per kernel, the math
//! helpers, and `NAME_run`, which binds every step's buffers (inputs,
//! outputs, weights, arena offsets), zeroes what a step writes (the
//! interpreter's contract) and calls the step's kernels in order.

use super::fallback::{self, Helper};
use super::kernel::KernelCx;
use super::CpuError;
use crate::plan::{AotIo, AotProgram, BufferLoc};
use cranelift_codegen::ir::types::I32;
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, UserFuncName,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, FuncId, Linkage, Module};
use kiln_ir::kernel::{BufferRole, Stmt};
use kiln_ir::DType;
use std::collections::HashMap;

/// What was emitted (for [`super::CodeStats`]).
pub(crate) struct Emitted {
    pub run: FuncId,
    pub code_bytes: usize,
    pub weight_bytes: usize,
    pub functions: usize,
}

fn cg(e: impl std::fmt::Display) -> CpuError {
    CpuError::Codegen(e.to_string())
}

fn check_dtype(d: DType, what: &str) -> Result<(), CpuError> {
    if !super::half::storable(d) {
        return Err(CpuError::Unsupported(format!(
            "{what} has dtype {d} (f16/bf16 are not supported by the CPU backend)"
        )));
    }
    Ok(())
}

/// Emits `prog` into `module` with symbols prefixed by `name` (already sanitised).
pub(crate) fn emit_program<M: Module>(
    module: &mut M,
    prog: &AotProgram,
    name: &str,
    native_round: bool,
    threads: bool,
    profile: bool,
) -> Result<Emitted, CpuError> {
    for io in prog.inputs.iter().chain(&prog.outputs) {
        check_dtype(io.dtype, &format!("graph value '{}'", io.name))?;
    }
    let fcfg = module.target_config();
    let ptr = fcfg.pointer_type();
    let mut code_bytes = 0usize;
    let mut functions = 0usize;
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();

    // Convolutions calling the runtime's direct conv, then matmuls calling
    // its GEMM kernels, with their packed weights.
    let dw_variant = super::library::variant(module.isa());
    let convs = super::conv_call::ConvCalls::plan(
        module,
        prog,
        (name, dw_variant, threads),
        &mut ctx,
        &mut fctx,
    )?;
    let gemms = super::gemm::Gemms::plan(module, prog, name, threads, &convs)?;
    let pools = super::pool_call::PoolCalls::plan(
        module,
        prog,
        (name, dw_variant, threads),
        &mut ctx,
        &mut fctx,
    )?;
    // Weights: read-only, 64-byte aligned, local; one byte for those read
    // only through a packed copy.
    let mut weight_ids = vec![];
    let mut weight_bytes = gemms.packed_bytes + convs.packed_bytes;
    for (i, w) in prog.weights.iter().enumerate() {
        check_dtype(w.data.dtype(), &format!("weight '{}'", w.name))?;
        let id = module
            .declare_data(&format!("{name}_w{i}"), Linkage::Local, false, false)
            .map_err(cg)?;
        let mut bytes = if gemms.unread_weights.contains(&i) {
            vec![]
        } else {
            w.data.to_le_bytes()
        };
        weight_bytes += bytes.len();
        if bytes.is_empty() {
            bytes.push(0);
        }
        let mut d = DataDescription::new();
        d.define(bytes.into_boxed_slice());
        d.set_align(64);
        module.define_data(id, &d).map_err(cg)?;
        weight_ids.push(id);
    }
    for (sym, ios) in [
        ("input_sizes", &prog.inputs),
        ("output_sizes", &prog.outputs),
    ] {
        size_table(module, &format!("{name}_{sym}"), ios, ptr.bytes() as usize)?;
    }

    // Math helpers, declared up front so every kernel can reference them.
    let cc = module.isa().default_call_conv();
    let mut helper_ids = vec![];
    for h in Helper::all() {
        let id = module
            .declare_function(
                &format!("{name}_h_{}", h.symbol()),
                Linkage::Local,
                &h.signature(cc),
            )
            .map_err(cg)?;
        helper_ids.push((h, id));
    }

    let mut ksig = Signature::new(cc);
    ksig.params.push(AbiParam::new(ptr));
    // Parallel loops: a task `(ctx, begin, end)` per loop, run by the runtime's
    // `kiln_parallel_for(n, task, ctx)`; ctx is the kernel's buffer table.
    let mut tsig = Signature::new(cc);
    for _ in 0..3 {
        tsig.params.push(AbiParam::new(ptr));
    }
    let par_for = if threads {
        let mut psig = Signature::new(cc);
        for _ in 0..3 {
            psig.params.push(AbiParam::new(ptr));
        }
        Some(
            module
                .declare_function("kiln_parallel_for", Linkage::Import, &psig)
                .map_err(cg)?,
        )
    } else {
        None
    };
    // Runtime routines for kernels that carry a library call.
    let uses_library = prog.steps.iter().any(|s| {
        s.program
            .kernels
            .iter()
            .any(|k| super::library::depthwise(k.call.as_ref(), &s.program.buffers).is_some())
    });
    let library = match dw_variant {
        Some(v) if uses_library => {
            let l =
                super::library::Library::declare(module, name, v, threads, &mut ctx, &mut fctx)?;
            functions += 1;
            Some(l)
        }
        _ => None,
    };
    let uses_exp = prog.steps.iter().any(|s| {
        s.program.kernels.iter().any(|k| {
            super::library::exp_rows(k.call.as_ref(), &s.program.buffers, dw_variant).is_some()
        })
    });
    let exp_library = if uses_exp {
        let l = super::library::ExpLibrary::declare(module, name, threads, &mut ctx, &mut fctx)?;
        functions += 1;
        Some(l)
    } else {
        None
    };
    let mut kernel_ids: Vec<Vec<FuncId>> = vec![];
    for (si, step) in prog.steps.iter().enumerate() {
        let step_err = |kernel: &str, msg: String| CpuError::Kernel {
            node: step.node.clone(),
            kernel: kernel.to_string(),
            msg,
        };
        if step.bindings.len() != step.program.buffers.len() {
            return Err(step_err(
                "-",
                "bindings do not match the program's buffers".into(),
            ));
        }
        for b in &step.program.buffers {
            check_dtype(
                b.dtype,
                &format!("step '{}' buffer '{}'", step.node, b.name),
            )?;
        }
        let mut ids = vec![];
        for (ki, k) in step.program.kernels.iter().enumerate() {
            // A kernel whose library call the target renders is that call.
            if convs.replaces(si, ki) || pools.replaces(si, ki) {
                let id = module
                    .declare_function(&format!("{name}_s{si}_k{ki}"), Linkage::Local, &ksig)
                    .map_err(cg)?;
                code_bytes += match convs.define(module, (si, ki), id, &mut ctx, &mut fctx)? {
                    Some(n) => n,
                    None => pools
                        .define(module, (si, ki), id, &mut ctx, &mut fctx)?
                        .unwrap_or(0),
                };
                functions += 1;
                ids.push(id);
                continue;
            }
            let bufs = &step.program.buffers;
            let dw = library
                .as_ref()
                .zip(super::library::depthwise(k.call.as_ref(), bufs));
            let exp = exp_library.as_ref().zip(super::library::exp_rows(
                k.call.as_ref(),
                bufs,
                dw_variant,
            ));
            if dw.is_some() || exp.is_some() {
                let id = module
                    .declare_function(&format!("{name}_s{si}_k{ki}"), Linkage::Local, &ksig)
                    .map_err(cg)?;
                code_bytes += match (dw, exp) {
                    (Some((lib, d)), _) => {
                        lib.define_depthwise(module, id, d, &mut ctx, &mut fctx)?
                    }
                    (_, Some((lib, e))) => lib.define(module, id, e, &mut ctx, &mut fctx)?,
                    _ => 0,
                };
                functions += 1;
                ids.push(id);
                continue;
            }
            // Outline the parallel top-level loops into task functions first;
            // a flat loop is first cut into chunks (an outer loop to split,
            // an inner one to vectorise, and a serial remainder).
            let mut tasks: Vec<Option<FuncId>> = vec![None; k.body.len()];
            let mut chunked: Vec<Option<(Stmt, Option<Stmt>)>> = vec![None; k.body.len()];
            if par_for.is_some() {
                let fresh = kiln_ir::kernel::rewrite::max_var(&k.body).map_or(0, |v| v + 1);
                for (ti, s) in k.body.iter().enumerate() {
                    if gemms.folds(s) {
                        continue;
                    }
                    if !super::parallel::parallel_loop(s) {
                        chunked[ti] = super::parallel::chunked(s, fresh);
                    }
                    let s = match &chunked[ti] {
                        Some((main, _)) => main,
                        None => s,
                    };
                    let Stmt::For { var, body, .. } = s else {
                        continue;
                    };
                    if chunked[ti].is_none() && !super::parallel::parallel_loop(s) {
                        continue;
                    }
                    let tid = module
                        .declare_function(
                            &format!("{name}_s{si}_k{ki}_t{ti}"),
                            Linkage::Local,
                            &tsig,
                        )
                        .map_err(cg)?;
                    ctx.func.signature = tsig.clone();
                    ctx.func.name = UserFuncName::user(0, tid.as_u32());
                    let hrefs = import_helpers(module, &helper_ids, &mut ctx.func);
                    let gcx = gemms.for_function(module, &mut ctx.func, si, ki);
                    {
                        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
                        let ps = entry(&mut b);
                        let base = load_bases(&mut b, ps[0], step.program.buffers.len(), ptr);
                        let mut kc = KernelCx::new(
                            &mut b,
                            &step.program.buffers,
                            base,
                            &hrefs,
                            native_round,
                        );
                        kc.gemm = gcx;
                        kc.range_loop(*var, ps[1], ps[2], body)
                            .map_err(|m| step_err(&k.name, m))?;
                        b.ins().return_(&[]);
                        b.finalize(fcfg);
                    }
                    code_bytes += define(module, tid, &mut ctx)
                        .map_err(|e| step_err(&k.name, format!("code generation: {e}")))?;
                    functions += 1;
                    tasks[ti] = Some(tid);
                }
            }
            let id = module
                .declare_function(&format!("{name}_s{si}_k{ki}"), Linkage::Local, &ksig)
                .map_err(cg)?;
            ctx.func.signature = ksig.clone();
            ctx.func.name = UserFuncName::user(0, id.as_u32());
            let hrefs = import_helpers(module, &helper_ids, &mut ctx.func);
            let task_refs: Vec<_> = tasks
                .iter()
                .map(|t| t.map(|t| module.declare_func_in_func(t, &mut ctx.func)))
                .collect();
            let par_ref = par_for.map(|p| module.declare_func_in_func(p, &mut ctx.func));
            let gcx = gemms.for_function(module, &mut ctx.func, si, ki);
            {
                let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
                let table = entry(&mut b)[0];
                let base = load_bases(&mut b, table, step.program.buffers.len(), ptr);
                let mut kc =
                    KernelCx::new(&mut b, &step.program.buffers, base, &hrefs, native_round);
                kc.gemm = gcx;
                for (ti, s) in k.body.iter().enumerate() {
                    let (s, rest) = match &chunked[ti] {
                        Some((main, rest)) => (main, rest.as_ref()),
                        None => (s, None),
                    };
                    match (task_refs[ti], par_ref, s) {
                        (Some(task), Some(pf), Stmt::For { extent, .. }) => {
                            let n = kc.b.ins().iconst(ptr, *extent as i64);
                            let f = kc.b.ins().func_addr(ptr, task);
                            kc.b.ins().call(pf, &[n, f, table]);
                            if let Some(r) = rest {
                                kc.block(std::slice::from_ref(r))
                                    .map_err(|m| step_err(&k.name, m))?;
                            }
                        }
                        _ => kc
                            .block(std::slice::from_ref(s))
                            .map_err(|m| step_err(&k.name, m))?,
                    }
                }
                b.ins().return_(&[]);
                b.finalize(fcfg);
            }
            code_bytes += define(module, id, &mut ctx)
                .map_err(|e| step_err(&k.name, format!("code generation: {e}")))?;
            functions += 1;
            ids.push(id);
        }
        kernel_ids.push(ids);
    }

    for (h, id) in &helper_ids {
        ctx.func.signature = h.signature(cc);
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            fallback::define(&mut b, *h);
            b.finalize(fcfg);
        }
        code_bytes += define(module, *id, &mut ctx).map_err(cg)?;
        functions += 1;
    }

    let (bytes, count) = gemms.define_tasks(module, &mut ctx, &mut fctx)?;
    code_bytes += bytes;
    functions += count;

    let run = emit_run(
        module,
        prog,
        name,
        &weight_ids,
        &kernel_ids,
        &mut ctx,
        &mut fctx,
        profile,
    )?;
    code_bytes += define(module, run, &mut ctx).map_err(cg)?;
    functions += 1;
    Ok(Emitted {
        run,
        code_bytes,
        weight_bytes,
        functions,
    })
}

/// References to every helper from `func`.
fn import_helpers<M: Module>(
    module: &mut M,
    helper_ids: &[(Helper, FuncId)],
    func: &mut cranelift_codegen::ir::Function,
) -> HashMap<Helper, cranelift_codegen::ir::FuncRef> {
    helper_ids
        .iter()
        .map(|(h, id)| (*h, module.declare_func_in_func(*id, func)))
        .collect()
}

/// The buffer base pointers, loaded from a step's pointer table.
fn load_bases(
    b: &mut FunctionBuilder,
    table: cranelift_codegen::ir::Value,
    n: usize,
    ptr: cranelift_codegen::ir::Type,
) -> Vec<cranelift_codegen::ir::Value> {
    (0..n)
        .map(|i| {
            b.ins().load(
                ptr,
                MemFlagsData::trusted().with_readonly(),
                table,
                (i * ptr.bytes() as usize) as i32,
            )
        })
        .collect()
}

/// Compiles and defines the function in `ctx`; returns its code size.
pub(super) fn define<M: Module>(
    module: &mut M,
    id: FuncId,
    ctx: &mut Context,
) -> Result<usize, String> {
    module
        .define_function(id, ctx)
        .map_err(|e| format!("{e:?}"))?;
    let size = ctx
        .compiled_code()
        .map(|c| c.code_buffer().len())
        .unwrap_or(0);
    module.clear_context(ctx);
    Ok(size)
}

/// `const size_t NAME[n]` (one zero entry when there are none, as the header declares).
fn size_table<M: Module>(
    module: &mut M,
    sym: &str,
    ios: &[AotIo],
    word: usize,
) -> Result<(), CpuError> {
    let id = module
        .declare_data(sym, Linkage::Export, false, false)
        .map_err(cg)?;
    let mut bytes = vec![];
    for io in ios {
        bytes.extend_from_slice(&(io.byte_size() as u64).to_le_bytes()[..word]);
    }
    if bytes.is_empty() {
        bytes.resize(word, 0);
    }
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(word as u64);
    module.define_data(id, &d).map_err(cg)
}

#[allow(clippy::too_many_arguments)]
fn emit_run<M: Module>(
    module: &mut M,
    prog: &AotProgram,
    name: &str,
    weight_ids: &[cranelift_module::DataId],
    kernel_ids: &[Vec<FuncId>],
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    profile: bool,
) -> Result<FuncId, CpuError> {
    let ptr = module.target_config().pointer_type();
    let cc = module.isa().default_call_conv();
    let mut sig = Signature::new(cc);
    for _ in 0..3 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.returns.push(AbiParam::new(I32));
    let run = module
        .declare_function(&format!("{name}_run"), Linkage::Export, &sig)
        .map_err(cg)?;
    // memset / memcpy from libc: the only external symbols the object uses.
    let mut msig = Signature::new(cc);
    msig.params.push(AbiParam::new(ptr));
    msig.params.push(AbiParam::new(I32));
    msig.params.push(AbiParam::new(ptr));
    msig.returns.push(AbiParam::new(ptr));
    let memset = module
        .declare_function("memset", Linkage::Import, &msig)
        .map_err(cg)?;
    let mut csig = Signature::new(cc);
    for _ in 0..3 {
        csig.params.push(AbiParam::new(ptr));
    }
    csig.returns.push(AbiParam::new(ptr));
    let memcpy = module
        .declare_function("memcpy", Linkage::Import, &csig)
        .map_err(cg)?;

    let profile_hook = if profile {
        let mut psig = Signature::new(cc);
        psig.params.push(AbiParam::new(ptr));
        Some(
            module
                .declare_function("kiln_profile_step", Linkage::Import, &psig)
                .map_err(cg)?,
        )
    } else {
        None
    };
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, run.as_u32());
    let profile_ref = profile_hook.map(|h| module.declare_func_in_func(h, &mut ctx.func));
    let memset_ref = module.declare_func_in_func(memset, &mut ctx.func);
    let memcpy_ref = module.declare_func_in_func(memcpy, &mut ctx.func);
    let wgv: Vec<_> = weight_ids
        .iter()
        .map(|id| module.declare_data_in_func(*id, &mut ctx.func))
        .collect();
    let krefs: Vec<Vec<_>> = kernel_ids
        .iter()
        .map(|ks| {
            ks.iter()
                .map(|id| module.declare_func_in_func(*id, &mut ctx.func))
                .collect()
        })
        .collect();

    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let ps = entry(&mut b);
    let (ins_p, outs_p, arena) = (ps[0], ps[1], ps[2]);
    let pw = ptr.bytes() as i32;
    let max_bufs = prog
        .steps
        .iter()
        .map(|s| s.program.buffers.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (max_bufs * pw as usize) as u32,
        3,
    ));
    let flags = MemFlagsData::trusted();
    let loc_ptr = |b: &mut FunctionBuilder, loc: BufferLoc| match loc {
        BufferLoc::Input(i) => b.ins().load(ptr, flags, ins_p, i as i32 * pw),
        BufferLoc::Output(i) => b.ins().load(ptr, flags, outs_p, i as i32 * pw),
        BufferLoc::Weight(i) => b.ins().symbol_value(ptr, wgv[i]),
        BufferLoc::Arena(o) => b.ins().iadd_imm_s(arena, o as i64),
    };
    let mark = |b: &mut FunctionBuilder, i: usize| {
        if let Some(h) = profile_ref {
            let v = b.ins().iconst(ptr, i as i64);
            b.ins().call(h, &[v]);
        }
    };
    for (si, step) in prog.steps.iter().enumerate() {
        mark(&mut b, si);
        let zero_fill: Vec<bool> = (0..step.program.buffers.len())
            .map(|bi| kiln_ir::kernel::analysis::needs_zero_fill(&step.program, bi as u32))
            .collect();
        for (bi, (d, loc)) in step.program.buffers.iter().zip(&step.bindings).enumerate() {
            if let BufferLoc::Weight(i) = loc {
                if *i >= wgv.len() {
                    return Err(CpuError::Kernel {
                        node: step.node.clone(),
                        kernel: "-".into(),
                        msg: format!("buffer {bi} is bound to missing weight {i}"),
                    });
                }
            }
            let is_in = matches!(d.role, BufferRole::Input(_));
            if !is_in && matches!(loc, BufferLoc::Input(_) | BufferLoc::Weight(_)) {
                return Err(CpuError::Kernel {
                    node: step.node.clone(),
                    kernel: "-".into(),
                    msg: format!("buffer {bi} is written but bound to read-only memory"),
                });
            }
            let p = loc_ptr(&mut b, *loc);
            // An output placed over one of the step's inputs (in-place reuse)
            // keeps the input's data; everything else the step writes starts at zero.
            let in_place = step
                .program
                .buffers
                .iter()
                .zip(&step.bindings)
                .any(|(o, l)| matches!(o.role, BufferRole::Input(_)) && l == loc);
            if !is_in && !in_place && zero_fill[bi] {
                let zero = b.ins().iconst(I32, 0);
                let n = b.ins().iconst(ptr, (d.len * d.dtype.size()) as i64);
                b.ins().call(memset_ref, &[p, zero, n]);
            }
            b.ins().stack_store(ptr, p, slot, bi as i32 * pw);
        }
        let table = b.ins().stack_addr(ptr, slot, 0);
        for k in &krefs[si] {
            b.ins().call(*k, &[table]);
        }
    }
    mark(&mut b, prog.steps.len());
    for c in &prog.output_copies {
        let dst = b.ins().load(ptr, flags, outs_p, c.output as i32 * pw);
        let src = loc_ptr(&mut b, c.from);
        let n = b.ins().iconst(ptr, c.bytes as i64);
        b.ins().call(memcpy_ref, &[dst, src, n]);
    }
    let z = b.ins().iconst(I32, 0);
    b.ins().return_(&[z]);
    b.finalize(module.target_config());
    Ok(run)
}

/// Starts a function body: its entry block, sealed and current, holding
/// the function's parameters; returns them.
pub(crate) fn entry(b: &mut FunctionBuilder) -> Vec<cranelift_codegen::ir::Value> {
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    b.seal_block(block);
    b.block_params(block).to_vec()
}
