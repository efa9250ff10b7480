//! The direct conv against an f64 reference over geometries, epilogues and
//! work ranges, and the checks of the C entry point.

use super::*;
use crate::test_rng::Rng;
use std::vec;
use std::vec::Vec;

#[derive(Clone, Copy, Debug)]
struct Geo {
    cin: usize,
    cout: usize,
    oh: usize,
    ow: usize,
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
}

impl Geo {
    /// The padded input size the window needs (plus a spare column, so the
    /// kernel must not rely on `wp` being tight).
    fn padded(&self) -> (usize, usize) {
        (
            (self.oh - 1) * self.s.0 + (self.k.0 - 1) * self.d.0 + 1,
            (self.ow - 1) * self.s.1 + (self.k.1 - 1) * self.d.1 + 2,
        )
    }
}

fn fill(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.vec(n)
}

/// Runs `g` with the kernel over items `range` and checks every element of
/// those items against the f64 reference; others must stay untouched.
fn check(
    g: Geo,
    (bias, phased): (bool, bool),
    (lo, hi): (f32, f32),
    func: Func,
    range: Option<(usize, usize)>,
    rng: &mut Rng,
) {
    let (hp, wp) = g.padded();
    let (kh, kw) = g.k;
    let depth = g.cin * kh * kw;
    let x = fill(rng, g.cin * hp * wp);
    // Phase-split rows (strided along the row) as the lowering stores them.
    let ph = if phased { g.s.1 } else { 1 };
    let plen = wp.div_ceil(ph);
    let mut xs = vec![0.0; g.cin * hp * ph * plen];
    for r in 0..g.cin * hp {
        for p in 0..wp {
            xs[r * ph * plen + (p % ph) * plen + p / ph] = x[r * wp + p];
        }
    }
    let w = fill(rng, g.cout * depth);
    let b = fill(rng, g.cout);
    let packed = pack_weights_vec(g.cout, depth, &w).unwrap();
    let sentinel = 12345.0;
    let mut y = vec![sentinel; g.cout * g.oh * g.ow];
    let mut a = KilnConvArgs {
        x: xs.as_ptr(),
        w: packed.as_ptr(),
        bias: if bias { b.as_ptr() } else { core::ptr::null() },
        y: y.as_mut_ptr(),
        cin: g.cin,
        hp,
        wp: ph * plen,
        cout: g.cout,
        oh: g.oh,
        ow: g.ow,
        kh,
        kw,
        sh: g.s.0,
        sw: g.s.1,
        dh: g.d.0,
        dw: g.d.1,
        phases: ph,
        begin: 0,
        end: 0,
        act_min: lo,
        act_max: hi,
        func: func as u32,
    };
    let (begin, end) = range.unwrap_or((0, a.items()));
    (a.begin, a.end) = (begin, end);
    assert_eq!(unsafe { kiln_conv2d_f32_avx512(&a) }, 0, "{g:?}");
    let panels = g.cout.div_ceil(CHANNEL_BLOCK);
    let u = f32::EPSILON as f64;
    for co in 0..g.cout {
        for oy in 0..g.oh {
            let item = oy * panels + co / CHANNEL_BLOCK;
            for ox in 0..g.ow {
                let got = y[(co * g.oh + oy) * g.ow + ox];
                if !(begin..end).contains(&item) {
                    assert_eq!(got, sentinel, "{g:?} wrote outside its items");
                    continue;
                }
                let mut s = if bias { b[co] as f64 } else { 0.0 };
                let mut mag = s.abs();
                for ci in 0..g.cin {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let xv = x
                                [(ci * hp + oy * g.s.0 + ky * g.d.0) * wp + ox * g.s.1 + kx * g.d.1]
                                as f64;
                            let wv = w[co * depth + (ci * kh + ky) * kw + kx] as f64;
                            s += xv * wv;
                            mag += (xv * wv).abs();
                        }
                    }
                }
                let f = crate::func::tests::reference(func, s);
                let want = f.max(lo as f64).min(hi as f64);
                // Summation error of the depth, plus the function's own.
                let tol = 2.0 * depth as f64 * u * mag + 4e-6 * (1.0 + f.abs());
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "{g:?} co {co} ({oy}, {ox}): {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn direct_conv_matches_reference() {
    if !supported() {
        std::eprintln!("no AVX-512F: direct conv not run");
        return;
    }
    let mut rng = Rng(77);
    let funcs = [
        Func::Identity,
        Func::Sigmoid,
        Func::Silu,
        Func::GeluErf,
        Func::Tanh,
    ];
    let mut i = 0;
    for &(cin, cout) in &[(1, 1), (3, 32), (5, 40), (16, 64), (7, 33)] {
        for &(oh, ow) in &[(1, 1), (2, 7), (3, 12), (2, 13), (4, 25), (1, 56)] {
            for &(k, s, d) in &[
                ((3, 3), (1, 1), (1, 1)),
                ((1, 1), (1, 1), (1, 1)),
                ((3, 3), (2, 2), (1, 1)),
                ((2, 5), (1, 3), (2, 1)),
                ((3, 3), (1, 1), (2, 2)),
            ] {
                let g = Geo {
                    cin,
                    cout,
                    oh,
                    ow,
                    k,
                    s,
                    d,
                };
                let clamp = if i % 3 == 1 {
                    (0.0, 6.0)
                } else {
                    (f32::NEG_INFINITY, f32::INFINITY)
                };
                let phased = i % 4 == 3 && s.1 > 1;
                check(
                    g,
                    (i % 2 == 0, phased),
                    clamp,
                    funcs[i % funcs.len()],
                    None,
                    &mut rng,
                );
                i += 1;
            }
        }
    }
}

#[test]
fn direct_conv_splits_work_and_long_windows() {
    if !supported() {
        std::eprintln!("no AVX-512F: direct conv not run");
        return;
    }
    let mut rng = Rng(78);
    // 81 taps: more than one chunk of the offsets table, with a clamp and
    // a function applied only after the last chunk.
    let g = Geo {
        cin: 2,
        cout: 40,
        oh: 3,
        ow: 14,
        k: (9, 9),
        s: (1, 1),
        d: (1, 1),
    };
    check(g, (true, false), (-0.5, 0.5), Func::Tanh, None, &mut rng);
    check(
        g,
        (false, false),
        (0.0, f32::INFINITY),
        Func::Identity,
        None,
        &mut rng,
    );
    // Phase-split rows: strides 2 and 3 along the row, dilated and not.
    for (k, s, d) in [
        ((3, 3), (2, 2), (1, 1)),
        ((7, 7), (2, 2), (1, 1)),
        ((3, 5), (1, 3), (1, 2)),
    ] {
        let g = Geo {
            cin: 3,
            cout: 32,
            oh: 4,
            ow: 13,
            k,
            s,
            d,
        };
        check(
            g,
            (true, true),
            (0.0, f32::INFINITY),
            Func::Identity,
            None,
            &mut rng,
        );
    }
    // Shallow windows (pixels in the lanes): an RGB stem's rows of 111
    // pixels (three full 32-pixel tiles and a masked one, two panels),
    // and a row of 40 at stride 1 with channels in tiles of 12 and under.
    for (cout, ow, s, phased) in [(64, 111, (2, 2), true), (24, 40, (1, 1), false)] {
        let g = Geo {
            cin: 3,
            cout,
            oh: 2,
            ow,
            k: (3, 3),
            s,
            d: (1, 1),
        };
        check(
            g,
            (true, phased),
            (0.0, 6.0),
            Func::Identity,
            None,
            &mut rng,
        );
    }
    // Ranges of items (rows × 2 panels): thread shares.
    let g = Geo {
        cin: 4,
        cout: 64,
        oh: 5,
        ow: 9,
        k: (3, 3),
        s: (1, 1),
        d: (1, 1),
    };
    for range in [(0, 1), (1, 4), (3, 10), (9, 10), (4, 4)] {
        check(
            g,
            (true, false),
            (0.0, 6.0),
            Func::Identity,
            Some(range),
            &mut rng,
        );
    }
}

#[test]
fn direct_conv_refuses_bad_calls() {
    let x = [0.0f32; 64];
    let w = [0.0f32; 64];
    let mut y = [0.0f32; 64];
    let good = KilnConvArgs {
        x: x.as_ptr(),
        w: w.as_ptr(),
        bias: core::ptr::null(),
        y: y.as_mut_ptr(),
        cin: 1,
        hp: 3,
        wp: 3,
        cout: 1,
        oh: 1,
        ow: 1,
        kh: 3,
        kw: 3,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        phases: 1,
        begin: 0,
        end: 1,
        act_min: f32::NEG_INFINITY,
        act_max: f32::INFINITY,
        func: 0,
    };
    let call = |a: KilnConvArgs| unsafe { kiln_conv2d_f32_avx512(&a) };
    if supported() {
        assert_eq!(call(good), 0);
    } else {
        assert_eq!(call(good), ConvError::Unsupported.code());
    }
    assert_eq!(
        unsafe { kiln_conv2d_f32_avx512(core::ptr::null()) },
        ConvError::NullPointer.code()
    );
    assert_eq!(
        call(KilnConvArgs {
            x: core::ptr::null(),
            ..good
        }),
        ConvError::NullPointer.code()
    );
    assert_eq!(
        call(KilnConvArgs { cin: 0, ..good }),
        ConvError::BadSize.code()
    );
    assert_eq!(
        call(KilnConvArgs { ow: 2, ..good }),
        ConvError::OutOfBounds.code()
    );
    assert_eq!(
        call(KilnConvArgs { dh: 2, ..good }),
        ConvError::OutOfBounds.code()
    );
    assert_eq!(
        call(KilnConvArgs { end: 2, ..good }),
        ConvError::BadRange.code()
    );
    assert_eq!(
        call(KilnConvArgs {
            begin: 1,
            end: 0,
            ..good
        }),
        ConvError::BadRange.code()
    );
    assert_eq!(
        call(KilnConvArgs { func: 99, ..good }),
        ConvError::BadFunc.code()
    );
    // Phases must be the row stride and divide the padded row.
    let bad = |a: KilnConvArgs| assert_eq!(call(a), ConvError::BadSize.code(), "{a:?}");
    bad(KilnConvArgs { phases: 0, ..good });
    bad(KilnConvArgs { phases: 2, ..good });
    bad(KilnConvArgs {
        phases: 2,
        sw: 2,
        ..good
    });
    if supported() {
        assert_eq!(
            call(KilnConvArgs {
                phases: 3,
                sw: 3,
                ..good
            }),
            0
        );
    }
    assert_eq!(packed_len(33, 5), 64 * 5);
    assert_eq!(
        pack_weights(2, 3, &[0.0; 5], &mut [0.0; 96]),
        Err(ConvError::BadSize)
    );
}
