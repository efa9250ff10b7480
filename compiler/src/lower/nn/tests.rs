//! Small cases checked against onnxruntime's outputs (inputs and expected
//! values generated once with onnxruntime 1.32 into `testdata/cases.json`),
//! plus timing checks on the shapes that dominate a MobileNet.

use crate::exec::eval_op;
use kiln_ir::graph::PoolKind;
use kiln_ir::tensor::{Storage, Tensor};
use kiln_ir::{DType, Op};

/// Runs case `name` of `testdata/cases.json` through `op` and compares every output.
fn check(name: &str, op: Op) {
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("testdata/cases.json")).expect("cases.json parses");
    let case = &cases[name];
    let dt = DType::from_name(&case["dtype"].as_str().expect("dtype").to_lowercase())
        .expect("known dtype");
    let decode = |t: &serde_json::Value| -> (Vec<usize>, Vec<f64>) {
        let shape = t["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        let data = t["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        (shape, data)
    };
    let tensors: Vec<Tensor> = case["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|t| {
            let (shape, v) = decode(t);
            Tensor::new(shape, Storage::from_f64s(dt, v)).expect("shape matches data")
        })
        .collect();
    let want: Vec<(Vec<usize>, Vec<f64>)> = case["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(decode)
        .collect();
    let refs: Vec<Option<&Tensor>> = tensors.iter().map(Some).collect();
    let got = eval_op("n", &op, &refs, want.len()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(got.len(), want.len());
    for (k, (g, (shape, w))) in got.iter().zip(&want).enumerate() {
        assert_eq!(&g.shape, shape, "{name}: output {k} shape");
        for (i, &wv) in w.iter().enumerate() {
            let gv = g.data.get_f64(i);
            assert!(
                (gv - wv).abs() <= 1e-4 + 1e-3 * wv.abs(),
                "{name}: output {k}[{i}]: got {gv}, want {wv}"
            );
        }
    }
}

/// Runs one op on deterministic f32 data and returns (seconds, output).
fn time_op(op: &Op, shapes: &[Vec<usize>]) -> (f64, Vec<Tensor>) {
    let tensors: Vec<Tensor> = shapes
        .iter()
        .map(|s| {
            let n: usize = s.iter().product();
            Tensor::from_f32(
                s.clone(),
                (0..n)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                    .collect(),
            )
        })
        .collect();
    let refs: Vec<Option<&Tensor>> = tensors.iter().map(Some).collect();
    let t = std::time::Instant::now();
    let out = eval_op("bench", op, &refs, 1).expect("bench op runs");
    (t.elapsed().as_secs_f64(), out)
}

/// MobileNet-v2's heaviest depthwise and pointwise layers through the
/// interpreter: prints their times. A benchmark, not a test (timings on shared
/// machines are noise): `cargo test --release -p kiln-compiler --lib
/// mobilenet_layer_timings -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints timings, asserts nothing"]
fn mobilenet_layer_timings() {
    let dw = Op::Conv {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        group: 32,
    };
    let (t_dw, _) = time_op(&dw, &[vec![1, 32, 112, 112], vec![32, 1, 3, 3], vec![32]]);
    let pw = Op::Conv {
        kernel: vec![1, 1],
        strides: vec![1, 1],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        group: 1,
    };
    let (t_pw, _) = time_op(&pw, &[vec![1, 96, 56, 56], vec![24, 96, 1, 1], vec![24]]);
    eprintln!(
        "depthwise 32x112x112: {:.1} ms, pointwise 96->24 56x56: {:.1} ms",
        t_dw * 1e3,
        t_pw * 1e3
    );
}

#[test]
fn matmul_batched_bcast() {
    check("matmul_batched_bcast", Op::MatMul);
}

#[test]
fn matmul_1d_left() {
    check("matmul_1d_left", Op::MatMul);
}

#[test]
fn matmul_1d_right() {
    check("matmul_1d_right", Op::MatMul);
}

#[test]
fn matmul_1d_1d() {
    check("matmul_1d_1d", Op::MatMul);
}

#[test]
fn matmul_shared_rhs() {
    check("matmul_shared_rhs", Op::MatMul);
}

#[test]
fn matmul_int32() {
    check("matmul_int32", Op::MatMul);
}

#[test]
fn conv2d_general() {
    check(
        "conv2d_general",
        Op::Conv {
            kernel: vec![3, 3],
            strides: vec![2, 1],
            pads: vec![1, 0, 2, 1],
            dilations: vec![1, 2],
            group: 1,
        },
    );
}

#[test]
fn conv2d_grouped() {
    check(
        "conv2d_grouped",
        Op::Conv {
            kernel: vec![2, 2],
            strides: vec![1, 1],
            pads: vec![0, 1, 1, 0],
            dilations: vec![1, 1],
            group: 2,
        },
    );
}

#[test]
fn conv2d_depthwise_mult() {
    check(
        "conv2d_depthwise_mult",
        Op::Conv {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            group: 3,
        },
    );
}

#[test]
fn conv2d_depthwise_dil() {
    check(
        "conv2d_depthwise_dil",
        Op::Conv {
            kernel: vec![3, 2],
            strides: vec![1, 2],
            pads: vec![2, 0, 1, 1],
            dilations: vec![2, 1],
            group: 2,
        },
    );
}

#[test]
fn conv2d_pointwise() {
    check(
        "conv2d_pointwise",
        Op::Conv {
            kernel: vec![1, 1],
            strides: vec![1, 1],
            pads: vec![0, 0, 0, 0],
            dilations: vec![1, 1],
            group: 1,
        },
    );
}

#[test]
fn conv2d_pointwise_grouped() {
    check(
        "conv2d_pointwise_grouped",
        Op::Conv {
            kernel: vec![1, 1],
            strides: vec![1, 1],
            pads: vec![0, 0, 0, 0],
            dilations: vec![1, 1],
            group: 2,
        },
    );
}

#[test]
fn conv2d_1x1_strided() {
    check(
        "conv2d_1x1_strided",
        Op::Conv {
            kernel: vec![1, 1],
            strides: vec![2, 2],
            pads: vec![0, 0, 0, 0],
            dilations: vec![1, 1],
            group: 1,
        },
    );
}

#[test]
fn conv1d() {
    check(
        "conv1d",
        Op::Conv {
            kernel: vec![3],
            strides: vec![2],
            pads: vec![1, 2],
            dilations: vec![1],
            group: 1,
        },
    );
}

#[test]
fn conv3d() {
    check(
        "conv3d",
        Op::Conv {
            kernel: vec![2, 3, 2],
            strides: vec![1, 1, 2],
            pads: vec![1, 0, 1, 0, 1, 1],
            dilations: vec![1, 1, 1],
            group: 1,
        },
    );
}

#[test]
fn convt2d_general() {
    check(
        "convt2d_general",
        Op::ConvTranspose {
            kernel: vec![3, 3],
            strides: vec![2, 3],
            pads: vec![1, 0, 0, 1],
            dilations: vec![1, 2],
            group: 2,
            output_padding: vec![1, 0],
        },
    );
}

#[test]
fn convt1d() {
    check(
        "convt1d",
        Op::ConvTranspose {
            kernel: vec![3],
            strides: vec![2],
            pads: vec![0, 0],
            dilations: vec![1],
            group: 1,
            output_padding: vec![0],
        },
    );
}

#[test]
fn convt3d() {
    check(
        "convt3d",
        Op::ConvTranspose {
            kernel: vec![2, 2, 3],
            strides: vec![1, 2, 1],
            pads: vec![0, 1, 0, 0, 0, 1],
            dilations: vec![1, 1, 1],
            group: 1,
            output_padding: vec![0, 0, 0],
        },
    );
}

#[test]
fn maxpool2d_pads_ceil() {
    check(
        "maxpool2d_pads_ceil",
        Op::Pool {
            kind: PoolKind::Max,
            kernel: vec![3, 2],
            strides: vec![2, 2],
            pads: vec![1, 0, 1, 1],
            dilations: vec![1, 1],
            ceil_mode: true,
        },
    );
}

#[test]
fn maxpool2d_dil() {
    check(
        "maxpool2d_dil",
        Op::Pool {
            kind: PoolKind::Max,
            kernel: vec![2, 2],
            strides: vec![1, 2],
            pads: vec![0, 1, 0, 1],
            dilations: vec![2, 2],
            ceil_mode: false,
        },
    );
}

#[test]
fn maxpool2d_indices() {
    check(
        "maxpool2d_indices",
        Op::Pool {
            kind: PoolKind::Max,
            kernel: vec![2, 3],
            strides: vec![2, 1],
            pads: vec![1, 1, 0, 1],
            dilations: vec![1, 1],
            ceil_mode: false,
        },
    );
}

#[test]
fn maxpool1d_int() {
    check(
        "maxpool1d_int",
        Op::Pool {
            kind: PoolKind::Max,
            kernel: vec![3],
            strides: vec![2],
            pads: vec![1, 1],
            dilations: vec![1],
            ceil_mode: true,
        },
    );
}

#[test]
fn avgpool2d_exclude_pad_ceil() {
    check(
        "avgpool2d_exclude_pad_ceil",
        Op::Pool {
            kind: PoolKind::Avg {
                count_include_pad: false,
            },
            kernel: vec![3, 3],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 0],
            dilations: vec![1, 1],
            ceil_mode: true,
        },
    );
}

