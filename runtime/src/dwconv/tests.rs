//! Every variant this CPU runs, and the shared vector loop nest at the lane
//! counts of every variant (through portable lanes, so that NEON's layout
//! is exercised on any machine), against a naive f64-accumulated
//! reference over kernel sizes, strides, dilations, paddings, widths and
//! channel counts, with and without bias and clamp. The error bound is the
//! textbook one for an f32 dot product of `n = k_h·k_w` taps plus the bias:
//! `(n + 3)·u·Σ|terms|`.

use std::vec;
use std::vec::Vec;

use super::simd::{self, Lanes};
use super::*;

use crate::test_rng::Rng;

/// A way to run a call: a variant through the safe API, or the shared
/// loop nest instantiated with portable lanes.
#[derive(Clone, Copy, Debug)]
enum Runner {
    Variant(Variant),
    Lanes(usize),
}

impl Runner {
    fn run(
        self,
        g: &DwGeometry,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        act: Activation,
    ) -> Result<(), DwError> {
        let n = match self {
            Runner::Variant(v) => return dwconv(v, g, x, w, bias, y, act),
            Runner::Lanes(n) => n,
        };
        let ext = g.extents()?;
        assert!(x.len() >= ext.x && w.len() >= ext.w && y.len() >= ext.y);
        if ext.y == 0 {
            return Ok(());
        }
        let bias = bias.map_or(core::ptr::null(), <[f32]>::as_ptr);
        let a = KilnDwArgs::new(
            g,
            (x.as_ptr(), w.as_ptr(), bias, y.as_mut_ptr()),
            act.bounds(),
        )
        .with_func(act.func());
        // SAFETY: extents checked above; `y` is a distinct allocation.
        unsafe {
            match n {
                1 => simd::run::<Lanes<1>, 3, 2, 2, 1>(&a),
                4 => simd::run::<Lanes<4>, 3, 2, 2, 1>(&a),
                8 => simd::run::<Lanes<8>, 3, 2, 2, 1>(&a),
                16 => simd::run::<Lanes<16>, 3, 2, 2, 1>(&a),
                _ => unreachable!(),
            }
        }
        Ok(())
    }
}

fn runners() -> Vec<Runner> {
    let v: Vec<Runner> = Variant::ALL
        .into_iter()
        .filter(|v| v.is_compiled() && v.is_supported())
        .map(Runner::Variant)
        .chain([1, 4, 8, 16].map(Runner::Lanes))
        .collect();
    std::eprintln!("dwconv runners under test: {v:?}");
    // The project's machines have AVX2+FMA; losing that variant would hide
    // the one the compiler uses by default.
    #[cfg(target_arch = "x86_64")]
    assert!(
        Variant::Avx2.is_supported(),
        "this x86_64 CPU lacks AVX2+FMA"
    );
    v
}

/// The reference output `(value, Σ|terms|)` at `(c, oy, ox)`, in f64.
fn reference(
    g: &DwGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    c: usize,
    oy: usize,
    ox: usize,
) -> (f64, f64) {
    let (mut sum, mut mag) = (0.0f64, 0.0f64);
    if let Some(b) = bias {
        sum += b[c] as f64;
        mag += (b[c] as f64).abs();
    }
    for ky in 0..g.k_h {
        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
        if iy < 0 || iy >= g.in_h as isize {
            continue;
        }
        for kx in 0..g.k_w {
            let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
            if ix < 0 || ix >= g.in_w as isize {
                continue;
            }
            let xv = x[(c * g.in_h + iy as usize) * g.in_w + ix as usize] as f64;
            let t = w[(c * g.k_h + ky) * g.k_w + kx] as f64 * xv;
            sum += t;
            mag += t.abs();
        }
    }
    (sum, mag)
}

