//! Depthwise geometries the onnxruntime cases in `tests.rs` do not reach
//! (windows too large to unroll, 1-D and 3-D, channel multipliers), checked
//! against closed-form values: with a ones input and separable weights
//! `w[o, k0, k1, ..] = (o + 1) * prod_d a_d(k_d)`, each output is
//! `(o + 1) * prod_d (sum of a_d over the taps of axis d inside the input) + bias`.

use super::transposed::{tiled_columns, transposes};
use super::{block_runs, COL_LANES};
use crate::exec::eval_op;
use kiln_ir::tensor::Tensor;
use kiln_ir::Op;

/// The per-axis weight factor: distinct per tap, so a wrong tap shows.
fn a(d: usize, k: usize) -> f64 {
    1.0 + 0.25 * k as f64 + 0.125 * d as f64
}

struct Case {
    c: usize,
    mult: usize,
    sp: Vec<usize>,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
}

fn check(case: Case) {
    let r = case.sp.len();
    let oc = case.c * case.mult;
    let osp: Vec<usize> = (0..r)
        .map(|d| {
            let span = (case.kernel[d] - 1) * case.dilations[d] + 1;
            (case.sp[d] + case.pads[d] + case.pads[r + d] - span) / case.strides[d] + 1
        })
        .collect();
    let mut xd = vec![1, case.c];
    xd.extend(&case.sp);
    let mut wd = vec![oc, 1];
    wd.extend(&case.kernel);
    let ones = Tensor::from_f32(xd.clone(), vec![1.0; xd.iter().product()]);
    let kk: usize = case.kernel.iter().product();
    let mut w = Vec::with_capacity(oc * kk);
    for o in 0..oc {
        for t in 0..kk {
            let mut rem = t;
            let mut v = (o + 1) as f64;
            for d in (0..r).rev() {
                v *= a(d, rem % case.kernel[d]);
                rem /= case.kernel[d];
            }
            w.push(v as f32);
        }
    }
    let w = Tensor::from_f32(wd, w);
    let bias: Vec<f32> = (0..oc).map(|o| o as f32 * 0.5 - 1.0).collect();
    let b = Tensor::from_f32(vec![oc], bias.clone());
    let op = Op::Conv {
        kernel: case.kernel.clone(),
        strides: case.strides.clone(),
        pads: case.pads.clone(),
        dilations: case.dilations.clone(),
        group: case.c,
    };
    let got =
        eval_op("dw", &op, &[Some(&ones), Some(&w), Some(&b)], 1).unwrap_or_else(|e| panic!("{e}"));
    let mut od = vec![1, oc];
    od.extend(&osp);
    assert_eq!(got[0].shape, od);
    let ospn: usize = osp.iter().product();
    for (o, &bo) in bias.iter().enumerate() {
        for p in 0..ospn {
            let (mut rem, mut want) = (p, (o + 1) as f64);
            for d in (0..r).rev() {
                let q = rem % osp[d];
                rem /= osp[d];
                let axis: f64 = (0..case.kernel[d])
                    .filter(|&k| {
                        let at = (q * case.strides[d] + k * case.dilations[d]) as i64
                            - case.pads[d] as i64;
                        at >= 0 && at < case.sp[d] as i64
                    })
                    .map(|k| a(d, k))
                    .sum();
                want *= axis;
            }
            want += bo as f64;
            let g = got[0].data.get_f64(o * ospn + p);
            assert!(
                (g - want).abs() <= 1e-4 + 1e-5 * want.abs(),
                "output [{o}, {p}]: got {g}, want {want}"
            );
        }
    }
}

#[test]
fn depthwise_7x7_is_reduced_not_unrolled() {
    check(Case {
        c: 3,
        mult: 1,
        sp: vec![10, 9],
        kernel: vec![7, 7],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![3, 3, 3, 3],
    });
}

#[test]
fn depthwise_multiplier_strided_dilated_large_window() {
    check(Case {
        c: 2,
        mult: 3,
        sp: vec![13, 11],
        kernel: vec![5, 6],
        strides: vec![2, 3],
        dilations: vec![2, 1],
        pads: vec![4, 1, 3, 2],
    });
}

#[test]
fn depthwise_1d_and_3d() {
    check(Case {
        c: 4,
        mult: 2,
        sp: vec![17],
        kernel: vec![5],
        strides: vec![2],
        dilations: vec![3],
        pads: vec![6, 1],
    });
    check(Case {
        c: 2,
        mult: 1,
        sp: vec![5, 6, 7],
        kernel: vec![3, 2, 3],
        strides: vec![1, 2, 1],
        dilations: vec![1, 1, 2],
        pads: vec![1, 0, 2, 1, 1, 2],
    });
}

