//! x86_64 AVX-512F tile: 12 rows × 32 columns, twenty-four 512-bit
//! accumulators (of 32 `zmm`). Each depth step loads two vectors of `B`
//! and broadcasts twelve values of `A` (folded into the FMAs as embedded
//! broadcasts), for 24 FMAs.

use core::arch::x86_64::*;

use super::driver::{store_scalar, Kernel, TileEpi};
use super::{Blocking, Variant};

const MR: usize = 12;
const NR: usize = 32;

pub(crate) struct Avx512;

impl Kernel for Avx512 {
    const B: Blocking = Variant::Avx512.blocking();

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
        tile_12x32(kc, a, b, c, ldc, mr, nr, bias, epi);
    }
}

/// One epilogue vector: `v (+ C) (+ bias)`, clamped, stored to `C`.
macro_rules! store_vec {
    ($v:expr, $c:expr, $bias:expr, $epi:expr, $lo:expr, $hi:expr) => {{
        let mut v = $v;
        if $epi.load {
            v = _mm512_add_ps(v, _mm512_loadu_ps($c));
        }
        if !$bias.is_null() {
            v = _mm512_add_ps(v, _mm512_loadu_ps($bias));
        }
        if $epi.clamp {
            // `max(lo, v)` returns `v` when either is NaN: NaN passes.
            v = _mm512_min_ps($hi, _mm512_max_ps($lo, v));
        }
        _mm512_storeu_ps($c, v);
    }};
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_12x32(
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
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let mut ap = a;
    let mut bp = b;
    // One depth step `$p` positions ahead of `ap`/`bp`.
    macro_rules! step {
        ($p:expr) => {
            let b0 = _mm512_loadu_ps(bp.add($p * NR));
            let b1 = _mm512_loadu_ps(bp.add($p * NR + 16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add($p * MR + i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
        };
    }
    // Unrolled by two: fewer loop-counter and pointer updates per FMA.
    for _ in 0..kc / 2 {
        step!(0);
        step!(1);
        ap = ap.add(2 * MR);
        bp = bp.add(2 * NR);
    }
    if kc % 2 == 1 {
        step!(0);
    }
    if mr == MR && nr == NR {
        let lo = _mm512_set1_ps(epi.lo);
        let hi = _mm512_set1_ps(epi.hi);
        let bias16 = if bias.is_null() { bias } else { bias.add(16) };
        for (i, row) in acc.iter().enumerate() {
            let cr = c.add(i * ldc);
            store_vec!(row[0], cr, bias, epi, lo, hi);
            store_vec!(row[1], cr.add(16), bias16, epi, lo, hi);
        }
    } else {
        let mut tmp = [0.0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(tmp.as_mut_ptr().add(i * NR), row[0]);
            _mm512_storeu_ps(tmp.as_mut_ptr().add(i * NR + 16), row[1]);
        }
        store_scalar(&tmp, NR, c, ldc, mr, nr, bias, epi);
    }
}
