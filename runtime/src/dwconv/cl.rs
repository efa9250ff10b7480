//! The channels-last path for narrow planes: `L` channels at a time are
//! transposed into pixel-major order (one vector holds one pixel of `L`
//! channels), convolved with every lane busy, and transposed back.
//!
//! Why: the row path puts one output row in a vector, so a plane 5 or 7
//! wide (keyword-spotting models: 25×5; the last stages of mobile CNNs:
//! 7×7) fills 5 or 7 of AVX-512's 16 lanes. Here every tap is one full
//! vector FMA per output pixel, and the two transposes cost a few shuffles
//! per element. The plane, zero-padded, and the output block must fit the
//! same stack buffer the row path uses; otherwise the row path runs.
//!
//! Taps in the padding multiply a staged zero, as in the row path.

use core::mem::MaybeUninit;

use super::simd::{Simd, BUF_FLOATS};
use super::KilnDwArgs;

/// Taps the weight table holds (up to 5×5).
const MAX_TAPS: usize = 25;

/// The widest vector the weight table holds.
const MAX_LANES: usize = 16;

/// Input pixels of a plane this path takes (and padded pixels: the plane
/// of the narrowest vectors, 4 lanes, fills the buffer at 3072).
const MAX_PLANE: usize = BUF_FLOATS / 4;

/// An input pixel the output never reads.
const NOWHERE: u16 = u16::MAX;

/// Output pixels per tile: independent accumulators to hide FMA latency.
const TILE: usize = 4;

/// Padded input rows and columns the output reads: `(rows, cols)`.
fn padded(a: &KilnDwArgs) -> Option<(usize, usize)> {
    let span = |o: usize, s: usize, k: usize, d: usize| {
        o.checked_sub(1)?
            .checked_mul(s)?
            .checked_add((k - 1).checked_mul(d)?)?
            .checked_add(1)
    };
    Some((
        span(a.out_h, a.stride_h, a.k_h, a.dil_h)?,
        span(a.out_w, a.stride_w, a.k_w, a.dil_w)?,
    ))
}

/// Floats of the stack buffer the path needs: the padded plane and the
/// output block, `L` lanes each, and two `L × L` staging blocks.
fn floats(a: &KilnDwArgs, l: usize) -> Option<usize> {
    let (ph, pw) = padded(a)?;
    ph.checked_mul(pw)?
        .checked_add(a.out_h.checked_mul(a.out_w)?)?
        .checked_add(2 * l)?
        .checked_mul(l)
}

/// Whether this path takes the call: rows at most half a vector wide, at
/// least one vector of channels, a kernel of at most 5×5, and a buffer
/// that fits.
pub(crate) fn takes<S: Simd>(a: &KilnDwArgs) -> bool {
    S::L <= MAX_LANES
        && a.channels >= S::L
        && a.out_w > 0
        && a.out_h > 0
        && 2 * a.out_w <= S::L
        && a.k_h * a.k_w <= MAX_TAPS
        && a.in_h.checked_mul(a.in_w).is_some_and(|n| n <= MAX_PLANE)
        && floats(a, S::L).is_some_and(|n| n <= BUF_FLOATS)
}

#[repr(C, align(64))]
struct Buf([f32; BUF_FLOATS]);

/// Zeroes `n` pixels of `l` floats from pixel `from` of `plane`.
#[inline(always)]
unsafe fn zero_pixels(plane: *mut f32, from: usize, n: usize, l: usize) {
    core::ptr::write_bytes(plane.add(from * l), 0, n * l);
}

