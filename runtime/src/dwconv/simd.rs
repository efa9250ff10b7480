//! The loop nest every vector variant shares, written once over [`Simd`]:
//! staging of input rows in a stack buffer, the register tiles, and the
//! per-geometry dispatch. A variant provides the vector type and a handful
//! of operations, and instantiates [`run`] inside a function compiled with
//! its target features; everything here is `#[inline(always)]` (and free
//! of closures, which would not inherit the features) so that it is
//! compiled with those features too.
//!
//! # Staging
//! An input row is copied into a *row buffer* of `stride_w` phases of `p`
//! floats each: `phase[q][j] = row[j·stride_w + q − pad_left]`, zero where
//! that index is outside the row. Output `ox`'s tap `kx` (padded column
//! `ox·stride_w + kx·dil_w`) is then `phase[(kx·dil_w) % stride_w]
//! [ox + (kx·dil_w) / stride_w]`, so a vector of consecutive outputs reads
//! a contiguous vector of one phase whatever the stride, padding included.
//! `p` covers every vector of the row (the last one rounded up to whole
//! lanes) plus the largest tap offset, so tiles never test bounds. Rows in
//! the top and bottom padding are a buffer of zeros.
//!
//! Row buffers hold either the whole padded plane of a channel (padded row
//! `py` in buffer `py`, staged once per channel), or, for planes that do
//! not fit, a ring of buffers: a sliding window over consecutive rows for
//! the fixed kernels, buffers tagged with the row they hold otherwise.
//!
//! Staging costs a copy of the input, but measured no slower than reading
//! the interior of rows in place and staging only their ends: the tiles
//! then load from a small buffer that stays in L1 rather than from the
//! input, and the copy doubles as the stride-2 split.
//!
//! # Tiles
//! The 3×3 and 5×5 kernels with stride 1 or 2 (both ways) and dilation 1
//! compute `R` output rows × `T` vectors at a time: each input vector is
//! loaded once and feeds every output row of the block whose taps include
//! it, and the `R·T` accumulators stay in registers across all taps, as
//! do the kernel's weights where the register file holds them. Anything
//! else takes a general tile of one output row with the taps in a loop.

use core::mem::MaybeUninit;

use super::scalar;
use super::KilnDwArgs;
use crate::func::Func;