/// Runs `g` with `runner` on random data and checks every output against
/// the reference, and that nothing past the output was written.
fn check(runner: Runner, g: &DwGeometry, bias: bool, act: Activation, rng: &mut Rng) {
    let ext = g.extents().unwrap();
    let x = rng.vec(ext.x);
    let w = rng.vec(ext.w);
    let b = rng.vec(g.channels);
    let bias = bias.then_some(&b[..]);
    const GUARD: usize = 19;
    let mut y = vec![f32::from_bits(0x7f80_1234); ext.y + GUARD];
    runner
        .run(g, &x, &w, bias, &mut y, act)
        .unwrap_or_else(|e| panic!("{runner:?} {g:?}: {e}"));
    for (i, v) in y[ext.y..].iter().enumerate() {
        assert_eq!(
            v.to_bits(),
            0x7f80_1234,
            "{runner:?} {g:?}: y[{}] written",
            ext.y + i
        );
    }
    let (lo, hi) = act.bounds();
    let u = f32::EPSILON as f64 / 2.0;
    let taps = (g.k_h * g.k_w) as f64;
    for c in 0..g.channels {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let (sum, mag) = reference(g, &x, &w, bias, c, oy, ox);
                let func = act.func();
                let want = crate::func::tests::reference(func, sum)
                    .max(lo as f64)
                    .min(hi as f64);
                let got = y[(c * g.out_h + oy) * g.out_w + ox];
                // The sum's rounding passes through the function (slopes
                // at most 1.13), which adds a few ulp of its own.
                let tol = (taps + 3.0) * u * mag * 1.2 + f64::MIN_POSITIVE;
                let tol = if func == Func::Identity {
                    tol
                } else {
                    tol + 8.0 * u * want.abs() + 1e-30
                };
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "{runner:?} {g:?} bias {} {act:?}: y({c},{oy},{ox}) = {got}, want {want} \
                     (tol {tol:e})",
                    bias.is_some()
                );
            }
        }
    }
}

/// The geometry for an input of `in_h × in_w` with pads on all sides, the
/// output size as ONNX computes it.
#[allow(clippy::too_many_arguments)]
fn geometry(
    channels: usize,
    (in_h, in_w): (usize, usize),
    (k_h, k_w): (usize, usize),
    (stride_h, stride_w): (usize, usize),
    (pad_top, pad_left, pad_bottom, pad_right): (usize, usize, usize, usize),
    (dil_h, dil_w): (usize, usize),
) -> DwGeometry {
    DwGeometry {
        channels,
        in_h,
        in_w,
        out_h: out_dim(in_h, k_h, stride_h, pad_top, pad_bottom, dil_h),
        out_w: out_dim(in_w, k_w, stride_w, pad_left, pad_right, dil_w),
        k_h,
        k_w,
        stride_h,
        stride_w,
        pad_top,
        pad_left,
        dil_h,
        dil_w,
    }
}

fn activation(i: usize) -> Activation {
    const ACTS: [Activation; 7] = [
        Activation::None,
        Activation::Relu,
        Activation::Clip {
            min: -0.5,
            max: 0.7,
        },
        Activation::Func(Func::Silu),
        Activation::Func(Func::Sigmoid),
        Activation::Func(Func::GeluErf),
        Activation::Func(Func::Tanh),
    ];
    ACTS[i % ACTS.len()]
}

#[test]
fn dwconv_matches_reference_over_geometries() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let runners = runners();
    let mut i = 0usize;
    for k in [1, 2, 3, 5, 7] {
        for s in [1, 2, 3] {
            for d in [1, 2] {
                for pad in 0..=k {
                    for in_w in 1..=40 {
                        let in_h = 1 + rng.below(7);
                        let g = geometry(
                            1 + i % 5,
                            (in_h, in_w),
                            (k, k),
                            (s, s),
                            (pad, pad, rng.below(k + 1), rng.below(k + 1)),
                            (d, d),
                        );
                        i += 1;
                        if g.out_h == 0 || g.out_w == 0 {
                            continue;
                        }
                        let runner = runners[i % runners.len()];
                        check(runner, &g, i.is_multiple_of(2), activation(i / 2), &mut rng);
                    }
                }
            }
        }
    }
}

