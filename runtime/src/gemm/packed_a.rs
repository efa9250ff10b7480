//! GEMM with `A` packed ahead of time and `B` packed by the kernel: the
//! shape of a convolution in NCHW, `C (C_out × pixels) = W · col`, whose
//! weights are `A`.
//!
//! Why a second mode: with the weights on the left, packing them on every
//! call (as [`super::driver::gemm`] packs `A`) repeats the same copy for
//! every block of pixels, and the activation `B` would have to be packed by
//! generated code. Here the compiler packs `A` once ([`pack_a`]) and the
//! tiles read a row-major `B` where it lies (see [`reads_b_in_place`]),
//! its last panel narrower than `NR` too where the kernel has a
//! [`Kernel::remainder`] path (AVX-512); a `B` with a column stride, or a
//! last panel without that path, is packed into scratch.
//!
//! # Layout of packed `A`
//! Rows are cut into panels of `MR` (the last one zero-padded); a panel
//! stores its `k` depth steps one after another, `MR` floats each, so
//! element `(i, p)` lives at `(i / MR)·k·MR + p·MR + i % MR`; total
//! [`Variant::packed_a_len`] `= ⌈m/MR⌉·MR · k`. Panel-major, so that the
//! panels from row `r·MR` on are themselves the packed `A` of those rows: a
//! thread given a range of rows calls the kernel at `a + r·MR·k`.
//!
//! # Scratch
//! One `kc × NR` panel of `B` at least ([`Variant::min_scratch_len_pa`]);
//! with [`Variant::scratch_len_pa`] a whole `KC × NC` block of a strided `B`
//! is packed at once and every `A` panel sweeps it from L2.

use super::driver::{pack_b_raw, pack_panels, Args, Kernel};
use super::{Blocking, Variant};

impl Variant {
    /// Floats [`pack_a`] writes for an `m × k` `A`: `⌈m/MR⌉·MR · k`.
    pub const fn packed_a_len(self, m: usize, k: usize) -> usize {
        let mr = self.blocking().mr;
        k.saturating_mul(m.div_ceil(mr).saturating_mul(mr))
    }

    /// Scratch floats of a packed-`A` call for full speed: one `KC × NC`
    /// block of `B` (`min(k, KC) · min(⌈n/NR⌉·NR, NC)`).
    pub const fn scratch_len_pa(self, n: usize, k: usize) -> usize {
        let b = self.blocking();
        let cols = n.div_ceil(b.nr) * b.nr;
        let cols = if cols < b.nc { cols } else { b.nc };
        cols * if k < b.kc { k } else { b.kc }
    }

    /// Scratch floats of a call with both operands raw, for full speed: the
    /// packed-`B` call's plus one `KC × NC` block of `B`.
    pub const fn scratch_len_raw(self, m: usize, n: usize, k: usize) -> usize {
        self.scratch_len(m, k) + self.scratch_len_pa(n, k)
    }

    /// The least scratch of a call with both operands raw: one row panel of
    /// `A` and one column panel of `B`.
    pub const fn min_scratch_len_raw(self, k: usize) -> usize {
        self.min_scratch_len(k) + self.min_scratch_len_pa(k)
    }

    /// The least scratch of a packed-`A` call: one `min(k, KC) × NR` panel.
    pub const fn min_scratch_len_pa(self, k: usize) -> usize {
        let b = self.blocking();
        b.nr * if k < b.kc { k } else { b.kc }
    }
}

/// Writes `A` (`m × k`, element `(i, p)` at `a[i·rs + p·cs]`) in the packed
/// layout of the module docs into `out[..m_pad·k]`.
pub(crate) fn pack_a(
    bl: Blocking,
    m: usize,
    k: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
    out: &mut [f32],
) {
    pack_panels(bl.mr, m, k, a, (rs, cs), out);
}

/// Whether the tiles read `B` (row stride `rs`, column stride `cs`) where it
/// lies instead of from packed panels: any row-major `B`. No copy at all is
/// most of the gain on convolutions with few output channels or a short
/// depth; measured on Zen 4 (GFLOP/s, packed → in place): 24×3136×144
/// 84 → 106, 64×3136×576 77 → 96, 16×3025×128 76 → 98, 128×784×1152
/// 98 → 107, and no loss even at row strides of 4 KiB multiples
/// (64×1024×576 90 → 99, 64×3072×576 74 → 86), where all rows of a panel
/// share cache sets.
fn reads_b_in_place(nr: usize, rs: usize, cs: usize) -> bool {
    cs == 1 && rs >= nr
}