/// The operations a vector variant provides. All are `unsafe` because they
/// execute instructions the CPU may lack and dereference raw pointers.
pub(crate) trait Simd {
    /// `L` lanes of f32.
    type V: Copy;
    const L: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `L` floats.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `L` floats.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads lanes `0..n` (`n ≤ L`), zero above, reading nothing past
    /// them.
    unsafe fn load_part(p: *const f32, n: usize) -> Self::V;
    /// Stores lanes `0..n` (`n ≤ L`) and nothing past them.
    unsafe fn store_part(p: *mut f32, v: Self::V, n: usize);
    /// `a·b + acc`, fused where the variant has FMA.
    unsafe fn fma(a: Self::V, b: Self::V, acc: Self::V) -> Self::V;
    /// `min(hi, max(lo, v))`, NaN in `v` passing through.
    unsafe fn clamp(v: Self::V, lo: Self::V, hi: Self::V) -> Self::V;
    /// `f(v)` lane by lane ([`crate::func`]).
    unsafe fn func(f: Func, v: Self::V) -> Self::V;
    /// The epilogue: `f`, then the clamp.
    #[inline(always)]
    unsafe fn act(f: Func, v: Self::V, lo: Self::V, hi: Self::V) -> Self::V {
        let v = if f == Func::Identity {
            v
        } else {
            Self::func(f, v)
        };
        Self::clamp(v, lo, hi)
    }
    /// The even- and odd-indexed lanes of the `2·L` floats `a`, `b`.
    unsafe fn deinterleave(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// Transposes the `L × L` block whose row `i` is at `src + i·ss` into
    /// `dst` (row `j` at `dst + j·ds`): `dst[j][i] = src[i][j]`. Variants
    /// with shuffles worth using override this element-by-element copy.
    #[inline(always)]
    unsafe fn transpose(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
        for i in 0..Self::L {
            for j in 0..Self::L {
                *dst.add(j * ds + i) = *src.add(i * ss + j);
            }
        }
    }
}

/// Floats of the stack buffer for row staging (48 KiB, which with the
/// small arrays beside it keeps a call's stack under 64 KiB).
pub(crate) const BUF_FLOATS: usize = 12 * 1024;
/// The largest kernel the general vector path takes (taller or wider ones
/// use the portable path): bounds its tap-offset table.
const MAX_KH: usize = 16;
const MAX_KW: usize = 32;
/// Row pointers one step of the loop nest needs at most: `k_h` for the
/// general path, `S·(R − 1) + K` for a block of `R` output rows of a
/// `K × K` kernel with stride `S`.
const MAX_ROWS: usize = 24;

/// The staging buffer, aligned to a cache line.
#[repr(C, align(64))]
struct Buf([f32; BUF_FLOATS]);

/// Where staged rows live (see the module docs).
#[derive(Clone, Copy)]
struct Layout {
    /// Floats per phase.
    p: usize,
    /// Floats per row buffer: `stride_w · p`.
    slot: usize,
    /// Whole plane (padded rows `0..rows`) instead of a ring of `rows`
    /// buffers.
    plane: bool,
    rows: usize,
    /// Where row buffers start in the stack buffer: chosen so that the
    /// whole-vector stores of [`fill_row`] are aligned (misaligned stores
    /// cost more than the misaligned loads from the input they become).
    lead: usize,
    /// Ring mode: offset of a row buffer of zeros standing for the rows in
    /// the top and bottom padding (the plane has those rows itself).
    zero: usize,
    /// Floats of the buffer in use from `lead` on, zeroed once per call:
    /// refills write the same extent of every buffer, so the padding
    /// stays zero.
    used: usize,
}

/// The staging layout for vectors of `l` lanes and steps that need `need`
/// rows at once, or None when it does not fit (or a size overflows): the
/// portable path then runs.
fn layout(a: &KilnDwArgs, l: usize, need: usize) -> Option<Layout> {
    if a.k_h > MAX_KH || a.k_w > MAX_KW || need > MAX_ROWS {
        return None;
    }
    let max_off = (a.k_w - 1).checked_mul(a.dil_w)? / a.stride_w;
    let p = a
        .out_w
        .div_ceil(l)
        .checked_mul(l)?
        .checked_add(max_off)?
        .checked_next_multiple_of(l)?;
    let slot = p.checked_mul(a.stride_w)?;
    // The first element `fill_row` stores a whole vector at.
    let first = match a.stride_w {
        1 => a.pad_left,
        2 => a.pad_left.div_ceil(2),
        _ => 0,
    };
    let lead = (l - first % l) % l;
    let room = BUF_FLOATS - lead;
    // The padded rows the outputs reach (no overflow: see `extents`). The
    // whole plane is staged only when the vertical stride skips no row.
    let reach = (a.out_h - 1) * a.stride_h + (a.k_h - 1) * a.dil_h + 1;
    let dense = a.stride_h <= (a.k_h - 1) * a.dil_h + 1;
    if let Some(n) = reach.checked_mul(slot) {
        if dense && n <= room {
            return Some(Layout {
                p,
                slot,
                plane: true,
                rows: reach,
                lead,
                zero: 0,
                used: n,
            });
        }
    }
    let zero = need.checked_mul(slot)?;
    let used = zero.checked_add(slot)?;
    (used <= room).then_some(Layout {
        p,
        slot,
        plane: false,
        rows: need,
        lead,
        zero,
        used,
    })
}

/// `dst[..n] = src[..n]`, vector by vector (the last one overlapping the
/// one before when `n` is not a multiple of `L`).
#[inline(always)]
unsafe fn copy<S: Simd>(dst: *mut f32, src: *const f32, n: usize) {
    if n < S::L {
        S::store_part(dst, S::load_part(src, n), n);
        return;
    }
    let mut i = 0;
    while i + S::L <= n {
        S::store(dst.add(i), S::load(src.add(i)));
        i += S::L;
    }
    if i < n {
        S::store(dst.add(n - S::L), S::load(src.add(n - S::L)));
    }
}

/// Splits the `2·L` sources from `i` (with `i + pl` even) into phases 0
/// and 1 of a stride-2 row buffer. (A function, not a closure: closures do
/// not inherit the `#[inline(always)]` that compiles the intrinsics in.)
#[inline(always)]
unsafe fn split2<S: Simd>(dst: *mut f32, src: *const f32, i: usize, pl: usize, p: usize) {
    let (even, odd) = S::deinterleave(S::load(src.add(i)), S::load(src.add(i + S::L)));
    let j = (i + pl) / 2;
    S::store(dst.add(j), even);
    S::store(dst.add(p + j), odd);
}

/// As [`split2`] for the `n < 2·L` sources from `i`, with partial loads
/// and stores (rows too short for one whole pair of vectors).
#[inline(always)]
unsafe fn split2_part<S: Simd>(
    dst: *mut f32,
    src: *const f32,
    i: usize,
    n: usize,
    pl: usize,
    p: usize,
) {
    let lo = S::load_part(src.add(i), n.min(S::L));
    let hi = if n > S::L {
        S::load_part(src.add(i + S::L), n - S::L)
    } else {
        S::zero()
    };
    let (even, odd) = S::deinterleave(lo, hi);
    let j = (i + pl) / 2;
    S::store_part(dst.add(j), even, n.div_ceil(2));
    S::store_part(dst.add(p + j), odd, n / 2);
}

/// Stages input row `src` (`in_w` floats) into the row buffer `dst`.
/// `s` is `a.stride_w`, passed separately so that callers that know it at
/// compile time get the divisions by it folded.
#[inline(always)]
unsafe fn fill_row<S: Simd>(dst: *mut f32, src: *const f32, a: &KilnDwArgs, s: usize, p: usize) {
    let pl = a.pad_left;
    // Source `i` goes to phase `(i + pl) % s`, element `(i + pl) / s`;
    // sources from `s·p − pl` on land past every phase and are not needed.
    let n = a.in_w.min((s * p).saturating_sub(pl));
    if n == 0 {
        return;
    }
    if s == 1 {
        copy::<S>(dst.add(pl), src, n);
        return;
    }
    let mut i = 0;
    if s == 2 {
        // Whole vectors from the first source whose parity matches the
        // padding's (then even lanes go to phase 0 and odd ones to phase
        // 1, at the same index), the last one overlapping the one before.
        let two = 2 * S::L;
        if pl % 2 == 1 {
            *dst.add(p + pl / 2) = *src;
            i = 1;
        }
        if n >= i + two {
            while i + two <= n {
                split2::<S>(dst, src, i, pl, p);
                i += two;
            }
            if i < n {
                let last = n - two;
                let last = last - (last + pl) % 2;
                split2::<S>(dst, src, last, pl, p);
                i = last + two;
            }
        } else if i < n {
            split2_part::<S>(dst, src, i, n - i, pl, p);
            i = n;
        }
    }
    // The rest one by one, phase and index stepped without a division.
    let (mut q, mut j) = ((i + pl) % s, (i + pl) / s);
    while i < n {
        *dst.add(q * p + j) = *src.add(i);
        i += 1;
        q += 1;
        if q == s {
            q = 0;
            j += 1;
        }
    }
}

/// The staged rows of one call and the bookkeeping that maps padded rows
/// to row buffers.
struct Stage {
    base: *mut f32,
    lay: Layout,
    /// Ring mode, any rows: the input row each buffer holds
    /// (`usize::MAX`: none).
    tags: [usize; MAX_ROWS],
    /// Ring mode, consecutive rows: the padded rows below this one are
    /// staged, row `py` in buffer `py % rows`.
    next: usize,
}

impl Stage {
    /// Starts channel `xc`: in plane mode stages its rows, in ring mode
    /// forgets the previous channel's.
    #[inline(always)]
    unsafe fn begin_channel<S: Simd>(&mut self, a: &KilnDwArgs, sw: usize, xc: *const f32) {
        if self.lay.plane {
            let rows = self.lay.rows.saturating_sub(a.pad_top).min(a.in_h);
            for iy in 0..rows {
                let dst = self.base.add((a.pad_top + iy) * self.lay.slot);
                self.stage::<S>(dst, xc.add(iy * a.in_w), a, sw);
            }
        } else {
            self.tags = [usize::MAX; MAX_ROWS];
            self.next = 0;
        }
    }

