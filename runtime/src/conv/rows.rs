//! The AVX-512 direct conv for shallow windows (depth `cin·kh·kw` under
//! [`super::ROWS_MAX_DEPTH`]): output pixels of one row in the vector lanes,
//! output channels in registers. Each depth step loads `W` vectors of
//! input pixels and broadcasts one weight per channel of the tile.
//!
//! Why not [`super::avx512`]'s tiles here: those hold channels in the
//! lanes, so the output (channels × pixels, NCHW) must be turned over
//! through a stack buffer, about one scalar move per output value. Over a
//! depth of 27 (an RGB 3x3 stem) that costs as much as the FMAs; here the
//! accumulators are already rows of the output and store straight through
//! the GEMM epilogue. The price is lanes past the row's end (a 111-pixel
//! row computes 112), which is why the lowering asks for rows of 16
//! pixels or more.
//!
//! It reads pixels of one tap contiguously, so it takes stride-1 convs and
//! strided convs over phase-split rows only ([`super::KilnConvArgs::by_rows`]).

use core::arch::x86_64::*;

use super::{KilnConvArgs, CHANNEL_BLOCK};
use crate::func::Func;
use crate::gemm::avx512::spill_and_store;
use crate::gemm::TileEpi;

/// The most output channels of one register tile (`12 × 2` accumulators).
const MAX_TILE_CHANNELS: usize = 12;
/// Output pixels of a full tile: two vectors.
const TILE_PIXELS: usize = 32;

/// Runs work items `a.begin..a.end` (checked by the caller).
///
/// # Safety
/// `a` passed [`KilnConvArgs::check`] and [`KilnConvArgs::by_rows`]; the
/// CPU has AVX-512F.
pub(super) unsafe fn run(a: &KilnConvArgs, func: Func) {
    let panels = a.cout.div_ceil(CHANNEL_BLOCK);
    let taps = a.kh * a.kw;
    let depth = a.cin * taps;
    let plane = a.hp * a.wp;
    let out_plane = a.oh * a.ow;
    let epi = super::avx512::output_epilogue(a, func);
    // `by_rows` bounds the depth, so every step's offset fits here: one
    // flat loop over the depth keeps the accumulators in registers (over
    // channels, then taps, they were spilled every step).
    let mut offs = [0isize; super::ROWS_MAX_DEPTH];
    super::avx512::tap_offsets(a, 0, &mut offs[..taps]);
    for p in (taps..depth).rev() {
        offs[p] = offs[p % taps] + ((p / taps) * plane) as isize;
    }
    let offs = &offs[..depth];
    for item in a.begin..a.end {
        let (row, panel) = (item / panels, item % panels);
        let co = panel * CHANNEL_BLOCK;
        let channels = (a.cout - co).min(CHANNEL_BLOCK);
        // Channels of the panel split evenly over the fewest tiles of 12.
        let tiles = channels.div_ceil(MAX_TILE_CHANNELS);
        let (small, extra) = (channels / tiles, channels % tiles);
        let x_row = a.x.add(row * a.sh * a.wp);
        let y_row = a.y.add(co * out_plane + row * a.ow);
        // Channels outer: consecutive tiles continue the same output rows,
        // which the hardware prefetcher then streams.
        let mut c0 = 0;
        for t in 0..tiles {
            let r = small + usize::from(t < extra);
            let bias = if a.bias.is_null() {
                a.bias
            } else {
                a.bias.add(co + c0)
            };
            let mut ox = 0;
            while ox < a.ow {
                let n = (a.ow - ox).min(TILE_PIXELS);
                let tile = Tile {
                    x: x_row.add(ox),
                    offs,
                    w: a.w.add(panel * depth * CHANNEL_BLOCK + c0),
                    y: y_row.add(c0 * out_plane + ox),
                    ldy: out_plane,
                    n,
                };
                dispatch(r, &tile, bias, &epi);
                ox += n;
            }
            c0 += r;
        }
    }
}

/// One register tile: `n ≤ 32` pixels of an output row for some channels.
struct Tile<'a> {
    /// The first pixel's window origin in input channel 0.
    x: *const f32,
    /// Offsets of each depth step's pixels (channel, tap) from `x`.
    offs: &'a [isize],
    /// The tile's first channel's weights at depth step 0 (steps `32` apart).
    w: *const f32,
    /// The tile's first channel's first pixel (channels `ldy` apart).
    y: *mut f32,
    ldy: usize,
    n: usize,
}

unsafe fn dispatch(r: usize, t: &Tile, bias: *const f32, epi: &TileEpi) {
    macro_rules! go {
        ($r:literal) => {
            if t.n > 16 {
                tile::<$r, 2>(t, bias, epi)
            } else {
                tile::<$r, 1>(t, bias, epi)
            }
        };
    }
    by_count_to_12!(r, go)
}

/// `R` channels × `16·W` pixels (the first `t.n` of them real) over every
/// depth step, stored through the epilogue.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const W: usize>(t: &Tile, bias: *const f32, epi: &TileEpi) {
    let bits = if t.n >= 32 {
        u32::MAX
    } else {
        (1u32 << t.n) - 1
    };
    let mask = [bits as u16, (bits >> 16) as u16];
    // Start fetching the output rows now: the stores would otherwise wait
    // for lines of an output too large for the caches.
    for i in 0..R {
        let row = t.y.add(i * t.ldy);
        for j in (0..t.n).step_by(16) {
            _mm_prefetch::<_MM_HINT_T0>(row.add(j).cast());
        }
        _mm_prefetch::<_MM_HINT_T0>(row.add(t.n - 1).cast());
    }
    let mut acc = [[_mm512_setzero_ps(); W]; R];
    let mut wp = t.w;
    for &o in t.offs {
        let xp = t.x.offset(o);
        let mut xv = [_mm512_setzero_ps(); W];
        for (h, v) in xv.iter_mut().enumerate() {
            // Masked: lanes past the row may lie past the input.
            *v = _mm512_maskz_loadu_ps(mask[h], xp.add(16 * h));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*wp.add(i));
            for (r, &v) in row.iter_mut().zip(&xv) {
                *r = _mm512_fmadd_ps(wv, v, *r);
            }
        }
        wp = wp.add(CHANNEL_BLOCK);
    }
    spill_and_store(&acc, mask, (t.y, t.ldy), bias, epi);
}