#[test]
fn dwconv_fast_paths_match_reference_for_every_runner() {
    // The specialised 3×3 and 5×5 kernels at strides 1 and 2, for each
    // runner, over widths that cover every tile remainder of 1, 4, 8, 16
    // lanes and both the whole-plane and the ring staging.
    let mut rng = Rng(42);
    for runner in runners() {
        let mut i = 0;
        for k in [3, 5] {
            for s in [1, 2] {
                for in_w in (1..=70).chain([97, 112, 113, 224]) {
                    let pad = i % (k / 2 + 2);
                    let in_h = if in_w > 100 { 3 + i % 5 } else { 1 + i % 9 };
                    let g = geometry(
                        1 + i % 3,
                        (in_h, in_w),
                        (k, k),
                        (s, s),
                        (pad, pad, pad, (pad + 1) % (k / 2 + 2)),
                        (1, 1),
                    );
                    i += 1;
                    if g.out_h == 0 || g.out_w == 0 {
                        continue;
                    }
                    check(runner, &g, i.is_multiple_of(2), activation(i), &mut rng);
                }
            }
        }
    }
}

#[test]
fn dwconv_narrow_planes_run_channels_last() {
    // Planes at most half a vector wide with a vector of channels or more
    // take the channels-last path: channel counts with and without a
    // partial last block, widths and heights around the L x L transpose
    // blocks, every kernel up to 5x5, strides, dilations and paddings.
    let mut rng = Rng(7);
    for runner in runners() {
        let mut i = 0;
        for channels in [16, 17, 24, 33, 64] {
            for (k, s, d) in [
                (3, 1, 1),
                (3, 2, 1),
                (5, 1, 1),
                (5, 2, 1),
                (3, 1, 2),
                (1, 1, 1),
                (2, 3, 1),
            ] {
                for (in_h, in_w) in [(25, 5), (7, 7), (4, 4), (1, 3), (9, 2), (13, 6), (16, 1)] {
                    let pad = i % (k / 2 + 2);
                    let g = geometry(
                        channels,
                        (in_h, in_w),
                        (k, k),
                        (s, s),
                        (pad, (pad + 1) % (k / 2 + 2), pad, pad),
                        (d, d),
                    );
                    i += 1;
                    if g.out_h == 0 || g.out_w == 0 {
                        continue;
                    }
                    check(runner, &g, i.is_multiple_of(2), activation(i), &mut rng);
                }
            }
        }
    }
}

#[test]
fn dwconv_tall_planes_use_the_row_ring() {
    // Planes too large for the whole-plane buffer (224 wide and 60+ tall),
    // and strides that skip rows, go through the ring of row buffers.
    let mut rng = Rng(7);
    for runner in runners() {
        for (i, (k, s, d, in_h, in_w)) in [
            (3, 1, 1, 60, 224),
            (3, 2, 1, 61, 224),
            (5, 1, 1, 58, 200),
            (5, 2, 1, 67, 224),
            (3, 1, 2, 70, 150),
            (1, 2, 1, 20, 33),
            (2, 3, 1, 25, 40),
            (3, 5, 1, 30, 41),
        ]
        .into_iter()
        .enumerate()
        {
            let pad = k / 2;
            let g = geometry(
                2,
                (in_h, in_w),
                (k, k),
                (s, s),
                (pad, pad, pad, pad),
                (d, d),
            );
            check(runner, &g, !i.is_multiple_of(2), activation(i), &mut rng);
        }
    }
}

