//! The transcendental activations the GEMM and depthwise epilogues apply
//! while the results are still in registers: sigmoid, SiLU
//! (`x·sigmoid(x)`), GELU (erf form) and tanh.
//!
//! Why in the kernel: generated code evaluates these with 128-bit vectors
//! and per-lane tables (Cranelift has nothing wider), a few nanoseconds per
//! element, which made a conv or matmul followed by one cost two to three
//! times what onnxruntime pays (a 1x1 conv + SiLU at 56x56: 0.78 ms against
//! 0.36). Here they run 16 lanes wide on AVX-512 and 8 on AVX2, over values
//! the tile has not stored yet.
//!
//! Accuracy: reciprocals are the hardware estimate refined by one Newton
//! step (2^-28 relative on AVX-512, 2^-23 on AVX2); `exp` is Cephes'
//! single-precision reduction and polynomial (about 1 ulp); `1 + erf(z)`
//! comes from `erfc` by the Numerical Recipes Chebyshev fit (relative error
//! under 1.2e-7 for every `z`), so GELU is accurate in both tails (far out
//! to the left, below -2, the f32 square in `exp(-z²)` adds up to
//! `x²·1.2e-7` relative, on results under 1e-2). Arguments are clamped
//! where `exp` would leave the normal range, which moves results smaller
//! than about 1e-36 only. NaN propagates. The scalar forms (edge tiles,
//! other variants) evaluate the same formulas with a true division and
//! without fused multiply-adds.

// The coefficients as their sources print them.
#![allow(clippy::excessive_precision)]

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// An activation applied before the clamp; the number is its code in bits
/// 8-11 of the C entry points' `flags`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum Func {
    #[default]
    Identity = 0,
    /// `1 / (1 + exp(-x))`
    Sigmoid = 1,
    /// `x / (1 + exp(-x))` (Swish with β = 1)
    Silu = 2,
    /// `x/2 · (1 + erf(x/√2))`
    GeluErf = 3,
    Tanh = 4,
}

impl Func {
    /// The function with C ABI code `code`.
    pub const fn from_code(code: u32) -> Option<Func> {
        match code {
            0 => Some(Func::Identity),
            1 => Some(Func::Sigmoid),
            2 => Some(Func::Silu),
            3 => Some(Func::GeluErf),
            4 => Some(Func::Tanh),
            _ => None,
        }
    }

    /// `self(v)` one value at a time.
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Func::Identity => v,
            Func::Sigmoid => 1.0 / (1.0 + exp(-v)),
            Func::Silu => v / (1.0 + exp(-v)),
            Func::GeluErf => 0.5 * v * one_plus_erf(v * FRAC_1_SQRT_2),
            Func::Tanh => tanh(v),
        }
    }
}

const FRAC_1_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
const LOG2E: f32 = core::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `exp` arguments are clamped here: `2^n` stays a normal float.
const EXP_LO: f32 = -87.3;
const EXP_HI: f32 = 88.3;
/// Cephes `expf` on `[-ln2/2, ln2/2]`, highest degree first.
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];
/// Cephes `tanhf` for `|x| < 0.625`: `x + x·z·P(z)`, `z = x²`.
const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_908_9e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328_2e-1,
];
const TANH_SMALL: f32 = 0.625;
/// Numerical Recipes `erfcc`: `erfc(z) = t·exp(-z² + Q(t))`,
/// `t = 1/(1 + z/2)`, for `z ≥ 0`; `Q` highest degree first.
const ERFC_Q: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_203_98,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

fn abs(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0x7fff_ffff)
}

fn exp(v: f32) -> f32 {
    // NaN stays NaN.
    let x = v.clamp(EXP_LO, EXP_HI);
    let t = x * LOG2E;
    let n = if t < 0.0 { t - 0.5 } else { t + 0.5 } as i32;
    let nf = n as f32;
    let r = x - nf * LN2_HI - nf * LN2_LO;
    let mut p = EXP_P[0];
    for c in &EXP_P[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    if x.is_nan() {
        return x;
    }
    y * f32::from_bits(((n + 127) as u32) << 23)
}

fn tanh(v: f32) -> f32 {
    let a = abs(v);
    if a < TANH_SMALL {
        let z = v * v;
        let mut p = TANH_P[0];
        for c in &TANH_P[1..] {
            p = p * z + c;
        }
        v + v * z * p
    } else {
        let r = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
        if v < 0.0 {
            -r
        } else {
            r
        }
    }
}

/// `1 + erf(z)`: `erfc(-z)` below zero, `2 − erfc(z)` above.
fn one_plus_erf(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.5 * a);
    let mut q = ERFC_Q[0];
    for c in &ERFC_Q[1..] {
        q = q * t + c;
    }
    let erfc = t * exp(q - a * a);
    if z < 0.0 {
        erfc
    } else {
        2.0 - erfc
    }
}

