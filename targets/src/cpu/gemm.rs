//! f32 `Stmt::Matmul`s as calls to the runtime's GEMM micro-kernels
//! (`kiln_sgemm_<variant>`, see `kiln_runtime::gemm`).
//!
//! Why: Cranelift emits 128-bit vectors only, so the generated 4×8 tile of
//! [`super::matmul`] reaches a fraction of what the runtime's 256/512-bit
//! kernels do. A matmul qualifies when its dtype is f32 and C has unit
//! column stride (the kernels write row-major C). Then, in this order:
//! - **weight B** (the step binds B to a weight and its offset is a
//!   constant), A row-major: B packed at compile time with
//!   `kiln_runtime::gemm::pack_b` into a read-only blob in the variant's
//!   layout (`kiln_sgemm_<v>`);
//! - **weight A** (a convolution `W · col` in NCHW), B with unit column
//!   stride: A packed at compile time with `pack_a`, B packed by the kernel
//!   from its rows (`kiln_sgemm_pa_<v>`);
//! - **two activations**, A row-major, B with any strides (attention's
//!   `Q·Kᵀ` reads B transposed): both packed by the kernel
//!   (`kiln_sgemm_raw_<v>`), for `m ≥ RAW_MIN_M` (with fewer rows the copy
//!   of B costs as much as the product).
//!
//! Everything else keeps the generated loop nest.
//!
//! Around the calls: with threads, large matmuls are split by rows over
//! `kiln_parallel_for` (`gemm_par.rs`); a ReLU/Clip epilogue loop right after
//! a matmul becomes the kernel's clamp (`gemm_epilogue.rs`); a weight read
//! only through its packed copy is stored as one byte (`gemm_weights.rs`).
//!
//! Variant: x86_64 with AVX-512F → avx512, except for `n ≤ 64` where its
//! 32-wide tile is mostly padding and avx2 is faster; AVX2+FMA → avx2;
//! aarch64 → neon; otherwise no call. The object then needs a CPU with those
//! instructions, as the rest of its code does: the kernels check, and a
//! refusal (non-zero status) traps rather than leaving C unwritten.
//!
//! Stack: every function that calls a kernel has one stack slot holding the
//! kernel's scratch (packed panels, at most `SCRATCH_CAP_FLOATS`, 256 KiB,
//! enough for full speed with every variant; twice that with both operands
//! raw). Half a MiB stays well inside the 2 MiB stacks of the runtime's
//! pool threads and the usual 8 MiB main-thread stack, and each parallel
//! task gets its own copy.

