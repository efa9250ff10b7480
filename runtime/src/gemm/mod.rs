//! f32 GEMM with a fused epilogue, `C = act(A·B [+ C | + R] [+ bias])`, built on
//! hand-written register-tile micro-kernels.
//!
//! Why here and not in generated code: Cranelift emits 128-bit vectors only,
//! which caps a GEMM at well under half of what a 256-bit (or 512-bit) FMA
//! kernel reaches. Generated code therefore calls one of these entry points
//! for the hot GEMM/convolution tiles; the compiler picks the variant from
//! `--cpu` at compile time and pre-packs the weights (the `B` operand) with
//! [`pack_b`] into the layout that variant reads.
//!
//! # Layouts
//! - `A` (`m × k`, activations): row-major with row stride `lda`. Copied,
//!   per cache block, into caller-provided scratch as `MR`-row panels, or,
//!   where `B` has only a few column panels (AVX2 and scalar: `n ≤ 4·NR`),
//!   read in place because packing would not pay for itself.
//! - `B` (`k × n`, weights): pre-packed by [`pack_b`] panel-major: columns
//!   are cut into panels of `NR` (the last one zero-padded to `NR`), and a
//!   panel stores all `k` of its rows one after another, `NR` floats each.
//!   Element `(p, j)` lives at `(j / NR)·k·NR + p·NR + j % NR`; total length
//!   [`Variant::packed_b_len`] `= k · ⌈n/NR⌉·NR`. A depth block of a panel
//!   is contiguous, and so is any range of whole panels: a thread given
//!   columns `j0..` (a multiple of `NR`) finds its `B` at `j0·k`.
//! - `C` (`m × n`): row-major with row stride `ldc`.
//! - Packed-`A` mode (`sgemm_pa`, `kiln_sgemm_pa_*`): the transpose of the
//!   above for convolutions, whose weights are `A`; see `packed_a.rs`.
//!
//! # Scratch
//! The packed copy of `A` needs `MR · min(k, KC)` floats at least (asked of
//! every call, so that the requirement does not depend on `n`) and
//! [`Variant::scratch_len`] `= ⌈min(m, MC)/MR⌉·MR · min(k, KC)` floats for full
//! speed; with less, the row block shrinks to what fits. 64-byte alignment of
//! scratch and packed `B` is recommended (not required).
//!
//! # C ABI
//! ```c
//! int kiln_sgemm_<variant>(size_t m, size_t n, size_t k,
//!                          const float *a, size_t lda, const float *b_packed,
//!                          float *c, size_t ldc,
//!                          uint32_t flags /* 1 accumulate, 2 bias per row,
//!                                            4 A transposed: (i, p) at a[p·lda + i] */,
//!                          const float *bias /* n (or m) floats or NULL */,
//!                          const float *residual /* m×n or NULL */,
//!                          size_t ldr, float act_min, float act_max,
//!                          float *scratch, size_t scratch_len);
//! int kiln_sgemm_pa_<variant>(/* the same, with */ const float *a_packed,
//!                             size_t ldb, const float *b /* in place of a, lda, b_packed */ ...);
//! size_t kiln_sgemm_packed_b_len(uint32_t variant, size_t k, size_t n);
//! size_t kiln_sgemm_scratch_len(uint32_t variant, size_t m, size_t k);
//! ```
//! with `<variant>` one of `scalar`, `avx2`, `avx512` (x86_64) and `neon`
//! (aarch64). The activation is a [`Func`] (code in `flags` bits 8-11:
//! sigmoid, SiLU, GELU, tanh; 0 for none) followed by a clamp to
//! `[act_min, act_max]`: ±∞ for none, `[0, ∞]` for ReLU, `[0, 6]` for
//! ReLU6, any bounds for Clip. NaN passes through both unchanged. The return value is 0 or a negative
//! [`GemmError::code`].

mod driver;
pub(crate) use driver::{clamps, pack_panels, TileEpi};
mod packed_a;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

mod api;
#[cfg(test)]
mod tests;

pub use crate::func::Func;
pub use api::*;

