//! Direct 2-D convolution with output channels in the vector lanes, for the
//! dense (one group) convolutions an im2col GEMM serves poorly.
//!
//! Why a second conv path next to im2col + GEMM: the GEMM puts the image's
//! pixels in the vector lanes, so a 3x3 layer pays for building the column
//! matrix (nine copies of its input, ~10% of the layer) and for the partial
//! column panels at the end of every block of rows. Here each register tile
//! is up to 12 output pixels of one row times 32 output channels: a tap of
//! a depth step is two vector loads of packed weights and one broadcast per
//! pixel, read straight from the (already padded) input. Channel counts of
//! real networks are multiples of 16 or 32, so no lane is wasted, and the
//! pixels of a row split evenly over tiles of any length.
//!
//! The input is the padded copy the conv's lowering builds anyway
//! (`hp × wp` per channel), so the kernel never tests a border; weights
//! come packed at compile time by [`pack_weights`] in panels of
//! [`CHANNEL_BLOCK`] output channels.
//!
//! Only the AVX-512 kernel exists: on AVX2 (8 lanes, 16 registers) the
//! im2col GEMM holds its own.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod rows;
#[cfg(test)]
mod tests;

use crate::func::Func;

/// Output channels per panel of packed weights and per register tile.
pub const CHANNEL_BLOCK: usize = 32;

/// The most output pixels of one tile.
pub const MAX_TILE_PIXELS: usize = 12;

/// Depths (`cin·kh·kw`) below which a call whose taps read contiguous
/// pixels runs with pixels in the lanes (`rows.rs`): over so few steps,
/// turning channels-in-lanes tiles over to NCHW costs as much as the FMAs
/// (MobileNetV2's 3x3 RGB stem, depth 27, ran slower that way than as an
/// im2col GEMM).
pub const ROWS_MAX_DEPTH: usize = 64;

/// The operands of one call (one image), as the C entry point takes them;
/// `KilnConvArgs` in `kiln_runtime.h` mirrors it: four pointers, fifteen
/// `size_t`, two `float`, a `uint32_t`.
///
/// `x` holds `cin` padded planes of `hp × wp`; `w` the weights packed by
/// [`pack_weights`] (`⌈cout/32⌉` panels of `cin·kh·kw × 32`); `bias` `cout`
/// values or null; `y` `cout` planes of `oh × ow`, overlapping nothing
/// else. Output pixel `(oy, ox)` of channel `co` is `clamp(func(bias[co] +
/// Σ w[co, ci, ky, kx] · x[ci, oy·sh + ky·dh, ox·sw + kx·dw]))`, where with
/// `phases > 1` (then equal to `sw`) each padded row is stored phase-split
/// as the im2col lowering builds it for strided convs: column `p` at `(p %
/// phases)·(wp / phases) + p / phases`, so that the pixels under one tap
/// are contiguous whatever the stride. Only work
/// items `begin..end` are computed, item `r·⌈cout/32⌉ + b` being output
/// row `r` of channel panel `b` (rows outer, so a thread's share is a band
/// of rows whose input stays in cache across the panels).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KilnConvArgs {
    pub x: *const f32,
    pub w: *const f32,
    pub bias: *const f32,
    pub y: *mut f32,
    pub cin: usize,
    pub hp: usize,
    pub wp: usize,
    pub cout: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub phases: usize,
    pub begin: usize,
    pub end: usize,
    pub act_min: f32,
    pub act_max: f32,
    /// The [`Func`] code applied before the clamp (0: none).
    pub func: u32,
}

/// Why a call was refused; [`ConvError::code`] is the C status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvError {
    /// A required pointer is null.
    NullPointer,
    /// A size is zero, or a product of sizes overflows.
    BadSize,
    /// The window of the last output pixel falls outside the padded input.
    OutOfBounds,
    /// `begin..end` is not a range of the call's work items.
    BadRange,
    /// The function code is none of [`Func`]'s.
    BadFunc,
    /// This build or CPU has no kernel for the call.
    Unsupported,
}

impl ConvError {
    /// The negative status the C entry point returns.
    pub const fn code(self) -> i32 {
        match self {
            ConvError::NullPointer => -1,
            ConvError::BadSize => -2,
            ConvError::OutOfBounds => -3,
            ConvError::BadRange => -4,
            ConvError::BadFunc => -5,
            ConvError::Unsupported => -6,
        }
    }
}

impl KilnConvArgs {
    /// Work items of the call: output rows times channel panels.
    pub fn items(&self) -> usize {
        self.oh.saturating_mul(self.cout.div_ceil(CHANNEL_BLOCK))
    }

    /// Whether the call runs with output pixels in the vector lanes: a
    /// shallow window whose taps each read a contiguous run of pixels (a
    /// stride of 1, or phase-split rows).
    pub fn by_rows(&self) -> bool {
        let depth = self.cin.saturating_mul(self.kh).saturating_mul(self.kw);
        depth < ROWS_MAX_DEPTH && (self.sw == 1 || self.phases > 1)
    }