use super::gemm_epilogue::Operand;
use super::kernel::{KernelCx, R};
use super::CpuError;
use crate::plan::{AotProgram, BufferLoc};
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{
    AbiParam, FuncRef, Function, GlobalValue, InstBuilder, Signature, StackSlot, StackSlotData,
    StackSlotKind, TrapCode, Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use kiln_ir::kernel::{Expr, Matmul, Stmt};
use kiln_ir::{DType, Storage};
use kiln_runtime::gemm::Variant;
use std::collections::{HashMap, HashSet};
use target_lexicon::Architecture;

/// Floats of kernel scratch per call (256 KiB): covers `scratch_len` of
/// every variant (avx512's largest is 240·256 floats).
const SCRATCH_CAP_FLOATS: usize = 64 << 10;
/// The fewest rows of A for which packing an activation B at run time pays off.
const RAW_MIN_M: u64 = 8;
/// The trap code of a kernel that refused its arguments or the CPU.
const GEMM_TRAP: u8 = 0x6b;
/// No clamp.
pub(super) const NO_ACT: (f32, f32) = (f32::NEG_INFINITY, f32::INFINITY);

/// The runtime's code (`flags` bits 8-11) of a folded activation.
pub(super) fn func_code(f: Option<kiln_ir::kernel::call::Activation>) -> u32 {
    use kiln_ir::kernel::call::Activation as A;
    use kiln_runtime::gemm::Func;
    let f = match f {
        None => Func::Identity,
        Some(A::Sigmoid) => Func::Sigmoid,
        Some(A::Silu) => Func::Silu,
        Some(A::GeluErf) => Func::GeluErf,
        Some(A::Tanh) => Func::Tanh,
    };
    f as u32
}

/// Which kernels the target's ISA flags allow.
#[derive(Clone, Copy, Debug, Default)]
struct Kernels {
    avx512: bool,
    avx2: bool,
    neon: bool,
}

impl Kernels {
    fn of(isa: &dyn TargetIsa) -> Kernels {
        let flag = |n: &str| {
            isa.isa_flags()
                .iter()
                .any(|f| f.name == n && f.as_bool() == Some(true))
        };
        match isa.triple().architecture {
            Architecture::X86_64 => {
                let avx2 = flag("has_avx") && flag("has_avx2") && flag("has_fma");
                Kernels {
                    avx512: avx2 && flag("has_avx512f"),
                    avx2,
                    neon: false,
                }
            }
            Architecture::Aarch64(_) => Kernels {
                neon: true,
                ..Kernels::default()
            },
            _ => Kernels::default(),
        }
    }

    /// The variant for `n` output columns.
    fn pick(self, n: usize) -> Option<Variant> {
        if self.avx512 && n > 64 {
            Some(Variant::Avx512)
        } else if self.avx2 {
            Some(Variant::Avx2)
        } else if self.neon {
            Some(Variant::Neon)
        } else {
            None
        }
    }
}

/// How one matmul is computed.
#[derive(Clone, Copy, Debug)]
pub(super) enum How {
    /// B was packed at compile time into this data object.
    Weight(DataId),
    /// A (the weights of a convolution in NCHW) was packed at compile time
    /// into this data object; the kernel packs B from its rows.
    WeightA(DataId),
    /// Both operands are activations, packed by the kernel.
    Raw,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) variant: Variant,
    pub(super) how: How,
    /// Floats of kernel scratch the call passes.
    pub(super) scratch: usize,
    /// With threads: the task function that computes a range of row blocks.
    pub(super) split: Option<FuncId>,
    /// The clamp applied as C is stored (a folded epilogue; ±∞ for none).
    pub(super) act: (f32, f32),
    /// The runtime's code of the function applied before the clamp
    /// (`kiln_runtime::gemm::Func`; 0 for none).
    pub(super) func: u32,
    /// Accumulate into C (the matmul's flag unless a bias fill was folded).
    pub(super) accumulate: bool,
    /// A folded bias has one value per row of C (else per column).
    pub(super) bias_rows: bool,
    /// Row stride of a folded residual.
    pub(super) ldr: i64,
    /// A is read transposed (`(i, p)` at `p·col_stride + i`; flag bit 2).
    pub(super) a_trans: bool,
}

impl Plan {
    /// The kernel entry it calls: variant and symbol infix.
    pub(super) fn import(&self) -> (Variant, &'static str) {
        let infix = match self.how {
            How::Weight(_) => "",
            How::WeightA(_) => "pa_",
            How::Raw => "raw_",
        };
        (self.variant, infix)
    }

    /// Bytes of stack the call needs: its scratch.
    pub(super) fn stack_bytes(&self) -> usize {
        self.scratch * 4
    }
}

/// Packed weight blobs by (weight, offset, row stride, column stride, rows,
/// columns, variant, packed as A): one blob per distinct view.
type Blobs = HashMap<(usize, i64, i64, i64, u64, u64, Variant, bool), DataId>;