    /// Stages one input row into the row buffer `dst`.
    #[inline(always)]
    unsafe fn stage<S: Simd>(&self, dst: *mut f32, src: *const f32, a: &KilnDwArgs, sw: usize) {
        fill_row::<S>(dst, src, a, sw, self.lay.p);
    }

    /// Points `rows[i]` at the staged padded row `top + i` for `i < count`
    /// (rows in the padding at a buffer of zeros), staging what is
    /// missing. For the fixed kernels, whose steps need consecutive rows
    /// with non-decreasing `top` and `count` at most the ring's size: the
    /// ring is then a sliding window, row `py` in buffer `py % rows`, and
    /// a row once staged stays until `rows` later rows have been.
    #[inline(always)]
    unsafe fn window<S: Simd>(
        &mut self,
        a: &KilnDwArgs,
        sw: usize,
        xc: *const f32,
        top: usize,
        count: usize,
        rows: &mut [*const f32; MAX_ROWS],
    ) {
        let slot = self.lay.slot;
        let n = self.lay.rows;
        let zeros = self.base.add(self.lay.zero);
        let mut k = if self.lay.plane { 0 } else { top % n };
        for (i, r) in rows.iter_mut().enumerate().take(count) {
            let py = top + i;
            if self.lay.plane {
                *r = self.base.add(py * slot);
                continue;
            }
            if py >= a.pad_top && py - a.pad_top < a.in_h {
                let dst = self.base.add(k * slot);
                if py >= self.next {
                    let src = xc.add((py - a.pad_top) * a.in_w);
                    self.stage::<S>(dst, src, a, sw);
                    self.next = py + 1;
                }
                *r = dst;
            } else {
                *r = zeros;
            }
            k += 1;
            if k == n {
                k = 0;
            }
        }
    }