/// The micro-kernel families. The numbering is the C ABI's `variant` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Variant {
    /// Portable Rust, any target (firmware included).
    Scalar = 0,
    /// x86_64 with AVX2 and FMA: a 6×16 tile of 256-bit accumulators.
    Avx2 = 1,
    /// x86_64 with AVX-512F: a 12×32 tile of 512-bit accumulators.
    Avx512 = 2,
    /// aarch64 NEON: an 8×12 tile of 128-bit accumulators, `fmla` by lane.
    Neon = 3,
}

/// Register tile (`mr × nr`) and cache blocks of one variant.
///
/// `kc` keeps a `kc × nr` panel of `B` near L1 while `A` panels stream past
/// it (16 KiB for AVX2; 32 KiB for AVX-512, where 128 measured no faster on
/// Zen 4); `mc × kc` floats of packed `A` stay in L2; `nc` columns of `B`
/// (a multiple of `nr`) bound the part of `B` swept per row block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub mr: usize,
    pub nr: usize,
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

impl Variant {
    /// Every variant, in code order.
    pub const ALL: [Variant; 4] = [
        Variant::Scalar,
        Variant::Avx2,
        Variant::Avx512,
        Variant::Neon,
    ];

    /// The variant with C ABI code `code`.
    pub const fn from_code(code: u32) -> Option<Variant> {
        match code {
            0 => Some(Variant::Scalar),
            1 => Some(Variant::Avx2),
            2 => Some(Variant::Avx512),
            3 => Some(Variant::Neon),
            _ => None,
        }
    }

