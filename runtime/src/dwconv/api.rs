//! The checked entry points: the safe Rust API ([`dwconv`]) and the C ABI
//! the generated code calls. Every size, pointer and coordinate range is
//! checked here so that the kernels can index without checks.

use super::{Activation, DwError, DwGeometry, Func, Variant};

/// The operands of one call, as the C entry points take them (one pointer
/// to this struct instead of nineteen arguments). Layout: four pointers,
/// thirteen `size_t`, two `float`, in this order; `KilnDwArgs` in
/// `kiln_runtime.h` mirrors it.
///
/// `x` holds `channels` planes of `in_h × in_w`, `w` `channels` kernels of
/// `k_h × k_w`, `bias` `channels` values or is null, `y` `channels` planes
/// of `out_h × out_w`; all dense, NCHW. `y` overlaps none of the others.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KilnDwArgs {
    pub x: *const f32,
    pub w: *const f32,
    pub bias: *const f32,
    pub y: *mut f32,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub act_min: f32,
    pub act_max: f32,
    /// The [`Func`] code applied before the clamp (0: none).
    pub func: u32,
}

impl KilnDwArgs {
    /// The arguments of geometry `g` over the given planes and clamp.
    pub const fn new(
        g: &DwGeometry,
        (x, w, bias, y): (*const f32, *const f32, *const f32, *mut f32),
        (act_min, act_max): (f32, f32),
    ) -> KilnDwArgs {
        KilnDwArgs {
            x,
            w,
            bias,
            y,
            channels: g.channels,
            in_h: g.in_h,
            in_w: g.in_w,
            out_h: g.out_h,
            out_w: g.out_w,
            k_h: g.k_h,
            k_w: g.k_w,
            stride_h: g.stride_h,
            stride_w: g.stride_w,
            pad_top: g.pad_top,
            pad_left: g.pad_left,
            dil_h: g.dil_h,
            dil_w: g.dil_w,
            act_min,
            act_max,
            func: Func::Identity as u32,
        }
    }

    /// The same arguments with `f` applied before the clamp.
    pub const fn with_func(mut self, f: Func) -> KilnDwArgs {
        self.func = f as u32;
        self
    }

    /// The function applied before the clamp (identity for an unknown
    /// code, which [`run`] refuses first).
    pub(crate) fn func(&self) -> Func {
        Func::from_code(self.func).unwrap_or(Func::Identity)
    }

    /// The shape part of the arguments.
    pub const fn geometry(&self) -> DwGeometry {
        DwGeometry {
            channels: self.channels,
            in_h: self.in_h,
            in_w: self.in_w,
            out_h: self.out_h,
            out_w: self.out_w,
            k_h: self.k_h,
            k_w: self.k_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            pad_top: self.pad_top,
            pad_left: self.pad_left,
            dil_h: self.dil_h,
            dil_w: self.dil_w,
        }
    }
}

/// Whether the CPU running this code can execute `variant`. With an OS the
/// CPU is asked (the answer is cached by `std`); on bare metal, only what
/// the build's target features promise counts. The same test as the GEMM
/// entry points, so that a variant either runs both or neither.
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

/// Element counts of the operands (`x`, `w`, `y`), if they fit `usize`.
pub(crate) struct Extents {
    pub x: usize,
    pub w: usize,
    pub y: usize,
}

