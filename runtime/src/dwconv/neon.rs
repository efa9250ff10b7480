//! aarch64 NEON vectors for the shared loop nest: 128-bit, `fmla`, and
//! `uzp1`/`uzp2` for the stride-2 split into even and odd phases. With 32 `v`
//! registers, the 5×5 tile's 25 weights and two accumulators fit.

use core::arch::aarch64::*;

use super::simd::{self, Simd};
use super::KilnDwArgs;
use crate::func::Func;

/// 128-bit vectors (NEON).
pub(crate) struct Neon;

impl Simd for Neon {
    type V = float32x4_t;
    const L: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> float32x4_t {
        let mut t = [0.0f32; 4];
        for (i, x) in t.iter_mut().enumerate().take(n) {
            *x = *p.add(i);
        }
        vld1q_f32(t.as_ptr())
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: float32x4_t, n: usize) {
        // No masked store: spill the vector and copy the lanes wanted.
        let mut t = [0.0f32; 4];
        vst1q_f32(t.as_mut_ptr(), v);
        for (i, &x) in t.iter().enumerate().take(n) {
            *p.add(i) = x;
        }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, acc: float32x4_t) -> float32x4_t {
        vfmaq_f32(acc, a, b)
    }
    #[inline(always)]
    unsafe fn func(f: Func, v: float32x4_t) -> float32x4_t {
        let mut t = [0.0f32; 4];
        vst1q_f32(t.as_mut_ptr(), v);
        let t = t.map(|x| f.apply(x));
        vld1q_f32(t.as_ptr())
    }
    #[inline(always)]
    unsafe fn clamp(v: float32x4_t, lo: float32x4_t, hi: float32x4_t) -> float32x4_t {
        // FMAX/FMIN return NaN when an operand is NaN: NaN passes.
        vminq_f32(hi, vmaxq_f32(lo, v))
    }
    #[inline(always)]
    unsafe fn deinterleave(a: float32x4_t, b: float32x4_t) -> (float32x4_t, float32x4_t) {
        (vuzp1q_f32(a, b), vuzp2q_f32(a, b))
    }
}

/// The NEON variant's loop nest, in a function of its own so that it has
/// its own stack frame (the staging buffer is most of it).
#[target_feature(enable = "neon")]
#[inline(never)]
unsafe fn body_neon(a: &KilnDwArgs) {
    simd::run::<Neon, 4, 2, 2, 2>(a)
}

/// The NEON variant.
///
/// # Safety
/// As `scalar::run`, and the CPU has NEON.
pub(crate) unsafe fn run_neon(a: &KilnDwArgs) {
    body_neon(a)
}
