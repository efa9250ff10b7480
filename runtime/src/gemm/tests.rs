//! Every variant this CPU runs, against a naive f64-accumulated GEMM, over
//! shapes that cover full and partial tiles, several cache blocks, padded
//! strides and each epilogue. The error bound is the textbook one for an
//! f32 dot product of length `k`: `(k + 3)·u·Σ|a·b|` (plus `C` and bias).

use std::vec;
use std::vec::Vec;

use super::*;

use crate::test_rng::Rng;

fn runnable() -> Vec<Variant> {
    let v: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| v.is_compiled() && v.is_supported())
        .collect();
    std::eprintln!("gemm variants under test: {v:?}");
    // The project's machines have AVX2+FMA; losing that variant would hide
    // the one the compiler uses by default.
    #[cfg(target_arch = "x86_64")]
    assert!(v.contains(&Variant::Avx2), "this x86_64 CPU lacks AVX2+FMA");
    v
}

/// One case: shape, padding of the strides, epilogue.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    pad_a: usize,
    pad_c: usize,
    accumulate: bool,
    bias: bool,
    /// One bias value per row instead of per column.
    bias_rows: bool,
    /// Add a residual matrix (only without `accumulate`).
    residual: bool,
    act: Activation,
    transposed_b: bool,
}

impl Case {
    fn from_index(m: usize, n: usize, k: usize, i: usize) -> Case {
        let acts = [
            Activation::None,
            Activation::Relu,
            Activation::Clip {
                min: -0.5,
                max: 0.7,
            },
            Activation::Func(Func::Sigmoid),
            Activation::Func(Func::Silu),
            Activation::Func(Func::GeluErf),
            Activation::Func(Func::Tanh),
        ];
        Case {
            m,
            n,
            k,
            pad_a: (i * 7) % 5,
            pad_c: (i * 3) % 4,
            accumulate: i % 2 == 1,
            bias: (i / 2) % 2 == 1,
            bias_rows: (i / 24) % 2 == 1,
            residual: i.is_multiple_of(2) && (i / 48) % 2 == 1,
            act: acts[(i / 4) % acts.len()],
            transposed_b: (i / 12) % 2 == 1,
        }
    }
}

/// Runs `case` with `variant` and `scratch_len` floats of scratch (None:
/// the full-speed size) and checks every element against the reference.
fn check(variant: Variant, case: Case, scratch_len: Option<usize>, rng: &mut Rng) {
    let Case { m, n, k, .. } = case;
    let lda = k + case.pad_a;
    let ldc = n + case.pad_c;
    let a = rng.vec(m.max(1) * lda);
    let b = rng.vec(k * n);
    let c0 = rng.vec(m.max(1) * ldc);
    let bias = rng.vec(m.max(n));
    let ldr = n + case.pad_a;
    let res = rng.vec(m.max(1) * ldr);
    // Logical B(p, j) = b[p·n + j] either way; the transposed case stores
    // it as Bᵀ (n × k) and packs with swapped strides.
    let packed = if case.transposed_b {
        let mut bt = vec![0.0; k * n];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        pack_b_vec(variant, k, n, &bt, 1, k).unwrap()
    } else {
        pack_b_vec(variant, k, n, &b, n, 1).unwrap()
    };
    assert_eq!(packed.len(), variant.packed_b_len(k, n));
    let mut c = c0.clone();
    let mut scratch = vec![0.0; scratch_len.unwrap_or(variant.scratch_len(m, k))];
    let epi = Epilogue {
        accumulate: case.accumulate,
        bias: case.bias.then_some(&bias[..]),
        bias_rows: case.bias_rows,
        residual: case.residual.then_some((&res[..], ldr)),
        activation: case.act,
    };
    sgemm(
        variant,
        m,
        n,
        k,
        &a,
        lda,
        &packed,
        &mut c,
        ldc,
        &epi,
        &mut scratch,
    )
    .unwrap_or_else(|e| panic!("{variant:?} {case:?}: {e}"));
    verify(variant, case, &a, &b, &c0, &bias, &res, &c, "packed B");

    // The same with A stored transposed (k rows of m floats, padded).
    let lda_t = m + case.pad_a;
    let mut at = vec![0.0; k.max(1) * lda_t.max(1)];
    for i in 0..m {
        for p in 0..k {
            at[p * lda_t + i] = a[i * lda + p];
        }
    }
    let mut ct = c0.clone();
    let mut scratch = vec![0.0; scratch_len.unwrap_or(variant.scratch_len(m, k))];
    api::sgemm_with_a(
        variant,
        [m, n, k],
        (&at, lda_t.max(1), true),
        &packed,
        (&mut ct, ldc),
        &epi,
        &mut scratch,
    )
    .unwrap_or_else(|e| panic!("{variant:?} {case:?} transposed A: {e}"));
    verify(variant, case, &a, &b, &c0, &bias, &res, &ct, "transposed A");

    // The same product with A packed ahead of time and B read in place
    // (transposed A when the case transposes B, to cover both strides).
    let packed_a = if case.transposed_b {
        let mut at = vec![0.0; m.max(1) * k];
        for i in 0..m {
            for p in 0..k {
                at[p * m + i] = a[i * lda + p];
            }
        }
        pack_a_vec(variant, m, k, &at, 1, m).unwrap()
    } else {
        pack_a_vec(variant, m, k, &a, lda, 1).unwrap()
    };
    let ldb = n + case.pad_c;
    let mut braw = vec![0.0; k.max(1) * ldb];
    for p in 0..k {
        braw[p * ldb..p * ldb + n].copy_from_slice(&b[p * n..(p + 1) * n]);
    }
    let mut c2 = c0.clone();
    let len = scratch_len.map_or(variant.scratch_len_pa(n, k), |l| {
        l.max(variant.min_scratch_len_pa(k))
    });
    let mut scratch = vec![0.0; len];
    sgemm_pa(
        variant,
        m,
        n,
        k,
        &packed_a,
        &braw,
        ldb,
        &mut c2,
        ldc,
        &epi,
        &mut scratch,
    )
    .unwrap_or_else(|e| panic!("{variant:?} {case:?} packed A: {e}"));
    verify(variant, case, &a, &b, &c0, &bias, &res, &c2, "packed A");

    // Both raw: B row-major (padded rows), or transposed (Bᵀ stored n × k).
    let (bsrc, strides) = if case.transposed_b {
        let mut bt = vec![0.0; n.max(1) * k];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        (bt, (1, k.max(1)))
    } else {
        (braw, (ldb, 1))
    };
    let mut c3 = c0.clone();
    let len = scratch_len.map_or(variant.scratch_len_raw(m, n, k), |l| {
        l.max(variant.min_scratch_len_raw(k))
    });
    let mut scratch = vec![0.0; len];
    sgemm_raw(
        variant,
        m,
        n,
        k,
        &a,
        lda,
        &bsrc,
        strides,
        &mut c3,
        ldc,
        &epi,
        &mut scratch,
    )
    .unwrap_or_else(|e| panic!("{variant:?} {case:?} raw: {e}"));
    verify(variant, case, &a, &b, &c0, &bias, &res, &c3, "raw");
}