/// `C = act(A·B + (accumulate ? C : residual) + bias)` with `A` packed by
/// [`pack_a`] at `args.a`, `B` raw at `args.b` with strides `args.ldb_cs`,
/// kernel `K`.
///
/// # Safety
/// `args` passed the checks in `api.rs`, `scratch_len ≥ NR·min(k, KC)`,
/// and the CPU runs `K`'s instructions.
pub(crate) unsafe fn gemm<K: Kernel>(args: &Args) {
    let Blocking { mr, nr, .. } = K::B;
    let (m, n, k) = (args.m, args.n, args.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        super::driver::epilogue_only(args);
        return;
    }
    let (rs, cs) = args.ldb_cs;
    let full = if reads_b_in_place(nr, rs, cs) {
        n / nr * nr
    } else {
        0
    };
    // Full panels of B in place, column panels outer and row panels inner:
    // one `k × NR` panel of B (in L1/L2) meets every panel of A before the
    // next is read, and each tile runs the whole depth, so C is written
    // once and never read back. Rows outer swept all of B once per row
    // panel, from L3 (64×3136×576: ~45 → ~100 GFLOP/s); depth blocks of
    // `KC` read C back per block (64×3136×576: 98 → 105, 128×784×1152:
    // 107 → 111).
    let run = |ir: usize, jr: usize| {
        let (ct, bias, epi) = super::driver::tile_epilogue(args, ir, jr, 0, true);
        K::tile(
            k,
            args.a.add(ir * k),
            0,
            args.b.add(jr),
            rs,
            ct,
            args.ldc,
            mr.min(m - ir),
            nr,
            bias,
            &epi,
        );
    };
    if k * full * 4 <= B_IN_L2_BYTES {
        // A shallow B that stays in L2: rows outer, so that C is written
        // as `MR` long sequential runs instead of a short run per row of
        // every column panel (MobileNetV2's 16 -> 96 expansion at 112x112,
        // one GEMM over the image: 0.85 ms in blocks of 224 columns, 0.80
        // in one columns outer, 0.60 rows outer).
        for ir in (0..m).step_by(mr) {
            for jr in (0..full).step_by(nr) {
                run(ir, jr);
            }
        }
    } else {
        for jr in (0..full).step_by(nr) {
            for ir in (0..m).step_by(mr) {
                run(ir, jr);
            }
        }
    }
    // Row-major (in place or, with fewer than `NR` columns, merely dense).
    let row_major = cs == 1 && rs >= n.min(nr);
    if full < n && row_major && remainder_in_place::<K>(args, full) {
        return;
    }
    if full < n {
        packed_panels::<K>(args, full);
    }
}

/// The most bytes of `B` a rows-outer sweep rereads from L2 per row panel.
const B_IN_L2_BYTES: usize = 1 << 20;

/// Columns `j0..n` (fewer than `NR`) of a product whose `B` is read in
/// place, by the kernel's [`Kernel::remainder`] path, row panel by row
/// panel over the whole depth; `false` where the kernel has none.
///
/// # Safety
/// As [`gemm`], with `B` row-major and `n - j0 < NR`.
unsafe fn remainder_in_place<K: Kernel>(args: &Args, j0: usize) -> bool {
    let Blocking { mr, .. } = K::B;
    let (m, n, k) = (args.m, args.n, args.k);
    let mut ir = 0;
    while ir < m {
        let (ct, bias, epi) = super::driver::tile_epilogue(args, ir, j0, 0, true);
        let done = K::remainder(
            k,
            args.a.add(ir * k),
            args.b.add(j0),
            args.ldb_cs.0,
            ct,
            args.ldc,
            mr.min(m - ir),
            n - j0,
            bias,
            &epi,
        );
        if !done {
            // Decided by `nr` alone: the first panel already says so.
            debug_assert_eq!(ir, 0);
            return false;
        }
        ir += mr;
    }
    true
}

/// Columns `j0..n` of the product through packed panels of `B` (a strided
/// `B`, or the last panel, narrower than `NR`, of a row-major one, since
/// the tiles load all `NR` columns): blocks of `KC × NC`, as many columns as
/// the scratch holds, each swept by every panel of `A`.
///
/// # Safety
/// As [`gemm`]; `j0 < n`.
unsafe fn packed_panels<K: Kernel>(args: &Args, j0: usize) {
    let Blocking {
        mr,
        nr,
        kc: kc_max,
        nc: nc_max,
        ..
    } = K::B;
    let (m, n, k) = (args.m, args.n, args.k);
    let (rs, cs) = args.ldb_cs;
    let kc0 = k.min(kc_max);
    let nc_block = nc_max.min(args.scratch_len / kc0 / nr * nr).max(nr);
    let mut jc = j0;
    while jc < n {
        let nc = nc_block.min(n - jc);
        let mut pc = 0;
        while pc < k {
            let kc = kc_max.min(k - pc);
            let last = pc + kc == k;
            pack_b_raw(
                nr,
                kc,
                nc,
                args.b.add(pc * rs + jc * cs),
                rs,
                cs,
                args.scratch,
            );
            let mut ir = 0;
            while ir < m {
                let ap = args.a.add(ir * k + pc * mr);
                let mut jr = 0;
                while jr < nc {
                    let (ct, bias, epi) = super::driver::tile_epilogue(args, ir, jc + jr, pc, last);
                    K::tile(
                        kc,
                        ap,
                        0,
                        args.scratch.add(jr * kc),
                        nr,
                        ct,
                        args.ldc,
                        mr.min(m - ir),
                        nr.min(nc - jr),
                        bias,
                        &epi,
                    );
                    jr += nr;
                }
                ir += mr;
            }
            pc += kc;
        }
        jc += nc;
    }
}