impl DwGeometry {
    /// Checks the parameters and that every count and coordinate the
    /// kernels compute fits `usize`; returns the operands' float counts.
    ///
    /// Beyond the buffer sizes, the kernels form `oy·stride_h + ky·dil_h`
    /// (padded row coordinates, compared with `pad_top + in_h`) and the
    /// same across, so the largest of each must not wrap.
    pub(crate) fn extents(&self) -> Result<Extents, DwError> {
        for (what, v) in [
            ("k_h", self.k_h),
            ("k_w", self.k_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
            ("dil_h", self.dil_h),
            ("dil_w", self.dil_w),
        ] {
            if v == 0 {
                return Err(DwError::Invalid { what });
            }
        }
        let mul3 = |a: usize, b: usize, c: usize| a.checked_mul(b)?.checked_mul(c);
        let reach = |out: usize, s: usize, k: usize, d: usize| {
            out.saturating_sub(1)
                .checked_mul(s)?
                .checked_add((k - 1).checked_mul(d)?)?
                .checked_add(1)
        };
        let e = (|| {
            reach(self.out_h, self.stride_h, self.k_h, self.dil_h)?;
            reach(self.out_w, self.stride_w, self.k_w, self.dil_w)?;
            self.pad_top.checked_add(self.in_h)?;
            self.pad_left.checked_add(self.in_w)?;
            Some(Extents {
                x: mul3(self.channels, self.in_h, self.in_w)?,
                w: mul3(self.channels, self.k_h, self.k_w)?,
                y: mul3(self.channels, self.out_h, self.out_w)?,
            })
        })();
        e.ok_or(DwError::Overflow)
    }
}

/// Checks raw operands (parameters, overflow, nulls, the CPU), then runs
/// the variant's kernel.
///
/// # Safety
/// The pointers cover the extents the geometry implies (see
/// [`KilnDwArgs`]) and `y` overlaps none of the inputs.
unsafe fn run(variant: Variant, a: &KilnDwArgs) -> Result<(), DwError> {
    let ext = a.geometry().extents()?;
    if ext.y == 0 {
        return Ok(());
    }
    for (what, null) in [
        ("x", a.x.is_null()),
        ("w", a.w.is_null()),
        ("y", a.y.is_null()),
    ] {
        if null {
            return Err(DwError::NullPointer { what });
        }
    }
    if Func::from_code(a.func).is_none() {
        return Err(DwError::UnknownActivation { code: a.func });
    }
    if !variant.is_compiled() {
        return Err(DwError::NotCompiled { variant });
    }
    if !cpu_supports(variant) {
        return Err(DwError::Unsupported { variant });
    }
    match variant {
        Variant::Scalar => super::scalar::run(a),
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => super::x86::run_avx2(a),
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => super::x86::run_avx512(a),
        #[cfg(target_arch = "aarch64")]
        Variant::Neon => super::neon::run_neon(a),
        #[allow(unreachable_patterns)]
        _ => return Err(DwError::NotCompiled { variant }),
    }
    Ok(())
}

fn check_len(what: &'static str, needed: usize, got: usize) -> Result<(), DwError> {
    if got < needed {
        return Err(DwError::BufferTooSmall { what, needed, got });
    }
    Ok(())
}

/// `y = act(depthwise_conv(x, w) + bias)` over `g.channels` channels (see
/// the module docs). `x` holds at least `channels·in_h·in_w` floats, `w`
/// `channels·k_h·k_w`, `bias` (if any) `channels`, `y`
/// `channels·out_h·out_w`; longer slices are fine, their tails untouched.
pub fn dwconv(
    variant: Variant,
    g: &DwGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    activation: Activation,
) -> Result<(), DwError> {
    if !variant.is_compiled() {
        return Err(DwError::NotCompiled { variant });
    }
    let ext = g.extents()?;
    check_len("x", ext.x, x.len())?;
    check_len("w", ext.w, w.len())?;
    if let Some(b) = bias {
        check_len("bias", g.channels, b.len())?;
    }
    check_len("y", ext.y, y.len())?;
    let bias = bias.map_or(core::ptr::null(), <[f32]>::as_ptr);
    let ptrs = (x.as_ptr(), w.as_ptr(), bias, y.as_mut_ptr());
    let args = KilnDwArgs::new(g, ptrs, activation.bounds()).with_func(activation.func());
    // SAFETY: every extent was checked against its slice above, and `y`
    // is a `&mut` borrow, so it overlaps nothing else.
    unsafe { run(variant, &args) }
}

/// Defines the C entry point of one variant.
macro_rules! c_entry {
    ($(#[$attr:meta])* $name:ident, $variant:expr) => {
        $(#[$attr])*
        ///
        /// Returns 0, or a negative [`DwError::code`] (and leaves `y`
        /// untouched) when `args` or a pointer in it is null (`bias` may
        /// be), a kernel size, stride or dilation is zero, a size
        /// overflows, or the CPU lacks the instructions. Nothing is read
        /// or written when `channels·out_h·out_w` is 0.
        ///
        /// # Safety
        /// `args` is null or points to a valid [`KilnDwArgs`] whose
        /// pointers cover the extents its sizes imply, `y` overlapping
        /// none of the inputs.
        #[no_mangle]
        pub unsafe extern "C" fn $name(args: *const KilnDwArgs) -> i32 {
            // Non-null by the test; valid by the caller's contract.
            let Some(a) = args.as_ref() else {
                return DwError::NullPointer { what: "args" }.code();
            };
            match run($variant, a) {
                Ok(()) => 0,
                Err(e) => e.code(),
            }
        }
    };
}

c_entry!(
    /// Portable f32 depthwise convolution with fused bias and clamp.
    kiln_dwconv_f32_scalar,
    Variant::Scalar
);
c_entry!(
    /// AVX2+FMA f32 depthwise convolution with fused bias and clamp.
    #[cfg(target_arch = "x86_64")]
    kiln_dwconv_f32_avx2,
    Variant::Avx2
);
c_entry!(
    /// AVX-512F f32 depthwise convolution with fused bias and clamp.
    #[cfg(target_arch = "x86_64")]
    kiln_dwconv_f32_avx512,
    Variant::Avx512
);
c_entry!(
    /// NEON f32 depthwise convolution with fused bias and clamp.
    #[cfg(target_arch = "aarch64")]
    kiln_dwconv_f32_neon,
    Variant::Neon
);
