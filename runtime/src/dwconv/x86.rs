//! x86_64 vectors for the shared loop nest: 256-bit AVX2+FMA and 512-bit
//! AVX-512F.
//!
//! Tiles (output rows × vectors), sized to the register file: AVX-512
//! keeps a 3×3 kernel's 9 weight vectors and a 4 × 2 tile of accumulators
//! in its 32 `zmm`, and a 5×5 kernel's 25 weights with a 2 × 2 tile; AVX2
//! keeps 9 weights and a 3 × 1 tile in its 16 `ymm`, and for 5×5 a 2 × 2
//! tile whose weights come from memory as FMA operands. Rows of a single
//! vector use 4 × 1 tiles (see `simd::run`).

use core::arch::x86_64::*;

use super::simd::{self, Simd};
use super::KilnDwArgs;
use crate::func::{apply_avx2, apply_avx512, Func};

/// 256-bit vectors (AVX2 + FMA).
pub(crate) struct Avx2;

/// Lanes `0..n` (`n ≤ 4`) of `p`, zero above, reading nothing past them.
#[inline(always)]
unsafe fn load4(p: *const f32, n: usize) -> __m128 {
    match n {
        0 => _mm_setzero_ps(),
        1 => _mm_load_ss(p),
        2 => _mm_castpd_ps(_mm_load_sd(p.cast())),
        3 => _mm_movelh_ps(_mm_castpd_ps(_mm_load_sd(p.cast())), _mm_load_ss(p.add(2))),
        _ => _mm_loadu_ps(p),
    }
}

/// Stores lanes `0..n` (`n ≤ 4`) of `v` at `p`.
#[inline(always)]
unsafe fn store4(p: *mut f32, v: __m128, n: usize) {
    match n {
        0 => {}
        1 => _mm_store_ss(p, v),
        2 => _mm_store_sd(p.cast(), _mm_castps_pd(v)),
        3 => {
            _mm_store_sd(p.cast(), _mm_castps_pd(v));
            _mm_store_ss(p.add(2), _mm_movehl_ps(v, v));
        }
        _ => _mm_storeu_ps(p, v),
    }
}

/// The 8×8 transpose of `Simd::transpose` in 24 AVX shuffles: pairs of
/// rows interleaved, then pairs of pairs, then 128-bit halves swapped.
#[inline(always)]
unsafe fn transpose8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    // No closure here (`array::from_fn`): closures do not inherit the
    // caller's target features, and the intrinsics would not inline.
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, v) in r.iter_mut().enumerate() {
        *v = _mm256_loadu_ps(src.add(i * ss));
    }
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s = [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xEE>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xEE>(t1, t3),
        _mm256_shuffle_ps::<0x44>(t4, t6),
        _mm256_shuffle_ps::<0xEE>(t4, t6),
        _mm256_shuffle_ps::<0x44>(t5, t7),
        _mm256_shuffle_ps::<0xEE>(t5, t7),
    ];
    for j in 0..4 {
        let lo = _mm256_permute2f128_ps::<0x20>(s[j], s[j + 4]);
        let hi = _mm256_permute2f128_ps::<0x31>(s[j], s[j + 4]);
        _mm256_storeu_ps(dst.add(j * ds), lo);
        _mm256_storeu_ps(dst.add((j + 4) * ds), hi);
    }
}