    /// Every check the kernel relies on to index without checks.
    fn check(&self) -> Result<Func, ConvError> {
        if self.x.is_null() || self.w.is_null() || self.y.is_null() {
            return Err(ConvError::NullPointer);
        }
        let sizes = [
            self.cin,
            self.hp,
            self.wp,
            self.cout,
            self.oh,
            self.ow,
            self.kh,
            self.kw,
            self.sh,
            self.sw,
            self.dh,
            self.dw,
            self.phases,
        ];
        if sizes.contains(&0) {
            return Err(ConvError::BadSize);
        }
        // Every byte offset the kernel forms must fit an isize.
        let plane = self.hp.checked_mul(self.wp).ok_or(ConvError::BadSize)?;
        let total = plane
            .checked_mul(self.cin)
            .and_then(|v| v.checked_mul(4))
            .filter(|&v| v <= isize::MAX as usize)
            .ok_or(ConvError::BadSize)?;
        let _ = total;
        let last = |o: usize, s: usize, k: usize, d: usize| -> Option<usize> {
            (o - 1).checked_mul(s)?.checked_add((k - 1).checked_mul(d)?)
        };
        let ph = self.phases;
        if ph > 1 && (self.sw != ph || !self.wp.is_multiple_of(ph)) {
            return Err(ConvError::BadSize);
        }
        // The last column read: in the phase of the last tap, with phases.
        let lx = if ph > 1 {
            (0..self.kw)
                .map(|kx| {
                    let q = kx.checked_mul(self.dw)?;
                    (q % ph)
                        .checked_mul(self.wp / ph)?
                        .checked_add(q / ph)?
                        .checked_add(self.ow - 1)
                })
                .try_fold(0, |m, c| c.map(|c| m.max(c)))
        } else {
            last(self.ow, self.sw, self.kw, self.dw)
        };
        let (Some(ly), Some(lx)) = (last(self.oh, self.sh, self.kh, self.dh), lx) else {
            return Err(ConvError::BadSize);
        };
        if ly >= self.hp || lx >= self.wp {
            return Err(ConvError::OutOfBounds);
        }
        let out = self
            .oh
            .checked_mul(self.ow)
            .and_then(|v| v.checked_mul(self.cout))
            .and_then(|v| v.checked_mul(4));
        if out.is_none_or(|v| v > isize::MAX as usize) {
            return Err(ConvError::BadSize);
        }
        if self.begin > self.end || self.end > self.items() {
            return Err(ConvError::BadRange);
        }
        Func::from_code(self.func).ok_or(ConvError::BadFunc)
    }
}

/// Floats [`pack_weights`] writes for `cout` filters of `depth` (`cin·kh·kw`)
/// weights each.
pub const fn packed_len(cout: usize, depth: usize) -> usize {
    cout.div_ceil(CHANNEL_BLOCK)
        .saturating_mul(CHANNEL_BLOCK)
        .saturating_mul(depth)
}

/// Packs ONNX conv weights (`cout × depth`, row-major, `depth = cin·kh·kw`)
/// into panels of [`CHANNEL_BLOCK`] channels, each storing its depth steps
/// one after another (`32` floats each, channels past `cout` zero):
/// element `(co, p)` at `(co / 32)·depth·32 + p·32 + co % 32`.
pub fn pack_weights(
    cout: usize,
    depth: usize,
    w: &[f32],
    out: &mut [f32],
) -> Result<(), ConvError> {
    let need = cout.checked_mul(depth).ok_or(ConvError::BadSize)?;
    if w.len() < need || out.len() < packed_len(cout, depth) {
        return Err(ConvError::BadSize);
    }
    crate::gemm::pack_panels(CHANNEL_BLOCK, cout, depth, w, (depth, 1), out);
    Ok(())
}

/// [`pack_weights`] into a new vector.
#[cfg(any(feature = "std", not(target_os = "none"), test))]
pub fn pack_weights_vec(
    cout: usize,
    depth: usize,
    w: &[f32],
) -> Result<std::vec::Vec<f32>, ConvError> {
    let mut out = std::vec![0.0; packed_len(cout, depth)];
    pack_weights(cout, depth, w, &mut out)?;
    Ok(out)
}

/// Whether this build and CPU run the direct conv kernel.
pub fn supported() -> bool {
    crate::avx512f()
}

/// Runs the call after checking it.
///
/// # Safety
/// The pointers address the buffers [`KilnConvArgs`] describes.
pub unsafe fn run(a: &KilnConvArgs) -> Result<(), ConvError> {
    let func = a.check()?;
    if !supported() {
        return Err(ConvError::Unsupported);
    }
    #[cfg(target_arch = "x86_64")]
    {
        avx512::run(a, func);
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = func;
        Err(ConvError::Unsupported)
    }
}

/// `kiln_conv2d_f32_avx512(const KilnConvArgs *)`: 0, or a negative
/// [`ConvError::code`].
///
/// # Safety
/// `args` is null or points to arguments satisfying [`run`]'s contract.
#[no_mangle]
pub unsafe extern "C" fn kiln_conv2d_f32_avx512(args: *const KilnConvArgs) -> i32 {
    let Some(a) = args.as_ref() else {
        return ConvError::NullPointer.code();
    };
    match run(a) {
        Ok(()) => 0,
        Err(e) => e.code(),
    }
}
