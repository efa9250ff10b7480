//! The cache-blocked loop nest every variant shares (the Goto/BLIS order:
//! column block, depth block, row block, then `NR`-column and `MR`-row
//! panels), the packing of `A` and `B`, and the scalar epilogue used for
//! edge tiles. Only the register tile differs between variants, so it is
//! the one thing a [`Kernel`] provides.

use super::{Blocking, Func};

/// The epilogue as one tile applies it to its accumulators.
#[derive(Clone, Copy)]
pub(crate) struct TileEpi {
    /// Tile-origin address of a matrix to add (`lds` floats per row): the
    /// current `C` when accumulating or in a later depth block, a residual
    /// in the first; null for none.
    pub src: *const f32,
    pub lds: usize,
    /// The bias pointer (passed per tile) holds one value per row of the
    /// tile instead of one per column.
    pub bias_rows: bool,
    /// Clamp to `[lo, hi]` (the bias pointer is passed per tile).
    pub clamp: bool,
    pub lo: f32,
    pub hi: f32,
    /// Applied before the clamp (the bias pointer is passed per tile).
    pub func: Func,
}

/// A register-tile kernel of `B.mr × B.nr`.
pub(crate) trait Kernel {
    const B: Blocking;
    /// Column panels up to which the tile reads `A` in place instead of
    /// packed (0: always pack). Measured per kernel: in place pays where
    /// `n` is small and the rows stay in cache (AVX2), and loses where
    /// twelve row streams compete with a 32 KiB `B` panel (AVX-512).
    const DIRECT_MAX_PANELS: usize;

    /// `C[0..mr, 0..nr] = epi(Σ_p A(i, p) · b[p·ldb + j])` for `p < kc`, where
    /// `A(i, p)` is `a[p·MR + i]` (a packed panel) when `lda == 0`, else
    /// `a[i·lda + p]` (rows of `A` in place). `ldb` is `NR` for a packed
    /// panel of `B`, or the row stride of a row-major `B` read in place.
    ///
    /// # Safety
    /// `a` holds `kc · MR` floats (packed) or `mr` rows of `kc` floats
    /// `lda` apart, `b` holds `kc` rows of `NR` floats `ldb` apart (all `NR`
    /// readable, whatever `nr`); `c` addresses `mr`
    /// rows of `nr` floats `ldc` apart; `bias` is null or holds `nr` floats;
    /// `1 ≤ mr ≤ MR`, `1 ≤ nr ≤ NR`, `kc ≥ 1`; the CPU has the kernel's
    /// instruction set.
    #[allow(clippy::too_many_arguments)]
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
    );

    /// Columns `0..nr` (`nr < NR`) of a packed-`A` product whose row-major
    /// `B` is read in place, touching no column past `nr`; `false`, having
    /// done nothing, where this kernel has no cheaper path than a packed,
    /// zero-padded panel. Why: a block of 98 or 196 conv columns ends in a
    /// panel of 2 or 4 that costs a whole half tile (ResNet-50's 14x14
    /// layers lost 8-20% to it).
    ///
    /// # Safety
    /// As [`Kernel::tile`] with `lda == 0`, `ldb` the row stride of `B`,
    /// and only `nr` columns of each row of `B` readable.
    #[allow(clippy::too_many_arguments)]
    unsafe fn remainder(
        _kc: usize,
        _a: *const f32,
        _b: *const f32,
        _ldb: usize,
        _c: *mut f32,
        _ldc: usize,
        _mr: usize,
        _nr: usize,
        _bias: *const f32,
        _epi: &TileEpi,
    ) -> bool {
        false
    }

    /// `C[0, 0..nr] = epi(Σ_p a[p] · b[p·NR + j])` over the whole depth `k`
    /// of a one-row `A` and one pre-packed panel of `B`; `false`, having
    /// done nothing, where this kernel has no such path. Why: a batch-1
    /// dense layer is a matrix-vector product that streams its weights
    /// once, and the tile's depth blocks read them panel piece by panel
    /// piece with one row's two FMA chains waiting on each other
    /// (MobileNetV2's 1280 -> 1000 classifier: 0.40 ms in the model,
    /// against onnxruntime's 0.29).
    ///
    /// # Safety
    /// `a` holds `k` floats, `b` `k · NR`; `c` `nr ≤ NR` floats; `bias` is
    /// null or holds `nr` floats; `k ≥ 1`; the CPU has the kernel's
    /// instruction set.
    unsafe fn row(
        _k: usize,
        _a: *const f32,
        _b: *const f32,
        _c: *mut f32,
        _nr: usize,
        _bias: *const f32,
        _epi: &TileEpi,
    ) -> bool {
        false
    }
}