#[test]
fn avgpool2d_include_pad_ceil() {
    check(
        "avgpool2d_include_pad_ceil",
        Op::Pool {
            kind: PoolKind::Avg {
                count_include_pad: true,
            },
            kernel: vec![3, 3],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 0],
            dilations: vec![1, 1],
            ceil_mode: true,
        },
    );
}

#[test]
fn avgpool3d_dil() {
    check(
        "avgpool3d_dil",
        Op::Pool {
            kind: PoolKind::Avg {
                count_include_pad: false,
            },
            kernel: vec![2, 2, 2],
            strides: vec![1, 2, 1],
            pads: vec![0, 1, 1, 0, 0, 1],
            dilations: vec![2, 1, 1],
            ceil_mode: false,
        },
    );
}

#[test]
fn lppool2d_p2() {
    check(
        "lppool2d_p2",
        Op::Pool {
            kind: PoolKind::Lp { p: 2.0 },
            kernel: vec![2, 2],
            strides: vec![1, 2],
            pads: vec![1, 0, 0, 1],
            dilations: vec![1, 1],
            ceil_mode: false,
        },
    );
}

#[test]
fn lppool1d_p3() {
    check(
        "lppool1d_p3",
        Op::Pool {
            kind: PoolKind::Lp { p: 3.0 },
            kernel: vec![3],
            strides: vec![1],
            pads: vec![1, 1],
            dilations: vec![1],
            ceil_mode: false,
        },
    );
}