#[test]
fn dwconv_mixed_and_odd_geometries() {
    // Non-square kernels, different strides and dilations per axis,
    // outputs entirely in the padding, empty inputs, kernels and rows too
    // large for the vector path (which then takes the portable one).
    let mut rng = Rng(11);
    let mut shapes = vec![
        geometry(3, (9, 17), (1, 3), (1, 1), (0, 1, 0, 1), (1, 1)),
        geometry(3, (9, 17), (3, 1), (2, 1), (1, 0, 1, 0), (1, 1)),
        geometry(2, (11, 23), (3, 5), (1, 2), (1, 2, 1, 2), (1, 1)),
        geometry(2, (11, 23), (5, 3), (2, 1), (2, 1, 2, 1), (2, 3)),
        geometry(2, (13, 29), (3, 3), (3, 2), (3, 3, 3, 3), (1, 2)),
        geometry(1, (3, 5000), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        geometry(1, (3, 5000), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
        geometry(2, (40, 50), (1, 40), (1, 1), (0, 20, 0, 19), (1, 1)),
        geometry(2, (40, 20), (20, 1), (1, 1), (9, 0, 10, 0), (1, 1)),
        geometry(1, (7, 7), (9, 9), (1, 1), (4, 4, 4, 4), (3, 3)),
    ];
    // Output bigger than the input allows: rows and columns fully in the
    // (implicit) bottom/right padding are the bias alone.
    let mut g = geometry(2, (4, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1));
    g.out_h += 5;
    g.out_w += 21;
    shapes.push(g);
    let mut g = geometry(2, (5, 9), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1));
    g.pad_top = 20;
    g.pad_left = 30;
    shapes.push(g);
    let mut g = geometry(2, (0, 0), (3, 3), (1, 1), (0, 0, 0, 0), (1, 1));
    g.out_h = 3;
    g.out_w = 18;
    shapes.push(g);
    for runner in runners() {
        for (i, g) in shapes.iter().enumerate() {
            check(runner, g, i.is_multiple_of(2), activation(i), &mut rng);
        }
    }
}

#[test]
fn dwconv_propagates_nan_through_the_clamp() {
    for runner in runners() {
        for (k, s, w) in [(3, 1, 40), (3, 2, 41), (5, 1, 7), (5, 2, 40), (7, 1, 20)] {
            let g = geometry(2, (6, w), (k, k), (s, s), (1, 1, 1, 1), (1, 1));
            let ext = g.extents().unwrap();
            let mut x = vec![0.25; ext.x];
            // A NaN in channel 1's input at row 2, column 3.
            x[g.in_h * g.in_w + 2 * g.in_w + 3] = f32::NAN;
            let w = vec![1.0; ext.w];
            // A NaN bias for channel 0.
            let bias = [f32::NAN, -100.0];
            let mut y = vec![0.0; ext.y];
            for act in [Activation::Relu, Activation::Clip { min: 0.0, max: 6.0 }] {
                runner.run(&g, &x, &w, Some(&bias), &mut y, act).unwrap();
                let (c0, c1) = y.split_at(g.out_h * g.out_w);
                assert!(c0.iter().all(|v| v.is_nan()), "{runner:?} {g:?}: bias NaN");
                for oy in 0..g.out_h {
                    for ox in 0..g.out_w {
                        let touches =
                            (0..k).any(|ky| oy * s + ky == 3) && (0..k).any(|kx| ox * s + kx == 4);
                        let v = c1[oy * g.out_w + ox];
                        if touches {
                            assert!(v.is_nan(), "{runner:?} {g:?}: y(1,{oy},{ox}) = {v}");
                        } else {
                            assert_eq!(v, 0.0, "{runner:?} {g:?}: y(1,{oy},{ox})");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dwconv_safe_api_checks_lengths() {
    let g = geometry(3, (5, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1));
    let ext = g.extents().unwrap();
    let x = vec![1.0; ext.x];
    let w = vec![1.0; ext.w];
    let b = vec![1.0; 3];
    let mut y = vec![0.0; ext.y];
    let v = Variant::Scalar;
    let act = Activation::None;
    let err = |r: Result<(), DwError>| r.unwrap_err();
    assert!(matches!(
        err(dwconv(v, &g, &x[1..], &w, None, &mut y, act)),
        DwError::BufferTooSmall { what: "x", .. }
    ));
    assert!(matches!(
        err(dwconv(v, &g, &x, &w[1..], None, &mut y, act)),
        DwError::BufferTooSmall { what: "w", .. }
    ));
    assert!(matches!(
        err(dwconv(v, &g, &x, &w, Some(&b[1..]), &mut y, act)),
        DwError::BufferTooSmall { what: "bias", .. }
    ));
    assert!(matches!(
        err(dwconv(v, &g, &x, &w, None, &mut y[1..], act)),
        DwError::BufferTooSmall { what: "y", .. }
    ));
    assert_eq!(y, vec![0.0; ext.y], "a refused call wrote y");
    for field in 0..6 {
        let mut bad = g;
        *[
            &mut bad.k_h,
            &mut bad.k_w,
            &mut bad.stride_h,
            &mut bad.stride_w,
            &mut bad.dil_h,
            &mut bad.dil_w,
        ][field] = 0;
        let e = err(dwconv(v, &bad, &x, &w, None, &mut y, act));
        assert!(matches!(e, DwError::Invalid { .. }), "{e:?}");
        assert_eq!(e.code(), -2);
    }
    let mut huge = g;
    huge.channels = usize::MAX / 2;
    assert_eq!(
        err(dwconv(v, &huge, &x, &w, None, &mut y, act)),
        DwError::Overflow
    );
    let mut far = g;
    far.stride_w = usize::MAX / 2;
    assert_eq!(
        err(dwconv(v, &far, &x, &w, None, &mut y, act)),
        DwError::Overflow
    );
    #[cfg(not(target_arch = "aarch64"))]
    assert!(matches!(
        err(dwconv(Variant::Neon, &g, &x, &w, None, &mut y, act)),
        DwError::NotCompiled { .. }
    ));
    #[cfg(not(target_arch = "x86_64"))]
    assert!(matches!(
        err(dwconv(Variant::Avx2, &g, &x, &w, None, &mut y, act)),
        DwError::NotCompiled { .. }
    ));
    dwconv(v, &g, &x, &w, Some(&b), &mut y, act).unwrap();
    // Nothing to compute: nothing read, no error.
    let mut empty = g;
    empty.channels = 0;
    dwconv(v, &empty, &[], &[], None, &mut [], act).unwrap();
}

/// The C entry points this build has, with their variants.
fn c_entries() -> Vec<(Variant, unsafe extern "C" fn(*const KilnDwArgs) -> i32)> {
    let mut v: Vec<(Variant, unsafe extern "C" fn(*const KilnDwArgs) -> i32)> =
        vec![(Variant::Scalar, kiln_dwconv_f32_scalar)];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (
            Variant::Avx2,
            kiln_dwconv_f32_avx2 as unsafe extern "C" fn(*const KilnDwArgs) -> i32,
        ),
        (Variant::Avx512, kiln_dwconv_f32_avx512),
    ]);
    #[cfg(target_arch = "aarch64")]
    v.push((Variant::Neon, kiln_dwconv_f32_neon));
    v
}

#[test]
fn dwconv_c_abi_matches_and_reports_errors() {
    let mut rng = Rng(5);
    let g = geometry(4, (14, 14), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1));
    let ext = g.extents().unwrap();
    let x = rng.vec(ext.x);
    let w = rng.vec(ext.w);
    let bias = rng.vec(g.channels);
    let act = Activation::Clip { min: 0.0, max: 6.0 };
    for (variant, entry) in c_entries() {
        let mut want = vec![0.0; ext.y];
        let mut got = vec![0.0; ext.y];
        let args = |y: *mut f32| {
            KilnDwArgs::new(&g, (x.as_ptr(), w.as_ptr(), bias.as_ptr(), y), (0.0, 6.0))
        };
        // SAFETY (all calls): the pointers cover the geometry's extents.
        let call = |a: &KilnDwArgs| unsafe { entry(a) };
        if !variant.is_supported() {
            assert_eq!(call(&args(got.as_mut_ptr())), -6, "{variant:?}");
            continue;
        }
        dwconv(variant, &g, &x, &w, Some(&bias), &mut want, act).unwrap();
        assert_eq!(call(&args(got.as_mut_ptr())), 0, "{variant:?}");
        assert_eq!(got, want, "{variant:?}: C ABI and safe API differ");

        // SAFETY: a null `args` is refused before anything is read.
        assert_eq!(unsafe { entry(core::ptr::null()) }, -1);
        got.fill(7.0);
        let mut a = args(got.as_mut_ptr());
        a.bias = core::ptr::null();
        assert_eq!(call(&a), 0, "{variant:?}: null bias");
        let mut nb = vec![0.0; ext.y];
        dwconv(variant, &g, &x, &w, None, &mut nb, act).unwrap();
        assert_eq!(got, nb);
        got.fill(7.0);
        for null in 0..3 {
            let mut a = args(got.as_mut_ptr());
            match null {
                0 => a.x = core::ptr::null(),
                1 => a.w = core::ptr::null(),
                _ => a.y = core::ptr::null_mut(),
            }
            assert_eq!(call(&a), -1, "{variant:?} null {null}");
        }
        for field in 0..6 {
            let mut a = args(got.as_mut_ptr());
            *[
                &mut a.k_h,
                &mut a.k_w,
                &mut a.stride_h,
                &mut a.stride_w,
                &mut a.dil_h,
                &mut a.dil_w,
            ][field] = 0;
            assert_eq!(call(&a), -2, "{variant:?} zero field {field}");
        }
        let mut a = args(got.as_mut_ptr());
        a.out_h = usize::MAX;
        assert_eq!(call(&a), -5, "{variant:?} overflow");
        let mut a = args(got.as_mut_ptr());
        a.pad_left = usize::MAX;
        assert_eq!(call(&a), -5, "{variant:?} pad overflow");
        assert!(
            got.iter().all(|&v| v == 7.0),
            "{variant:?}: refused call wrote y"
        );
        // Nothing to compute: null operands are fine.
        let mut a = args(core::ptr::null_mut());
        a.x = core::ptr::null();
        a.w = core::ptr::null();
        a.channels = 0;
        assert_eq!(call(&a), 0);
    }
}

#[test]
fn dwconv_c_abi_struct_layout() {
    // Four pointers, thirteen `size_t`, two floats, a u32: the header's layout.
    let p = core::mem::size_of::<*const f32>();
    let z = core::mem::size_of::<usize>();
    assert_eq!(core::mem::offset_of!(KilnDwArgs, channels), 4 * p);
    assert_eq!(core::mem::offset_of!(KilnDwArgs, dil_w), 4 * p + 12 * z);
    assert_eq!(core::mem::offset_of!(KilnDwArgs, act_min), 4 * p + 13 * z);
    assert_eq!(
        core::mem::offset_of!(KilnDwArgs, act_max),
        4 * p + 13 * z + 4
    );
    assert_eq!(core::mem::offset_of!(KilnDwArgs, func), 4 * p + 13 * z + 8);
    assert_eq!(
        core::mem::size_of::<KilnDwArgs>(),
        (4 * p + 13 * z + 12).next_multiple_of(core::mem::align_of::<usize>())
    );
}

#[test]
fn out_dim_is_onnx_output_size() {
    assert_eq!(out_dim(112, 3, 1, 1, 1, 1), 112);
    assert_eq!(out_dim(112, 3, 2, 0, 1, 1), 56);
    assert_eq!(out_dim(112, 3, 2, 1, 1, 1), 56);
    assert_eq!(out_dim(7, 5, 1, 2, 2, 1), 7);
    assert_eq!(out_dim(7, 3, 1, 0, 0, 3), 1);
    assert_eq!(out_dim(2, 3, 1, 0, 0, 1), 0);
    assert_eq!(out_dim(5, 3, 0, 0, 0, 1), 0);
}