/// `f(v)` on 16 lanes.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn apply_avx512(f: Func, v: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let exp = |x: __m512| exp_avx512(x);
    // 1/d by the 14-bit estimate and one Newton step (~2^-28 relative):
    // a fraction of the division's cost on Zen 4.
    let recip = |d: __m512| {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
    };
    let abs = |x: __m512| {
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(x),
            _mm512_set1_epi32(0x7fff_ffff),
        ))
    };
    let sign = |x: __m512| _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
    match f {
        Func::Identity => v,
        Func::Sigmoid => recip(_mm512_add_ps(
            one,
            exp(_mm512_sub_ps(_mm512_setzero_ps(), v)),
        )),
        Func::Silu => {
            let s = recip(_mm512_add_ps(
                one,
                exp(_mm512_sub_ps(_mm512_setzero_ps(), v)),
            ));
            _mm512_mul_ps(v, s)
        }
        Func::GeluErf => {
            let z = _mm512_mul_ps(v, _mm512_set1_ps(FRAC_1_SQRT_2));
            let a = abs(z);
            let t = recip(_mm512_fmadd_ps(a, _mm512_set1_ps(0.5), one));
            let mut q = _mm512_set1_ps(ERFC_Q[0]);
            for &c in &ERFC_Q[1..] {
                q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(c));
            }
            let erfc = _mm512_mul_ps(t, exp(_mm512_fnmadd_ps(a, a, q)));
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
            let s = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0), erfc), erfc);
            _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), v), s)
        }
        Func::Tanh => {
            let a = abs(v);
            let z = _mm512_mul_ps(v, v);
            let mut p = _mm512_set1_ps(TANH_P[0]);
            for &c in &TANH_P[1..] {
                p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(c));
            }
            let small = _mm512_fmadd_ps(_mm512_mul_ps(v, z), p, v);
            let e = exp(_mm512_add_ps(a, a));
            let big = _mm512_fnmadd_ps(_mm512_set1_ps(2.0), recip(_mm512_add_ps(e, one)), one);
            let big = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(big), sign(v)));
            let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(TANH_SMALL));
            _mm512_mask_blend_ps(is_small, big, small)
        }
    }
}

/// `f(v)` on 8 lanes.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn apply_avx2(f: Func, v: __m256) -> __m256 {
    let one = _mm256_set1_ps(1.0);
    let exp = |x: __m256| {
        // `max(lo, x)` and `min(hi, x)` return `x` when it is NaN.
        let x = _mm256_min_ps(
            _mm256_set1_ps(EXP_HI),
            _mm256_max_ps(_mm256_set1_ps(EXP_LO), x),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
        // 2^n by its exponent bits: n is within [-126, 127] after the clamp.
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
    };
    // 1/d by the 12-bit estimate and one Newton step (~2^-23 relative).
    let recip = |d: __m256| {
        let r = _mm256_rcp_ps(d);
        _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0)))
    };
    let abs = |x: __m256| _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    let sign = |x: __m256| _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN)));
    match f {
        Func::Identity => v,
        Func::Sigmoid => recip(_mm256_add_ps(
            one,
            exp(_mm256_sub_ps(_mm256_setzero_ps(), v)),
        )),
        Func::Silu => {
            let s = recip(_mm256_add_ps(
                one,
                exp(_mm256_sub_ps(_mm256_setzero_ps(), v)),
            ));
            _mm256_mul_ps(v, s)
        }
        Func::GeluErf => {
            let z = _mm256_mul_ps(v, _mm256_set1_ps(FRAC_1_SQRT_2));
            let a = abs(z);
            let t = recip(_mm256_fmadd_ps(a, _mm256_set1_ps(0.5), one));
            let mut q = _mm256_set1_ps(ERFC_Q[0]);
            for &c in &ERFC_Q[1..] {
                q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(c));
            }
            let erfc = _mm256_mul_ps(t, exp(_mm256_fnmadd_ps(a, a, q)));
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(z, _mm256_setzero_ps());
            let s = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0), erfc), erfc, neg);
            _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), v), s)
        }
        Func::Tanh => {
            let a = abs(v);
            let z = _mm256_mul_ps(v, v);
            let mut p = _mm256_set1_ps(TANH_P[0]);
            for &c in &TANH_P[1..] {
                p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(c));
            }
            let small = _mm256_fmadd_ps(_mm256_mul_ps(v, z), p, v);
            let e = exp(_mm256_add_ps(a, a));
            let big = _mm256_fnmadd_ps(_mm256_set1_ps(2.0), recip(_mm256_add_ps(e, one)), one);
            let big = _mm256_or_ps(big, sign(v));
            let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(TANH_SMALL));
            _mm256_blendv_ps(big, small, is_small)
        }
    }
}