/// Every planned call of one program, keyed by the address of its `Matmul`
/// inside the program (the kernels are emitted from the same borrowed IR).
pub(crate) struct Gemms {
    plans: HashMap<usize, Plan>,
    /// Bias and residual operands folded into each call (same keys as `plans`).
    pub(super) operands: HashMap<usize, Operands>,
    /// Per (step, kernel): the planned matmuls and the stack slot size.
    kernels: HashMap<(usize, usize), (Vec<usize>, usize)>,
    /// Kernel imports by variant and symbol infix (see [`Plan::import`]).
    pub(super) imports: HashMap<(Variant, &'static str), FuncId>,
    /// `kiln_parallel_for`, when the code is multi-threaded.
    pub(super) par_for: Option<FuncId>,
    /// The row-block tasks to define (see `gemm_par.rs`).
    pub(super) tasks: Vec<super::gemm_par::Task>,
    /// Bytes of compile-time packed weights.
    pub packed_bytes: usize,
    /// Weights only read through packed copies (emitted as one byte).
    pub unread_weights: HashSet<usize>,
    /// Epilogue loops folded into a call (by statement address): not emitted.
    folded: HashSet<usize>,
}

/// The bias and residual of a folded epilogue.
#[derive(Clone, Debug, Default)]
pub(crate) struct Operands {
    pub(super) bias: Option<Operand>,
    pub(super) residual: Option<Operand>,
}

/// The `kiln_sgemm_[pa_]<variant>` C signature; `raw` adds B's two strides.
fn signature(cc: cranelift_codegen::isa::CallConv, raw: bool) -> Signature {
    let mut s = Signature::new(cc);
    for t in [
        I64, I64, I64, I64, I64, I64, I64, I64, I32, I64, I64, I64, F32, F32, I64, I64,
    ] {
        s.params.push(AbiParam::new(t));
    }
    if raw {
        s.params.push(AbiParam::new(I64));
        s.params.push(AbiParam::new(I64));
    }
    s.returns.push(AbiParam::new(I32));
    s
}

/// Symbols the JIT resolves to this process's kernels (GEMM and the
/// library routines of `library.rs`).
pub(crate) fn jit_symbols() -> Vec<(&'static str, *const u8)> {
    #[allow(unused_imports)]
    use kiln_runtime::{dwconv, gemm};
    #[cfg(target_arch = "x86_64")]
    let v: Vec<(&'static str, *const u8)> = vec![
        ("kiln_sgemm_avx2", gemm::kiln_sgemm_avx2 as *const u8),
        ("kiln_sgemm_avx512", gemm::kiln_sgemm_avx512 as *const u8),
        ("kiln_sgemm_pa_avx2", gemm::kiln_sgemm_pa_avx2 as *const u8),
        (
            "kiln_sgemm_pa_avx512",
            gemm::kiln_sgemm_pa_avx512 as *const u8,
        ),
        (
            "kiln_sgemm_raw_avx2",
            gemm::kiln_sgemm_raw_avx2 as *const u8,
        ),
        (
            "kiln_sgemm_raw_avx512",
            gemm::kiln_sgemm_raw_avx512 as *const u8,
        ),
        (
            "kiln_dwconv_f32_avx2",
            dwconv::kiln_dwconv_f32_avx2 as *const u8,
        ),
        (
            "kiln_dwconv_f32_avx512",
            dwconv::kiln_dwconv_f32_avx512 as *const u8,
        ),
        (
            "kiln_exp_rows_f32_avx512",
            kiln_runtime::func::kiln_exp_rows_f32_avx512 as *const u8,
        ),
        (
            "kiln_conv2d_f32_avx512",
            kiln_runtime::conv::kiln_conv2d_f32_avx512 as *const u8,
        ),
        (
            "kiln_maxpool2d_f32_avx512",
            kiln_runtime::maxpool::kiln_maxpool2d_f32_avx512 as *const u8,
        ),
    ];
    #[cfg(target_arch = "aarch64")]
    let v: Vec<(&'static str, *const u8)> = vec![
        ("kiln_sgemm_neon", gemm::kiln_sgemm_neon as *const u8),
        ("kiln_sgemm_pa_neon", gemm::kiln_sgemm_pa_neon as *const u8),
        (
            "kiln_sgemm_raw_neon",
            gemm::kiln_sgemm_raw_neon as *const u8,
        ),
        (
            "kiln_dwconv_f32_neon",
            dwconv::kiln_dwconv_f32_neon as *const u8,
        ),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let v: Vec<(&'static str, *const u8)> = vec![];
    v
}

/// Visits every `Matmul` under `body`, with the statements before and after it.
#[allow(clippy::type_complexity)]
fn walk<'p>(body: &'p [Stmt], f: &mut dyn FnMut(&'p Matmul, Option<&'p Stmt>, Option<&'p Stmt>)) {
    for (i, s) in body.iter().enumerate() {
        match s {
            Stmt::Matmul(m) => f(m, i.checked_sub(1).map(|p| &body[p]), body.get(i + 1)),
            Stmt::For { body, .. } | Stmt::While { body, .. } => walk(body, f),
            Stmt::If {
                then_body,
                else_body,
                ..
            } => {
                walk(then_body, f);
                walk(else_body, f);
            }
            Stmt::Let { .. } | Stmt::Store { .. } => {}
        }
    }
}

fn usize_of(x: i64) -> Option<usize> {
    usize::try_from(x).ok()
}

impl Gemms {
    /// Whether `s` is an epilogue folded into a kernel call (not to be emitted).
    pub(crate) fn folds(&self, s: &Stmt) -> bool {
        self.folded.contains(&(s as *const Stmt as usize))
    }

    /// Decides every matmul of `prog`, packs weight operands and declares
    /// the kernels used (as imports) and the packed blobs (local, read-only).
    pub(crate) fn plan<M: Module>(
        module: &mut M,
        prog: &AotProgram,
        name: &str,
        threads: bool,
        convs: &super::conv_call::ConvCalls,
    ) -> Result<Gemms, CpuError> {
        let ks = Kernels::of(module.isa());
        let mut g = Gemms {
            plans: HashMap::new(),
            operands: HashMap::new(),
            kernels: HashMap::new(),
            imports: HashMap::new(),
            par_for: None,
            tasks: vec![],
            packed_bytes: 0,
            unread_weights: HashSet::new(),
            folded: HashSet::new(),
        };
        // One blob per distinct (weight, view, variant).
        let mut blobs: Blobs = HashMap::new();
        for (si, step) in prog.steps.iter().enumerate() {
            for (ki, k) in step.program.kernels.iter().enumerate() {
                // Rendered as a direct-conv call: its body is not emitted.
                if convs.replaces(si, ki) {
                    continue;
                }
                let mut found: Vec<(&Matmul, Option<&Stmt>, Option<&Stmt>)> = vec![];
                walk(&k.body, &mut |m, prev, next| found.push((m, prev, next)));
                let mut keys = vec![];
                let mut stack = 0usize;
                for (mm, prev, next) in found {
                    let Some(mut plan) = g.plan_one(module, prog, si, mm, ks, name, &mut blobs)?
                    else {
                        continue;
                    };
                    let consts = |b: u32, i: i64| match step.bindings.get(b as usize) {
                        Some(BufferLoc::Weight(w)) => match prog.weights.get(*w).map(|w| &w.data) {
                            Some(Storage::F32(d)) => d.get(usize::try_from(i).ok()?).copied(),
                            _ => None,
                        },
                        _ => None,
                    };
                    let fold = super::gemm_epilogue::fold(mm, prev, next, &consts);
                    let f32_buf = |o: &Operand| {
                        step.program.buffers.get(o.buf as usize).map(|d| d.dtype)
                            == Some(DType::F32)
                            && o.buf != mm.c.buf
                    };
                    if fold.bias.as_ref().is_none_or(|(o, _)| f32_buf(o))
                        && fold.residual.as_ref().is_none_or(|(o, _)| f32_buf(o))
                    {
                        plan.act = fold.act;
                        plan.func = func_code(fold.func);
                        plan.accumulate = fold.accumulate;
                        plan.bias_rows = fold.bias.as_ref().is_some_and(|(_, r)| *r);
                        plan.ldr = fold.residual.as_ref().map_or(0, |(_, l)| *l);
                        g.folded.extend(fold.skip.iter().copied());
                        g.operands.insert(
                            mm as *const Matmul as usize,
                            Operands {
                                bias: fold.bias.map(|(o, _)| o),
                                residual: fold.residual.map(|(o, _)| o),
                            },
                        );
                    }
                    if threads {
                        let ops = g
                            .operands
                            .get(&(mm as *const Matmul as usize))
                            .cloned()
                            .unwrap_or_default();
                        plan.split = g.split(module, name, mm, plan, ops)?;
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        g.imports.entry(plan.import())
                    {
                        let cc = module.isa().default_call_conv();
                        let infix = plan.import().1;
                        let raw = matches!(plan.how, How::Raw);
                        let id = module
                            .declare_function(
                                &format!("kiln_sgemm_{infix}{}", plan.variant.name()),
                                Linkage::Import,
                                &signature(cc, raw),
                            )
                            .map_err(|e| CpuError::Codegen(e.to_string()))?;
                        e.insert(id);
                    }
                    if plan.split.is_none() {
                        stack = stack.max(plan.stack_bytes());
                    }
                    let key = mm as *const Matmul as usize;
                    g.plans.insert(key, plan);
                    keys.push(key);
                }
                if !keys.is_empty() {
                    g.kernels.insert((si, ki), (keys, stack));
                }
            }
        }
        let packed: HashSet<usize> = g
            .plans
            .iter()
            .filter(|(_, p)| matches!(p.how, How::Weight(_) | How::WeightA(_)))
            .map(|(k, _)| *k)
            .collect();
        g.unread_weights = super::gemm_weights::unread_weights(prog, &packed, convs);
        Ok(g)
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_one<M: Module>(
        &mut self,
        module: &mut M,
        prog: &AotProgram,
        si: usize,
        mm: &Matmul,
        ks: Kernels,
        name: &str,
        blobs: &mut Blobs,
    ) -> Result<Option<Plan>, CpuError> {
        let step = &prog.steps[si];
        let bufs = &step.program.buffers;
        let f32_buf = |b: u32| bufs.get(b as usize).map(|d| d.dtype) == Some(DType::F32);
        if !(f32_buf(mm.a.buf) && f32_buf(mm.b.buf) && f32_buf(mm.c.buf))
            || mm.c.buf == mm.a.buf
            || mm.c.buf == mm.b.buf
            || mm.c.col_stride != 1
            || mm.m == 0
            || mm.n == 0
            || mm.k == 0
        {
            return Ok(None);
        }
        let (Ok(m), Ok(n), Ok(k)) = (
            usize::try_from(mm.m),
            usize::try_from(mm.n),
            usize::try_from(mm.k),
        ) else {
            return Ok(None);
        };
        // The kernels want lda ≥ k, ldb ≥ n and ldc ≥ n; a single row has no stride.
        let a_rows_ok =
            mm.a.col_stride == 1 && (m == 1 || usize_of(mm.a.row_stride).is_some_and(|s| s >= k));
        let b_rows_ok =
            mm.b.col_stride == 1 && (k == 1 || usize_of(mm.b.row_stride).is_some_and(|s| s >= n));
        let ldc_ok = m == 1 || usize_of(mm.c.row_stride).is_some_and(|s| s >= n);
        if !ldc_ok {
            return Ok(None);
        }
        let weight =
            |v: &kiln_ir::kernel::MatView| match (step.bindings.get(v.buf as usize), &v.offset) {
                (Some(BufferLoc::Weight(w)), Expr::I(off, _)) => Some((*w, *off)),
                _ => None,
            };
        let plan = |variant: Variant, how: How, scratch: usize| Plan {
            variant,
            how,
            scratch,
            split: None,
            act: NO_ACT,
            func: 0,
            accumulate: mm.accumulate,
            bias_rows: false,
            ldr: 0,
            a_trans: false,
        };
        // A transposed (a convolution's column matrix as pixels × taps).
        let a_trans = !a_rows_ok
            && m > 1
            && mm.a.row_stride == 1
            && (k == 1 || usize_of(mm.a.col_stride).is_some_and(|s| s >= m));
        if let (Some(w), true) = (weight(&mm.b), a_rows_ok || a_trans) {
            let Some(variant) = ks.pick(n) else {
                return Ok(None);
            };
            let view = (&mm.b, k, n, false);
            let Some(id) = self.blob(module, prog, si, w, view, variant, name, blobs)? else {
                return Ok(None);
            };
            let scratch = variant
                .scratch_len(m, k)
                .min(SCRATCH_CAP_FLOATS)
                .max(variant.min_scratch_len(k));
            return Ok(Some(Plan {
                a_trans,
                ..plan(variant, How::Weight(id), scratch)
            }));
        }
        if let (Some(w), true) = (weight(&mm.a), b_rows_ok) {
            let Some(variant) = ks.pick(n) else {
                return Ok(None);
            };
            let view = (&mm.a, m, k, true);
            let Some(id) = self.blob(module, prog, si, w, view, variant, name, blobs)? else {
                return Ok(None);
            };
            let scratch = variant
                .scratch_len_pa(n, k)
                .min(SCRATCH_CAP_FLOATS)
                .max(variant.min_scratch_len_pa(k));
            return Ok(Some(plan(variant, How::WeightA(id), scratch)));
        }
        // B's strides as the kernel takes them (a single row or column has none).
        let bs = |s: i64, single: bool| {
            if single {
                Some(1)
            } else {
                usize_of(s).filter(|&s| s > 0)
            }
        };
        let (Some(_), Some(_)) = (bs(mm.b.row_stride, k == 1), bs(mm.b.col_stride, n == 1)) else {
            return Ok(None);
        };
        if !a_rows_ok || mm.m < RAW_MIN_M {
            return Ok(None);
        }
        let Some(variant) = ks.pick(n) else {
            return Ok(None);
        };
        let scratch = variant
            .scratch_len_raw(m, n, k)
            .min(2 * SCRATCH_CAP_FLOATS)
            .max(variant.min_scratch_len_raw(k));
        Ok(Some(plan(variant, How::Raw, scratch)))
    }

    /// The compile-time packed copy of a weight operand, declared once per
    /// distinct view: `view` is (matrix view, rows, columns, whether it is A).
    /// `None` when the weight is not f32 data the view fits.
    #[allow(clippy::too_many_arguments)]
    fn blob<M: Module>(
        &mut self,
        module: &mut M,
        prog: &AotProgram,
        si: usize,
        (wi, off): (usize, i64),
        view: (&kiln_ir::kernel::MatView, usize, usize, bool),
        variant: Variant,
        name: &str,
        blobs: &mut Blobs,
    ) -> Result<Option<DataId>, CpuError> {
        let (v, rows, cols, is_a) = view;
        let Some(Storage::F32(data)) = prog.weights.get(wi).map(|w| &w.data) else {
            return Ok(None);
        };
        let (Some(offu), Some(rs), Some(cs)) = (
            usize_of(off),
            usize_of(v.row_stride),
            usize_of(v.col_stride),
        ) else {
            return Ok(None);
        };
        let key = (
            wi,
            off,
            v.row_stride,
            v.col_stride,
            rows as u64,
            cols as u64,
            variant,
            is_a,
        );
        if let Some(id) = blobs.get(&key) {
            return Ok(Some(*id));
        }
        let src = data.get(offu..).unwrap_or(&[]);
        let packed = if is_a {
            kiln_runtime::gemm::pack_a_vec(variant, rows, cols, src, rs, cs)
        } else {
            kiln_runtime::gemm::pack_b_vec(variant, rows, cols, src, rs, cs)
        }
        .map_err(|e| CpuError::Kernel {
            node: prog.steps[si].node.clone(),
            kernel: "-".into(),
            msg: format!("packing weight '{}': {e}", prog.weights[wi].name),
        })?;
        let bytes: Vec<u8> = packed.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.packed_bytes += bytes.len();
        let id = module
            .declare_data(
                &format!("{name}_gemm_b{}", blobs.len()),
                Linkage::Local,
                false,
                false,
            )
            .map_err(|e| CpuError::Codegen(e.to_string()))?;
        let mut d = DataDescription::new();
        d.define(bytes.into_boxed_slice());
        d.set_align(64);
        module
            .define_data(id, &d)
            .map_err(|e| CpuError::Codegen(e.to_string()))?;
        blobs.insert(key, id);
        Ok(Some(id))
    }

    /// What a function emitted for kernel `ki` of step `si` needs: the
    /// kernels and blobs imported into `func`. `None` when it calls none.
    pub(crate) fn for_function<M: Module>(
        &self,
        module: &mut M,
        func: &mut Function,
        si: usize,
        ki: usize,
    ) -> Option<GemmCx> {
        let (keys, stack) = self.kernels.get(&(si, ki))?;
        let funcs = self
            .imports
            .iter()
            .map(|(v, id)| (*v, module.declare_func_in_func(*id, func)))
            .collect();
        let mut calls = HashMap::new();
        let mut gvs: HashMap<DataId, GlobalValue> = HashMap::new();
        for key in keys {
            let plan = self.plans[key];
            let ops = self.operands.get(key).cloned().unwrap_or_default();
            let gv = match plan.how {
                How::Weight(id) | How::WeightA(id) => Some(
                    *gvs.entry(id)
                        .or_insert_with(|| module.declare_data_in_func(id, func)),
                ),
                How::Raw => None,
            };
            calls.insert(*key, (plan, gv, ops));
        }
        let par_for = self.par_for.map(|id| module.declare_func_in_func(id, func));
        let mut tasks = HashMap::new();
        for key in keys {
            if let Some(id) = self.plans[key].split {
                tasks.insert(id, module.declare_func_in_func(id, func));
            }
        }
        Some(GemmCx {
            folded: self.folded.clone(),
            calls,
            funcs,
            par_for,
            tasks,
            stack_bytes: *stack,
            slot: None,
        })
    }
}

/// The planned calls of one function being built.
pub(crate) struct GemmCx {
    calls: HashMap<usize, (Plan, Option<GlobalValue>, Operands)>,
    funcs: HashMap<(Variant, &'static str), FuncRef>,
    par_for: Option<FuncRef>,
    tasks: HashMap<FuncId, FuncRef>,
    folded: HashSet<usize>,
    stack_bytes: usize,
    slot: Option<StackSlot>,
}

/// Emits `mm` as kernel calls if it was planned so; `Ok(false)` otherwise.
pub(crate) fn emit(cx: &mut KernelCx, mm: &Matmul, offs: [Value; 3]) -> R<bool> {
    let Some(mut g) = cx.gemm.take() else {
        return Ok(false);
    };
    let r = g.emit(cx, mm, offs);
    cx.gemm = Some(g);
    r
}

impl GemmCx {
    /// Whether `s` is an epilogue folded into a kernel call (not to be emitted).
    pub(crate) fn folds(&self, s: &Stmt) -> bool {
        self.folded.contains(&(s as *const Stmt as usize))
    }

    fn emit(&mut self, cx: &mut KernelCx, mm: &Matmul, offs: [Value; 3]) -> R<bool> {
        let Some((plan, gv, ops)) = self.calls.get(&(mm as *const Matmul as usize)).cloned() else {
            return Ok(false);
        };
        let mut operand = |o: &Option<Operand>| -> R<Value> {
            match o {
                Some(o) => {
                    let off = cx.eval_index(&o.offset)?;
                    Ok(cx.elem_addr(o.buf, off)?.0)
                }
                None => Ok(cx.b.ins().iconst(I64, 0)),
            }
        };
        let extra = [operand(&ops.bias)?, operand(&ops.residual)?];
        let pa = cx.elem_addr(mm.a.buf, offs[0])?.0;
        let pc = cx.elem_addr(mm.c.buf, offs[2])?.0;
        let packed = |cx: &mut KernelCx| -> R<Value> {
            let gv = gv.ok_or("matmul: packed weight not imported")?;
            Ok(cx.b.ins().symbol_value(I64, gv))
        };
        let (pa, pb) = match plan.how {
            How::Weight(_) => (pa, packed(cx)?),
            How::WeightA(_) => (packed(cx)?, cx.elem_addr(mm.b.buf, offs[1])?.0),
            How::Raw => (pa, cx.elem_addr(mm.b.buf, offs[1])?.0),
        };
        if let Some(id) = plan.split {
            let task = *self.tasks.get(&id).ok_or("matmul: task not imported")?;
            let par = self
                .par_for
                .ok_or("matmul: kiln_parallel_for not imported")?;
            let blocks = i64::try_from(super::gemm_par::blocks(mm, &plan))
                .map_err(|_| "matmul too large")?;
            let [pbias, pres] = extra;
            super::gemm_par::call(cx, blocks, [pa, pb, pc, pbias, pres], task, par);
            return Ok(true);
        }
        let func = *self
            .funcs
            .get(&plan.import())
            .ok_or("matmul: kernel not imported")?;
        let slot = match self.slot {
            Some(s) => s,
            None => {
                let size =
                    u32::try_from(self.stack_bytes).map_err(|_| "matmul: scratch too large")?;
                let s = cx.b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    size,
                    4,
                ));
                self.slot = Some(s);
                s
            }
        };
        let m = cx.b.ins().iconst(I64, mm.m as i64);
        let n = cx.b.ins().iconst(I64, mm.n as i64);
        body(cx, mm, plan, func, slot, [pa, pb, pc], extra, [m, n])?;
        Ok(true)
    }
}

/// The calls of one planned matmul over `mn` rows and columns (values: a
/// task's share) from A, B (packed weight or source), C at `ptrs`, with the
/// folded bias and residual at `extra` (null when absent).
#[allow(clippy::too_many_arguments)]
pub(super) fn body(
    cx: &mut KernelCx,
    mm: &Matmul,
    plan: Plan,
    func: FuncRef,
    slot: StackSlot,
    ptrs: [Value; 3],
    extra: [Value; 2],
    mn: [Value; 2],
) -> R<()> {
    let [m, n] = mn;
    {
        let [pa, pb, pc] = ptrs;
        let scratch = cx.b.ins().stack_addr(I64, slot, 0);
        let call = Call {
            func,
            m,
            // A packed-A call takes B's row stride in this slot.
            lda: match plan.how {
                How::WeightA(_) if mm.k == 1 => mm.n as i64,
                How::WeightA(_) => mm.b.row_stride,
                _ if plan.a_trans && mm.k == 1 => mm.m as i64,
                _ if plan.a_trans => mm.a.col_stride,
                _ if mm.m == 1 => mm.k as i64,
                _ => mm.a.row_stride,
            },
            ldc: if mm.m == 1 {
                mm.n as i64
            } else {
                mm.c.row_stride
            },
            scratch,
            scratch_len: plan.scratch as i64,
            ldr: plan.ldr,
            b_strides: matches!(plan.how, How::Raw).then(|| {
                let single = |s: i64, one: bool| if one { 1 } else { s };
                (
                    single(mm.b.row_stride, mm.k == 1),
                    single(mm.b.col_stride, mm.n == 1),
                )
            }),
        };
        let flags = plan.accumulate as i64
            | (plan.bias_rows as i64) << 1
            | (plan.a_trans as i64) << 2
            | (plan.func as i64) << 8;
        let flags = cx.b.ins().iconst(I32, flags);
        let act = act_values(cx, plan.act);
        let [bias, res] = extra;
        let epi = CallEpi {
            flags,
            bias,
            res,
            act,
        };
        call.emit(cx, n, mm.k as i64, [pa, pb, pc], epi);
        Ok(())
    }
}

/// The arguments every call of one matmul shares.
pub(super) struct Call {
    func: FuncRef,
    m: Value,
    lda: i64,
    ldc: i64,
    scratch: Value,
    scratch_len: i64,
    /// Row stride of the residual (0 without one).
    ldr: i64,
    /// B's row and column strides, for a call with both operands raw.
    b_strides: Option<(i64, i64)>,
}

/// The epilogue arguments of one call: flags, bias and residual addresses
/// (0 for none), clamp bounds.
pub(super) struct CallEpi {
    pub(super) flags: Value,
    pub(super) bias: Value,
    pub(super) res: Value,
    pub(super) act: [Value; 2],
}

/// The clamp bounds as values.
pub(super) fn act_values(cx: &mut KernelCx, act: (f32, f32)) -> [Value; 2] {
    [cx.b.ins().f32const(act.0), cx.b.ins().f32const(act.1)]
}

impl Call {
    /// `kiln_sgemm_<v>(m, n, k, a, lda, b, c, ldc, flags, bias, res, ldr,
    /// lo, hi, scratch, len)`, trapping on a non-zero status.
    pub(super) fn emit(&self, cx: &mut KernelCx, n: Value, k: i64, abc: [Value; 3], epi: CallEpi) {
        let [a, b, c] = abc;
        let [lo, hi] = epi.act;
        let ins = |cx: &mut KernelCx, v: i64| cx.b.ins().iconst(I64, v);
        let (m, k) = (self.m, ins(cx, k));
        let (lda, ldc) = (ins(cx, self.lda), ins(cx, self.ldc));
        let ldr = ins(cx, self.ldr);
        let len = ins(cx, self.scratch_len);
        let args = [
            m,
            n,
            k,
            a,
            lda,
            b,
            c,
            ldc,
            epi.flags,
            epi.bias,
            epi.res,
            ldr,
            lo,
            hi,
            self.scratch,
            len,
        ];
        let mut args = args.to_vec();
        if let Some((rs, cs)) = self.b_strides {
            args.push(ins(cx, rs));
            args.push(ins(cx, cs));
        }
        let inst = cx.b.ins().call(self.func, &args);
        let rc = cx.b.inst_results(inst)[0];
        cx.b.ins().trapnz(rc, TrapCode::unwrap_user(GEMM_TRAP));
    }
}
