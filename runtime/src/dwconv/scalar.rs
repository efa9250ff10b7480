//! The portable path: plain Rust, any target, no buffers (a firmware stack
//! may be a few KiB). Also the fallback of the vector variants for rows too
//! wide for their stack buffer.
//!
//! The loop order is tap-major: the output row is set to the bias, then
//! each tap adds `w · input` over the range of outputs for which that tap
//! is in bounds. The range is computed per tap, so the inner loop has no
//! bounds tests, and with stride 1 it is a plain `y += w·x` over
//! contiguous slices that LLVM vectorises where SIMD is baseline.

use super::KilnDwArgs;

/// `min(max(v, lo), hi)` in the order the vector `max`/`min` instructions
/// evaluate it, so that a NaN `v` passes through as it does there.
#[inline(always)]
pub(crate) fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let t = if v < lo { lo } else { v };
    if t > hi {
        hi
    } else {
        t
    }
}

/// The outputs `lo..hi` (clipped to `0..out`) for which input coordinate
/// `o·stride + off − pad` lies in `0..len`.
#[inline(always)]
pub(crate) fn valid_range(
    off: usize,
    pad: usize,
    len: usize,
    stride: usize,
    out: usize,
) -> (usize, usize) {
    let lo = if off >= pad {
        0
    } else {
        (pad - off).div_ceil(stride)
    };
    let hi = if off >= pad + len {
        0
    } else {
        (pad + len - off).div_ceil(stride).min(out)
    };
    (lo, hi.max(lo))
}

/// Runs the whole call.
///
/// # Safety
/// `a` passed `DwGeometry::extents` and the pointer checks of `api::run`:
/// the pointers cover their extents and `y` overlaps no input.
pub(crate) unsafe fn run(a: &KilnDwArgs) {
    let plane_in = a.in_h * a.in_w;
    let plane_out = a.out_h * a.out_w;
    let taps = a.k_h * a.k_w;
    for c in 0..a.channels {
        let x = core::slice::from_raw_parts(a.x.add(c * plane_in), plane_in);
        let w = core::slice::from_raw_parts(a.w.add(c * taps), taps);
        let y = core::slice::from_raw_parts_mut(a.y.add(c * plane_out), plane_out);
        let b = if a.bias.is_null() {
            0.0
        } else {
            *a.bias.add(c)
        };
        for (oy, row) in y.chunks_exact_mut(a.out_w).enumerate() {
            row.fill(b);
            let top = oy * a.stride_h;
            for ky in 0..a.k_h {
                // Padded row coordinate; rows in the padding are skipped.
                let py = top + ky * a.dil_h;
                if py < a.pad_top || py - a.pad_top >= a.in_h {
                    continue;
                }
                let xr = &x[(py - a.pad_top) * a.in_w..][..a.in_w];
                for (kx, &wv) in w[ky * a.k_w..][..a.k_w].iter().enumerate() {
                    let off = kx * a.dil_w;
                    let (lo, hi) = valid_range(off, a.pad_left, a.in_w, a.stride_w, a.out_w);
                    if lo == hi {
                        continue;
                    }
                    let x0 = lo * a.stride_w + off - a.pad_left;
                    let out = &mut row[lo..hi];
                    if a.stride_w == 1 {
                        for (o, &v) in out.iter_mut().zip(&xr[x0..x0 + (hi - lo)]) {
                            *o += wv * v;
                        }
                    } else {
                        for (o, &v) in out.iter_mut().zip(xr[x0..].iter().step_by(a.stride_w)) {
                            *o += wv * v;
                        }
                    }
                }
            }
            let f = a.func();
            for o in row.iter_mut() {
                *o = clamp(f.apply(*o), a.act_min, a.act_max);
            }
        }
    }
}
