//! Expected values come from the ONNX reference implementation (`onnx.reference`)
//! or, where it cannot run the case (negative pads), by hand.

use crate::exec::eval_op;
use kiln_ir::graph::{
    CoordTransform, NearestMode, PadMode, ResizeMode, ScatterReduction, SliceAxis,
};
use kiln_ir::{DType, Dim, Op, Storage, Tensor};

fn run(op: Op, inputs: &[Option<&Tensor>], n: usize) -> Vec<Tensor> {
    eval_op("t", &op, inputs, n).unwrap_or_else(|e| panic!("{}: {e}", op.name()))
}

fn run1(op: Op, inputs: &[&Tensor]) -> Tensor {
    let v: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
    run(op, &v, 1).remove(0)
}

fn arange(shape: &[usize]) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::from_f32(shape.to_vec(), (0..n).map(|i| i as f32).collect())
}

fn ints(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::from_i64(shape.to_vec(), v.to_vec())
}

fn check(t: &Tensor, shape: &[usize], want: &[f64]) {
    assert_eq!(t.shape, shape);
    let got = t.to_f64_vec();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 + 1e-3 * w.abs(),
            "element {i}: got {g}, want {w}\n{got:?}"
        );
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn reshape_and_transpose() {
    let x = arange(&[2, 3, 4]);
    let y = run1(
        Op::Reshape {
            shape: Some(vec![Dim::Known(4), Dim::Known(6)]),
        },
        &[&x],
    );
    check(&y, &[4, 6], &(0..24).map(|i| i as f64).collect::<Vec<_>>());
    let y = run1(
        Op::Transpose {
            perm: vec![2, 0, 1],
        },
        &[&x],
    );
    check(
        &y,
        &[4, 2, 3],
        &[
            0., 4., 8., 12., 16., 20., 1., 5., 9., 13., 17., 21., 2., 6., 10., 14., 18., 22., 3.,
            7., 11., 15., 19., 23.,
        ],
    );
}

#[test]
fn concat_and_split() {
    let a = arange(&[2, 2]);
    let b = Tensor::from_f32(vec![2, 1], vec![9.0, 8.0]);
    let y = run1(Op::Concat { axis: -1 }, &[&a, &b]);
    check(&y, &[2, 3], &[0., 1., 9., 2., 3., 8.]);
    let ys = run(
        Op::Split {
            axis: 1,
            sizes: Some(vec![1, 2]),
        },
        &[Some(&y)],
        2,
    );
    check(&ys[0], &[2, 1], &[0., 2.]);
    check(&ys[1], &[2, 2], &[1., 9., 3., 8.]);
}

#[test]
fn slice_negative_steps() {
    let x = arange(&[2, 3, 4]);
    let axes = vec![
        SliceAxis {
            axis: 2,
            start: 2,
            end: -100,
            step: -2,
        },
        SliceAxis {
            axis: 1,
            start: -1,
            end: 0,
            step: -1,
        },
    ];
    let y = run1(Op::Slice { axes: Some(axes) }, &[&x]);
    check(&y, &[2, 2, 2], &[10., 8., 6., 4., 22., 20., 18., 16.]);
}

#[test]
fn gathers() {
    let x = arange(&[2, 3, 4]);
    let y = run1(
        Op::Gather { axis: 1 },
        &[&x, &ints(&[2, 2], &[0, -1, 1, 1])],
    );
    check(
        &y,
        &[2, 2, 2, 4],
        &[
            0., 1., 2., 3., 8., 9., 10., 11., 4., 5., 6., 7., 4., 5., 6., 7., 12., 13., 14., 15.,
            20., 21., 22., 23., 16., 17., 18., 19., 16., 17., 18., 19.,
        ],
    );
    let err = eval_op(
        "t",
        &Op::Gather { axis: 1 },
        &[Some(&x), Some(&ints(&[1], &[3]))],
        1,
    );
    assert!(err.is_err());
    let d = arange(&[3, 4]);
    let y = run1(
        Op::GatherElements { axis: 1 },
        &[&d, &ints(&[3, 2], &[1, -1, 0, 2, 2, 0])],
    );
    check(&y, &[3, 2], &[1., 3., 4., 6., 10., 8.]);
    let y = run1(
        Op::GatherNd { batch_dims: 1 },
        &[&x, &ints(&[2, 1, 2], &[1, 2, 0, -1])],
    );
    check(&y, &[2, 1], &[6., 15.]);
}