    /// Lower-case name, as in the C symbol `kiln_sgemm_<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Scalar => "scalar",
            Variant::Avx2 => "avx2",
            Variant::Avx512 => "avx512",
            Variant::Neon => "neon",
        }
    }

    /// Tile and block sizes. Sized for Zen 3/4 (32 KiB L1d, ≥ 512 KiB L2)
    /// on x86_64, for a typical Cortex-A core on aarch64, and small for the
    /// scalar variant so that its scratch fits firmware RAM (16 KiB).
    pub const fn blocking(self) -> Blocking {
        match self {
            Variant::Scalar => Blocking {
                mr: 4,
                nr: 4,
                kc: 128,
                mc: 32,
                nc: 1024,
            },
            Variant::Avx2 => Blocking {
                mr: 6,
                nr: 16,
                kc: 256,
                mc: 144,
                nc: 4080,
            },
            Variant::Avx512 => Blocking {
                mr: 12,
                nr: 32,
                kc: 256,
                mc: 240,
                nc: 4096,
            },
            Variant::Neon => Blocking {
                mr: 8,
                nr: 12,
                kc: 256,
                mc: 128,
                nc: 4092,
            },
        }
    }

    /// Floats [`pack_b`] writes for a `k × n` `B`: `k · ⌈n/NR⌉·NR`.
    /// Saturates at `usize::MAX` (which no buffer can match) on overflow.
    pub const fn packed_b_len(self, k: usize, n: usize) -> usize {
        let nr = self.blocking().nr;
        k.saturating_mul(n.div_ceil(nr).saturating_mul(nr))
    }

    /// Scratch floats for full speed: `⌈min(m, MC)/MR⌉·MR · min(k, KC)`.
    pub const fn scratch_len(self, m: usize, k: usize) -> usize {
        let b = self.blocking();
        let rows = if m < b.mc { m } else { b.mc };
        rows.div_ceil(b.mr) * b.mr * if k < b.kc { k } else { b.kc }
    }

    /// The least scratch that works (one row panel): `MR · min(k, KC)`.
    pub const fn min_scratch_len(self, k: usize) -> usize {
        let b = self.blocking();
        b.mr * if k < b.kc { k } else { b.kc }
    }

    /// Whether this build contains the variant's kernel (the target
    /// architecture matches). Says nothing about the CPU it runs on.
    pub const fn is_compiled(self) -> bool {
        match self {
            Variant::Scalar => true,
            Variant::Avx2 | Variant::Avx512 => cfg!(target_arch = "x86_64"),
            Variant::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    /// Whether the running CPU can execute the variant (needs an OS to ask).
    #[cfg(any(feature = "std", not(target_os = "none"), test))]
    pub fn is_supported(self) -> bool {
        match self {
            Variant::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// What a GEMM can refuse. Each has a stable negative C ABI code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmError {
    /// A required pointer was null.
    NullPointer { what: &'static str },
    /// A row stride is smaller than the row (`lda < k`, `ldb < n`, `ldc < n`).
    Stride {
        what: &'static str,
        stride: usize,
        min: usize,
    },
    /// A buffer is shorter than its shape needs (in floats).
    BufferTooSmall {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// The variant's kernel is not part of this build (wrong architecture).
    NotCompiled { variant: Variant },
    /// The running CPU lacks the variant's instructions.
    Unsupported { variant: Variant },
    /// An element count overflows `usize`.
    Overflow,
    /// The epilogue asks to accumulate into `C` and to add a residual.
    ResidualWithAccumulate,
    /// `flags` names an activation this runtime does not have.
    UnknownActivation { code: u32 },
}

impl GemmError {
    /// The negative status the C entry points return.
    pub const fn code(&self) -> i32 {
        match self {
            GemmError::NullPointer { .. } => -1,
            GemmError::Stride { .. } => -2,
            GemmError::BufferTooSmall { .. } => -3,
            GemmError::NotCompiled { .. } => -4,
            GemmError::Overflow => -5,
            GemmError::Unsupported { .. } => -6,
            GemmError::ResidualWithAccumulate => -7,
            GemmError::UnknownActivation { .. } => -8,
        }
    }
}

impl core::fmt::Display for GemmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            GemmError::NullPointer { what } => write!(f, "gemm: {what} is null"),
            GemmError::Stride { what, stride, min } => {
                write!(
                    f,
                    "gemm: {what} is {stride}, less than the row length {min}"
                )
            }
            GemmError::BufferTooSmall { what, needed, got } => {
                write!(f, "gemm: {what} holds {got} floats, needs {needed}")
            }
            GemmError::NotCompiled { variant } => {
                write!(
                    f,
                    "gemm: variant {} is not built for this target",
                    variant.name()
                )
            }
            GemmError::Overflow => write!(f, "gemm: element count overflows usize"),
            GemmError::ResidualWithAccumulate => {
                write!(f, "gemm: a residual cannot be added while accumulating")
            }
            GemmError::UnknownActivation { code } => {
                write!(f, "gemm: no activation has code {code} (flags bits 8-11)")
            }
            GemmError::Unsupported { variant } => {
                write!(f, "gemm: this CPU cannot run variant {}", variant.name())
            }
        }
    }
}

impl core::error::Error for GemmError {}

/// The activation fused into the store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// `min(max(x, min), max)`; ReLU6 is `Clip { min: 0.0, max: 6.0 }`.
    Clip {
        min: f32,
        max: f32,
    },
    /// One of the transcendental activations of [`Func`].
    Func(Func),
}

impl Activation {
    /// The clamp bounds the kernels apply (±∞ for none).
    pub const fn bounds(self) -> (f32, f32) {
        match self {
            Activation::None => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::Clip { min, max } => (min, max),
            Activation::Func(_) => (f32::NEG_INFINITY, f32::INFINITY),
        }
    }

    /// The function applied before the clamp.
    pub const fn func(self) -> Func {
        match self {
            Activation::Func(f) => f,
            _ => Func::Identity,
        }
    }
}

/// What happens at the store:
/// `C = act(A·B + (accumulate ? C : 0) + residual + bias)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Add into the existing `C` instead of overwriting it.
    pub accumulate: bool,
    /// One value per column of `C` (`n` floats), or per row (`m` floats)
    /// with `bias_rows`: convolutions in NCHW have one bias per output
    /// channel, which is a row of `C = W·col`.
    pub bias: Option<&'a [f32]>,
    pub bias_rows: bool,
    /// A matrix added before the bias and activation (`m × n`, this row
    /// stride): the skip connection of a residual block. Not with `accumulate`.
    pub residual: Option<(&'a [f32], usize)>,
    pub activation: Activation,
}