/// Validated operands of one GEMM call (see `api.rs` for the checks).
pub(crate) struct Args {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    pub b: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    pub accumulate: bool,
    /// One value per column of `C`, or per row with `bias_rows`.
    pub bias: *const f32,
    pub bias_rows: bool,
    /// A matrix added to the product (`m × n`, row stride `ldr`), or null.
    /// Never together with `accumulate`.
    pub res: *const f32,
    pub ldr: usize,
    pub lo: f32,
    pub hi: f32,
    /// Applied before the clamp.
    pub func: Func,
    pub scratch: *mut f32,
    pub scratch_len: usize,
    /// Row and column strides of a raw `B` (`ldb_cs`), packed by the call
    /// itself; `ldb_cs.1 == 0`: `B` was packed ahead of time (in packed-`A`
    /// calls `B` is always raw).
    pub ldb_cs: (usize, usize),
    /// `A` is stored transposed: element `(i, p)` at `a[p·lda + i]`
    /// (packed-`B` calls only).
    pub a_trans: bool,
}

/// The `C` tile at `(i, j)`, its bias pointer and its epilogue, for the
/// depth block starting at `pc` (`last`: the final one). Bias and clamp
/// come with the last depth block, the residual with the first; later
/// blocks add onto `C`.
///
/// # Safety
/// `args` passed the checks in `api.rs`; `(i, j)` lies inside `C`.
#[inline(always)]
pub(crate) unsafe fn tile_epilogue(
    args: &Args,
    i: usize,
    j: usize,
    pc: usize,
    last: bool,
) -> (*mut f32, *const f32, TileEpi) {
    let ct = args.c.add(i * args.ldc + j);
    let bias = if !last || args.bias.is_null() {
        core::ptr::null()
    } else if args.bias_rows {
        args.bias.add(i)
    } else {
        args.bias.add(j)
    };
    let mut epi = TileEpi {
        src: core::ptr::null(),
        lds: 0,
        bias_rows: args.bias_rows,
        clamp: last && clamps(args.lo, args.hi),
        lo: args.lo,
        hi: args.hi,
        func: if last { args.func } else { Func::Identity },
    };
    if args.accumulate || pc > 0 {
        (epi.src, epi.lds) = (ct, args.ldc);
    } else if !args.res.is_null() {
        epi.src = args.res.add(i * args.ldr + j);
        epi.lds = args.ldr;
    }
    (ct, bias, epi)
}

/// The clamp of the epilogue, NaN passing through: `min(max(v, lo), hi)`
/// in the order the vector `max`/`min` instructions evaluate it.
#[inline(always)]
pub(crate) fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let t = if v < lo { lo } else { v };
    if t > hi {
        hi
    } else {
        t
    }
}

/// Whether `[lo, hi]` clamps anything (±∞ bounds are the identity).
pub(crate) fn clamps(lo: f32, hi: f32) -> bool {
    lo > f32::NEG_INFINITY || hi < f32::INFINITY
}

/// Stores an `mr × nr` corner of an accumulator tile (row stride `ld`)
/// through the epilogue, one element at a time: the edge-tile path.
///
/// # Safety
/// As for [`Kernel::tile`]; `acc` holds `mr` rows of `ld ≥ nr` floats.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn store_scalar(
    acc: &[f32],
    ld: usize,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    bias: *const f32,
    epi: &TileEpi,
) {
    for i in 0..mr {
        let row = c.add(i * ldc);
        for j in 0..nr {
            let mut v = acc[i * ld + j];
            if !epi.src.is_null() {
                v += *epi.src.add(i * epi.lds + j);
            }
            if !bias.is_null() {
                v += *bias.add(if epi.bias_rows { i } else { j });
            }
            v = epi.func.apply(v);
            if epi.clamp {
                v = clamp(v, epi.lo, epi.hi);
            }
            *row.add(j) = v;
        }
    }
}