    /// Points `rows[i]` at the staged padded row `top + i·step` for
    /// `i < count` (rows in the padding at a buffer of zeros), staging
    /// what is missing. `sw` is `a.stride_w` (see [`fill_row`]).
    #[inline(always)]
    unsafe fn rows<S: Simd>(
        &mut self,
        a: &KilnDwArgs,
        sw: usize,
        xc: *const f32,
        (top, count, step): (usize, usize, usize),
        rows: &mut [*const f32; MAX_ROWS],
    ) {
        let slot = self.lay.slot;
        if self.lay.plane {
            for (i, r) in rows.iter_mut().enumerate().take(count) {
                *r = self.base.add((top + i * step) * slot);
            }
            return;
        }
        // Keep the buffers that already hold a needed row, then refill
        // the others (there are as many buffers as rows needed at most).
        let n = self.lay.rows;
        let zeros = self.base.add(self.lay.zero);
        let mut busy = [false; MAX_ROWS];
        let mut missing = 0u32;
        for (i, r) in rows.iter_mut().enumerate().take(count) {
            let py = top + i * step;
            if py < a.pad_top || py - a.pad_top >= a.in_h {
                *r = zeros;
                continue;
            }
            match self.tags[..n].iter().position(|&t| t == py - a.pad_top) {
                Some(k) => {
                    busy[k] = true;
                    *r = self.base.add(k * slot);
                }
                None => missing |= 1 << i,
            }
        }
        while missing != 0 {
            let i = missing.trailing_zeros() as usize;
            missing &= missing - 1;
            let k = busy[..n].iter().position(|&b| !b).unwrap_or(0);
            busy[k] = true;
            let iy = top + i * step - a.pad_top;
            let dst = self.base.add(k * slot);
            self.stage::<S>(dst, xc.add(iy * a.in_w), a, sw);
            self.tags[k] = iy;
            rows[i] = dst;
        }
    }
}

/// The epilogue's constants: bias vector, function and clamp bounds.
#[derive(Clone, Copy)]
struct Epi<V> {
    b: V,
    f: Func,
    lo: V,
    hi: V,
}

/// Stores the `R × T` tile `acc` (row `r`, vector `t` at
/// `out + r·ld + t·L`), clamped; with `part`, only the first `part` lanes
/// of the single vector of each row.
#[inline(always)]
unsafe fn store_tile<S: Simd, const R: usize, const T: usize>(
    out: *mut f32,
    ld: usize,
    acc: &[[S::V; T]; R],
    e: Epi<S::V>,
    part: Option<usize>,
) {
    for (r, row) in acc.iter().enumerate() {
        for (t, &v) in row.iter().enumerate() {
            let v = S::act(e.f, v, e.lo, e.hi);
            match part {
                Some(n) => S::store_part(out.add(r * ld), v, n),
                None => S::store(out.add(r * ld + t * S::L), v),
            }
        }
    }
}

/// Outputs `ox..ox + T·L` of `R` consecutive output rows for a `K × K`
/// kernel with stride `ST` both ways and dilation 1, all taps in staged
/// rows: input row `j` (`rows[j]`, `j < ST·(R − 1) + K`) is tap row
/// `j − ST·r` of output row `r`. Each input vector is loaded once and
/// feeds every output row it belongs to; the `R·T` accumulators stay in
/// registers across all taps. The loops have constant bounds and unroll
/// completely, so the tap tests fold away.
#[inline(always)]
// `kx` indexes a weight row chosen per accumulator, not one slice.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_fixed<S: Simd, const K: usize, const ST: usize, const R: usize, const T: usize>(
    rows: &[*const f32; MAX_ROWS],
    w: &[[S::V; K]; K],
    p: usize,
    ox: usize,
    b: S::V,
) -> [[S::V; T]; R] {
    let mut acc = [[b; T]; R];
    for (j, &row) in rows.iter().enumerate().take(ST * (R - 1) + K) {
        let src = row.add(ox);
        for kx in 0..K {
            let q = src.add((kx % ST) * p + kx / ST);
            for t in 0..T {
                let v = S::load(q.add(t * S::L));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    if j >= ST * r && j - ST * r < K {
                        acc_r[t] = S::fma(w[j - ST * r][kx], v, acc_r[t]);
                    }
                }
            }
        }
    }
    acc
}

