//! Packed-`A` GEMM whose `B` is the im2col matrix of a 2-D convolution,
//! packed straight from the convolution's (padded) input.
//!
//! Why: an im2col convolution otherwise writes its column matrix (`k_h·k_w`
//! copies of the input) into scratch, and the packed-`A` call then copies
//! it again into panels. Reading the input through the view below while
//! packing drops the first copy and its trip through the cache.
//!
//! # The view
//! Column `j` of `B` is output position `j0 + j` of the block's first
//! output row: `oy = (j0 + j) / out_w`, `ox = (j0 + j) % out_w`. Row `p` is
//! `(ci, ky, kx)` with `p = (ci·k_h + ky)·k_w + kx`. Then
//! `B(p, j) = src[ci·plane + (oy·stride_h + ky·dil_h)·row + ox·stride_w + kx·dil_w]`:
//! the source already holds the padding, so every element is inside it.
//! A column range of a call is the same view with `j0` moved, which is how
//! threads split a call.
//!
//! Packing copies, per depth step, the runs of a panel's columns that are
//! adjacent in the source (with stride 1, whole stretches of an output row).

use super::driver::{Args, Kernel};
use super::{GemmError, Variant};

/// Geometry of an im2col view (see the module docs); the C struct
/// `KilnIm2col` is `src` followed by these fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Im2col {
    pub j0: usize,
    pub plane: usize,
    pub row: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub out_w: usize,
}

/// The C layout: `{ const float *src; size_t j0, plane, row, k_h, k_w,
/// dil_h, dil_w, stride_h, stride_w, out_w; }`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KilnIm2col {
    pub src: *const f32,
    pub view: Im2col,
}

impl Im2col {
    /// Source offset of column `j` (relative to `j0`).
    #[inline(always)]
    fn col(&self, j: usize) -> usize {
        let jj = self.j0 + j;
        (jj / self.out_w) * self.stride_h * self.row + (jj % self.out_w) * self.stride_w
    }

    /// Checks the sizes a view needs (`k` rows, positive extents).
    pub(crate) fn check(&self, k: usize) -> Result<(), GemmError> {
        let taps = self.k_h.checked_mul(self.k_w).ok_or(GemmError::Overflow)?;
        let positive = [self.k_h, self.k_w, self.out_w, self.dil_h, self.dil_w];
        if positive.contains(&0) || taps == 0 || !k.is_multiple_of(taps) {
            return Err(GemmError::Stride {
                what: "im2col view",
                stride: 0,
                min: 1,
            });
        }
        Ok(())
    }

    /// One past the largest source index the view reads for `k × n`.
    pub fn span(&self, k: usize, n: usize) -> Result<usize, GemmError> {
        if k == 0 || n == 0 {
            return Ok(0);
        }
        self.check(k)?;
        let taps = self.k_h * self.k_w;
        let m = |a: usize, b: usize| a.checked_mul(b).ok_or(GemmError::Overflow);
        let deepest = m((k / taps) - 1, self.plane)?
            .checked_add(m(m(self.k_h - 1, self.dil_h)?, self.row)?)
            .and_then(|x| x.checked_add((self.k_w - 1) * self.dil_w))
            .ok_or(GemmError::Overflow)?;
        // The farthest column is the last one, or the end of the row before
        // the last (when the last row is short).
        let last = self.j0.checked_add(n - 1).ok_or(GemmError::Overflow)?;
        let mut far = m(m(last / self.out_w, self.stride_h)?, self.row)?
            .checked_add(m(last % self.out_w, self.stride_w)?)
            .ok_or(GemmError::Overflow)?;
        if last / self.out_w > self.j0 / self.out_w {
            let prev = last / self.out_w * self.out_w - 1;
            let alt = m(m(prev / self.out_w, self.stride_h)?, self.row)?
                + m(self.out_w - 1, self.stride_w)?;
            far = far.max(alt);
        }
        deepest
            .checked_add(far)
            .and_then(|x| x.checked_add(1))
            .ok_or(GemmError::Overflow)
    }
}

/// Copies `len` floats (few: one stretch of an output row).
#[inline(always)]
unsafe fn copy_run(src: *const f32, dst: *mut f32, len: usize) {
    let mut i = 0;
    while i + 4 <= len {
        let v = core::ptr::read_unaligned(src.add(i).cast::<[f32; 4]>());
        core::ptr::write_unaligned(dst.add(i).cast::<[f32; 4]>(), v);
        i += 4;
    }
    while i < len {
        *dst.add(i) = *src.add(i);
        i += 1;
    }
}

/// The most columns a panel has (`NR` of every variant is at most this).
const MAX_NR: usize = 32;

/// Packs rows `pc..pc + kc`, columns `jc..jc + nc` of the view into `NR`
/// column panels at `dst` (the layout of `driver::pack_b_raw`).
///
/// # Safety
/// The view's reads stay inside the source at `src`; `dst` holds
/// `kc · ⌈nc/NR⌉·NR` floats; `NR ≤ MAX_NR`.
#[allow(non_snake_case)]
pub(crate) unsafe fn pack_b(
    NR: usize,
    kc: usize,
    nc: usize,
    src: *const f32,
    v: &Im2col,
    (pc, jc): (usize, usize),
    dst: *mut f32,
) {
    let taps = v.k_h * v.k_w;
    let mut jr = 0;
    let mut out = dst;
    while jr < nc {
        let cols = (nc - jr).min(NR);
        // Runs of columns adjacent in the source: (first column, length, offset).
        let mut runs = [(0usize, 0usize, 0usize); MAX_NR];
        let mut nruns = 0;
        for t in 0..cols {
            let off = v.col(jc + jr + t);
            if nruns > 0 {
                let (t0, len, o0) = runs[nruns - 1];
                if t0 + len == t && o0 + len == off {
                    runs[nruns - 1].1 += 1;
                    continue;
                }
            }
            runs[nruns] = (t, 1, off);
            nruns += 1;
        }
        let (mut ci, mut ky, mut kx) = (pc / taps, (pc % taps) / v.k_w, pc % v.k_w);
        for p in 0..kc {
            let base = src.add(ci * v.plane + ky * v.dil_h * v.row + kx * v.dil_w);
            let d = out.add(p * NR);
            for &(t0, len, off) in &runs[..nruns] {
                copy_run(base.add(off), d.add(t0), len);
            }
            for t in cols..NR {
                *d.add(t) = 0.0;
            }
            kx += 1;
            if kx == v.k_w {
                kx = 0;
                ky += 1;
                if ky == v.k_h {
                    ky = 0;
                    ci += 1;
                }
            }
        }
        out = out.add(kc * NR);
        jr += NR;
    }
}

/// The packed-`A` loop nest with `B` read through `view`.
///
/// # Safety
/// As [`super::packed_a::gemm`], with `args.b` the view's source.
pub(crate) unsafe fn gemm<K: Kernel>(args: &Args, view: &Im2col) {
    super::packed_a::gemm_with::<K>(args, &|kc, nc, pc, jc, dst| {
        pack_b(K::B.nr, kc, nc, args.b, view, (pc, jc), dst)
    });
}

/// Whether every variant's `NR` fits the run table.
const _: () = {
    let mut i = 0;
    while i < Variant::ALL.len() {
        assert!(Variant::ALL[i].blocking().nr <= MAX_NR);
        i += 1;
    }
};