/// Checks `c` against the f64 reference of `case`.
#[allow(clippy::too_many_arguments)]
fn verify(
    variant: Variant,
    case: Case,
    a: &[f32],
    b: &[f32],
    c0: &[f32],
    bias: &[f32],
    res: &[f32],
    c: &[f32],
    mode: &str,
) {
    let Case { m, n, k, .. } = case;
    let lda = k + case.pad_a;
    let ldc = n + case.pad_c;
    let ldr = n + case.pad_a;
    let (lo, hi) = case.act.bounds();
    let u = f32::EPSILON as f64 / 2.0;
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert_eq!(
                    got,
                    c0[i * ldc + j],
                    "{variant:?} {case:?} {mode}: padding ({i},{j}) written"
                );
                continue;
            }
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = a[i * lda + p] as f64 * b[p * n + j] as f64;
                sum += t;
                mag += t.abs();
            }
            if case.accumulate {
                sum += c0[i * ldc + j] as f64;
                mag += (c0[i * ldc + j] as f64).abs();
            }
            if case.residual {
                sum += res[i * ldr + j] as f64;
                mag += (res[i * ldr + j] as f64).abs();
            }
            if case.bias {
                let bv = bias[if case.bias_rows { i } else { j }] as f64;
                sum += bv;
                mag += bv.abs();
            }
            // The sum's rounding passes through the function (slopes at
            // most 1.13), which adds a few ulp of its own.
            let func = case.act.func();
            let want = crate::func::tests::reference(func, sum)
                .max(lo as f64)
                .min(hi as f64);
            let tol = (k as f64 + 3.0) * u * mag * 1.2 + f64::MIN_POSITIVE;
            let tol = if func == Func::Identity {
                tol
            } else {
                tol + 8.0 * u * want.abs() + 1e-30
            };
            assert!(
                (got as f64 - want).abs() <= tol,
                "{variant:?} {case:?} {mode}: C({i},{j}) = {got}, want {want} (tol {tol:e})"
            );
        }
    }
}

/// Sizes in 1..=70 that hit every residue of the tiles (4, 6, 8, 12, 16, 32)
/// and both sides of each multiple.
const SIZES: [usize; 17] = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 16, 17, 31, 33, 48, 70];

#[test]
fn gemm_matches_reference_over_shape_cube() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for variant in runnable() {
        let mut i = 0;
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &SIZES {
                    check(variant, Case::from_index(m, n, k, i), None, &mut rng);
                    i += 1;
                }
            }
        }
    }
}