/// `R` whole output rows at `out` with [`tile_fixed`]: tiles of `T`
/// vectors, then single vectors, then one that ends the row (overlapping
/// the one before, or partial in a row shorter than a vector).
#[inline(always)]
unsafe fn rows_fixed<S: Simd, const K: usize, const ST: usize, const R: usize, const T: usize>(
    rows: &[*const f32; MAX_ROWS],
    w: &[[S::V; K]; K],
    p: usize,
    out: *mut f32,
    out_w: usize,
    e: Epi<S::V>,
) {
    let l = S::L;
    let mut ox = 0;
    while ox + T * l <= out_w {
        let acc = tile_fixed::<S, K, ST, R, T>(rows, w, p, ox, e.b);
        store_tile::<S, R, T>(out.add(ox), out_w, &acc, e, None);
        ox += T * l;
    }
    while ox + l <= out_w {
        let acc = tile_fixed::<S, K, ST, R, 1>(rows, w, p, ox, e.b);
        store_tile::<S, R, 1>(out.add(ox), out_w, &acc, e, None);
        ox += l;
    }
    if ox < out_w {
        // The last vector overlaps the one before where there is one (a
        // whole store is cheaper than a partial one, on AVX2 much).
        let (ox, part) = if out_w >= l {
            (out_w - l, None)
        } else {
            (ox, Some(out_w - ox))
        };
        let acc = tile_fixed::<S, K, ST, R, 1>(rows, w, p, ox, e.b);
        store_tile::<S, R, 1>(out.add(ox), out_w, &acc, e, part);
    }
}