#[cfg(test)]
std::thread_local! {
    /// Lets a test force either way of reading `A` on its own thread.
    pub(crate) static DIRECT_OVERRIDE: core::cell::Cell<Option<bool>> =
        const { core::cell::Cell::new(None) };
}

/// The largest `MR` of any variant (sizes [`pack_a`]'s staging tile).
const MAX_MR: usize = 12;

const _: () = {
    let mut i = 0;
    while i < super::Variant::ALL.len() {
        assert!(super::Variant::ALL[i].blocking().mr <= MAX_MR);
        // The column-block offset `jc·kc` in `gemm` needs NC % NR == 0.
        let b = super::Variant::ALL[i].blocking();
        assert!(b.nc.is_multiple_of(b.nr) && b.mc.is_multiple_of(b.mr));
        i += 1;
    }
};

/// Copies rows `0..mc`, columns `0..kc` of `A` (element `(i, p)` at
/// `a[i·rs + p·cs]`) into `dst` as `⌈mc/MR⌉` panels of `kc × MR` (rows past
/// `mc` are zero), the order in which the tile reads them. Row-major `A`
/// (`cs == 1`) goes through a small tile so that loads run along rows;
/// transposed `A` (`rs == 1`, a convolution's column matrix read as
/// pixels × taps) is `MR` consecutive floats per depth step.
///
/// Always inlined so that `MR`, a constant of the calling kernel, unrolls
/// the inner copy.
///
/// # Safety
/// `a` addresses the `mc × kc` elements; `dst` holds `⌈mc/MR⌉·MR·kc`.
#[inline(always)]
#[allow(non_snake_case)]
unsafe fn pack_a(
    MR: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    (rs, cs): (usize, usize),
    dst: *mut f32,
) {
    let mut r0 = 0;
    let mut out = dst;
    while r0 < mc {
        let rows = (mc - r0).min(MR);
        let src = a.add(r0 * rs);
        if rows == MR && cs == 1 {
            // Eight depth steps at a time through a small tile: loads run
            // along the rows, and the stores into scratch are one
            // contiguous copy instead of MR-strided scalars.
            let mut p = 0;
            while p + 8 <= kc {
                let mut t = [0.0f32; 8 * MAX_MR];
                for i in 0..MR {
                    let row = src.add(i * rs + p);
                    for q in 0..8 {
                        t[q * MR + i] = *row.add(q);
                    }
                }
                core::ptr::copy_nonoverlapping(t.as_ptr(), out.add(p * MR), 8 * MR);
                p += 8;
            }
            for p in p..kc {
                for i in 0..MR {
                    *out.add(p * MR + i) = *src.add(i * rs + p);
                }
            }
        } else if rows == MR && rs == 1 {
            for p in 0..kc {
                core::ptr::copy_nonoverlapping(src.add(p * cs), out.add(p * MR), MR);
            }
        } else {
            for p in 0..kc {
                for i in 0..MR {
                    *out.add(p * MR + i) = if i < rows {
                        *src.add(i * rs + p * cs)
                    } else {
                        0.0
                    };
                }
            }
        }
        out = out.add(kc * MR);
        r0 += MR;
    }
}

/// Writes `B` (`k × n`, element `(p, j)` at `b[p·rs + j·cs]`) in the packed
/// layout described in the module docs, into `out[..k·n_pad]`.
pub(crate) fn pack_b(
    bl: Blocking,
    k: usize,
    n: usize,
    b: &[f32],
    rs: usize,
    cs: usize,
    out: &mut [f32],
) {
    pack_panels(bl.nr, n, k, b, (cs, rs), out);
}

