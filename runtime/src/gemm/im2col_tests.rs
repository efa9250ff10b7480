//! The im2col view against the column matrix built element by element from
//! its definition, over geometries that cover strides, dilations, column
//! starts inside a row, partial panels and several depth blocks.

use std::vec;
use std::vec::Vec;

use super::super::*;
use super::{runnable, verify, Case, Rng};

/// `B(p, j)` of `view` over `src`, from the definition in `im2col.rs`.
fn column_matrix(src: &[f32], view: &Im2col, k: usize, n: usize) -> Vec<f32> {
    let taps = view.k_h * view.k_w;
    let mut b = vec![0.0; k * n];
    for p in 0..k {
        let (ci, ky, kx) = (p / taps, (p % taps) / view.k_w, p % view.k_w);
        for j in 0..n {
            let (oy, ox) = ((view.j0 + j) / view.out_w, (view.j0 + j) % view.out_w);
            let at = ci * view.plane
                + (oy * view.stride_h + ky * view.dil_h) * view.row
                + ox * view.stride_w
                + kx * view.dil_w;
            b[p * n + j] = src[at];
        }
    }
    b
}

#[test]
fn im2col_view_matches_the_column_matrix() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // (channels, k_h, k_w, stride, dilation, out_h, out_w, j0, n)
    let geos = [
        (3usize, 3usize, 3usize, 1usize, 1usize, 5usize, 7usize, 0usize, 35usize),
        (2, 3, 3, 2, 1, 4, 9, 3, 30),
        (4, 1, 1, 1, 1, 6, 13, 5, 70),
        (1, 5, 2, 1, 2, 3, 40, 0, 120),
        (31, 3, 3, 1, 1, 3, 11, 0, 33),
        (5, 7, 7, 2, 1, 2, 8, 1, 15),
        (3, 2, 3, 3, 2, 5, 5, 2, 23),
    ];
    for variant in runnable() {
        for (gi, &(ch, kh, kw, st, dil, oh, ow, j0, n)) in geos.iter().enumerate() {
            let k = ch * kh * kw;
            // A padded source wide and tall enough for every tap.
            let row = (ow - 1) * st + (kw - 1) * dil + 1 + gi % 3;
            let rows = (oh - 1) * st + (kh - 1) * dil + 1;
            let plane = row * rows + gi % 2;
            let src = rng.vec(ch * plane);
            let view = Im2col {
                j0,
                plane,
                row,
                k_h: kh,
                k_w: kw,
                dil_h: dil,
                dil_w: dil,
                stride_h: st,
                stride_w: st,
                out_w: ow,
            };
            assert!(view.span(k, n).unwrap() <= src.len(), "{view:?}");
            let b = column_matrix(&src, &view, k, n);
            for (ci, m) in [1usize, 5, 13, 40].into_iter().enumerate() {
                let mut case = Case::from_index(m, n, k, gi * 4 + ci);
                case.transposed_b = false;
                case.pad_a = 0;
                let ldc = n + case.pad_c;
                let a = rng.vec(m * k);
                let c0 = rng.vec(m * ldc);
                let bias = rng.vec(m.max(n));
                let ldr = n;
                let res = rng.vec(m * ldr);
                let epi = Epilogue {
                    accumulate: case.accumulate,
                    bias: case.bias.then_some(&bias[..]),
                    bias_rows: case.bias_rows,
                    residual: case.residual.then_some((&res[..], ldr)),
                    activation: case.act,
                };
                let packed = pack_a_vec(variant, m, k, &a, k, 1).unwrap();
                for scratch_len in [variant.scratch_len_pa(n, k), variant.min_scratch_len_pa(k)] {
                    let mut c = c0.clone();
                    let mut scratch = vec![0.0; scratch_len];
                    sgemm_pa_im2col(
                        variant,
                        m,
                        n,
                        k,
                        &packed,
                        &src,
                        &view,
                        &mut c,
                        ldc,
                        &epi,
                        &mut scratch,
                    )
                    .unwrap_or_else(|e| panic!("{variant:?} {view:?}: {e}"));
                    verify(variant, case, &a, &b, &c0, &bias, &res, &c, "im2col");
                }
            }
        }
    }
}

#[test]
fn im2col_view_rejects_a_short_source() {
    let view = Im2col {
        j0: 0,
        plane: 20,
        row: 5,
        k_h: 3,
        k_w: 3,
        dil_h: 1,
        dil_w: 1,
        stride_h: 1,
        stride_w: 1,
        out_w: 3,
    };
    let (m, n, k) = (2, 9, 18);
    let v = Variant::Scalar;
    let packed = pack_a_vec(v, m, k, &vec![1.0; m * k], k, 1).unwrap();
    let src = vec![0.0; view.span(k, n).unwrap() - 1];
    let mut c = vec![0.0; m * n];
    let mut scratch = vec![0.0; v.scratch_len_pa(n, k)];
    let err = sgemm_pa_im2col(
        v,
        m,
        n,
        k,
        &packed,
        &src,
        &view,
        &mut c,
        n,
        &Epilogue::default(),
        &mut scratch,
    );
    assert!(err.is_err());
    let bad = Im2col { k_w: 0, ..view };
    assert!(bad.span(k, n).is_err());
}
