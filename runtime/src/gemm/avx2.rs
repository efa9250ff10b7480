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

    #[inline]
    unsafe fn row(
        k: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        nr: usize,
        bias: *const f32,
        epi: &TileEpi,
    ) -> bool {
        row(k, a, b, c, nr, bias, epi);
        true
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

    let mask = lanes_below(nr);
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            if 8 * h < nr {
                store(v, mask[h], (c, ldc), (i, h), bias, epi);
            }
        }
    }
}

/// Per 8-column half of a 16-column tile, the lanes below `nr`: `None`
/// where the half is whole (plain loads and stores), else the mask.
#[inline(always)]
unsafe fn lanes_below(nr: usize) -> [Option<__m256i>; 2] {
    if nr >= NR {
        return [None, None];
    }
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    [
        Some(_mm256_cmpgt_epi32(_mm256_set1_epi32(nr as i32), lanes)),
        Some(_mm256_cmpgt_epi32(_mm256_set1_epi32(nr as i32 - 8), lanes)),
    ]
}

/// Eight floats at `p`, or the lanes of `mask` (zero elsewhere).
#[inline(always)]
unsafe fn load(p: *const f32, mask: Option<__m256i>) -> __m256 {
    match mask {
        Some(m) => _mm256_maskload_ps(p, m),
        None => _mm256_loadu_ps(p),
    }
}

/// Row `i`, columns `8·h..` of the tile at `c` (lanes of `mask`), through
/// the epilogue: plus `src`, plus bias, function, clamp.
#[inline(always)]
unsafe fn store(
    mut v: __m256,
    mask: Option<__m256i>,
    (c, ldc): (*mut f32, usize),
    (i, h): (usize, usize),
    bias: *const f32,
    epi: &TileEpi,
) {
    if !epi.src.is_null() {
        v = _mm256_add_ps(v, load(epi.src.add(i * epi.lds + 8 * h), mask));
    }
    if !bias.is_null() {
        let bv = if epi.bias_rows {
            _mm256_set1_ps(*bias.add(i))
        } else {
            load(bias.add(8 * h), mask)
        };
        v = _mm256_add_ps(v, bv);
    }
    if epi.func != Func::Identity {
        v = apply_avx2(epi.func, v);
    }
    if epi.clamp {
        // `max(lo, v)` returns `v` when either is NaN: NaN passes.
        v = _mm256_min_ps(
            _mm256_set1_ps(epi.hi),
            _mm256_max_ps(_mm256_set1_ps(epi.lo), v),
        );
    }
    let p = c.add(i * ldc + 8 * h);
    match mask {
        Some(m) => _mm256_maskstore_ps(p, m, v),
        None => _mm256_storeu_ps(p, v),
    }
}

/// [`Kernel::row`]: one row of `A` against a packed `k × 16` panel, read
/// front to back, four depth steps in flight (each its own pair of
/// accumulators, so that no FMA waits on the one before).
#[target_feature(enable = "avx2,fma")]
unsafe fn row(
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    nr: usize,
    bias: *const f32,
    epi: &TileEpi,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let mut p = 0;
    while p + 4 <= k {
        for (s, pair) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(p + s));
            let bp = b.add((p + s) * NR);
            pair[0] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp), pair[0]);
            pair[1] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp.add(8)), pair[1]);
        }
        p += 4;
    }
    while p < k {
        let av = _mm256_broadcast_ss(&*a.add(p));
        let bp = b.add(p * NR);
        acc[0][0] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp), acc[0][0]);
        acc[0][1] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp.add(8)), acc[0][1]);
        p += 1;
    }
    let mask = lanes_below(nr);
    let [c0, c1, c2, c3] = acc;
    for h in 0..2 {
        if 8 * h < nr {
            let v = _mm256_add_ps(_mm256_add_ps(c0[h], c1[h]), _mm256_add_ps(c2[h], c3[h]));
            store(v, mask[h], (c, 0), (0, h), bias, epi);
        }
    }
}