/// Every row in exactly one block, in order, and every run's blocks
/// spread over as many lanes as it has blocks (up to `COL_LANES`).
#[test]
fn block_runs_cover_the_rows_once() {
    for rows in 1..200 {
        for k in 1..=rows.min(40) {
            let runs = block_runs(rows, k);
            let mut next = 0;
            for r in &runs {
                assert_eq!(r.first_row, next, "rows {rows} k {k}: {runs:?}");
                assert!(r.k_rows >= 1 && r.lanes >= 1 && r.per_lane >= 1);
                assert!(r.lanes == COL_LANES || r.per_lane == 1);
                next += r.k_rows * r.lanes * r.per_lane;
            }
            assert_eq!(next, rows, "rows {rows} k {k}: {runs:?}");
            assert!(runs.len() <= 4, "rows {rows} k {k}: {runs:?}");
            // Only a last single block may be narrower.
            for r in &runs[..runs.len() - 1] {
                assert_eq!(r.k_rows, k, "rows {rows} k {k}: {runs:?}");
            }
        }
    }
    let runs = block_runs(111, 3);
    assert_eq!(runs[0].lanes * runs[0].per_lane, 36);
    assert_eq!(runs.len(), 2);
}

/// `y[n, o, oy, ox] = Σ w[o, ci, ky, kx] · x[n, ci, oy + ky − pad, ox + kx − pad] (+ bias[o])`
/// in f64, stride 1, one group.
fn conv_reference(
    x: &[f32],
    (n, c, h, wd): (usize, usize, usize, usize),
    w: &[f32],
    (oc, k, pad): (usize, usize, usize),
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let (oh, ow) = (h + 2 * pad - k + 1, wd + 2 * pad - k + 1);
    let mut y = vec![0.0; n * oc * oh * ow];
    for b in 0..n {
        for o in 0..oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |bs| bs[o] as f64);
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) =
                                    ((oy + ky) as i64 - pad as i64, (ox + kx) as i64 - pad as i64);
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xv = x[((b * c + ci) * h + iy as usize) * wd + ix as usize];
                                s += w[((o * c + ci) * k + ky) * k + kx] as f64 * xv as f64;
                            }
                        }
                    }
                    y[((b * oc + o) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    y
}

/// Small images with many output channels take the transposed GEMM
/// (`Transposed`): batch 2, with and without bias, im2col and pointwise.
#[test]
fn small_image_convs_match_the_reference() {
    for (c, k, pad, with_bias) in [(40, 3, 1, true), (40, 3, 1, false), (340, 1, 0, true)] {
        let (n, h, wd, oc) = (2, 7, 7, 64);
        let x: Vec<f32> = (0..n * c * h * wd)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..oc * c * k * k)
            .map(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..oc).map(|o| o as f32 * 0.25 - 4.0).collect();
        let op = Op::Conv {
            kernel: vec![k, k],
            strides: vec![1, 1],
            pads: vec![pad; 4],
            dilations: vec![1, 1],
            group: 1,
        };
        let xt = Tensor::from_f32(vec![n, c, h, wd], x.clone());
        let wt = Tensor::from_f32(vec![oc, c, k, k], w.clone());
        let bt = Tensor::from_f32(vec![oc], bias.clone());
        let ins = [Some(&xt), Some(&wt), with_bias.then_some(&bt)];
        let got = eval_op("conv", &op, &ins, 1).unwrap_or_else(|e| panic!("{e}"));
        let want = conv_reference(
            &x,
            (n, c, h, wd),
            &w,
            (oc, k, pad),
            with_bias.then_some(&bias[..]),
        );
        assert_eq!(got[0].data.len(), want.len());
        for (i, &wv) in want.iter().enumerate() {
            let g = got[0].data.get_f64(i);
            assert!(
                (g - wv).abs() <= 1e-3 + 1e-5 * wv.abs(),
                "c {c} k {k} bias {with_bias}: output {i}: got {g}, want {wv}"
            );
        }
    }
}

/// The transposed product is for images whose tiles would be over a tenth
/// empty: 7x7 (49 of 64 columns), not 13x13 or 14x14 (a half-width last
/// tile: 169 of 176, 196 of 208).
#[test]
fn only_images_that_waste_tile_columns_run_transposed() {
    assert_eq!(tiled_columns(49), 64);
    assert_eq!(tiled_columns(169), 176);
    assert_eq!(tiled_columns(196), 208);
    assert_eq!(tiled_columns(64), 64);
    assert!(transposes(1, 1280, 49, 320));
    assert!(transposes(1, 512, 49, 512 * 9));
    assert!(!transposes(1, 576, 196, 96));
    assert!(!transposes(1, 1000, 169, 512));
    assert!(
        !transposes(2, 1280, 49, 320),
        "grouped convs keep their layout"
    );
    assert!(
        !transposes(1, 1280, 1024, 320),
        "large images keep their layout"
    );
}
