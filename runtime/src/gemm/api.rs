//! The checked entry points: the safe Rust API ([`sgemm`], [`pack_b`]) and
//! the C ABI the generated code calls. Every shape, stride and buffer is
//! checked here so that the kernels below can run unchecked.

use super::driver::{self, Args};
use super::packed_a;
use super::{Epilogue, Func, GemmError, Variant};

/// Whether the CPU running this code can execute `variant`. With an OS the
/// CPU is asked (the answer is cached by `std`); on bare metal, only what
/// the build's target features promise counts.
fn cpu_supports(variant: Variant) -> bool {
    #[cfg(any(feature = "std", not(target_os = "none"), test))]
    {
        variant.is_supported()
    }
    #[cfg(not(any(feature = "std", not(target_os = "none"), test)))]
    {
        match variant {
            Variant::Scalar => true,
            Variant::Avx2 => cfg!(all(target_feature = "avx2", target_feature = "fma")),
            Variant::Avx512 => cfg!(target_feature = "avx512f"),
            Variant::Neon => cfg!(target_arch = "aarch64"),
        }
    }
}

/// Floats spanned by `rows` rows of `cols` floats `stride` apart.
fn span(rows: usize, cols: usize, stride: usize) -> Result<usize, GemmError> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(cols))
        .ok_or(GemmError::Overflow)
}

fn check_stride(what: &'static str, stride: usize, min: usize) -> Result<(), GemmError> {
    if stride < min {
        return Err(GemmError::Stride { what, stride, min });
    }
    Ok(())
}

fn check_len(what: &'static str, needed: usize, got: usize) -> Result<(), GemmError> {
    if got < needed {
        return Err(GemmError::BufferTooSmall { what, needed, got });
    }
    Ok(())
}