/// The compile-time layout of both packed operands: panels of `w` lines
/// (columns of `B`, rows of packed `A`), each running the whole `depth`.
/// Line `l` at depth `p` (source `src[l·ls + p·ps]`) goes to
/// `out[(l / w)·depth·w + p·w + l % w]`; lines past `lines` are zero.
pub(crate) fn pack_panels(
    w: usize,
    lines: usize,
    depth: usize,
    src: &[f32],
    (ls, ps): (usize, usize),
    out: &mut [f32],
) {
    if depth == 0 {
        return;
    }
    let padded = lines.div_ceil(w) * w;
    let packed = &mut out[..padded * depth];
    for (panel, dst) in packed.chunks_exact_mut(depth * w).enumerate() {
        let l0 = panel * w;
        for p in 0..depth {
            for ll in 0..w {
                let l = l0 + ll;
                dst[p * w + ll] = if l < lines { src[l * ls + p * ps] } else { 0.0 };
            }
        }
    }
}

/// Copies columns `0..nc` of `kc` rows of a raw `B` (element `(p, j)` at
/// `b[p·rs + j·cs]`) into `⌈nc/NR⌉` panels of `kc × NR` (columns past `nc`
/// zero) at `dst`: contiguous row runs when `cs == 1` (an activation), runs
/// along the depth otherwise (a transposed operand, as `Kᵀ` in attention).
///
/// Always inlined so that `NR`, a constant of the calling kernel, turns
/// each row copy into a few vector moves.
///
/// # Safety
/// `b` addresses the `kc × nc` elements; `dst` holds `⌈nc/NR⌉·NR·kc`.
#[inline(always)]
#[allow(non_snake_case)]
pub(crate) unsafe fn pack_b_raw(
    NR: usize,
    kc: usize,
    nc: usize,
    b: *const f32,
    rs: usize,
    cs: usize,
    dst: *mut f32,
) {
    let mut j0 = 0;
    let mut out = dst;
    while j0 < nc {
        let cols = (nc - j0).min(NR);
        if cs == 1 {
            for p in 0..kc {
                let src = b.add(p * rs + j0);
                let d = out.add(p * NR);
                if cols == NR {
                    core::ptr::copy_nonoverlapping(src, d, NR);
                } else {
                    core::ptr::copy_nonoverlapping(src, d, cols);
                    core::ptr::write_bytes(d.add(cols), 0, NR - cols);
                }
            }
        } else {
            for jj in 0..NR {
                let d = out.add(jj);
                if jj < cols {
                    let src = b.add((j0 + jj) * cs);
                    for p in 0..kc {
                        *d.add(p * NR) = *src.add(p * rs);
                    }
                } else {
                    for p in 0..kc {
                        *d.add(p * NR) = 0.0;
                    }
                }
            }
        }
        out = out.add(kc * NR);
        j0 += NR;
    }
}