impl Simd for Avx2 {
    type V = __m256;
    const L: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    // Not `vmaskmovps`: its store form is microcoded on AMD cores (tens of
    // cycles); a part is assembled from 128-, 64- and 32-bit moves.
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> __m256 {
        if n >= 4 {
            _mm256_set_m128(load4(p.add(4), n - 4), _mm_loadu_ps(p))
        } else {
            _mm256_castps128_ps256(load4(p, n))
        }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: __m256, n: usize) {
        let lo = _mm256_castps256_ps128(v);
        if n >= 4 {
            _mm_storeu_ps(p, lo);
            store4(p.add(4), _mm256_extractf128_ps::<1>(v), n - 4);
        } else {
            store4(p, lo, n);
        }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, acc: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, acc)
    }
    #[inline(always)]
    unsafe fn func(f: Func, v: __m256) -> __m256 {
        apply_avx2(f, v)
    }
    #[inline(always)]
    unsafe fn clamp(v: __m256, lo: __m256, hi: __m256) -> __m256 {
        // `max(lo, v)` returns `v` when either is NaN: NaN passes.
        _mm256_min_ps(hi, _mm256_max_ps(lo, v))
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m256, b: __m256) -> (__m256, __m256) {
        // Within 128-bit lanes: [a0 a2 b0 b2 | a4 a6 b4 b6]; then the
        // middle 64-bit quarters swap places to order them.
        let even = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a, b));
        let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(a, b));
        (
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(even)),
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(odd)),
        )
    }
    #[inline(always)]
    unsafe fn transpose(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
        transpose8(src, ss, dst, ds)
    }
}

/// 512-bit vectors (AVX-512F).
pub(crate) struct Avx512;

impl Simd for Avx512 {
    type V = __m512;
    const L: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: __m512, n: usize) {
        _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, acc: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, acc)
    }
    #[inline(always)]
    unsafe fn func(f: Func, v: __m512) -> __m512 {
        apply_avx512(f, v)
    }
    #[inline(always)]
    unsafe fn clamp(v: __m512, lo: __m512, hi: __m512) -> __m512 {
        // `max(lo, v)` returns `v` when either is NaN: NaN passes.
        _mm512_min_ps(hi, _mm512_max_ps(lo, v))
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m512, b: __m512) -> (__m512, __m512) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        (
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
        )
    }
    /// Four 8×8 quarters, each to its mirrored place (AVX-512F implies AVX2).
    #[inline(always)]
    unsafe fn transpose(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
        transpose8(src, ss, dst, ds);
        transpose8(src.add(8), ss, dst.add(8 * ds), ds);
        transpose8(src.add(8 * ss), ss, dst.add(8), ds);
        transpose8(src.add(8 * ss + 8), ss, dst.add(8 * ds + 8), ds);
    }
}

/// The AVX2 variant's loop nest, in a function of its own so that it has
/// its own stack frame (the staging buffer is most of it).
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn body_avx2(a: &KilnDwArgs) {
    simd::run::<Avx2, 3, 1, 2, 2>(a)
}

/// The AVX-512 variant's loop nest for rows of 512-bit vectors.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline(never)]
unsafe fn body_avx512(a: &KilnDwArgs) {
    simd::run::<Avx512, 4, 2, 2, 2>(a)
}

/// The AVX2 variant.
///
/// # Safety
/// As `scalar::run`, and the CPU has AVX2 and FMA.
pub(crate) unsafe fn run_avx2(a: &KilnDwArgs) {
    body_avx2(a)
}

/// The AVX-512 variant. Rows of at most 8 outputs use 256-bit vectors:
/// a 512-bit one would leave half its lanes idle, and on cores that split
/// 512-bit operations in two (Zen 4) that halves the throughput. Stride 2
/// uses them too: there a tile does fewer FMAs per load and per staged
/// float, and on Zen 4 256-bit vectors measured 15–35% faster (stride 1
/// is up to 40% faster with 512-bit ones). Every AVX-512F CPU has AVX2
/// and FMA. Planes the channels-last path takes (rows of at most 8) run
/// there with 512-bit vectors, every lane busy. Only a dispatcher: each
/// loop nest keeps its own frame, so that a call never holds two staging
/// buffers.
///
/// # Safety
/// As `scalar::run`, and the CPU has AVX-512F.
pub(crate) unsafe fn run_avx512(a: &KilnDwArgs) {
    if super::cl::takes::<Avx512>(a) {
        body_avx512(a)
    } else if a.out_w <= 8 || a.stride_w == 2 {
        body_avx2(a)
    } else {
        body_avx512(a)
    }
}