#[test]
fn einsum_matmul() {
    check(
        "einsum_matmul",
        Op::Einsum {
            equation: "ij,jk->ik".into(),
        },
    );
}

#[test]
fn einsum_batch() {
    check(
        "einsum_batch",
        Op::Einsum {
            equation: "bij,bjk->bik".into(),
        },
    );
}

#[test]
fn einsum_diag() {
    check(
        "einsum_diag",
        Op::Einsum {
            equation: "ii->i".into(),
        },
    );
}

#[test]
fn einsum_batch_diag() {
    check(
        "einsum_batch_diag",
        Op::Einsum {
            equation: "...ii->...i".into(),
        },
    );
}

#[test]
fn einsum_ellipsis_bcast() {
    check(
        "einsum_ellipsis_bcast",
        Op::Einsum {
            equation: "...ij,...jk->...ik".into(),
        },
    );
}

#[test]
fn einsum_sum_all() {
    check(
        "einsum_sum_all",
        Op::Einsum {
            equation: "ij->".into(),
        },
    );
}

#[test]
fn einsum_implicit() {
    check(
        "einsum_implicit",
        Op::Einsum {
            equation: "ij,jk".into(),
        },
    );
}

#[test]
fn einsum_three() {
    check(
        "einsum_three",
        Op::Einsum {
            equation: "i,ij,j->".into(),
        },
    );
}

#[test]
fn einsum_transpose() {
    check(
        "einsum_transpose",
        Op::Einsum {
            equation: "ijk->kji".into(),
        },
    );
}