#[test]
fn scatters_accumulate_in_order() {
    let d = arange(&[3, 4]);
    let op = Op::ScatterElements {
        axis: 1,
        reduction: ScatterReduction::Add,
    };
    let upd = Tensor::from_f32(vec![2, 2], vec![10., 20., 30., 40.]);
    let y = run1(op, &[&d, &ints(&[2, 2], &[1, 1, 0, -1]), &upd]);
    check(
        &y,
        &[3, 4],
        &[0., 31., 2., 3., 34., 5., 6., 47., 8., 9., 10., 11.],
    );
    let x = arange(&[2, 3, 4]);
    let upd = Tensor::from_f32(vec![3, 4], vec![7.0; 12]);
    let y = run1(
        Op::ScatterNd {
            reduction: ScatterReduction::Mul,
        },
        &[&x, &ints(&[3, 2], &[1, 0, 0, 2, 1, 0]), &upd],
    );
    let mut want: Vec<f64> = (0..24).map(|i| i as f64).collect();
    want[8..12].iter_mut().for_each(|w| *w *= 7.0);
    want[12..16].iter_mut().for_each(|w| *w *= 49.0);
    check(&y, &[2, 3, 4], &want);
    // Without a reduction, the later of two updates to one element wins.
    let upd = Tensor::from_f32(vec![1, 3], vec![1., 2., 3.]);
    let y = run1(
        Op::ScatterElements {
            axis: 1,
            reduction: ScatterReduction::None,
        },
        &[&arange(&[1, 2]), &ints(&[1, 3], &[1, 1, 0]), &upd],
    );
    check(&y, &[1, 2], &[3., 2.]);
}

#[test]
fn pads() {
    let p = Tensor::from_f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
    let pad = |mode, pads: Vec<i64>| {
        run1(
            Op::Pad {
                mode,
                pads: Some(pads),
                value: 9.5,
            },
            &[&p],
        )
    };
    let cases: [(PadMode, [f64; 24]); 4] = [
        (
            PadMode::Constant,
            [
                9.5, 9.5, 9.5, 9.5, 9.5, 9.5, 9.5, 9.5, 9.5, 9.5, 1., 2., 3., 9.5, 9.5, 9.5, 9.5,
                9.5, 4., 5., 6., 9.5, 9.5, 9.5,
            ],
        ),
        (
            PadMode::Reflect,
            [
                6., 5., 4., 5., 6., 5., 4., 5., 3., 2., 1., 2., 3., 2., 1., 2., 6., 5., 4., 5., 6.,
                5., 4., 5.,
            ],
        ),
        (
            PadMode::Edge,
            [
                1., 1., 1., 2., 3., 3., 3., 3., 1., 1., 1., 2., 3., 3., 3., 3., 4., 4., 4., 5., 6.,
                6., 6., 6.,
            ],
        ),
        (
            PadMode::Wrap,
            [
                5., 6., 4., 5., 6., 4., 5., 6., 2., 3., 1., 2., 3., 1., 2., 3., 5., 6., 4., 5., 6.,
                4., 5., 6.,
            ],
        ),
    ];
    for (mode, want) in cases {
        check(&pad(mode, vec![1, 2, 0, 3]), &[3, 8], &want);
    }
    check(
        &pad(PadMode::Constant, vec![0, -1, 1, 1]),
        &[3, 3],
        &[2., 3., 9.5, 5., 6., 9.5, 9.5, 9.5, 9.5],
    );
}

#[test]
fn expand_and_tile() {
    let p = Tensor::from_f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
    let y = run1(
        Op::Tile {
            repeats: Some(vec![2, 2]),
        },
        &[&p],
    );
    check(
        &y,
        &[4, 6],
        &[
            1., 2., 3., 1., 2., 3., 4., 5., 6., 4., 5., 6., 1., 2., 3., 1., 2., 3., 4., 5., 6., 4.,
            5., 6.,
        ],
    );
    let c = Tensor::from_f32(vec![2, 1], vec![1., 2.]);
    let y = run1(
        Op::Expand {
            shape: Some(vec![2, 1, 3]),
        },
        &[&c],
    );
    check(
        &y,
        &[2, 2, 3],
        &[1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2.],
    );
}

