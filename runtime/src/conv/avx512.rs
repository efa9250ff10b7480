//! The AVX-512 direct conv: tiles of `R ≤ 12` pixels of one output row
//! times 32 output channels (two `zmm` per pixel, up to 24 accumulators).
//! Each tap of each input channel loads the panel's 32 weights once and
//! broadcasts the `R` input values under the tile's pixels: `2R` FMAs for
//! `R + 2` loads. The accumulators hold pixels × channels, the output is
//! channels × pixels (NCHW), so the epilogue turns the tile over through a
//! small stack buffer and stores each channel's run of pixels with the
//! GEMM tile's epilogue (bias per row, function, clamp).

use core::arch::x86_64::*;

use super::{KilnConvArgs, CHANNEL_BLOCK, MAX_TILE_PIXELS};
use crate::func::Func;
use crate::gemm::avx512::store;
use crate::gemm::TileEpi;

/// The most taps a window may have for the offsets table on the stack;
/// larger windows run in chunks of this many taps.
const MAX_TAPS: usize = 64;

/// Runs work items `a.begin..a.end` (checked by the caller).
///
/// # Safety
/// `a` passed [`KilnConvArgs::check`]; the CPU has AVX-512F.
pub(super) unsafe fn run(a: &KilnConvArgs, func: Func) {
    if a.by_rows() {
        super::rows::run(a, func);
        return;
    }
    let panels = a.cout.div_ceil(CHANNEL_BLOCK);
    let taps = a.kh * a.kw;
    let depth = a.cin * taps;
    let plane = a.hp * a.wp;
    let out_plane = a.oh * a.ow;
    let epi = output_epilogue(a, func);
    // Pixels of a row split evenly over the fewest tiles of at most 12.
    let tiles = a.ow.div_ceil(MAX_TILE_PIXELS);
    let (small, extra) = (a.ow / tiles, a.ow % tiles);
    let mut offs = [0isize; MAX_TAPS];
    let ph = a.phases;
    let step = if ph > 1 { 1 } else { a.sw };
    // One chunk of taps (nearly always): its offsets once for every tile.
    if taps <= MAX_TAPS {
        tap_offsets(a, 0, &mut offs[..taps]);
    }
    for item in a.begin..a.end {
        let (row, panel) = (item / panels, item % panels);
        let w = a.w.add(panel * depth * CHANNEL_BLOCK);
        let co = panel * CHANNEL_BLOCK;
        let channels = (a.cout - co).min(CHANNEL_BLOCK);
        let bias = if a.bias.is_null() {
            a.bias
        } else {
            a.bias.add(co)
        };
        let x_row = a.x.add(row * a.sh * a.wp);
        let y_row = a.y.add(co * out_plane + row * a.ow);
        let mut ox = 0;
        for t in 0..tiles {
            let r = small + usize::from(t < extra);
            // Taps in chunks the offsets table holds; the first chunk
            // starts the accumulators, later ones add to the stored tile.
            let mut t0 = 0;
            while t0 < taps {
                let t1 = (t0 + MAX_TAPS).min(taps);
                if taps > MAX_TAPS {
                    tap_offsets(a, t0, &mut offs[..t1 - t0]);
                }
                let chunk = Chunk {
                    x: x_row.add(ox * step),
                    plane,
                    cin: a.cin,
                    offs: &offs[..t1 - t0],
                    w: w.add(t0 * CHANNEL_BLOCK),
                    taps,
                    sw: step,
                };
                let last = t1 == taps;
                let mut e = epi;
                if t0 > 0 {
                    (e.src, e.lds) = (y_row.add(ox), out_plane);
                }
                if !last {
                    (e.clamp, e.func) = (false, Func::Identity);
                }
                let b = if t0 == 0 { bias } else { core::ptr::null() };
                let out = (y_row.add(ox), out_plane, channels);
                dispatch(r, &chunk, out, b, &e);
                t0 = t1;
            }
            ox += r;
        }
    }
}

