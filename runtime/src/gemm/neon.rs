//! aarch64 NEON tile: 8 rows × 12 columns, twenty-four 128-bit
//! accumulators. Each depth step loads three vectors of `B` and two of `A`
//! and issues 24 `fmla` by lane, so `A` needs no broadcasts: 5 loads per
//! 24 FMAs, 29 of the 32 `v` registers. The row count is a const
//! parameter so that a short edge panel computes only its own rows.

use core::arch::aarch64::*;

use super::driver::{store_scalar, Kernel, TileEpi};
use super::{Blocking, Func, Variant};

const MR: usize = 8;
const NR: usize = 12;

pub(crate) struct Neon;

impl Kernel for Neon {
    const B: Blocking = Variant::Neon.blocking();
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
                if lda == 0 {
                    tile::<$r, true>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                } else {
                    tile::<$r, false>(kc, a, lda, b, ldb, c, ldc, nr, bias, epi)
                }
            };
        }
        match mr {
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

/// Row `$i` of the tile += `b · a[$lane]`, if the tile has that row (`R`
/// is a constant, so the test folds away).
macro_rules! fma_row {
    ($acc:ident, $i:expr, $b:ident, $a:ident, $lane:expr) => {
        if $i < R {
            $acc[$i][0] = vfmaq_laneq_f32::<$lane>($acc[$i][0], $b[0], $a);
            $acc[$i][1] = vfmaq_laneq_f32::<$lane>($acc[$i][1], $b[1], $a);
            $acc[$i][2] = vfmaq_laneq_f32::<$lane>($acc[$i][2], $b[2], $a);
        }
    };
}

/// `R × 12` product of an `MR`-row `A` panel and a `B` panel, stored
/// through the epilogue into `nr ≤ 12` columns of `C`.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const PACKED: bool>(
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
    let mut acc = [[vdupq_n_f32(0.0); 3]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let bv = [vld1q_f32(bp), vld1q_f32(bp.add(4)), vld1q_f32(bp.add(8))];
        let (a0, a1) = if PACKED {
            // The second half of the panel, loaded only if the tile uses it.
            let a0 = vld1q_f32(ap);
            (a0, if R > 4 { vld1q_f32(ap.add(4)) } else { a0 })
        } else {
            // Column p of R rows in place; rows past R are not read.
            let at = |i: usize| if i < R { *ap.add(i * lda) } else { 0.0 };
            let lo = [at(0), at(1), at(2), at(3)];
            let hi = [at(4), at(5), at(6), at(7)];
            (vld1q_f32(lo.as_ptr()), vld1q_f32(hi.as_ptr()))
        };
        fma_row!(acc, 0, bv, a0, 0);
        fma_row!(acc, 1, bv, a0, 1);
        fma_row!(acc, 2, bv, a0, 2);
        fma_row!(acc, 3, bv, a0, 3);
        fma_row!(acc, 4, bv, a1, 0);
        fma_row!(acc, 5, bv, a1, 1);
        fma_row!(acc, 6, bv, a1, 2);
        fma_row!(acc, 7, bv, a1, 3);
        ap = ap.add(if PACKED { MR } else { 1 });
        bp = bp.add(ldb);
    }
    // A transcendental activation goes through the scalar store.
    if nr == NR && epi.func == Func::Identity {
        let lo = vdupq_n_f32(epi.lo);
        let hi = vdupq_n_f32(epi.hi);
        for (i, row) in acc.iter().take(R).enumerate() {
            let cr = c.add(i * ldc);
            for (q, &acc_q) in row.iter().enumerate() {
                let cq = cr.add(4 * q);
                let mut v = acc_q;
                if !epi.src.is_null() {
                    v = vaddq_f32(v, vld1q_f32(epi.src.add(i * epi.lds + 4 * q)));
                }
                if !bias.is_null() {
                    let bv = if epi.bias_rows {
                        vdupq_n_f32(*bias.add(i))
                    } else {
                        vld1q_f32(bias.add(4 * q))
                    };
                    v = vaddq_f32(v, bv);
                }
                if epi.clamp {
                    // FMAX/FMIN return NaN when an operand is NaN: NaN passes.
                    v = vminq_f32(hi, vmaxq_f32(lo, v));
                }
                vst1q_f32(cq, v);
            }
        }
    } else {
        let mut tmp = [0.0f32; MR * NR];
        for (i, row) in acc.iter().take(R).enumerate() {
            for (q, &acc_q) in row.iter().enumerate() {
                vst1q_f32(tmp.as_mut_ptr().add(i * NR + 4 * q), acc_q);
            }
        }
        store_scalar(&tmp, NR, c, ldc, R, nr, bias, epi);
    }
}
