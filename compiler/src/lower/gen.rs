//! Lowering of shape and index generators: Shape, Size, ConstantOfShape, Range, NonZero, EyeLike.
//!
//! Shape and Size are constants of the (specialised) input type; the others
//! read their inputs' values from the input buffers at run time, so they need
//! constant inputs only where inference needs them for the output shape.

use super::{LowerCtx, Result};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{Expr, Stmt};
use kiln_ir::{DType, Op};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let io = cx.io(pb)?;
    let y = *io
        .outputs
        .first()
        .ok_or_else(|| cx.err("missing output 0"))?;
    let out_dims = cx.out_dims(0)?;
    let out_t = cx.outputs[0].dtype;
    let st = strides(&out_dims);
    let body = match cx.op {
        Op::Shape { start, end } => {
            let dims = cx.in_dims(0)?;
            let r = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            let vals = if s < e { &dims[s..e] } else { &[][..] };
            vals.iter()
                .enumerate()
                .map(|(k, &d)| Stmt::Store {
                    buf: y,
                    index: Expr::i(k as i64),
                    value: Expr::i(d as i64),
                })
                .collect()
        }
        Op::Size => {
            let n: usize = cx.in_dims(0)?.iter().product();
            vec![Stmt::Store {
                buf: y,
                index: Expr::i(0),
                value: Expr::i(n as i64),
            }]
        }
        Op::ConstantOfShape { value, .. } => {
            // One flat loop: the fill does not care about the shape, and a long
            // innermost loop is what runs fast.
            let v = Expr::constant(value.dtype, value.value);
            let total: usize = out_dims.iter().product();
            pb.nest(&[total], |_, idx| {
                vec![Stmt::Store {
                    buf: y,
                    index: idx[0].clone(),
                    value: v,
                }]
            })
        }
        Op::Range => {
            let (start, delta) = (io.input(0), io.input(2));
            let t = cx.in_type(0)?.dtype;
            let n = out_dims.first().copied().unwrap_or(0);
            pb.nest(&[n], |_, idx| {
                let i = idx[0].clone().cast(t);
                let value = Expr::load(start, Expr::i(0)) + i * Expr::load(delta, Expr::i(0));
                vec![Stmt::Store {
                    buf: y,
                    index: idx[0].clone(),
                    value,
                }]
            })
        }
        Op::NonZero => non_zero(cx, pb, io.input(0), y, &out_dims)?,
        Op::EyeLike { k, .. } => {
            if out_dims.len() != 2 {
                return Err(cx.err("EyeLike needs a 2-D input"));
            }
            let (one, zero) = (Expr::constant(out_t, 1.0), Expr::constant(out_t, 0.0));
            let k = *k;
            pb.nest(&out_dims, |_, idx| {
                let on = (idx[1].clone() - idx[0].clone()).eq_(Expr::i(k));
                vec![Stmt::Store {
                    buf: y,
                    index: linear_index(idx, &st),
                    value: Expr::select(on, one, zero),
                }]
            })
        }
        _ => return Err(cx.err("not a generator op")),
    };
    pb.kernel(cx.node, body);
    Ok(())
}