#[test]
fn gemm_matches_reference_for_every_size_to_70() {
    let mut rng = Rng(42);
    for variant in runnable() {
        for s in 1..=70 {
            let other = 1 + rng.below(70);
            let third = 1 + rng.below(70);
            for (i, (m, n, k)) in [(s, other, third), (other, s, third), (other, third, s)]
                .into_iter()
                .enumerate()
            {
                check(
                    variant,
                    Case::from_index(m, n, k, s * 3 + i),
                    None,
                    &mut rng,
                );
            }
        }
    }
}

#[test]
fn gemm_crosses_cache_blocks() {
    let mut rng = Rng(7);
    for variant in runnable() {
        let bl = variant.blocking();
        let shapes = [
            // several depth blocks (bias/clamp only on the last) and row blocks
            (2 * bl.mc + 5, 3 * bl.nr + 1, 2 * bl.kc + 3),
            // several column blocks
            (bl.mr + 1, bl.nc + bl.nr + 3, 5),
            // exact multiples everywhere
            (bl.mc, 2 * bl.nr, bl.kc),
        ];
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            for e in 0..4 {
                check(
                    variant,
                    Case::from_index(m, n, k, i * 5 + e * 3 + 1),
                    None,
                    &mut rng,
                );
            }
        }
    }
}

#[test]
fn gemm_works_with_minimum_scratch() {
    let mut rng = Rng(11);
    for variant in runnable() {
        let (m, n, k) = (50, 37, 300);
        let min = variant.min_scratch_len(k);
        for (i, len) in [min, min + 1, 3 * min - 1].into_iter().enumerate() {
            check(
                variant,
                Case::from_index(m, n, k, 5 + i),
                Some(len),
                &mut rng,
            );
        }
        let mut scratch = vec![0.0; min - 1];
        let packed = pack_b_vec(variant, k, n, &rng.vec(k * n), n, 1).unwrap();
        let err = sgemm(
            variant,
            m,
            n,
            k,
            &rng.vec(m * k),
            k,
            &packed,
            &mut vec![0.0; m * n],
            n,
            &Epilogue::default(),
            &mut scratch,
        );
        assert!(matches!(
            err,
            Err(GemmError::BufferTooSmall {
                what: "scratch",
                ..
            })
        ));
    }
}

#[test]
fn gemm_with_empty_depth_is_the_epilogue() {
    let mut rng = Rng(3);
    for variant in runnable() {
        for i in 0..24 {
            check(variant, Case::from_index(9, 21, 0, i), None, &mut rng);
        }
    }
}

#[test]
fn gemm_propagates_nan_through_relu() {
    for variant in runnable() {
        let bl = variant.blocking();
        // A full tile (vector store path) and a 1×1 edge (scalar path).
        for (m, n) in [(bl.mr, bl.nr), (1, 1)] {
            let k = 3;
            let mut a = vec![1.0; m * k];
            a[0] = f32::NAN;
            let packed = pack_b_vec(variant, k, n, &vec![1.0; k * n], n, 1).unwrap();
            let mut c = vec![0.0; m * n];
            let epi = Epilogue {
                activation: Activation::Relu,
                ..Epilogue::default()
            };
            let mut scratch = vec![0.0; variant.scratch_len(m, k)];
            sgemm(
                variant,
                m,
                n,
                k,
                &a,
                k,
                &packed,
                &mut c,
                n,
                &epi,
                &mut scratch,
            )
            .unwrap();
            assert!(c[0].is_nan(), "{variant:?}: relu(NaN) = {}", c[0]);
            if m * n > 1 {
                assert_eq!(c[m * n - 1], 3.0);
            }
        }
    }
}