/// The epilogue every tile of the call stores through: a bias per output
/// channel (a row of the output), then the function and the clamp.
pub(super) fn output_epilogue(a: &KilnConvArgs, func: Func) -> TileEpi {
    TileEpi {
        src: core::ptr::null(),
        lds: 0,
        bias_rows: true,
        clamp: crate::gemm::clamps(a.act_min, a.act_max),
        lo: a.act_min,
        hi: a.act_max,
        func,
    }
}

/// Offsets of taps `t0..t0 + offs.len()` from a window's origin: with
/// phase-split rows, the pixels under one tap are contiguous in the phase
/// of its column. (Per call, not per tile: the divisions cost as much as a
/// shallow tile's FMAs.)
pub(super) fn tap_offsets(a: &KilnConvArgs, t0: usize, offs: &mut [isize]) {
    let (ph, plen) = (a.phases, a.wp / a.phases);
    for (i, o) in offs.iter_mut().enumerate() {
        let (ky, kx) = ((t0 + i) / a.kw, (t0 + i) % a.kw);
        let q = kx * a.dw;
        let col = if ph > 1 { (q % ph) * plen + q / ph } else { q };
        *o = (ky * a.dh * a.wp + col) as isize;
    }
}

/// The input side of one tile over a chunk of taps.
struct Chunk<'a> {
    /// The tile's first pixel's window origin in channel 0.
    x: *const f32,
    plane: usize,
    cin: usize,
    /// Offsets of the chunk's taps from the window origin.
    offs: &'a [isize],
    /// The panel's weights at the chunk's first tap of channel 0.
    w: *const f32,
    /// Taps per channel in the packed weights.
    taps: usize,
    sw: usize,
}

unsafe fn dispatch(
    r: usize,
    c: &Chunk,
    out: (*mut f32, usize, usize),
    bias: *const f32,
    epi: &TileEpi,
) {
    macro_rules! go {
        ($r:literal) => {
            match c.sw {
                1 => tile::<$r, 1>(c, out, bias, epi),
                2 => tile::<$r, 2>(c, out, bias, epi),
                _ => tile::<$r, 0>(c, out, bias, epi),
            }
        };
    }
    by_count_to_12!(r, go)
}

/// `R` pixels × 32 channels over the chunk's taps of every input channel,
/// stored through the epilogue into `out = (y, channel stride, channels)`.
/// `S` is the stride along the row (0: `c.sw`).
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const S: usize>(
    c: &Chunk,
    (y, ldy, channels): (*mut f32, usize, usize),
    bias: *const f32,
    epi: &TileEpi,
) {
    let sw = if S == 0 { c.sw } else { S };
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for ci in 0..c.cin {
        let xc = c.x.add(ci * c.plane);
        let mut wp = c.w.add(ci * c.taps * CHANNEL_BLOCK);
        for &o in c.offs {
            let xp = xc.offset(o);
            let w0 = _mm512_loadu_ps(wp);
            let w1 = _mm512_loadu_ps(wp.add(16));
            for (i, a) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*xp.add(i * sw));
                a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                a[1] = _mm512_fmadd_ps(v, w1, a[1]);
            }
            wp = wp.add(CHANNEL_BLOCK);
        }
    }
    // Pixels × channels to channels × pixels.
    let mut px = [[0.0f32; CHANNEL_BLOCK]; R];
    for (row, a) in px.iter_mut().zip(&acc) {
        _mm512_storeu_ps(row.as_mut_ptr(), a[0]);
        _mm512_storeu_ps(row.as_mut_ptr().add(16), a[1]);
    }
    let mask = ((1u32 << R) - 1) as u16;
    for ch in 0..channels {
        let mut run = [0.0f32; 16];
        for (v, row) in run.iter_mut().zip(&px) {
            *v = row[ch];
        }
        store(
            _mm512_loadu_ps(run.as_ptr()),
            mask,
            y,
            ldy,
            ch,
            0,
            bias,
            epi,
        );
    }
}