/// The operands of a checked call: `A` at `a` (row stride `lda`, 0 when
/// packed), `B` at `b` (raw strides `ldb_cs`, `(0, 0)` when packed), and the
/// epilogue's slices. Refuses a residual together with accumulation.
#[allow(clippy::too_many_arguments)]
fn slice_args(
    [m, n, k]: [usize; 3],
    (a, lda): (&[f32], usize),
    b: &[f32],
    ldb_cs: (usize, usize),
    (c, ldc): (&mut [f32], usize),
    epilogue: &Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<Args, GemmError> {
    if epilogue.accumulate && epilogue.residual.is_some() {
        return Err(GemmError::ResidualWithAccumulate);
    }
    let (lo, hi) = epilogue.activation.bounds();
    let func = epilogue.activation.func();
    Ok(Args {
        m,
        n,
        k,
        a: a.as_ptr(),
        lda,
        b: b.as_ptr(),
        c: c.as_mut_ptr(),
        ldc,
        accumulate: epilogue.accumulate,
        bias: epilogue.bias.map_or(core::ptr::null(), <[f32]>::as_ptr),
        bias_rows: epilogue.bias_rows,
        res: epilogue
            .residual
            .map_or(core::ptr::null(), |(r, _)| r.as_ptr()),
        ldr: epilogue.residual.map_or(0, |(_, l)| l),
        lo,
        hi,
        func,
        scratch: scratch.as_mut_ptr(),
        scratch_len: scratch.len(),
        ldb_cs,
        a_trans: false,
    })
}

/// The bias and residual slices against an `m × n` `C`.
fn check_epilogue(epilogue: &Epilogue<'_>, m: usize, n: usize) -> Result<(), GemmError> {
    if let Some(bias) = epilogue.bias {
        check_len("bias", if epilogue.bias_rows { m } else { n }, bias.len())?;
    }
    if let Some((r, ldr)) = epilogue.residual {
        check_stride("ldr", ldr, n)?;
        check_len("residual", span(m, n, ldr)?, r.len())?;
    }
    Ok(())
}

/// Packs `B` (`k × n`, element `(p, j)` at `b[p·rs + j·cs]`) for `variant`
/// into `out[..variant.packed_b_len(k, n)]`. Row-major `B` has `rs = ldb`,
/// `cs = 1`; a transposed one (ONNX `Gemm` with `transB`, or convolution
/// weights `[C_out, C_in·kh·kw]`) has `rs = 1`, `cs = ld`.
///
/// A pure function of its inputs, so the compiler runs it at compile time
/// and stores the result as the weight constant.
pub fn pack_b(
    variant: Variant,
    k: usize,
    n: usize,
    b: &[f32],
    rs: usize,
    cs: usize,
    out: &mut [f32],
) -> Result<(), GemmError> {
    let needed = variant
        .blocking()
        .nr
        .checked_mul(n.div_ceil(variant.blocking().nr))
        .and_then(|x| x.checked_mul(k))
        .ok_or(GemmError::Overflow)?;
    check_len("packed B", needed, out.len())?;
    check_len("B", raw_span(k, n, rs, cs)?, b.len())?;
    driver::pack_b(variant.blocking(), k, n, b, rs, cs, out);
    Ok(())
}

/// [`pack_b`] into a new vector (for the compiler, which has an allocator).
#[cfg(any(feature = "std", not(target_os = "none"), test))]
pub fn pack_b_vec(
    variant: Variant,
    k: usize,
    n: usize,
    b: &[f32],
    rs: usize,
    cs: usize,
) -> Result<std::vec::Vec<f32>, GemmError> {
    let len = k
        .checked_mul(n.div_ceil(variant.blocking().nr) * variant.blocking().nr)
        .ok_or(GemmError::Overflow)?;
    let mut out = std::vec![0.0; len];
    pack_b(variant, k, n, b, rs, cs, &mut out)?;
    Ok(out)
}

/// `C = act(A·B + (accumulate ? C : 0) + bias)` with `A` (`m × k`, row
/// stride `lda`), `B` packed by [`pack_b`] for the same `variant`, and `C`
/// (`m × n`, row stride `ldc`). `scratch` needs at least
/// [`Variant::min_scratch_len`] floats, [`Variant::scratch_len`] for speed.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    variant: Variant,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b_packed: &[f32],
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<(), GemmError> {
    sgemm_with_a(
        variant,
        [m, n, k],
        (a, lda, false),
        b_packed,
        (c, ldc),
        epilogue,
        scratch,
    )
}

/// [`sgemm`], or with `A` stored transposed (`a_trans`: element `(i, p)`
/// at `a[p·lda + i]`, `lda ≥ m`), as a convolution's column matrix (taps ×
/// pixels) is the `A` of `Cᵀ = colᵀ · Wᵀ`. Generated code reaches the
/// transposed form through flag bit 2 of `kiln_sgemm_<variant>`.
pub(crate) fn sgemm_with_a(
    variant: Variant,
    [m, n, k]: [usize; 3],
    (a, lda, a_trans): (&[f32], usize, bool),
    b_packed: &[f32],
    (c, ldc): (&mut [f32], usize),
    epilogue: &Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<(), GemmError> {
    if !variant.is_compiled() {
        return Err(GemmError::NotCompiled { variant });
    }
    let (a_rows, a_cols) = if a_trans { (k, m) } else { (m, k) };
    check_stride("lda", lda, a_cols)?;
    check_stride("ldc", ldc, n)?;
    if m > 0 && n > 0 {
        check_len("A", span(a_rows, a_cols, lda)?, a.len())?;
        let packed = k
            .checked_mul(n.div_ceil(variant.blocking().nr) * variant.blocking().nr)
            .ok_or(GemmError::Overflow)?;
        check_len("packed B", packed, b_packed.len())?;
        check_len("C", span(m, n, ldc)?, c.len())?;
        check_epilogue(epilogue, m, n)?;
    }
    let mut args = slice_args(
        [m, n, k],
        (a, lda),
        b_packed,
        (0, 0),
        (c, ldc),
        epilogue,
        scratch,
    )?;
    args.a_trans = a_trans;
    // SAFETY: every extent was checked against its slice above.
    unsafe { run(variant, &args, Mode::PackedB) }
}

/// Which operand was packed ahead of time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `B` packed by [`pack_b`], `A` raw (packed by the call).
    PackedB,
    /// `A` packed by [`pack_a`], `B` raw (packed by the call).
    PackedA,
    /// Neither: both packed by the call (two activations, as in attention).
    Raw,
}

/// Checks what can be checked of raw operands (nulls, strides, scratch, the
/// CPU), then runs the variant's kernel in `mode`.
///
/// # Safety
/// The pointers cover the extents their shapes and strides imply.
unsafe fn run(variant: Variant, args: &Args, mode: Mode) -> Result<(), GemmError> {
    if args.m == 0 || args.n == 0 {
        return Ok(());
    }
    if args.a_trans {
        if mode != Mode::PackedB {
            return Err(GemmError::Stride {
                what: "transposed A outside a packed-B call",
                stride: 0,
                min: 1,
            });
        }
        check_stride("lda", args.lda, args.m)?;
        span(args.k, args.m, args.lda)?;
    } else if mode != Mode::PackedA {
        check_stride("lda", args.lda, args.k)?;
    }
    if mode != Mode::PackedB && args.k > 0 {
        let (rs, cs) = args.ldb_cs;
        if cs == 0 || rs == 0 {
            return Err(GemmError::Stride {
                what: "B stride",
                stride: 0,
                min: 1,
            });
        }
        raw_span(args.k, args.n, rs, cs)?;
    }
    check_stride("ldc", args.ldc, args.n)?;
    if !args.a_trans {
        span(args.m, args.k, args.lda)?;
    }
    span(args.m, args.n, args.ldc)?;
    if !args.res.is_null() {
        check_stride("ldr", args.ldr, args.n)?;
        span(args.m, args.n, args.ldr)?;
    }
    if args.c.is_null() {
        return Err(GemmError::NullPointer { what: "C" });
    }
    if args.k > 0 {
        if args.a.is_null() {
            return Err(GemmError::NullPointer { what: "A" });
        }
        if args.b.is_null() {
            return Err(GemmError::NullPointer { what: "B" });
        }
        if args.scratch.is_null() {
            return Err(GemmError::NullPointer { what: "scratch" });
        }
        let min = match mode {
            Mode::PackedB => variant.min_scratch_len(args.k),
            Mode::PackedA => variant.min_scratch_len_pa(args.k),
            Mode::Raw => variant.min_scratch_len_raw(args.k),
        };
        check_len("scratch", min, args.scratch_len)?;
    }
    if !variant.is_compiled() {
        return Err(GemmError::NotCompiled { variant });
    }
    if !cpu_supports(variant) {
        return Err(GemmError::Unsupported { variant });
    }
    macro_rules! go {
        ($k:ty) => {
            if mode == Mode::PackedA {
                packed_a::gemm::<$k>(args)
            } else {
                driver::gemm::<$k>(args)
            }
        };
    }
    match variant {
        Variant::Scalar => go!(super::scalar::Scalar),
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => go!(super::avx2::Avx2),
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => go!(super::avx512::Avx512),
        #[cfg(target_arch = "aarch64")]
        Variant::Neon => go!(super::neon::Neon),
        #[allow(unreachable_patterns)]
        _ => return Err(GemmError::NotCompiled { variant }),
    }
    Ok(())
}

/// Packs `A` (`m × k`, element `(i, p)` at `a[i·rs + p·cs]`) for a
/// packed-`A` GEMM of `variant` into `out[..variant.packed_a_len(m, k)]`
/// (layout in `packed_a.rs`). Convolution weights `[C_out, C_in·kh·kw]`
/// have `rs = C_in·kh·kw`, `cs = 1`. A pure function: the compiler runs it.
pub fn pack_a(
    variant: Variant,
    m: usize,
    k: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
    out: &mut [f32],
) -> Result<(), GemmError> {
    let needed = variant.packed_a_len(m, k);
    if needed == usize::MAX {
        return Err(GemmError::Overflow);
    }
    check_len("packed A", needed, out.len())?;
    check_len("A", raw_span(m, k, rs, cs)?, a.len())?;
    packed_a::pack_a(variant.blocking(), m, k, a, rs, cs, out);
    Ok(())
}

/// [`pack_a`] into a new vector.
#[cfg(any(feature = "std", not(target_os = "none"), test))]
pub fn pack_a_vec(
    variant: Variant,
    m: usize,
    k: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
) -> Result<std::vec::Vec<f32>, GemmError> {
    let mut out = std::vec![0.0; variant.packed_a_len(m, k)];
    pack_a(variant, m, k, a, rs, cs, &mut out)?;
    Ok(out)
}

/// `C = act(A·B + (accumulate ? C : residual) + bias)` with `A` packed by
/// [`pack_a`] for the same `variant` and `B` (`k × n`) row-major with row
/// stride `ldb`. `scratch` needs [`Variant::min_scratch_len_pa`] floats,
/// [`Variant::scratch_len_pa`] for speed.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_pa(
    variant: Variant,
    m: usize,
    n: usize,
    k: usize,
    a_packed: &[f32],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<(), GemmError> {
    if !variant.is_compiled() {
        return Err(GemmError::NotCompiled { variant });
    }
    check_stride("ldb", ldb, n)?;
    check_stride("ldc", ldc, n)?;
    if m > 0 && n > 0 {
        check_len("packed A", variant.packed_a_len(m, k), a_packed.len())?;
        check_len("B", span(k, n, ldb)?, b.len())?;
        check_len("C", span(m, n, ldc)?, c.len())?;
        check_epilogue(epilogue, m, n)?;
    }
    let args = slice_args(
        [m, n, k],
        (a_packed, 0),
        b,
        (ldb, 1),
        (c, ldc),
        epilogue,
        scratch,
    )?;
    // SAFETY: every extent was checked against its slice above.
    unsafe { run(variant, &args, Mode::PackedA) }
}

/// `C = act(A·B + (accumulate ? C : residual) + bias)` with neither operand
/// packed ahead of time: `A` row-major (row stride `lda`), `B` element
/// `(p, j)` at `b[p·rs + j·cs]` (`cs = 1`: row-major; `rs = 1`: a transposed
/// matrix). `scratch` needs [`Variant::min_scratch_len_raw`] floats,
/// [`Variant::scratch_len_raw`] for speed.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_raw(
    variant: Variant,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    (rs, cs): (usize, usize),
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<(), GemmError> {
    if !variant.is_compiled() {
        return Err(GemmError::NotCompiled { variant });
    }
    check_stride("lda", lda, k)?;
    check_stride("ldc", ldc, n)?;
    if m > 0 && n > 0 {
        check_len("A", span(m, k, lda)?, a.len())?;
        check_len("B", raw_span(k, n, rs, cs)?, b.len())?;
        check_len("C", span(m, n, ldc)?, c.len())?;
        check_epilogue(epilogue, m, n)?;
    }
    let args = slice_args(
        [m, n, k],
        (a, lda),
        b,
        (rs, cs),
        (c, ldc),
        epilogue,
        scratch,
    )?;
    // SAFETY: every extent was checked against its slice above.
    unsafe { run(variant, &args, Mode::Raw) }
}

/// Floats spanned by a `rows × cols` matrix with strides `(rs, cs)`.
fn raw_span(rows: usize, cols: usize, rs: usize, cs: usize) -> Result<usize, GemmError> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|x| (cols - 1).checked_mul(cs).and_then(|y| x.checked_add(y)))
        .and_then(|x| x.checked_add(1))
        .ok_or(GemmError::Overflow)
}

