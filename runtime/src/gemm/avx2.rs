//! x86_64 AVX2 + FMA tile: up to 6 rows × 16 columns, twelve 256-bit
//! accumulators.
//!
//! Each depth step loads two vectors of `B` and broadcasts six values of
//! `A`, for twelve FMAs: 8 loads per 12 FMAs keeps Zen's two FMA pipes
//! busy, and 12 + 2 + 1 registers fit the sixteen `ymm`. The row count is a
//! const parameter so that a short edge panel (or `m = 1`, a batch-1 dense
//! layer) computes only its own rows; short columns use masked loads and
//! stores, which never touch memory outside the mask, and a panel of at
//! most 8 columns runs one vector per row (`W = 1`) instead of two.

use core::arch::x86_64::*;

use super::driver::{Kernel, TileEpi};
use super::{Blocking, Variant};
use crate::func::{apply_avx2, Func};

const MR: usize = 6;
const NR: usize = 16;

pub(crate) struct Avx2;

impl Kernel for Avx2 {
    const B: Blocking = Variant::Avx2.blocking();
    const DIRECT_MAX_PANELS: usize = 4;

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
            6 => run!(6),
            5 => run!(5),
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
    }
}

/// `R × 16` product of an `MR`-row `A` panel (rows past `R` unread) and a
/// `B` panel, stored through the epilogue into `nr ≤ 16` columns of `C`.
#[target_feature(enable = "avx2,fma")]
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
    let mut acc = [[_mm256_setzero_ps(); W]; R];
    let mut ap = a;
    let mut bp = b;
    // One depth step `$p` positions ahead of `ap`/`bp`.
    macro_rules! step {
        ($p:expr) => {
            let mut bv = [_mm256_setzero_ps(); W];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(bp.add($p * ldb + 8 * h));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai =
                    _mm256_broadcast_ss(&*ap.add(if PACKED { $p * MR + i } else { i * lda + $p }));
                for (r, &b) in row.iter_mut().zip(&bv) {
                    *r = _mm256_fmadd_ps(ai, b, *r);
                }
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
        ap = ap.add(if PACKED { 4 * MR } else { 4 });
        bp = bp.add(4 * ldb);
    }
    for _ in 0..kc % 4 {
        step!(0);
        ap = ap.add(if PACKED { MR } else { 1 });
        bp = bp.add(ldb);
    }

    let lo = _mm256_set1_ps(epi.lo);
    let hi = _mm256_set1_ps(epi.hi);
    let has_bias = !bias.is_null();
    if nr == NR {
        for (i, row) in acc.iter().enumerate() {
            let cr = c.add(i * ldc);
            for (h, &acc_h) in row.iter().enumerate() {
                let mut v = acc_h;
                if !epi.src.is_null() {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(epi.src.add(i * epi.lds + 8 * h)));
                }
                if has_bias {
                    let bv = if epi.bias_rows {
                        _mm256_set1_ps(*bias.add(i))
                    } else {
                        _mm256_loadu_ps(bias.add(8 * h))
                    };
                    v = _mm256_add_ps(v, bv);
                }
                if epi.func != Func::Identity {
                    v = apply_avx2(epi.func, v);
                }
                if epi.clamp {
                    // `max(lo, v)` returns `v` when either is NaN: NaN passes.
                    v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
                }
                _mm256_storeu_ps(cr.add(8 * h), v);
            }
        }
    } else {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = [
            _mm256_cmpgt_epi32(_mm256_set1_epi32(nr as i32), lanes),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(nr as i32 - 8), lanes),
        ];
        for (i, row) in acc.iter().enumerate() {
            let cr = c.add(i * ldc);
            for (h, &acc_h) in row.iter().enumerate() {
                if 8 * h >= nr {
                    break;
                }
                let mut v = acc_h;
                if !epi.src.is_null() {
                    v = _mm256_add_ps(
                        v,
                        _mm256_maskload_ps(epi.src.add(i * epi.lds + 8 * h), mask[h]),
                    );
                }
                if has_bias {
                    let bv = if epi.bias_rows {
                        _mm256_set1_ps(*bias.add(i))
                    } else {
                        _mm256_maskload_ps(bias.add(8 * h), mask[h])
                    };
                    v = _mm256_add_ps(v, bv);
                }
                if epi.func != Func::Identity {
                    v = apply_avx2(epi.func, v);
                }
                if epi.clamp {
                    v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
                }
                _mm256_maskstore_ps(cr.add(8 * h), mask[h], v);
            }
        }
    }
}