/// `C = act(A·B + (accumulate ? C : 0) + bias)` with kernel `K`.
///
/// Depth blocks after the first add into `C`; bias and clamp are applied by
/// the last one only, so the activation sees the complete sum.
///
/// # Safety
/// `args` passed the checks in `api.rs` (pointers cover their shapes,
/// `scratch_len ≥ MR·min(k, KC)`), and the CPU runs `K`'s instructions.
pub(crate) unsafe fn gemm<K: Kernel>(args: &Args) {
    let Blocking {
        mr,
        nr,
        kc: kc_max,
        mc: mc_max,
        nc: nc_max,
    } = K::B;
    let (m, n, k) = (args.m, args.n, args.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        epilogue_only(args);
        return;
    }
    let kc0 = k.min(kc_max);
    let n_pad = n.div_ceil(nr) * nr;
    // A raw B is packed block by block into the end of the scratch: as many
    // column panels as leave room for one row panel of A, at most NC.
    let raw_b = args.ldb_cs.1 != 0;
    if m == 1 && !raw_b && (!args.a_trans || args.lda == 1) && row_by_panels::<K>(args) {
        return;
    }
    let (nc_block, b_area) = if raw_b {
        let room = args.scratch_len.saturating_sub(mr * kc0) / kc0 / nr * nr;
        let nc = nc_max.min(n_pad).min(room).max(nr);
        (nc, nc * kc0)
    } else {
        (nc_max, 0)
    };
    let b_scratch = args.scratch.add(args.scratch_len - b_area);
    // Shrink the row block to the scratch the caller could spare.
    let a_room = args.scratch_len - b_area;
    let mc_block = mc_max.min(a_room / kc0 / mr * mr).max(mr);
    // With few column panels, packing A costs more than it saves: each
    // packed float would be read only `n/NR` times. The tiles then read A's
    // rows in place.
    let direct = n_pad / nr <= K::DIRECT_MAX_PANELS;
    #[cfg(test)]
    let direct = DIRECT_OVERRIDE.with(|o| o.get()).unwrap_or(direct);
    // The tiles read A in place by rows only.
    let direct = direct && !args.a_trans;
    let (a_rs, a_cs) = if args.a_trans {
        (1, args.lda)
    } else {
        (args.lda, 1)
    };

    let mut jc = 0;
    while jc < n {
        let nc = nc_block.min(n - jc);
        let mut pc = 0;
        while pc < k {
            let kc = kc_max.min(k - pc);
            let last = pc + kc == k;
            // A raw B block is packed into scratch as panels of kc rows
            // (panel jr/NR at jr·kc); pre-packed panels run the whole depth
            // (column j's panel at j·k, depth pc at pc·NR within it).
            let (b_block, panel_step) = if raw_b {
                let (rs, cs) = args.ldb_cs;
                pack_b_raw(nr, kc, nc, args.b.add(pc * rs + jc * cs), rs, cs, b_scratch);
                (b_scratch.cast_const(), kc)
            } else {
                (args.b.add(jc * k + pc * nr), k)
            };
            let mut ic = 0;
            while ic < m {
                let mc = mc_block.min(m - ic);
                if !direct {
                    pack_a(
                        mr,
                        mc,
                        kc,
                        args.a.add(ic * a_rs + pc * a_cs),
                        (a_rs, a_cs),
                        args.scratch,
                    );
                }
                let mut jr = 0;
                while jr < nc {
                    let nrr = nr.min(nc - jr);
                    let bp = b_block.add(jr * panel_step);
                    let mut ir = 0;
                    while ir < mc {
                        let (ct, bias, epi) = tile_epilogue(args, ic + ir, jc + jr, pc, last);
                        let (a, lda) = if direct {
                            (args.a.add((ic + ir) * args.lda + pc), args.lda)
                        } else {
                            (args.scratch.add(ir * kc).cast_const(), 0)
                        };
                        K::tile(
                            kc,
                            a,
                            lda,
                            bp,
                            nr,
                            ct,
                            args.ldc,
                            mr.min(mc - ir),
                            nrr,
                            bias,
                            &epi,
                        );
                        ir += mr;
                    }
                    jr += nr;
                }
                ic += mc;
            }
            pc += kc;
        }
        jc += nc;
    }
}

/// A one-row product over pre-packed `B` by [`Kernel::row`], panel after
/// panel, so that `B` streams through once in memory order; `false` where
/// the kernel has no row path.
///
/// # Safety
/// As [`gemm`], with `m == 1`, `B` pre-packed and `A`'s row contiguous.
unsafe fn row_by_panels<K: Kernel>(args: &Args) -> bool {
    let (n, k, nr) = (args.n, args.k, K::B.nr);
    let mut j = 0;
    while j < n {
        let (ct, bias, epi) = tile_epilogue(args, 0, j, 0, true);
        if !K::row(k, args.a, args.b.add(j * k), ct, nr.min(n - j), bias, &epi) {
            // Decided by the kernel alone: the first panel already says so.
            debug_assert_eq!(j, 0);
            return false;
        }
        j += nr;
    }
    true
}

/// `k == 0`: the product is zero and only the epilogue remains.
///
/// # Safety
/// `args` passed the checks in `api.rs`.
pub(crate) unsafe fn epilogue_only(args: &Args) {
    let clamp_on = clamps(args.lo, args.hi);
    for i in 0..args.m {
        let row = args.c.add(i * args.ldc);
        for j in 0..args.n {
            let mut v = if args.accumulate { *row.add(j) } else { 0.0 };
            if !args.res.is_null() {
                v += *args.res.add(i * args.ldr + j);
            }
            if !args.bias.is_null() {
                v += *args.bias.add(if args.bias_rows { i } else { j });
            }
            v = args.func.apply(v);
            if clamp_on {
                v = clamp(v, args.lo, args.hi);
            }
            *row.add(j) = v;
        }
    }
}