/// The operands of a C entry point; `flags` bit 0 accumulates (and then
/// ignores the residual), bit 1 takes one bias per row.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn c_args(
    [m, n, k]: [usize; 3],
    (a, lda): (*const f32, usize),
    b: *const f32,
    (c, ldc): (*mut f32, usize),
    flags: u32,
    (bias, residual, ldr): (*const f32, *const f32, usize),
    (lo, hi): (f32, f32),
    (scratch, scratch_len): (*mut f32, usize),
    ldb_cs: (usize, usize),
) -> Args {
    let accumulate = flags & 1 != 0;
    Args {
        m,
        n,
        k,
        a,
        lda,
        b,
        c,
        ldc,
        accumulate,
        bias,
        bias_rows: flags & 2 != 0,
        res: if accumulate {
            core::ptr::null()
        } else {
            residual
        },
        ldr,
        lo,
        hi,
        // An unknown code is refused by `check_flags` first.
        func: Func::from_code((flags >> 8) & 0xf).unwrap_or(Func::Identity),
        scratch,
        scratch_len,
        ldb_cs,
        a_trans: flags & 4 != 0,
    }
}

/// Refuses an activation code this runtime does not know.
fn check_flags(flags: u32) -> Result<(), GemmError> {
    let code = (flags >> 8) & 0xf;
    match Func::from_code(code) {
        Some(_) => Ok(()),
        None => Err(GemmError::UnknownActivation { code }),
    }
}

