//! MatMul: numpy batched matrix product, one `Stmt::Matmul` per batch element.

use super::super::{LowerCtx, Result};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BufId, Expr, MatView, Matmul, Stmt};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let io = cx.io(pb)?;
    let (ad, bd, od) = (cx.in_dims(0)?, cx.in_dims(1)?, cx.out_dims(0)?);
    let dt = cx.outputs[0].dtype;
    if cx.in_type(0)?.dtype != dt || cx.in_type(1)?.dtype != dt {
        return Err(cx.err("MatMul inputs and output must share one dtype"));
    }
    if ad.is_empty() || bd.is_empty() {
        return Err(cx.err("MatMul inputs must have rank >= 1"));
    }
    // 1-D operands are promoted to matrices; the promoted axis is absent from the output.
    let a2 = if ad.len() == 1 {
        vec![1, ad[0]]
    } else {
        ad.clone()
    };
    let b2 = if bd.len() == 1 {
        vec![bd[0], 1]
    } else {
        bd.clone()
    };
    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    if b2[b2.len() - 2] != k {
        return Err(cx.err(format!("inner dims differ: {ad:?} x {bd:?}")));
    }
    let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let nb = ab.len().max(bb.len());
    let batch = od
        .get(..nb)
        .ok_or_else(|| cx.err("output rank does not match the inputs"))?
        .to_vec();
    let (pa, pbat, pout): (usize, usize, usize) = (
        ab.iter().product(),
        bb.iter().product(),
        batch.iter().product(),
    );
    let (a, b, c) = (io.input(0), io.input(1), io.outputs[0]);
    let body = if pbat == 1 && pa == pout {
        // A shared right operand: all batches of A are one tall matrix, so one GEMM does it.
        vec![gemm(
            m * pout,
            n,
            k,
            (a, Expr::i(0)),
            (b, Expr::i(0)),
            (c, Expr::i(0)),
        )]
    } else {
        let (sa, sb) = (batch_strides(ab, m * k), batch_strides(bb, k * n));
        pb.nest(&batch, |_, idx| {
            let off = |dims: &[usize], st: &[i64]| {
                let o = nb - dims.len();
                dims.iter()
                    .enumerate()
                    .filter(|(_, &d)| d != 1)
                    .fold(Expr::i(0), |acc, (i, _)| acc + idx[o + i].clone() * st[i])
            };
            let oc = linear_index(idx, &strides(&batch)) * (m * n) as i64;
            vec![gemm(m, n, k, (a, off(ab, &sa)), (b, off(bb, &sb)), (c, oc))]
        })
    };
    pb.kernel(cx.node, body);
    Ok(())
}

/// Element strides of the batch dims of a contiguous stack of `mat`-element matrices.
fn batch_strides(dims: &[usize], mat: usize) -> Vec<i64> {
    strides(dims).into_iter().map(|s| s * mat as i64).collect()
}

/// A row-major `m x k` times `k x n` product into a row-major `m x n` block.
pub(super) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: (BufId, Expr),
    b: (BufId, Expr),
    c: (BufId, Expr),
) -> Stmt {
    Stmt::Matmul(Matmul {
        m: m as u64,
        n: n as u64,
        k: k as u64,
        a: MatView {
            buf: a.0,
            offset: a.1,
            row_stride: k as i64,
            col_stride: 1,
        },
        b: MatView {
            buf: b.0,
            offset: b.1,
            row_stride: n as i64,
            col_stride: 1,
        },
        c: MatView {
            buf: c.0,
            offset: c.1,
            row_stride: n as i64,
            col_stride: 1,
        },
        accumulate: false,
    })
}