/// Outputs `ox..ox + T·L` of one output row for any kernel, stride and
/// dilation: `rows[ky]` is tap row `ky`, `offs[kx]` where tap `kx` starts
/// in a row buffer, the weights broadcast per tap.
#[inline(always)]
unsafe fn tile_any<S: Simd, const T: usize>(
    rows: &[*const f32],
    w: *const f32,
    offs: &[usize],
    ox: usize,
    b: S::V,
) -> [[S::V; T]; 1] {
    let mut acc = [b; T];
    let kw = offs.len();
    for (ky, r) in rows.iter().enumerate() {
        let r = r.add(ox);
        let wr = w.add(ky * kw);
        for (kx, &off) in offs.iter().enumerate() {
            let wv = S::splat(*wr.add(kx));
            let q = r.add(off);
            for (t, a) in acc.iter_mut().enumerate() {
                *a = S::fma(wv, S::load(q.add(t * S::L)), *a);
            }
        }
    }
    [acc]
}

/// A whole output row with [`tile_any`].
#[inline(always)]
unsafe fn row_any<S: Simd, const T: usize>(
    rows: &[*const f32],
    w: *const f32,
    offs: &[usize],
    out: *mut f32,
    out_w: usize,
    e: Epi<S::V>,
) {
    let l = S::L;
    let mut ox = 0;
    while ox + T * l <= out_w {
        let acc = tile_any::<S, T>(rows, w, offs, ox, e.b);
        store_tile::<S, 1, T>(out.add(ox), out_w, &acc, e, None);
        ox += T * l;
    }
    while ox + l <= out_w {
        let acc = tile_any::<S, 1>(rows, w, offs, ox, e.b);
        store_tile::<S, 1, 1>(out.add(ox), out_w, &acc, e, None);
        ox += l;
    }
    if ox < out_w {
        let (ox, part) = if out_w >= l {
            (out_w - l, None)
        } else {
            (ox, Some(out_w - ox))
        };
        let acc = tile_any::<S, 1>(rows, w, offs, ox, e.b);
        store_tile::<S, 1, 1>(out.add(ox), out_w, &acc, e, part);
    }
}

/// The per-channel operands: input plane, kernel, output plane, epilogue.
#[inline(always)]
unsafe fn channel<S: Simd>(
    a: &KilnDwArgs,
    c: usize,
) -> (*const f32, *const f32, *mut f32, Epi<S::V>) {
    let b = if a.bias.is_null() {
        S::zero()
    } else {
        S::splat(*a.bias.add(c))
    };
    (
        a.x.add(c * a.in_h * a.in_w),
        a.w.add(c * a.k_h * a.k_w),
        a.y.add(c * a.out_h * a.out_w),
        Epi {
            b,
            f: a.func(),
            lo: S::splat(a.act_min),
            hi: S::splat(a.act_max),
        },
    )
}

