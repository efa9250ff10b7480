//! 2-D max pooling over an input its lowering has already padded with -inf
//! (and extended for `ceil_mode`), so no window tests a border.
//!
//! Why a routine: the rendered kernel IR takes each window's maximum down
//! its rows with contiguous loads, but across the columns of a stride-2
//! window it reads every other element, which 128-bit Cranelift code does
//! one lane at a time. Here, for 16 outputs of a row at a time, each tap
//! is a maximum down the window's rows of 16 contiguous columns (stride 1)
//! or the even or odd lanes of 32 of them (stride 2, one permute), all in
//! registers; other strides go through a row buffer.

/// The longest span of input columns one output row reads.
pub const MAX_SPAN: usize = 4096;

/// The operands of one call, as the C entry point takes them;
/// `KilnMaxPoolArgs` in `kiln_runtime.h` mirrors it: two pointers, thirteen
/// `size_t`.
///
/// `x` holds `planes` padded planes of `hp × wp`, `y` `planes` planes of
/// `oh × ow`: `y[p, oy, ox] = max over ky < kh, kx < kw of x[p, oy·sh +
/// ky·dh, ox·sw + kx·dw]`. Only planes `begin..end` are computed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KilnMaxPoolArgs {
    pub x: *const f32,
    pub y: *mut f32,
    pub hp: usize,
    pub wp: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub planes: usize,
    pub begin: usize,
    pub end: usize,
}

/// Why a call was refused; [`PoolError::code`] is the C status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    NullPointer,
    /// A size is zero, a product overflows, or a row's span exceeds
    /// [`MAX_SPAN`].
    BadSize,
    /// The last window falls outside the padded input.
    OutOfBounds,
    /// `begin..end` is not a range of planes.
    BadRange,
    /// This build or CPU has no kernel for the call.
    Unsupported,
}

impl PoolError {
    /// The negative status the C entry point returns.
    pub const fn code(self) -> i32 {
        match self {
            PoolError::NullPointer => -1,
            PoolError::BadSize => -2,
            PoolError::OutOfBounds => -3,
            PoolError::BadRange => -4,
            PoolError::Unsupported => -6,
        }
    }
}

impl KilnMaxPoolArgs {
    /// Input columns one output row reads.
    pub fn span(&self) -> Option<usize> {
        (self.ow - 1)
            .checked_mul(self.sw)?
            .checked_add((self.kw - 1).checked_mul(self.dw)?)?
            .checked_add(1)
    }

    fn check(&self) -> Result<(), PoolError> {
        if self.x.is_null() || self.y.is_null() {
            return Err(PoolError::NullPointer);
        }
        let sizes = [
            self.hp, self.wp, self.oh, self.ow, self.kh, self.kw, self.sh, self.sw, self.dh,
            self.dw,
        ];
        if sizes.contains(&0) {
            return Err(PoolError::BadSize);
        }
        let fits = |a: usize, b: usize, c: usize| {
            a.checked_mul(b)
                .and_then(|v| v.checked_mul(c))
                .and_then(|v| v.checked_mul(4))
                .is_some_and(|v| v <= isize::MAX as usize)
        };
        if !fits(self.planes, self.hp, self.wp) || !fits(self.planes, self.oh, self.ow) {
            return Err(PoolError::BadSize);
        }
        let span = self
            .span()
            .filter(|&s| s <= MAX_SPAN)
            .ok_or(PoolError::BadSize)?;
        let last_row = (self.oh - 1)
            .checked_mul(self.sh)
            .and_then(|v| v.checked_add((self.kh - 1).checked_mul(self.dh)?))
            .ok_or(PoolError::BadSize)?;
        if last_row >= self.hp || span > self.wp {
            return Err(PoolError::OutOfBounds);
        }
        if self.begin > self.end || self.end > self.planes {
            return Err(PoolError::BadRange);
        }
        Ok(())
    }
}

/// Whether this build and CPU run the routine.
pub fn supported() -> bool {
    crate::avx512f()
}

/// Runs the call after checking it.
///
/// # Safety
/// The pointers address the buffers [`KilnMaxPoolArgs`] describes.
pub unsafe fn run(a: &KilnMaxPoolArgs) -> Result<(), PoolError> {
    a.check()?;
    if !supported() {
        return Err(PoolError::Unsupported);
    }
    #[cfg(target_arch = "x86_64")]
    {
        avx512::run(a);
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Err(PoolError::Unsupported)
    }
}

