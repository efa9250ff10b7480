//! x86_64 AVX-512F tile: up to 12 rows × 32 columns, twenty-four 512-bit
//! accumulators (of 32 `zmm`). Each depth step loads two vectors of `B`
//! and broadcasts twelve values of `A`, for 24 FMAs. As in the AVX2 tile,
//! the row count is a const parameter and short columns use masked loads
//! and stores; a last panel of at most 16 columns (a 196-column conv
//! block ends in 4) runs half the tile, `W = 1` vector per row, instead of
//! spending as many FMAs as a full one.

use core::arch::x86_64::*;

use super::driver::{Kernel, TileEpi};
use super::{Blocking, Variant};
use crate::func::{apply_avx512, Func};

const MR: usize = 12;
const NR: usize = 32;

pub(crate) struct Avx512;

impl Kernel for Avx512 {
    const B: Blocking = Variant::Avx512.blocking();
    const DIRECT_MAX_PANELS: usize = 0;

    #[inline]
    unsafe fn tile(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        bias: *const f32,
        epi: &TileEpi,
    ) {
        macro_rules! run {
            ($r:literal) => {
                match (lda == 0, nr <= NR / 2) {
                    (true, true) => tile::<$r, true, 1>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi),
                    (true, false) => tile::<$r, true, 2>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi),
                    (false, true) => {
                        tile::<$r, false, 1>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                    }
                    (false, false) => {
                        tile::<$r, false, 2>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                    }
                }
            };
        }
        match mr {
            12 => run!(12),
            11 => run!(11),
            10 => run!(10),
            9 => run!(9),
            8 => run!(8),
            7 => run!(7),
            6 => run!(6),
            5 => run!(5),
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
    }
}

/// `R × 32` product of an `MR`-row `A` panel (rows past `R` unread) and a
/// `B` panel, stored through the epilogue into `nr ≤ 32` columns of `C`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const PACKED: bool, const W: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    bias: *const f32,
    epi: &TileEpi,
) {
    // Start fetching the C tile now so the epilogue does not wait for it.
    for i in 0..R {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc).cast());
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc).wrapping_add(nr - 1).cast());
    }
    let mut acc = [[_mm512_setzero_ps(); W]; R];
    let mut ap = a;
    let mut bp = b;
    // One depth step `$p` positions ahead of `ap`/`bp`.
    macro_rules! step {
        ($p:expr) => {
            let mut bv = [_mm512_setzero_ps(); W];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(bp.add($p * ldb + 16 * h));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(if PACKED { $p * MR + i } else { i * lda + $p }));
                for (r, &b) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(ai, b, *r);
                }
            }
        };
    }
    // Unrolled by two: fewer loop-counter and pointer updates per FMA.
    for _ in 0..kc / 2 {
        step!(0);
        step!(1);
        ap = ap.add(if PACKED { 2 * MR } else { 2 });
        bp = bp.add(2 * ldb);
    }
    if kc % 2 == 1 {
        step!(0);
    }

    let lo = _mm512_set1_ps(epi.lo);
    let hi = _mm512_set1_ps(epi.hi);
    let has_bias = !bias.is_null();
    // Lanes `j < nr` of each 16-column half.
    let bits = if nr >= NR { u32::MAX } else { (1u32 << nr) - 1 };
    let mask = [bits as u16, (bits >> 16) as u16];
    for (i, row) in acc.iter().enumerate() {
        let cr = c.add(i * ldc);
        for (h, &acc_h) in row.iter().enumerate() {
            let k = mask[h];
            if k == 0 {
                continue;
            }
            let mut v = acc_h;
            if !epi.src.is_null() {
                v = _mm512_add_ps(
                    v,
                    _mm512_maskz_loadu_ps(k, epi.src.add(i * epi.lds + 16 * h)),
                );
            }
            if has_bias {
                let bv = if epi.bias_rows {
                    _mm512_set1_ps(*bias.add(i))
                } else {
                    _mm512_maskz_loadu_ps(k, bias.add(16 * h))
                };
                v = _mm512_add_ps(v, bv);
            }
            if epi.func != Func::Identity {
                v = apply_avx512(epi.func, v);
            }
            if epi.clamp {
                // `max(lo, v)` returns `v` when either is NaN: NaN passes.
                v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
            }
            _mm512_mask_storeu_ps(cr.add(16 * h), k, v);
        }
    }
}