#[test]
fn depth_space() {
    let c = arange(&[2, 8, 2, 3]);
    let y = run1(
        Op::DepthToSpace {
            block: 2,
            crd: false,
        },
        &[&c],
    );
    assert_eq!(y.shape, [2, 2, 4, 6]);
    check(&y, &[2, 2, 4, 6], &y.to_f64_vec());
    let dcr = y.to_f64_vec();
    assert_eq!(
        &dcr[..12],
        &[0., 12., 1., 13., 2., 14., 24., 36., 25., 37., 26., 38.]
    );
    assert_eq!(dcr[95], 95.0);
    assert_eq!(&dcr[48..54], &[48., 60., 49., 61., 50., 62.]);
    let y = run1(
        Op::DepthToSpace {
            block: 2,
            crd: true,
        },
        &[&c],
    );
    let crd = y.to_f64_vec();
    assert_eq!(
        &crd[..12],
        &[0., 6., 1., 7., 2., 8., 12., 18., 13., 19., 14., 20.]
    );
    assert_eq!(&crd[24..30], &[24., 30., 25., 31., 26., 32.]);
    let s = arange(&[1, 2, 4, 6]);
    let y = run1(Op::SpaceToDepth { block: 2 }, &[&s]);
    check(
        &y,
        &[1, 8, 2, 3],
        &[
            0., 2., 4., 12., 14., 16., 24., 26., 28., 36., 38., 40., 1., 3., 5., 13., 15., 17.,
            25., 27., 29., 37., 39., 41., 6., 8., 10., 18., 20., 22., 30., 32., 34., 42., 44., 46.,
            7., 9., 11., 19., 21., 23., 31., 33., 35., 43., 45., 47.,
        ],
    );
    // DepthToSpace inverts SpaceToDepth in DCR mode.
    let back = run1(
        Op::DepthToSpace {
            block: 2,
            crd: false,
        },
        &[&y],
    );
    check(&back, &[1, 2, 4, 6], &s.to_f64_vec());
}

#[test]
fn trilu_reverse_compress() {
    let t = Tensor::from_f32(vec![3, 4], (1..13).map(|i| i as f32).collect());
    let y = run1(
        Op::Trilu {
            upper: true,
            k: Some(1),
        },
        &[&t],
    );
    check(
        &y,
        &[3, 4],
        &[0., 2., 3., 4., 0., 0., 7., 8., 0., 0., 0., 12.],
    );
    let y = run1(
        Op::Trilu {
            upper: false,
            k: Some(-1),
        },
        &[&t],
    );
    check(
        &y,
        &[3, 4],
        &[0., 0., 0., 0., 5., 0., 0., 0., 9., 10., 0., 0.],
    );
    let y = run1(
        Op::ReverseSequence {
            batch_axis: 1,
            time_axis: 0,
        },
        &[&t, &ints(&[4], &[3, 1, 1, 2])],
    );
    check(
        &y,
        &[3, 4],
        &[9., 2., 3., 8., 5., 6., 7., 4., 1., 10., 11., 12.],
    );
    let cond = Tensor {
        shape: vec![4],
        data: Storage::Bool(vec![true, false, true, true]),
    };
    let y = run1(Op::Compress { axis: Some(1) }, &[&t, &cond]);
    check(&y, &[3, 3], &[1., 3., 4., 5., 7., 8., 9., 11., 12.]);
    let cond = Tensor {
        shape: vec![6],
        data: Storage::Bool(vec![false, true, false, false, true, true]),
    };
    let y = run1(Op::Compress { axis: None }, &[&t, &cond]);
    check(&y, &[3], &[2., 5., 6.]);
}