#[test]
fn gemm_rejects_bad_operands() {
    let v = Variant::Scalar;
    let (m, n, k) = (3, 5, 4);
    let a = vec![1.0; m * k];
    let packed = pack_b_vec(v, k, n, &vec![1.0; k * n], n, 1).unwrap();
    let mut c = vec![0.0; m * n];
    let mut s = vec![0.0; v.scratch_len(m, k)];
    let e = Epilogue::default();
    let r = sgemm(v, m, n, k, &a, k - 1, &packed, &mut c, n, &e, &mut s);
    assert!(matches!(r, Err(GemmError::Stride { what: "lda", .. })));
    let r = sgemm(v, m, n, k, &a[1..], k, &packed, &mut c, n, &e, &mut s);
    assert!(matches!(
        r,
        Err(GemmError::BufferTooSmall { what: "A", .. })
    ));
    let r = sgemm(v, m, n, k, &a, k, &packed[1..], &mut c, n, &e, &mut s);
    assert!(matches!(
        r,
        Err(GemmError::BufferTooSmall {
            what: "packed B",
            ..
        })
    ));
    let r = sgemm(v, m, n, k, &a, k, &packed, &mut c[1..], n, &e, &mut s);
    assert!(matches!(
        r,
        Err(GemmError::BufferTooSmall { what: "C", .. })
    ));
    let short_bias = [0.0; 4];
    let eb = Epilogue {
        bias: Some(&short_bias),
        ..e
    };
    let r = sgemm(v, m, n, k, &a, k, &packed, &mut c, n, &eb, &mut s);
    assert!(matches!(
        r,
        Err(GemmError::BufferTooSmall { what: "bias", .. })
    ));
    assert!(pack_b(v, k, n, &[0.0; 19], n, 1, &mut [0.0; 20]).is_err());
    assert_eq!(c, vec![0.0; m * n], "a refused call wrote C");
    #[cfg(not(target_arch = "aarch64"))]
    assert!(matches!(
        sgemm(
            Variant::Neon,
            m,
            n,
            k,
            &a,
            k,
            &packed,
            &mut c,
            n,
            &e,
            &mut s
        ),
        Err(GemmError::NotCompiled { .. })
    ));
}

#[test]
fn gemm_c_abi_matches_and_reports_errors() {
    let v = Variant::Scalar;
    let (m, n, k) = (7, 9, 10);
    let mut rng = Rng(5);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let bias = rng.vec(n);
    let packed = pack_b_vec(v, k, n, &b, n, 1).unwrap();
    assert_eq!(kiln_sgemm_packed_b_len(0, k, n), packed.len());
    assert_eq!(kiln_sgemm_scratch_len(0, m, k), v.scratch_len(m, k));
    assert_eq!(kiln_sgemm_scratch_len(99, m, k), 0);
    let mut s = vec![0.0; v.scratch_len(m, k)];
    let mut want = vec![0.0; m * n];
    let epi = Epilogue {
        bias: Some(&bias),
        activation: Activation::Clip { min: 0.0, max: 6.0 },
        ..Epilogue::default()
    };
    sgemm(v, m, n, k, &a, k, &packed, &mut want, n, &epi, &mut s).unwrap();
    let mut got = vec![0.0; m * n];
    let call = |c: *mut f32, scratch: *mut f32, len: usize| unsafe {
        kiln_sgemm_scalar(
            m,
            n,
            k,
            a.as_ptr(),
            k,
            packed.as_ptr(),
            c,
            n,
            0,
            bias.as_ptr(),
            core::ptr::null(),
            0,
            0.0,
            6.0,
            scratch,
            len,
        )
    };
    assert_eq!(call(got.as_mut_ptr(), s.as_mut_ptr(), s.len()), 0);
    assert_eq!(got, want);
    assert_eq!(call(core::ptr::null_mut(), s.as_mut_ptr(), s.len()), -1);
    assert_eq!(call(got.as_mut_ptr(), core::ptr::null_mut(), s.len()), -1);
    assert_eq!(call(got.as_mut_ptr(), s.as_mut_ptr(), 3), -3);
}

#[test]
fn pack_b_layout_is_as_documented() {
    // Packing is a pure function: every variant's layout is checked here,
    // whichever kernels this CPU runs.
    for variant in Variant::ALL {
        let Blocking { nr, kc, .. } = variant.blocking();
        // Deeper than a depth block: panels still run the whole depth.
        let (k, n) = (2 * kc + 5, 2 * nr + 3);
        let b: Vec<f32> = (0..k * n).map(|x| x as f32).collect();
        let packed = pack_b_vec(variant, k, n, &b, n, 1).unwrap();
        let n_pad = n.div_ceil(nr) * nr;
        assert_eq!(packed.len(), k * n_pad);
        for p in 0..k {
            for j in 0..n_pad {
                let at = (j / nr) * k * nr + p * nr + j % nr;
                let want = if j < n { b[p * n + j] } else { 0.0 };
                assert_eq!(packed[at], want, "{variant:?} B({p},{j})");
            }
        }
    }
}

#[test]
fn gemm_matches_reference_with_a_packed_and_in_place() {
    // The driver picks per kernel whether to pack A; force each way so that
    // both paths of every tile are checked whatever the choice.
    let mut rng = Rng(13);
    for variant in runnable() {
        let Blocking { nr, kc, .. } = variant.blocking();
        for direct in [false, true] {
            driver::DIRECT_OVERRIDE.with(|o| o.set(Some(direct)));
            let mut i = 0;
            for n in [1, 13, 33, 70, 4 * nr + 1] {
                for &m in &SIZES {
                    for k in [1, 7, 33, kc + 5] {
                        check(variant, Case::from_index(m, n, k, i), None, &mut rng);
                        i += 1;
                    }
                }
            }
            driver::DIRECT_OVERRIDE.with(|o| o.set(None));
        }
    }
}