/// Writes the coordinates of each non-zero element, in row-major order, as
/// columns of `[rank, n]`. A running count in scratch makes this a scalar loop;
/// NonZero is rare and its output small, so that is acceptable.
fn non_zero(
    cx: &LowerCtx,
    pb: &mut ProgramBuilder,
    x: kiln_ir::kernel::BufId,
    y: kiln_ir::kernel::BufId,
    out_dims: &[usize],
) -> Result<Vec<Stmt>> {
    let dims = cx.in_dims(0)?;
    let n = out_dims.get(1).copied().unwrap_or(0) as i64;
    let total: usize = dims.iter().product();
    let cnt = pb.scratch("count", DType::I64, 1);
    let st = strides(&dims);
    let i = pb.var();
    let iv = Expr::var(i);
    let pos = Expr::load(cnt, Expr::i(0));
    let mut then_body: Vec<Stmt> = dims
        .iter()
        .enumerate()
        .map(|(d, &len)| Stmt::Store {
            buf: y,
            index: Expr::i(d as i64 * n) + pos.clone(),
            value: (iv.clone() / st[d]) % len.max(1) as i64,
        })
        .collect();
    then_body.push(Stmt::Store {
        buf: cnt,
        index: Expr::i(0),
        value: pos + 1,
    });
    Ok(vec![
        Stmt::Store {
            buf: cnt,
            index: Expr::i(0),
            value: Expr::i(0),
        },
        Stmt::For {
            var: i,
            extent: total as u64,
            body: vec![Stmt::If {
                cond: Expr::load(x, iv.clone()).cast(DType::Bool),
                then_body,
                else_body: vec![],
            }],
        },
    ])
}

#[cfg(test)]
mod tests {
    use crate::exec::eval_op;
    use kiln_ir::graph::ScalarValue;
    use kiln_ir::{DType, Op, Tensor};

    fn run(op: Op, ins: &[&Tensor]) -> Tensor {
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        eval_op("t", &op, &ins, 1).expect("eval").remove(0)
    }

    #[test]
    fn shape_and_size() {
        let x = Tensor::zeros(DType::F32, vec![2, 3, 5]);
        assert_eq!(
            run(
                Op::Shape {
                    start: 0,
                    end: None
                },
                &[&x]
            )
            .to_i64_vec(),
            vec![2, 3, 5]
        );
        assert_eq!(
            run(
                Op::Shape {
                    start: -2,
                    end: Some(-1)
                },
                &[&x]
            )
            .to_i64_vec(),
            vec![3]
        );
        assert_eq!(
            run(
                Op::Shape {
                    start: 2,
                    end: Some(1)
                },
                &[&x]
            )
            .shape,
            vec![0]
        );
        assert_eq!(run(Op::Size, &[&x]).to_i64_vec(), vec![30]);
    }

    #[test]
    fn constant_of_shape_and_eye_like() {
        let s = Tensor::from_i64(vec![2], vec![2, 3]);
        let op = Op::ConstantOfShape {
            shape: None,
            value: ScalarValue {
                dtype: DType::I32,
                value: 7.0,
            },
        };
        let y = run(op, &[&s]);
        assert_eq!(
            (y.shape.clone(), y.dtype(), y.to_i64_vec()),
            (vec![2, 3], DType::I32, vec![7; 6])
        );
        let x = Tensor::zeros(DType::F32, vec![3, 4]);
        let y = run(
            Op::EyeLike {
                k: 1,
                dtype: Some(DType::I64),
            },
            &[&x],
        );
        assert_eq!(y.to_i64_vec(), vec![0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn range() {
        let (s, l, d) = (
            Tensor::scalar_f64(DType::F32, 1.0),
            Tensor::scalar_f64(DType::F32, 2.0),
            Tensor::scalar_f64(DType::F32, 0.25),
        );
        assert_eq!(
            run(Op::Range, &[&s, &l, &d]).to_f64_vec(),
            vec![1.0, 1.25, 1.5, 1.75]
        );
        let (s, l, d) = (
            Tensor::from_i64(vec![], vec![10]),
            Tensor::from_i64(vec![], vec![4]),
            Tensor::from_i64(vec![], vec![-3]),
        );
        assert_eq!(run(Op::Range, &[&s, &l, &d]).to_i64_vec(), vec![10, 7]);
    }

    #[test]
    fn non_zero() {
        let x = Tensor::from_f32(vec![2, 3], vec![0.0, 1.5, 0.0, -2.0, 0.0, f32::NAN]);
        let y = run(Op::NonZero, &[&x]);
        assert_eq!(y.shape, vec![2, 3]);
        assert_eq!(y.to_i64_vec(), vec![0, 1, 1, 1, 0, 2]);
    }
}
