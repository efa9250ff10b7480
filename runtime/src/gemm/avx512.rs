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
                    (true, true) => {
                        tile::<$r, true, 1, false>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                    }
                    (true, false) => {
                        tile::<$r, true, 2, false>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                    }
                    (false, true) => {
                        tile::<$r, false, 1, false>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                    }
                    (false, false) => {
                        tile::<$r, false, 2, false>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                    }
                }
            };
        }
        by_count_to_12!(mr, run)
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

    #[inline]
    unsafe fn remainder(
        kc: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        bias: *const f32,
        epi: &TileEpi,
    ) -> bool {
        // A half tile where 16 columns are left, then `narrow`; past
        // `NARROW_MAX` the whole tile with masked loads of `B`.
        let half = if nr >= NR / 2 { NR / 2 } else { 0 };
        let rest = nr - half;
        if rest > NARROW_MAX {
            macro_rules! masked {
                ($r:literal) => {
                    if nr <= NR / 2 {
                        tile::<$r, true, 1, true>(kc, a, 0, b, ldb, c, ldc, nr, bias, epi)
                    } else {
                        tile::<$r, true, 2, true>(kc, a, 0, b, ldb, c, ldc, nr, bias, epi)
                    }
                };
            }
            by_count_to_12!(mr, masked);
            return true;
        }
        if half > 0 {
            Self::tile(kc, a, 0, b, ldb, c, ldc, mr, half, bias, epi);
        }
        let bias = if !bias.is_null() && !epi.bias_rows {
            bias.add(half)
        } else {
            bias
        };
        let epi = TileEpi {
            src: if epi.src.is_null() {
                epi.src
            } else {
                epi.src.add(half)
            },
            ..*epi
        };
        let (b, c) = (b.add(half), c.add(half));
        match rest {
            0 => {}
            1 => narrow::<1>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
            2 => narrow::<2>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
            3 => narrow::<3>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
            4 => narrow::<4>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
            5 => narrow::<5>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
            6 => narrow::<6>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
            7 => narrow::<7>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
            _ => narrow::<8>(kc, a, b, ldb, c, ldc, mr, bias, &epi),
        }
        true
    }
}

/// `R × 32` product of an `MR`-row `A` panel (rows past `R` unread) and a
/// `B` panel, stored through the epilogue into `nr ≤ 32` columns of `C`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const PACKED: bool, const W: usize, const M: bool>(
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
    // With `M`, `B` holds only `nr` readable columns.
    let bits = if nr >= NR { u32::MAX } else { (1u32 << nr) - 1 };
    let bmask = [bits as u16, (bits >> 16) as u16];
    // One depth step `$p` positions ahead of `ap`/`bp`.
    macro_rules! step {
        ($p:expr) => {
            let mut bv = [_mm512_setzero_ps(); W];
            for (h, v) in bv.iter_mut().enumerate() {
                let at = bp.add($p * ldb + 16 * h);
                *v = if M {
                    _mm512_maskz_loadu_ps(bmask[h], at)
                } else {
                    _mm512_loadu_ps(at)
                };
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

    // Lanes `j < nr` of each 16-column half.
    let bits = if nr >= NR { u32::MAX } else { (1u32 << nr) - 1 };
    let mask = [bits as u16, (bits >> 16) as u16];
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            if mask[h] != 0 {
                store(v, mask[h], c, ldc, i, 16 * h, bias, epi);
            }
        }
    }
}

/// Stores an `R × W` tile of accumulators (`W` vectors per row) through the
/// epilogue, lanes `mask[h]` of each row's vector `h`.
///
/// Why through memory: the epilogue (a function, a clamp) is too long for
/// the compiler to repeat `R·W` times, and a loop over the accumulators in
/// place made it keep the shallow conv's whole array in memory, spilled at
/// every depth step. Copied out once at the end, the accumulators stay in
/// registers while they accumulate. (The GEMM tile keeps its loop: there
/// the call measured 1-2% slower on 64-deep products.)
#[inline(always)]
pub(crate) unsafe fn spill_and_store<const R: usize, const W: usize>(
    acc: &[[__m512; W]; R],
    mask: [u16; 2],
    (c, ldc): (*mut f32, usize),
    bias: *const f32,
    epi: &TileEpi,
) {
    let mut out = core::mem::MaybeUninit::<[[__m512; W]; R]>::uninit();
    let o = out.as_mut_ptr().cast::<__m512>();
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            o.add(i * W + h).write(v);
        }
    }
    store_rows(o, R, W, mask, (c, ldc), bias, epi);
}

/// The loop of [`spill_and_store`]: `rows × w` vectors at `acc`.
#[target_feature(enable = "avx512f")]
unsafe fn store_rows(
    acc: *const __m512,
    rows: usize,
    w: usize,
    mask: [u16; 2],
    (c, ldc): (*mut f32, usize),
    bias: *const f32,
    epi: &TileEpi,
) {
    for i in 0..rows {
        for (h, &m) in mask.iter().enumerate().take(w) {
            if m != 0 {
                store(*acc.add(i * w + h), m, c, ldc, i, 16 * h, bias, epi);
            }
        }
    }
}