/// The whole call for a `K × K` kernel with stride `ST` both ways and
/// dilation 1, in blocks of `R` output rows, the last overlapping the one
/// before (single rows only in planes shorter than a block): the
/// channel's weights stay in registers as far as the register file holds
/// them.
#[inline(always)]
unsafe fn conv_fixed<S: Simd, const K: usize, const ST: usize, const R: usize, const T: usize>(
    a: &KilnDwArgs,
    st: &mut Stage,
) {
    let mut rows = [st.base.cast_const(); MAX_ROWS];
    let p = st.lay.p;
    for c in 0..a.channels {
        let (xc, wc, yc, e) = channel::<S>(a, c);
        let mut w = [[S::zero(); K]; K];
        for (ky, wr) in w.iter_mut().enumerate() {
            for (kx, wv) in wr.iter_mut().enumerate() {
                *wv = S::splat(*wc.add(ky * K + kx));
            }
        }
        st.begin_channel::<S>(a, ST, xc);
        // A macro, not a closure: closures do not inherit the target
        // features (see `split2`).
        macro_rules! block {
            ($oy:expr, $r:tt) => {{
                let oy = $oy;
                let count = ST * ($r - 1) + K;
                st.window::<S>(a, ST, xc, oy * ST, count, &mut rows);
                let out = yc.add(oy * a.out_w);
                rows_fixed::<S, K, ST, $r, T>(&rows, &w, p, out, a.out_w, e);
            }};
        }
        let mut oy = 0;
        while oy + R <= a.out_h {
            block!(oy, R);
            oy += R;
        }
        if oy < a.out_h && a.out_h >= R {
            // The last rows as one more whole block that overlaps the one
            // before (rewriting a few outputs with the same values) rather
            // than as single rows, which would leave one accumulator chain
            // per vector and the FMA latency exposed.
            block!(a.out_h - R, R);
            oy = a.out_h;
        }
        while oy < a.out_h {
            block!(oy, 1);
            oy += 1;
        }
    }
}

/// The whole call for any geometry the staging takes, one output row at
/// a time.
#[inline(always)]
unsafe fn conv_any<S: Simd, const T: usize>(a: &KilnDwArgs, st: &mut Stage) {
    let mut offs = [0usize; MAX_KW];
    for (kx, o) in offs.iter_mut().enumerate().take(a.k_w) {
        let d = kx * a.dil_w;
        *o = (d % a.stride_w) * st.lay.p + d / a.stride_w;
    }
    let offs = &offs[..a.k_w];
    let mut rows = [st.base.cast_const(); MAX_ROWS];
    for c in 0..a.channels {
        let (xc, wc, yc, e) = channel::<S>(a, c);
        st.begin_channel::<S>(a, a.stride_w, xc);
        for oy in 0..a.out_h {
            let step = (oy * a.stride_h, a.k_h, a.dil_h);
            st.rows::<S>(a, a.stride_w, xc, step, &mut rows);
            let out = yc.add(oy * a.out_w);
            row_any::<S, T>(&rows[..a.k_h], wc, offs, out, a.out_w, e);
        }
    }
}

/// Runs the whole call with vectors `S`. The 3×3 kernels work in tiles of
/// `R3` output rows × `T3` vectors, the 5×5 ones in `R5 × T5`, which each
/// variant sizes to its register file (rows of a single vector in 4 × 1);
/// the general path in single rows of `T3` vectors.
///
/// Taps in the padding, vertical included, multiply a staged zero: for
/// finite weights the same as skipping them, and it keeps every tile free
/// of tests.
///
/// # Safety
/// As `scalar::run`, and the CPU runs `S`'s instructions.
#[inline(always)]
pub(crate) unsafe fn run<
    S: Simd,
    const R3: usize,
    const T3: usize,
    const R5: usize,
    const T5: usize,
