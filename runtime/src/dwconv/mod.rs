//! f32 depthwise 2-D convolution (NCHW, one input channel per output
//! channel) with a fused bias and clamp, on hand-vectorised kernels.
//!
//! Why here and not in generated code: a depthwise convolution does only
//! `k_h·k_w` multiply-adds per output, so it lives or dies by how the input
//! row is fed to the FMA units. Cranelift emits 128-bit vectors only and no
//! shuffles worth the name; these kernels keep a tile of 256- or 512-bit
//! accumulators in registers across all taps and read every tap as one
//! contiguous load. Generated code calls the C entry points below on a
//! range of channels (it splits channels over threads itself).
//!
//! # Semantics
//! For `c < channels`, `oy < out_h`, `ox < out_w`:
//! ```text
//! y[c, oy, ox] = clamp(bias[c] + Σ_{ky<k_h, kx<k_w} w[c, ky, kx] ·
//!                      X(c, oy·stride_h − pad_top + ky·dil_h,
//!                           ox·stride_w − pad_left + kx·dil_w),
//!                      act_min, act_max)
//! ```
//! with `X` the input where in bounds and 0 outside (bottom and right
//! padding follow from `out_h`/`out_w`), `bias` 0 when absent, and
//! `clamp(v, lo, hi) = min(max(v, lo), hi)` letting NaN through (a NaN
//! bound clamps nothing on x86_64; on NEON it makes the output NaN).
//!
//! Taps in the padding add nothing: the portable variant skips them, the
//! vector variants multiply a staged zero (which keeps their tiles free of
//! tests). The two agree for finite weights; an infinite or NaN weight
//! times a padding zero is NaN in the vector variants, as IEEE arithmetic
//! on the formula above has it.
//!
//! # How the vector variants work
//! Each input row is copied once into a small stack buffer, zero-padded
//! on both sides and, for stride `s > 1`, split into `s` phases
//! (`phase[p][j] = row[j·s + p − pad_left]`). Tap `kx` of output `ox` is
//! then element `ox + kx·dil/s` of phase `kx·dil mod s`: for every stride,
//! consecutive output vectors read consecutive vectors of one phase, with
//! no bounds checks, and the borders cost nothing extra. Small planes are
//! copied whole per channel; larger ones go through a ring of row buffers
//! reused between output rows. The 3×3 and 5×5 kernels at stride 1 and 2
//! keep a tile of several output rows × vectors in registers across all
//! taps (see `simd.rs`); other geometries take a general tile. Geometries
//! whose rows do not fit the 48 KiB buffer take the portable path.
//!
//! # C ABI
//! ```c
//! typedef struct KilnDwArgs { ... } KilnDwArgs;   /* see [`KilnDwArgs`] */
//! int kiln_dwconv_f32_<variant>(const KilnDwArgs *args);
//! ```
//! with `<variant>` one of `scalar`, `avx2`, `avx512` (x86_64) and `neon`
//! (aarch64). Returns 0 or a negative [`DwError::code`].

mod api;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", test))]
mod cl;
mod scalar;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", test))]
mod simd;

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(test)]
mod tests;

pub use crate::func::Func;
pub use crate::gemm::{Activation, Variant};
pub use api::*;

/// What a depthwise convolution can refuse. Each has a stable negative C
/// ABI code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DwError {
    /// A required pointer was null.
    NullPointer { what: &'static str },
    /// A kernel size, stride or dilation is zero.
    Invalid { what: &'static str },
    /// A buffer is shorter than its shape needs (in floats).
    BufferTooSmall {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// The variant's kernel is not part of this build (wrong architecture).
    NotCompiled { variant: Variant },
    /// An element count or coordinate overflows `usize`.
    Overflow,
    /// The running CPU lacks the variant's instructions.
    Unsupported { variant: Variant },
    /// `func` names an activation this runtime does not have.
    UnknownActivation { code: u32 },
}

impl DwError {
    /// The negative status the C entry points return.
    pub const fn code(&self) -> i32 {
        match self {
            DwError::NullPointer { .. } => -1,
            DwError::Invalid { .. } => -2,
            DwError::BufferTooSmall { .. } => -3,
            DwError::NotCompiled { .. } => -4,
            DwError::Overflow => -5,
            DwError::Unsupported { .. } => -6,
            DwError::UnknownActivation { .. } => -7,
        }
    }
}

impl core::fmt::Display for DwError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DwError::NullPointer { what } => write!(f, "dwconv: {what} is null"),
            DwError::Invalid { what } => write!(f, "dwconv: {what} is zero"),
            DwError::BufferTooSmall { what, needed, got } => {
                write!(f, "dwconv: {what} holds {got} floats, needs {needed}")
            }
            DwError::NotCompiled { variant } => write!(
                f,
                "dwconv: variant {} is not built for this target",
                variant.name()
            ),
            DwError::Overflow => write!(f, "dwconv: a size or coordinate overflows usize"),
            DwError::Unsupported { variant } => {
                write!(f, "dwconv: this CPU cannot run variant {}", variant.name())
            }
            DwError::UnknownActivation { code } => {
                write!(f, "dwconv: no activation has code {code}")
            }
        }
    }
}

impl core::error::Error for DwError {}

/// The shape of one depthwise convolution call (see the module docs for
/// what each field means). Bottom and right padding are implied by
/// `out_h`/`out_w`; [`out_dim`] computes the usual output size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DwGeometry {
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
}

/// Output size along one axis, as ONNX `Conv` defines it:
/// `⌊(input + pad_begin + pad_end − dil·(k − 1) − 1) / stride⌋ + 1`, or 0
/// when the dilated kernel does not fit or `stride` is 0.
pub const fn out_dim(
    input: usize,
    k: usize,
    stride: usize,
    pad_begin: usize,
    pad_end: usize,
    dil: usize,
) -> usize {
    if stride == 0 || k == 0 {
        return 0;
    }
    let padded = input.saturating_add(pad_begin).saturating_add(pad_end);
    let span = dil.saturating_mul(k - 1).saturating_add(1);
    if padded < span {
        0
    } else {
        (padded - span) / stride + 1
    }
}