/// `kiln_maxpool2d_f32_avx512(const KilnMaxPoolArgs *)`: 0, or a negative
/// [`PoolError::code`].
///
/// # Safety
/// `args` is null or points to arguments satisfying [`run`]'s contract.
#[no_mangle]
pub unsafe extern "C" fn kiln_maxpool2d_f32_avx512(args: *const KilnMaxPoolArgs) -> i32 {
    let Some(a) = args.as_ref() else {
        return PoolError::NullPointer.code();
    };
    match run(a) {
        Ok(()) => 0,
        Err(e) => e.code(),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KilnMaxPoolArgs, MAX_SPAN};
    use core::arch::x86_64::*;

    /// Lanes `0..n` (all 16 when `n ≥ 16`).
    #[inline(always)]
    fn lanes(n: usize) -> u16 {
        if n >= 16 {
            u16::MAX
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// # Safety
    /// `a` passed the checks; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(a: &KilnMaxPoolArgs) {
        let span = (a.ow - 1) * a.sw + (a.kw - 1) * a.dw + 1;
        let rows = Rows {
            kh: a.kh,
            step: a.dh * a.wp,
            span,
        };
        // Other strides: the row buffer, then one tap at a time.
        let mut row = [0.0f32; MAX_SPAN];
        for p in a.begin..a.end {
            let xp = a.x.add(p * a.hp * a.wp);
            let yp = a.y.add(p * a.oh * a.ow);
            for oy in 0..a.oh {
                let top = xp.add(oy * a.sh * a.wp);
                let out = yp.add(oy * a.ow);
                match a.sw {
                    1 => unit_stride(top, &rows, a, out),
                    2 => stride_two(top, &rows, a, out),
                    _ => {
                        let mut j = 0;
                        while j < span {
                            let m = rows.down(top, j);
                            _mm512_mask_storeu_ps(row.as_mut_ptr().add(j), lanes(span - j), m);
                            j += 16;
                        }
                        for ox in 0..a.ow {
                            let mut m = row[ox * a.sw];
                            for kx in 1..a.kw {
                                m = m.max(row[ox * a.sw + kx * a.dw]);
                            }
                            *out.add(ox) = m;
                        }
                    }
                }
            }
        }
    }

    /// The rows of one output row's windows.
    struct Rows {
        kh: usize,
        /// Floats between the window's rows.
        step: usize,
        /// Columns the output row reads; loads stop there.
        span: usize,
    }

    impl Rows {
        /// The maximum down the window's rows of columns `c..c + 16` from
        /// `top`; lanes at or past `span` are zero (no output reads them).
        #[inline(always)]
        unsafe fn down(&self, top: *const f32, c: usize) -> __m512 {
            let k = if c >= self.span {
                0
            } else {
                lanes(self.span - c)
            };
            let mut m = _mm512_maskz_loadu_ps(k, top.add(c));
            for ky in 1..self.kh {
                m = _mm512_max_ps(m, _mm512_maskz_loadu_ps(k, top.add(ky * self.step + c)));
            }
            m
        }
    }

    /// Stride 1: tap `kx` of 16 outputs is the maximum down the rows of
    /// the 16 columns from `ox + kx·dw`.
    #[inline(always)]
    unsafe fn unit_stride(top: *const f32, rows: &Rows, a: &KilnMaxPoolArgs, out: *mut f32) {
        let mut ox = 0;
        while ox < a.ow {
            let mut m = rows.down(top, ox);
            for kx in 1..a.kw {
                m = _mm512_max_ps(m, rows.down(top, ox + kx * a.dw));
            }
            _mm512_mask_storeu_ps(out.add(ox), lanes(a.ow - ox), m);
            ox += 16;
        }
    }

    /// Stride 2: tap `kx` (column `2·ox + q`, `q = kx·dw`) of 16 outputs
    /// is the even (`q` even) or odd lanes of the 32 columns from `2·ox +
    /// q` rounded down to even, one permute of two vectors of maxima down
    /// the rows. Taps `q` and `q + 1` share those vectors. Kept in
    /// registers: through a row buffer, each reload straddled two stores
    /// and waited for them (SqueezeNet 1.1's 128x55x55 pool: ~100 µs).
    #[inline(always)]
    unsafe fn stride_two(top: *const f32, rows: &Rows, a: &KilnMaxPoolArgs, out: *mut f32) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        if a.kw <= 3 && a.dw == 1 {
            // The common 2x2 and 3x3 windows: each vector of maxima down
            // the rows is computed once; tap 2 is tap 0's evens moved one
            // lane down, the next vector's first even entering at the top.
            let next = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
            let mut lo = rows.down(top, 0);
            let mut ox = 0;
            while ox < a.ow {
                let hi = rows.down(top, 2 * ox + 16);
                let after = rows.down(top, 2 * ox + 32);
                let e = _mm512_permutex2var_ps(lo, even, hi);
                let mut m = e;
                if a.kw >= 2 {
                    m = _mm512_max_ps(m, _mm512_permutex2var_ps(lo, odd, hi));
                }
                if a.kw == 3 {
                    m = _mm512_max_ps(m, _mm512_permutex2var_ps(e, next, after));
                }
                _mm512_mask_storeu_ps(out.add(ox), lanes(a.ow - ox), m);
                lo = after;
                ox += 16;
            }
            return;
        }
        let mut ox = 0;
        while ox < a.ow {
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut pair = (usize::MAX, _mm512_setzero_ps(), _mm512_setzero_ps());
            for kx in 0..a.kw {
                let q = kx * a.dw;
                let c = 2 * ox + (q & !1);
                if pair.0 != c {
                    pair = (c, rows.down(top, c), rows.down(top, c + 16));
                }
                let idx = if q.is_multiple_of(2) { even } else { odd };
                m = _mm512_max_ps(m, _mm512_permutex2var_ps(pair.1, idx, pair.2));
            }
            _mm512_mask_storeu_ps(out.add(ox), lanes(a.ow - ox), m);
            ox += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use std::vec;

    fn check(
        hp: usize,
        wp: usize,
        k: (usize, usize),
        s: (usize, usize),
        d: (usize, usize),
        rng: &mut Rng,
    ) {
        let oh = (hp - ((k.0 - 1) * d.0 + 1)) / s.0 + 1;
        let ow = (wp - ((k.1 - 1) * d.1 + 1)) / s.1 + 1;
        let planes = 3;
        let x = rng.vec(planes * hp * wp);
        let mut y = vec![7.0f32; planes * oh * ow];
        let a = KilnMaxPoolArgs {
            x: x.as_ptr(),
            y: y.as_mut_ptr(),
            hp,
            wp,
            oh,
            ow,
            kh: k.0,
            kw: k.1,
            sh: s.0,
            sw: s.1,
            dh: d.0,
            dw: d.1,
            planes,
            begin: 1,
            end: 3,
        };
        assert_eq!(unsafe { kiln_maxpool2d_f32_avx512(&a) }, 0);
        for p in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let got = y[(p * oh + oy) * ow + ox];
                    if p == 0 {
                        assert_eq!(got, 7.0, "plane 0 is outside the range");
                        continue;
                    }
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..k.0 {
                        for kx in 0..k.1 {
                            m = m.max(x[(p * hp + oy * s.0 + ky * d.0) * wp + ox * s.1 + kx * d.1]);
                        }
                    }
                    assert_eq!(
                        got, m,
                        "{hp}x{wp} k{k:?} s{s:?} d{d:?} at ({p}, {oy}, {ox})"
                    );
                }
            }
        }
    }

    #[test]
    fn maxpool_matches_reference() {
        if !supported() {
            std::eprintln!("no AVX-512F: max pool routine not run");
            return;
        }
        let mut rng = Rng(91);
        for &(hp, wp) in &[(3, 3), (7, 9), (13, 40), (111, 111), (9, 70)] {
            for &(k, s, d) in &[
                ((3, 3), (2, 2), (1, 1)),
                ((2, 2), (2, 2), (1, 1)),
                ((3, 3), (1, 1), (1, 1)),
                ((3, 2), (1, 3), (1, 1)),
                ((2, 3), (2, 2), (2, 2)),
                ((1, 1), (1, 1), (1, 1)),
                ((3, 1), (2, 2), (1, 1)),
            ] {
                if (k.0 - 1) * d.0 < hp && (k.1 - 1) * d.1 < wp {
                    check(hp, wp, k, s, d, &mut rng);
                }
            }
        }
    }

    #[test]
    fn maxpool_refuses_bad_calls() {
        let x = [0.0f32; 16];
        let mut y = [0.0f32; 16];
        let good = KilnMaxPoolArgs {
            x: x.as_ptr(),
            y: y.as_mut_ptr(),
            hp: 3,
            wp: 3,
            oh: 1,
            ow: 1,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            planes: 1,
            begin: 0,
            end: 1,
        };
        let call = |a: KilnMaxPoolArgs| unsafe { kiln_maxpool2d_f32_avx512(&a) };
        let ok = if supported() {
            0
        } else {
            PoolError::Unsupported.code()
        };
        assert_eq!(call(good), ok);
        assert_eq!(unsafe { kiln_maxpool2d_f32_avx512(core::ptr::null()) }, -1);
        assert_eq!(
            call(KilnMaxPoolArgs {
                y: core::ptr::null_mut(),
                ..good
            }),
            -1
        );
        assert_eq!(call(KilnMaxPoolArgs { kw: 0, ..good }), -2);
        assert_eq!(call(KilnMaxPoolArgs { ow: 2, ..good }), -3);
        assert_eq!(call(KilnMaxPoolArgs { oh: 2, ..good }), -3);
        assert_eq!(
            call(KilnMaxPoolArgs {
                ow: 5000,
                wp: 6000,
                ..good
            }),
            -2
        );
        assert_eq!(call(KilnMaxPoolArgs { end: 2, ..good }), -4);
    }
}