/// Depth steps in flight in [`row`]: each its own pair of accumulators,
/// so that the FMAs of one step do not wait on the previous one's.
const ROW_CHAINS: usize = 4;

/// [`Kernel::row`]: one row of `A` against a packed `k × 32` panel,
/// read front to back.
#[target_feature(enable = "avx512f")]
unsafe fn row(
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    nr: usize,
    bias: *const f32,
    epi: &TileEpi,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; ROW_CHAINS];
    let mut p = 0;
    while p + ROW_CHAINS <= k {
        for (s, pair) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(p + s));
            let bp = b.add((p + s) * NR);
            pair[0] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp), pair[0]);
            pair[1] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp.add(16)), pair[1]);
        }
        p += ROW_CHAINS;
    }
    while p < k {
        let av = _mm512_set1_ps(*a.add(p));
        let bp = b.add(p * NR);
        acc[0][0] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp), acc[0][0]);
        acc[0][1] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp.add(16)), acc[0][1]);
        p += 1;
    }
    let bits = if nr >= NR { u32::MAX } else { (1u32 << nr) - 1 };
    let [c0, c1, c2, c3] = acc;
    for h in 0..2 {
        let m = (bits >> (16 * h)) as u16;
        if m != 0 {
            let v = _mm512_add_ps(_mm512_add_ps(c0[h], c1[h]), _mm512_add_ps(c2[h], c3[h]));
            store(v, m, c, 0, 0, 16 * h, bias, epi);
        }
    }
}

/// Lanes `k` of row `i`, columns `j..j + 16` of the tile at `c`, through
/// the epilogue: plus `src`, plus bias, function, clamp.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn store(
    mut v: __m512,
    k: u16,
    c: *mut f32,
    ldc: usize,
    i: usize,
    j: usize,
    bias: *const f32,
    epi: &TileEpi,
) {
    if !epi.src.is_null() {
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, epi.src.add(i * epi.lds + j)));
    }
    if !bias.is_null() {
        let bv = if epi.bias_rows {
            _mm512_set1_ps(*bias.add(i))
        } else {
            _mm512_maskz_loadu_ps(k, bias.add(j))
        };
        v = _mm512_add_ps(v, bv);
    }
    if epi.func != Func::Identity {
        v = apply_avx512(epi.func, v);
    }
    if epi.clamp {
        // `max(lo, v)` returns `v` when either is NaN: NaN passes.
        v = _mm512_min_ps(
            _mm512_set1_ps(epi.hi),
            _mm512_max_ps(_mm512_set1_ps(epi.lo), v),
        );
    }
    _mm512_mask_storeu_ps(c.add(i * ldc + j), k, v);
}

/// The widest column remainder [`narrow`] takes: past it, its `N` FMAs
/// per depth step (on 12 of 16 lanes) lose to the half tile's 12, and the
/// remainder runs as a tile whose loads of `B` are masked (no packing).
const NARROW_MAX: usize = 8;

/// `mr × N` product of a packed `A` panel and `N` columns of a row-major
/// `B` read in place: vectors run down the panel's `MR` rows (one load of
/// packed `A` per depth step) and each column of `B` is broadcast, so a
/// remainder of `N` columns costs `N` FMAs per step instead of a half
/// tile's 12. Two accumulator sets (even and odd steps) keep a short `N`
/// from waiting on FMA latency.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn narrow<const N: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    bias: *const f32,
    epi: &TileEpi,
) {
    // The panel's `MR` rows of one depth step; the lanes past them would
    // read the next step (or past the end of `A`).
    const ROWS: u16 = ((1u32 << MR) - 1) as u16;
    let mut acc = [[_mm512_setzero_ps(); N]; 2];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc / 2 {
        for (s, set) in acc.iter_mut().enumerate() {
            let av = _mm512_maskz_loadu_ps(ROWS, ap.add(s * MR));
            for (j, r) in set.iter_mut().enumerate() {
                *r = _mm512_fmadd_ps(av, _mm512_set1_ps(*bp.add(s * ldb + j)), *r);
            }
        }
        ap = ap.add(2 * MR);
        bp = bp.add(2 * ldb);
    }
    if kc % 2 == 1 {
        let av = _mm512_maskz_loadu_ps(ROWS, ap);
        for (j, r) in acc[0].iter_mut().enumerate() {
            *r = _mm512_fmadd_ps(av, _mm512_set1_ps(*bp.add(j)), *r);
        }
    }
    // Columns to rows: `t[i][j]` is `C(i, j)`.
    let mut t = [[0.0f32; 16]; 16];
    for j in 0..N {
        let mut col = [0.0f32; 16];
        _mm512_storeu_ps(col.as_mut_ptr(), _mm512_add_ps(acc[0][j], acc[1][j]));
        for (row, &v) in t.iter_mut().zip(&col) {
            row[j] = v;
        }
    }
    let k = ((1u32 << N) - 1) as u16;
    for (i, row) in t.iter().enumerate().take(mr) {
        store(_mm512_loadu_ps(row.as_ptr()), k, c, ldc, i, 0, bias, epi);
    }
}
