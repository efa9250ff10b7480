//! The portable tile: plain Rust, any target, firmware included. A 4×4
//! tile keeps its 16 accumulators in registers on a Cortex-M4F (32 single
//! registers) and lets LLVM vectorise it where SIMD is baseline.

use super::driver::{store_scalar, Kernel, TileEpi};
use super::{Blocking, Variant};

const MR: usize = 4;
const NR: usize = 4;

pub(crate) struct Scalar;

impl Kernel for Scalar {
    const B: Blocking = Variant::Scalar.blocking();
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
        // Strides of A's rows and depth steps: packed panel or in place.
        let (rs, cs) = if lda == 0 { (1, MR) } else { (lda, 1) };
        let mut acc = [0.0f32; MR * NR];
        for p in 0..kc {
            let bp = b.add(p * ldb);
            // A packed panel is zero-padded: all MR rows (a constant bound
            // that unrolls); in place, only the tile's own rows exist.
            for i in 0..if lda == 0 { MR } else { mr } {
                let ai = *a.add(i * rs + p * cs);
                for j in 0..NR {
                    acc[i * NR + j] += ai * *bp.add(j);
                }
            }
        }
        store_scalar(&acc, NR, c, ldc, mr, nr, bias, epi);
    }
}