/// Defines the C entry point of one variant (signature in the module docs).
macro_rules! c_entry {
    ($(#[$attr:meta])* $name:ident, $variant:expr) => {
        c_entry!($(#[$attr])* $name, $variant, false);
    };
    ($(#[$attr:meta])* $name:ident, $variant:expr, $packed_a:expr) => {
        $(#[$attr])*
        ///
        /// Returns 0, or a negative [`GemmError::code`] (and leaves `C`
        /// untouched) when a pointer is null, a stride is short, the scratch
        /// is under the minimum or the CPU lacks the instructions.
        ///
        /// Packed-`A` entries (`kiln_sgemm_pa_*`) take `(a_packed, ldb, b)`
        /// in place of `(a, lda, b_packed)`: `A` packed by [`pack_a`], `B`
        /// `k` rows of `n` floats `ldb` apart, scratch at least
        /// `NR·min(k, KC)` floats ([`Variant::min_scratch_len_pa`]).
        ///
        /// # Safety
        /// `a` covers `m` rows of `k` floats `lda` apart, `b_packed` the
        /// variant's `packed_b_len(k, n)` floats, `c` `m` rows of `n` floats
        /// `ldc` apart, `bias` (if not null) `n` floats (`m` with flag
        /// bit 1), `residual` (if not null) `m` rows of `n` floats `ldr`
        /// apart, and `scratch` `scratch_len` floats; `c` and `scratch`
        /// overlap nothing else. `flags`: bit 0 accumulate into `C` (then
        /// `residual` is ignored), bit 1 one bias value per row.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            m: usize,
            n: usize,
            k: usize,
            a: *const f32,
            stride: usize,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            flags: u32,
            bias: *const f32,
            residual: *const f32,
            ldr: usize,
            act_min: f32,
            act_max: f32,
            scratch: *mut f32,
            scratch_len: usize,
        ) -> i32 {
            if let Err(e) = check_flags(flags) {
                return e.code();
            }
            let args = c_args(
                [m, n, k],
                (a, if $packed_a { 0 } else { stride }),
                b,
                (c, ldc),
                flags,
                (bias, residual, ldr),
                (act_min, act_max),
                (scratch, scratch_len),
                if $packed_a { (stride, 1) } else { (0, 0) },
            );
            let mode = if $packed_a { Mode::PackedA } else { Mode::PackedB };
            match run($variant, &args, mode) {
                Ok(()) => 0,
                Err(e) => e.code(),
            }
        }
    };
}

c_entry!(
    /// Portable f32 GEMM with fused bias and clamp (any target).
    kiln_sgemm_scalar,
    Variant::Scalar
);
c_entry!(
    /// AVX2+FMA f32 GEMM with fused bias and clamp (6×16 tile).
    #[cfg(target_arch = "x86_64")]
    kiln_sgemm_avx2,
    Variant::Avx2
);
c_entry!(
    /// AVX-512F f32 GEMM with fused bias and clamp (12×32 tile).
    #[cfg(target_arch = "x86_64")]
    kiln_sgemm_avx512,
    Variant::Avx512
);
c_entry!(
    /// NEON f32 GEMM with fused bias and clamp (8×12 tile).
    #[cfg(target_arch = "aarch64")]
    kiln_sgemm_neon,
    Variant::Neon
);

c_entry!(
    /// Portable f32 GEMM, `A` packed ahead of time.
    kiln_sgemm_pa_scalar,
    Variant::Scalar,
    true
);
c_entry!(
    /// AVX2+FMA f32 GEMM, `A` packed ahead of time (6×16 tile).
    #[cfg(target_arch = "x86_64")]
    kiln_sgemm_pa_avx2,
    Variant::Avx2,
    true
);
c_entry!(
    /// AVX-512F f32 GEMM, `A` packed ahead of time (12×32 tile).
    #[cfg(target_arch = "x86_64")]
    kiln_sgemm_pa_avx512,
    Variant::Avx512,
    true
);
c_entry!(
    /// NEON f32 GEMM, `A` packed ahead of time (8×12 tile).
    #[cfg(target_arch = "aarch64")]
    kiln_sgemm_pa_neon,
    Variant::Neon,
    true
);

/// Defines the C entry point of one variant with both operands raw:
/// `kiln_sgemm_raw_<variant>(m, n, k, a, lda, b, c, ldc, flags, bias,
/// residual, ldr, act_min, act_max, scratch, scratch_len, b_rs, b_cs)`.
macro_rules! c_entry_raw {
    ($(#[$attr:meta])* $name:ident, $variant:expr) => {
        $(#[$attr])*
        ///
        /// As the packed-`B` entries, with `B` raw: element `(p, j)` at
        /// `b[p·b_rs + j·b_cs]`; scratch at least `(MR + NR)·min(k, KC)`
        /// floats ([`Variant::min_scratch_len_raw`]).
        ///
        /// # Safety
        /// As the packed-`B` entries, `b` covering its strided extent.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            m: usize,
            n: usize,
            k: usize,
            a: *const f32,
            lda: usize,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            flags: u32,
            bias: *const f32,
            residual: *const f32,
            ldr: usize,
            act_min: f32,
            act_max: f32,
            scratch: *mut f32,
            scratch_len: usize,
            b_rs: usize,
            b_cs: usize,
        ) -> i32 {
            if let Err(e) = check_flags(flags) {
                return e.code();
            }
            let args = c_args(
                [m, n, k],
                (a, lda),
                b,
                (c, ldc),
                flags,
                (bias, residual, ldr),
                (act_min, act_max),
                (scratch, scratch_len),
                (b_rs, b_cs),
            );
            match run($variant, &args, Mode::Raw) {
                Ok(()) => 0,
                Err(e) => e.code(),
            }
        }
    };
}

c_entry_raw!(
    /// Portable f32 GEMM of two raw operands.
    kiln_sgemm_raw_scalar,
    Variant::Scalar
);
c_entry_raw!(
    /// AVX2+FMA f32 GEMM of two raw operands.
    #[cfg(target_arch = "x86_64")]
    kiln_sgemm_raw_avx2,
    Variant::Avx2
);
c_entry_raw!(
    /// AVX-512F f32 GEMM of two raw operands.
    #[cfg(target_arch = "x86_64")]
    kiln_sgemm_raw_avx512,
    Variant::Avx512
);
c_entry_raw!(
    /// NEON f32 GEMM of two raw operands.
    #[cfg(target_arch = "aarch64")]
    kiln_sgemm_raw_neon,
    Variant::Neon
);

/// Floats of packed `B` for `variant` (C ABI code); 0 for an unknown code.
#[no_mangle]
pub extern "C" fn kiln_sgemm_packed_b_len(variant: u32, k: usize, n: usize) -> usize {
    Variant::from_code(variant).map_or(0, |v| v.packed_b_len(k, n))
}

/// Scratch floats for full speed (see [`Variant::scratch_len`]); 0 for an
/// unknown code.
#[no_mangle]
pub extern "C" fn kiln_sgemm_scratch_len(variant: u32, m: usize, k: usize) -> usize {
    Variant::from_code(variant).map_or(0, |v| v.scratch_len(m, k))
}