/// Runs the call (see [`takes`]) on vectors `S`.
///
/// # Safety
/// As `scalar::run`, [`takes`] holds, and the CPU runs `S`'s instructions.
#[inline(always)]
pub(crate) unsafe fn run<S: Simd>(a: &KilnDwArgs) {
    let l = S::L;
    let Some((ph, pw)) = padded(a) else {
        return;
    };
    let (pin, pout) = (a.in_h * a.in_w, a.out_h * a.out_w);
    let taps = a.k_h * a.k_w;
    let mut buf = MaybeUninit::<Buf>::uninit();
    let plane = buf.as_mut_ptr().cast::<f32>();
    let out = plane.add(ph * pw * l);
    // Short blocks are gathered into `short`, transposes land in `stage`.
    let short = out.add(pout * l);
    let stage = short.add(l * l);
    // Zeroed once, only what no block writes: the plane's padding (blocks
    // rewrite only its interior) and `short` (gathers fill part of it, and
    // the transposes, also of the output's last block, read all of it).
    // Zeroing the whole buffer cost 3% of a keyword-spotting model.
    let top = a.pad_top.min(ph);
    let bottom = (a.pad_top + a.in_h).min(ph);
    let (left, right) = (a.pad_left.min(pw), (a.pad_left + a.in_w).min(pw));
    zero_pixels(plane, 0, top * pw, l);
    zero_pixels(plane, bottom * pw, (ph - bottom) * pw, l);
    for py in top..bottom {
        zero_pixels(plane, py * pw, left, l);
        zero_pixels(plane, py * pw + right, pw - right, l);
    }
    core::ptr::write_bytes(short, 0, l * l);
    // Offset (in floats) of tap `t` from its pixel's window origin.
    let mut off = [0usize; MAX_TAPS];
    for (t, o) in off.iter_mut().enumerate().take(taps) {
        *o = ((t / a.k_w) * a.dil_h * pw + (t % a.k_w) * a.dil_w) * l;
    }
    // Where input pixel `q` goes in the padded plane, when it is inside
    // the part the output reads (tracked by row and column, not divided).
    let mut at = (0usize, 0usize);
    let mut dests = [NOWHERE; MAX_PLANE];
    for d in dests.iter_mut().take(pin) {
        let (py, px) = (at.0 + a.pad_top, at.1 + a.pad_left);
        if py < ph && px < pw {
            // Below `MAX_PLANE`: the padded plane fits the buffer.
            *d = (py * pw + px) as u16;
        }
        at.1 += 1;
        if at.1 == a.in_w {
            at = (at.0 + 1, 0);
        }
    }
    let mut c0 = 0;
    while c0 < a.channels {
        // The last block overlaps the one before rather than run short.
        let cb = c0.min(a.channels - l);
        let x = a.x.add(cb * pin);
        // Input, channels-last: L×L blocks, then pixels past the last block.
        let mut q0 = 0;
        while q0 < pin {
            let r = l.min(pin - q0);
            if r == l {
                S::transpose(x.add(q0), pin, stage, l);
            } else {
                // Gathered first, so the transpose reads nothing past the
                // input's end.
                for c in 0..l {
                    core::ptr::copy_nonoverlapping(x.add(c * pin + q0), short.add(c * l), r);
                }
                S::transpose(short, l, stage, l);
            }
            for j in 0..r {
                let d = dests[q0 + j];
                if d != NOWHERE {
                    S::store(plane.add(d as usize * l), S::load(stage.add(j * l)));
                }
            }
            q0 += r;
        }
        // Weights and bias of the block, one vector per tap.
        let mut wt = [0.0f32; MAX_LANES * MAX_TAPS];
        let wtab = wt.as_mut_ptr();
        for c in 0..l {
            for t in 0..taps {
                *wtab.add(t * l + c) = *a.w.add((cb + c) * taps + t);
            }
        }
        let bias = if a.bias.is_null() {
            S::zero()
        } else {
            S::load(a.bias.add(cb))
        };
        let (lo, hi) = (S::splat(a.act_min), S::splat(a.act_max));
        // Every output pixel, TILE at a time (a tile may span rows).
        let (mut oy, mut ox) = (0usize, 0usize);
        let mut p0 = 0;
        while p0 < pout {
            let n = TILE.min(pout - p0);
            // Window origins of the tile's pixels (the last repeated).
            let mut base = [0usize; TILE];
            for (t, b) in base.iter_mut().enumerate() {
                *b = (oy * a.stride_h * pw + ox * a.stride_w) * l;
                if t + 1 < n {
                    ox += 1;
                    if ox == a.out_w {
                        (oy, ox) = (oy + 1, 0);
                    }
                }
            }
            ox += 1;
            if ox == a.out_w {
                (oy, ox) = (oy + 1, 0);
            }
            let mut acc = [bias; TILE];
            for (t, &o) in off.iter().enumerate().take(taps) {
                let wv = S::load(wtab.add(t * l));
                for (acc, &b) in acc.iter_mut().zip(&base) {
                    *acc = S::fma(S::load(plane.add(b + o)), wv, *acc);
                }
            }
            for (t, v) in acc.iter().enumerate().take(n) {
                S::store(out.add((p0 + t) * l), S::act(a.func(), *v, lo, hi));
            }
            p0 += n;
        }
        // Back to one plane per channel.
        let y = a.y.add(cb * pout);
        let mut p0 = 0;
        while p0 + l <= pout {
            S::transpose(out.add(p0 * l), l, y.add(p0), pout);
            p0 += l;
        }
        if p0 < pout {
            // Rows past the output block read `short`: values that land in
            // columns not copied out.
            let r = pout - p0;
            S::transpose(out.add(p0 * l), l, stage, l);
            for c in 0..l {
                core::ptr::copy_nonoverlapping(stage.add(c * l), y.add(c * pout + p0), r);
            }
        }
        c0 = cb + l;
    }
}