>(
    a: &KilnDwArgs,
) {
    let square = a.k_h == a.k_w && a.stride_h == a.stride_w && a.dil_h == 1 && a.dil_w == 1;
    let fixed = match (square, a.k_w, a.stride_w) {
        (true, 3 | 5, 1 | 2) => Some((a.k_w, a.stride_w)),
        _ => None,
    };
    let need = match fixed {
        Some((3, s)) => s * (R3.max(4) - 1) + 3,
        Some((_, s)) => s * (R5.max(4) - 1) + 5,
        None => a.k_h,
    };
    if super::cl::takes::<S>(a) {
        return super::cl::run::<S>(a);
    }
    let Some(lay) = layout(a, S::L, need) else {
        return scalar::run(a);
    };
    let mut buf = MaybeUninit::<Buf>::uninit();
    let buf = buf.as_mut_ptr().cast::<f32>();
    core::ptr::write_bytes(buf, 0, lay.lead + lay.used);
    let base = buf.add(lay.lead);
    let mut st = Stage {
        base,
        lay,
        tags: [usize::MAX; MAX_ROWS],
        next: 0,
    };
    // Rows of one vector have no use for a wider tile: all accumulators go
    // to rows, four of them to hide the FMA latency.
    let narrow = a.out_w <= S::L;
    match (fixed, narrow) {
        (Some((3, 1)), false) => conv_fixed::<S, 3, 1, R3, T3>(a, &mut st),
        (Some((3, _)), false) => conv_fixed::<S, 3, 2, R3, T3>(a, &mut st),
        (Some((_, 1)), false) => conv_fixed::<S, 5, 1, R5, T5>(a, &mut st),
        (Some(_), false) => conv_fixed::<S, 5, 2, R5, T5>(a, &mut st),
        (Some((3, 1)), true) => conv_fixed::<S, 3, 1, 4, 1>(a, &mut st),
        (Some((3, _)), true) => conv_fixed::<S, 3, 2, 4, 1>(a, &mut st),
        (Some((_, 1)), true) => conv_fixed::<S, 5, 1, 4, 1>(a, &mut st),
        (Some(_), true) => conv_fixed::<S, 5, 2, 4, 1>(a, &mut st),
        (None, _) => conv_any::<S, T3>(a, &mut st),
    }
}

/// A portable [`Simd`] of `N` lanes (plain arrays), so that the tests can
/// run the shared loop nest with the lane counts of every variant on any
/// machine, NEON's included.
#[cfg(test)]
pub(crate) struct Lanes<const N: usize>;

#[cfg(test)]
impl<const N: usize> Simd for Lanes<N> {
    type V = [f32; N];
    const L: usize = N;
    unsafe fn zero() -> Self::V {
        [0.0; N]
    }
    unsafe fn splat(x: f32) -> Self::V {
        [x; N]
    }
    unsafe fn load(p: *const f32) -> Self::V {
        p.cast::<[f32; N]>().read_unaligned()
    }
    unsafe fn store(p: *mut f32, v: Self::V) {
        p.cast::<[f32; N]>().write_unaligned(v)
    }
    unsafe fn load_part(p: *const f32, n: usize) -> Self::V {
        assert!(n <= N);
        core::array::from_fn(|i| if i < n { *p.add(i) } else { 0.0 })
    }
    unsafe fn store_part(p: *mut f32, v: Self::V, n: usize) {
        assert!(n <= N);
        core::ptr::copy_nonoverlapping(v.as_ptr(), p, n)
    }
    unsafe fn fma(a: Self::V, b: Self::V, acc: Self::V) -> Self::V {
        core::array::from_fn(|i| a[i].mul_add(b[i], acc[i]))
    }
    unsafe fn clamp(v: Self::V, lo: Self::V, hi: Self::V) -> Self::V {
        core::array::from_fn(|i| scalar::clamp(v[i], lo[i], hi[i]))
    }
    #[inline(always)]
    unsafe fn func(f: Func, v: Self::V) -> Self::V {
        v.map(|x| f.apply(x))
    }
    unsafe fn deinterleave(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let at = |k: usize| if k < N { a[k] } else { b[k - N] };
        (
            core::array::from_fn(|i| at(2 * i)),
            core::array::from_fn(|i| at(2 * i + 1)),
        )
    }
}