/// `exp` on 16 lanes (see the module docs).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn exp_avx512(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_set1_ps(EXP_HI),
        _mm512_max_ps(_mm512_set1_ps(EXP_LO), x),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        p,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    _mm512_scalef_ps(y, n)
}

/// Where [`exp_rows`] runs: the variants of the GEMM kernels.
pub use crate::gemm::Variant;

/// `y[r·len + j] = exp(x[r·len + j] − m[r])` for `r < rows`, `j < len`:
/// the exponentials of a softmax over rows of `len`, `m` holding each
/// row's maximum. AVX-512 runs 16 lanes at a time (a masked last vector);
/// the other variants run the scalar form.
///
/// # Safety
/// `x` and `y` hold `rows·len` floats, `m` `rows`; `y` may be `x` but
/// overlaps nothing else; the CPU runs `variant`'s instructions.
pub unsafe fn exp_rows(
    variant: Variant,
    x: *const f32,
    m: *const f32,
    y: *mut f32,
    rows: usize,
    len: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if variant == Variant::Avx512 {
        exp_rows_avx512(x, m, y, rows, len);
        return;
    }
    let _ = variant;
    for r in 0..rows {
        let mr = *m.add(r);
        for j in 0..len {
            *y.add(r * len + j) = exp(*x.add(r * len + j) - mr);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_rows_avx512(x: *const f32, m: *const f32, y: *mut f32, rows: usize, len: usize) {
    for r in 0..rows {
        let mr = _mm512_set1_ps(*m.add(r));
        let (xr, yr) = (x.add(r * len), y.add(r * len));
        let mut j = 0;
        while j + 16 <= len {
            let v = _mm512_sub_ps(_mm512_loadu_ps(xr.add(j)), mr);
            _mm512_storeu_ps(yr.add(j), exp_avx512(v));
            j += 16;
        }
        if j < len {
            let k = ((1u32 << (len - j)) - 1) as u16;
            let v = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr.add(j)), mr);
            _mm512_mask_storeu_ps(yr.add(j), k, exp_avx512(v));
        }
    }
}

/// Defines the C entry point of [`exp_rows`] for one variant.
macro_rules! exp_rows_entry {
    ($(#[$attr:meta])* $name:ident, $variant:expr) => {
        $(#[$attr])*
        ///
        /// `y[r·len + j] = exp(x[r·len + j] − m[r])` for `r < rows`,
        /// `j < len`. Returns 0, -1 when a pointer is null (nothing is
        /// read when `rows·len` is 0), or -6 when the CPU lacks the
        /// variant's instructions.
        ///
        /// # Safety
        /// As [`exp_rows`], but for the pointers being checked.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            x: *const f32,
            m: *const f32,
            y: *mut f32,
            rows: usize,
            len: usize,
        ) -> i32 {
            if rows == 0 || len == 0 {
                return 0;
            }
            if x.is_null() || m.is_null() || y.is_null() {
                return -1;
            }
            if !$variant.is_supported() {
                return -6;
            }
            exp_rows($variant, x, m, y, rows, len);
            0
        }
    };
}

exp_rows_entry!(
    /// Portable softmax exponentials.
    kiln_exp_rows_f32_scalar,
    Variant::Scalar
);
exp_rows_entry!(
    /// AVX-512F softmax exponentials.
    #[cfg(target_arch = "x86_64")]
    kiln_exp_rows_f32_avx512,
    Variant::Avx512
);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// `1 + erf(z)` in double precision: the Taylor series of erf for
    /// |z| < 2, erfc's continued fraction beyond (both near 1e-15).
    fn one_plus_erf64(z: f64) -> f64 {
        let erfc_cf = |u: f64| {
            let mut k = u;
            for n in (1..=80).rev() {
                k = u + (n as f64 / 2.0) / k;
            }
            (-u * u).exp() / (std::f64::consts::PI.sqrt() * k)
        };
        if z <= -2.0 {
            return erfc_cf(-z);
        }
        if z >= 2.0 {
            return 2.0 - erfc_cf(z);
        }
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        loop {
            n += 1.0;
            term *= -z * z / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        1.0 + sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// `f(x)` in double precision.
    pub(crate) fn reference(f: Func, x: f64) -> f64 {
        match f {
            Func::Identity => x,
            Func::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Func::Silu => x / (1.0 + (-x).exp()),
            Func::GeluErf => 0.5 * x * one_plus_erf64(x / std::f64::consts::SQRT_2),
            Func::Tanh => x.tanh(),
        }
    }

    /// Arguments over every branch: tiny, around the switch points, large.
    fn arguments() -> Vec<f32> {
        let mut xs = vec![
            0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 0.625, -0.625, 100.0, -100.0,
        ];
        let mut x = -12.0f32;
        while x <= 12.0 {
            xs.push(x);
            x += 0.013;
        }
        xs
    }

    const FUNCS: [Func; 4] = [Func::Sigmoid, Func::Silu, Func::GeluErf, Func::Tanh];

    /// Within a few ulp of the double-precision value, or 1e-36·|x|
    /// absolute where the true result is that small (the clamped `exp`).
    fn check(f: Func, x: f32, got: f32, how: &str) {
        let want = reference(f, x as f64);
        let err = (got as f64 - want).abs();
        let tol = 4.0 * f32::EPSILON as f64 * want.abs() + 1e-36 * (x.abs() as f64).max(1.0);
        // GELU's negative tail: the f32 square in `exp(-z²)` is off by
        // up to z²·2^-24 relative (x = -6: 1e-6 of a 6e-9 result).
        let tol = if f == Func::GeluErf && x < -2.0 {
            tol.max(1.2e-7 * (x as f64).powi(2) * want.abs())
        } else {
            tol
        };
        assert!(
            err <= tol,
            "{how} {f:?}({x}) = {got}, want {want} (error {err:e})"
        );
    }

    #[test]
    fn scalar_forms_are_within_a_few_ulp() {
        for f in FUNCS {
            for x in arguments() {
                check(f, x, f.apply(x), "scalar");
            }
            assert!(f.apply(f32::NAN).is_nan(), "{f:?} keeps NaN");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_forms_are_within_a_few_ulp() {
        let xs = arguments();
        for f in FUNCS {
            if std::arch::is_x86_feature_detected!("avx512f") {
                for chunk in xs.chunks(16) {
                    let mut lanes = [f32::NAN; 16];
                    lanes[..chunk.len()].copy_from_slice(chunk);
                    let mut out = [0.0f32; 16];
                    // SAFETY: AVX-512F was detected; the arrays hold 16 floats.
                    unsafe {
                        let v = apply_avx512(f, _mm512_loadu_ps(lanes.as_ptr()));
                        _mm512_storeu_ps(out.as_mut_ptr(), v);
                    }
                    for (i, &x) in chunk.iter().enumerate() {
                        check(f, x, out[i], "avx512");
                    }
                    assert!(chunk.len() == 16 || out[15].is_nan(), "{f:?} keeps NaN");
                }
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                for chunk in xs.chunks(8) {
                    let mut lanes = [f32::NAN; 8];
                    lanes[..chunk.len()].copy_from_slice(chunk);
                    let mut out = [0.0f32; 8];
                    // SAFETY: AVX2 and FMA were detected; the arrays hold 8 floats.
                    unsafe {
                        let v = apply_avx2(f, _mm256_loadu_ps(lanes.as_ptr()));
                        _mm256_storeu_ps(out.as_mut_ptr(), v);
                    }
                    for (i, &x) in chunk.iter().enumerate() {
                        check(f, x, out[i], "avx2");
                    }
                    assert!(chunk.len() == 8 || out[7].is_nan(), "{f:?} keeps NaN");
                }
            }
        }
    }

    #[test]
    fn exp_rows_match_exp_of_the_shifted_rows() {
        let (rows, len) = (5, 37);
        let x: Vec<f32> = (0..rows * len)
            .map(|i| ((i * 7919) % 97) as f32 * 0.37 - 30.0)
            .collect();
        let m: Vec<f32> = (0..rows).map(|r| r as f32 * 3.0 - 4.0).collect();
        for v in [Variant::Scalar, Variant::Avx512] {
            if !v.is_supported() {
                continue;
            }
            let mut y = vec![f32::NAN; rows * len + 3];
            // SAFETY: the lengths are as documented; y has spare room checked below.
            unsafe { exp_rows(v, x.as_ptr(), m.as_ptr(), y.as_mut_ptr(), rows, len) };
            for r in 0..rows {
                for j in 0..len {
                    let want = ((x[r * len + j] - m[r]) as f64).exp();
                    let got = y[r * len + j] as f64;
                    assert!(
                        (got - want).abs() <= 3.0 * f32::EPSILON as f64 * want + 1e-37,
                        "{v:?} ({r},{j}): {got} vs {want}"
                    );
                }
            }
            assert!(
                y[rows * len..].iter().all(|v| v.is_nan()),
                "{v:?} wrote past the rows"
            );
        }
    }
}