#[test]
fn topk_and_onehot() {
    let x = Tensor::from_f32(vec![2, 5], vec![3., 1., 3., 2., 5., 0., 0., -1., 4., 4.]);
    let ys = run(
        Op::TopK {
            axis: 1,
            largest: true,
            sorted: true,
            k: Some(3),
        },
        &[Some(&x)],
        2,
    );
    check(&ys[0], &[2, 3], &[5., 3., 3., 4., 4., 0.]);
    assert_eq!(ys[1].to_i64_vec(), [4, 0, 2, 3, 4, 0]);
    assert_eq!(ys[1].dtype(), DType::I64);
    let ys = run(
        Op::TopK {
            axis: -1,
            largest: false,
            sorted: true,
            k: Some(2),
        },
        &[Some(&x)],
        2,
    );
    check(&ys[0], &[2, 2], &[1., 2., -1., 0.]);
    assert_eq!(ys[1].to_i64_vec(), [1, 3, 2, 0]);
    let vals = Tensor::from_f32(vec![2], vec![2., 7.]);
    let y = run(
        Op::OneHot {
            axis: 0,
            depth: None,
        },
        &[
            Some(&ints(&[4], &[1, -1, 5, 0])),
            Some(&ints(&[], &[3])),
            Some(&vals),
        ],
        1,
    );
    // Index 5 is outside [-3, 3): all off, as the ONNX spec says (the reference
    // implementation would wrap it with np.mod).
    check(
        &y[0],
        &[3, 4],
        &[2., 2., 2., 7., 7., 2., 2., 2., 2., 7., 2., 2.],
    );
}

fn resize(
    mode: ResizeMode,
    coord: CoordTransform,
    scales: Option<Vec<f32>>,
    sizes: Option<Vec<usize>>,
) -> Op {
    Op::Resize {
        mode,
        coord,
        nearest: NearestMode::RoundPreferFloor,
        cubic_coeff: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        scales,
        sizes,
    }
}

#[test]
fn resizes() {
    let r = arange(&[1, 1, 4, 4]);
    let y = run(
        resize(
            ResizeMode::Nearest,
            CoordTransform::HalfPixel,
            Some(vec![1., 1., 0.6, 1.5]),
            None,
        ),
        &[Some(&r), None],
        1,
    );
    check(
        &y[0],
        &[1, 1, 2, 6],
        &[0., 0., 1., 2., 2., 3., 8., 8., 9., 10., 10., 11.],
    );
    let y = run(
        resize(
            ResizeMode::Linear,
            CoordTransform::HalfPixel,
            Some(vec![1., 1., 1.5, 0.5]),
            None,
        ),
        &[Some(&r), None],
        1,
    );
    check(
        &y[0],
        &[1, 1, 6, 2],
        &[
            0.5, 2.5, 2.5, 4.5, 5.1666665, 7.1666665, 7.8333335, 9.833333, 10.5, 12.5, 12.5, 14.5,
        ],
    );
    let mut op = resize(
        ResizeMode::Cubic,
        CoordTransform::HalfPixel,
        Some(vec![1., 1., 0.75, 1.25]),
        Some(vec![1, 1, 3, 5]),
    );
    if let Op::Resize {
        cubic_coeff,
        exclude_outside,
        ..
    } = &mut op
    {
        *cubic_coeff = -0.5;
        *exclude_outside = true;
    }
    let y = run(op, &[Some(&r), None], 1);
    check(
        &y[0],
        &[1, 1, 3, 5],
        &[
            0.36810786, 1.0594627, 1.9113773, 2.7632918, 3.4546466, 5.9567304, 6.6480856, 7.5,
            8.351914, 9.043269, 11.545353, 12.236708, 13.088623, 13.9405375, 14.631892,
        ],
    );
    let mut op = resize(
        ResizeMode::Linear,
        CoordTransform::TfCropAndResize,
        None,
        Some(vec![1, 1, 3, 3]),
    );
    if let Op::Resize {
        extrapolation_value,
        scales,
        ..
    } = &mut op
    {
        *extrapolation_value = -1.0;
        *scales = Some(vec![1., 1., 0.75, 0.75]);
    }
    let roi = Tensor::from_f32(vec![8], vec![0., 0., 0.4, 0.6, 1., 1., 1.2, 0.7]);
    let y = run(op, &[Some(&r), Some(&roi)], 1);
    check(
        &y[0],
        &[1, 1, 3, 3],
        &[6.6, 6.75, 6.9, 11.4, 11.55, 11.7, -1., -1., -1.],
    );
    let y = run(
        resize(
            ResizeMode::Linear,
            CoordTransform::AlignCorners,
            Some(vec![1., 1., 0.6, 0.6]),
            None,
        ),
        &[Some(&r), None],
        1,
    );
    check(&y[0], &[1, 1, 2, 2], &[0., 2.142857, 8.571428, 10.714285]);
}
