//! x86_64 AVX2 + FMA tile: 6 rows × 16 columns, twelve 256-bit accumulators.
//!
//! Each depth step loads two vectors of `B` and broadcasts six values of
//! `A`, for twelve FMAs: 8 loads per 12 FMAs keeps Zen's two FMA pipes
//! busy, and 12 + 2 + 1 registers fit the sixteen `ymm`.

use core::arch::x86_64::*;

use super::driver::{store_scalar, Kernel, TileEpi};
use super::{Blocking, Variant};

const MR: usize = 6;
const NR: usize = 16;

pub(crate) struct Avx2;

impl Kernel for Avx2 {
    const B: Blocking = Variant::Avx2.blocking();

    #[inline]
    unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        bias: *const f32,
        epi: &TileEpi,
    ) {
        tile_6x16(kc, a, b, c, ldc, mr, nr, bias, epi);
    }
}

/// One epilogue vector: `v (+ C) (+ bias)`, clamped, stored to `C`.
macro_rules! store_vec {
    ($v:expr, $c:expr, $bias:expr, $epi:expr, $lo:expr, $hi:expr) => {{
        let mut v = $v;
        if $epi.load {
            v = _mm256_add_ps(v, _mm256_loadu_ps($c));
        }
        if !$bias.is_null() {
            v = _mm256_add_ps(v, _mm256_loadu_ps($bias));
        }
        if $epi.clamp {
            // `max(lo, v)` returns `v` when either is NaN: NaN passes.
            v = _mm256_min_ps($hi, _mm256_max_ps($lo, v));
        }
        _mm256_storeu_ps($c, v);
    }};
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_6x16(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    bias: *const f32,
    epi: &TileEpi,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let mut ap = a;
    let mut bp = b;
    // One depth step `$p` positions ahead of `ap`/`bp`.
    macro_rules! step {
        ($p:expr) => {
            let b0 = _mm256_loadu_ps(bp.add($p * NR));
            let b1 = _mm256_loadu_ps(bp.add($p * NR + 8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*ap.add($p * MR + i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
        };
    }
    // Unrolled by four: the loop counter and pointer updates are a sixth
    // of the instructions otherwise.
    for _ in 0..kc / 4 {
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        ap = ap.add(4 * MR);
        bp = bp.add(4 * NR);
    }
    for _ in 0..kc % 4 {
        step!(0);
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    if mr == MR && nr == NR {
        let lo = _mm256_set1_ps(epi.lo);
        let hi = _mm256_set1_ps(epi.hi);
        let bias8 = if bias.is_null() { bias } else { bias.add(8) };
        for (i, row) in acc.iter().enumerate() {
            let cr = c.add(i * ldc);
            store_vec!(row[0], cr, bias, epi, lo, hi);
            store_vec!(row[1], cr.add(8), bias8, epi, lo, hi);
        }
    } else {
        let mut tmp = [0.0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(tmp.as_mut_ptr().add(i * NR), row[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(i * NR + 8), row[1]);
        }
        store_scalar(&tmp, NR, c, ldc, mr, nr, bias, epi);
    }
}
