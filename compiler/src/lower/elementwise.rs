//! Lowering of the elementwise family: Unary, Binary (numpy broadcasting), Select, Cast, Identity.
//!
//! Each output element is one expression of the same-position input elements,
//! so every op here is a single loop nest; fusion later merges these
//! expressions into their producers.

use super::{LowerCtx, Result};
use kiln_ir::graph::{BinaryOp, UnaryOp};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BinOp, BufId, Expr, Stmt, UnOp};
use kiln_ir::{DType, Op};

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let io = cx.io(pb)?;
    let out_t = cx.outputs[0].dtype;
    let n_in = cx.inputs.len();
    let mut in_dims = Vec::with_capacity(n_in);
    for i in 0..n_in {
        in_dims.push(cx.in_dims(i)?);
    }
    let (out_dims, in_dims) = collapse_dims(&cx.out_dims(0)?, &in_dims);
    let op = cx.op.clone();
    let in_types: Vec<DType> = (0..n_in)
        .map(|i| cx.in_type(i).map(|t| t.dtype))
        .collect::<Result<_>>()?;
    let mut err = None;
    let body = pb.nest(&out_dims, |_, idx| {
        let load = |i: usize| broadcast_load(io.input(i), &in_dims[i], &out_dims, idx);
        let value = match &op {
            Op::Unary { op } => unary_expr(op, load(0), in_types[0]),
            Op::Binary { op } => binary_expr(*op, load(0), load(1), in_types[0], in_types[1]),
            Op::Select => Ok(Expr::select(load(0), load(1), load(2))),
            Op::Cast { to } => Ok(load(0).cast(*to)),
            Op::Identity => Ok(load(0)),
            _ => Err(format!("{} is not elementwise", op.name())),
        };
        match value {
            Ok(v) => vec![Stmt::Store {
                buf: io.outputs[0],
                index: linear_index(idx, &strides(&out_dims)),
                value: v,
            }],
            Err(e) => {
                err = Some(e);
                vec![]
            }
        }
    });
    if let Some(e) = err {
        return Err(cx.err(e));
    }
    let _ = out_t;
    pb.kernel(cx.node, body);
    Ok(())
}

/// Dropout at inference: `y = x` and an all-true mask. Training-mode Dropout
/// draws random numbers, which no deterministic compiled model can reproduce.
pub(super) fn lower_dropout(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    match cx.op {
        Op::Dropout { active: Some(false) } => {}
        Op::Dropout { active: Some(true) } => {
            return Err(cx.err("training-mode Dropout with a non-zero ratio draws random numbers; kiln runs inference only"))
        }
        _ => return Err(cx.err("Dropout's training flag and ratio must be known before lowering")),
    }
    let io = cx.io(pb)?;
    let n: usize = cx.out_dims(0)?.iter().product();
    let body = pb.nest(&[n], |_, idx| {
        let mut b = vec![Stmt::Store {
            buf: io.outputs[0],
            index: idx[0].clone(),
            value: Expr::load(io.input(0), idx[0].clone()),
        }];
        if let Some(&mask) = io.outputs.get(1) {
            b.push(Stmt::Store {
                buf: mask,
                index: idx[0].clone(),
                value: Expr::B(true),
            });
        }
        b
    });
    pb.kernel(cx.node, body);
    Ok(())
}

/// Merges adjacent output dims that every input either spans fully or
/// broadcasts along both, so loops are few and the innermost one is long:
/// `[64,128,3,3] * [64,1,1,1]` becomes `[64,1152] * [64,1]`.
pub fn collapse_dims(out: &[usize], inputs: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let r = out.len();
    // Each input aligned to the output rank: 1 where broadcast.
    let aligned: Vec<Vec<usize>> = inputs
        .iter()
        .map(|d| {
            let mut a = vec![1; r - d.len().min(r)];
            a.extend_from_slice(d);
            a
        })
        .collect();
    let mut new_out: Vec<usize> = vec![];
    let mut new_in: Vec<Vec<usize>> = vec![vec![]; inputs.len()];
    for k in 0..r {
        let mergeable = k > 0
            && aligned.iter().enumerate().all(|(i, a)| {
                let prev_full = *new_in[i].last().unwrap_or(&1) == *new_out.last().unwrap_or(&1);
                let prev_bcast = *new_in[i].last().unwrap_or(&1) == 1;
                let cur_full = a[k] == out[k];
                let cur_bcast = a[k] == 1;
                (prev_full && cur_full) || (prev_bcast && cur_bcast)
            });
        if mergeable {
            let last = new_out.len() - 1;
            new_out[last] *= out[k];
            for (i, a) in aligned.iter().enumerate() {
                let l = new_in[i].len() - 1;
                new_in[i][l] *= a[k];
            }
        } else {
            new_out.push(out[k]);
            for (i, a) in aligned.iter().enumerate() {
                new_in[i].push(a[k]);
            }
        }
    }
    (new_out, new_in)
}

/// Loads an input broadcast (numpy rules, aligned right) to the output index `idx`.
pub fn broadcast_load(
    buf: BufId,
    dims: &[usize],
    out_dims: &[usize],
    idx: &[kiln_ir::kernel::Expr],
) -> Expr {
    let st = strides(dims);
    let off = out_dims.len() - dims.len();
    let index = dims
        .iter()
        .enumerate()
        .filter(|(_, &d)| d != 1)
        .fold(Expr::i(0), |acc, (k, _)| acc + idx[off + k].clone() * st[k]);
    Expr::load(buf, index)
}

/// The expression of a unary op on `x` of type `t`.
pub fn unary_expr(op: &UnaryOp, x: Expr, t: DType) -> std::result::Result<Expr, String> {
    let c = |v: f64| Expr::constant(t, v);
    let exp = |e: Expr| e.un(UnOp::Exp);
    Ok(match op {
        UnaryOp::Neg => x.un(UnOp::Neg),
        UnaryOp::Abs => x.un(UnOp::Abs),
        UnaryOp::Exp => exp(x),
        UnaryOp::Log => x.un(UnOp::Log),
        UnaryOp::Sqrt => x.un(UnOp::Sqrt),
        UnaryOp::Reciprocal => c(1.0).bin(BinOp::Div, x),
        UnaryOp::Floor => x.un(UnOp::Floor),
        UnaryOp::Ceil => x.un(UnOp::Ceil),
        UnaryOp::Round => x.un(UnOp::Round),
        UnaryOp::Sign => Expr::select(
            x.clone().gt(c(0.0)),
            c(1.0),
            Expr::select(
                x.clone().lt(c(0.0)),
                c(-1.0),
                if t.is_float() { x } else { c(0.0) },
            ),
        ),
        UnaryOp::Sin => x.un(UnOp::Sin),
        UnaryOp::Cos => x.un(UnOp::Cos),
        UnaryOp::Tan => x.un(UnOp::Tan),
        UnaryOp::Asin => x.un(UnOp::Asin),
        UnaryOp::Acos => x.un(UnOp::Acos),
        UnaryOp::Atan => x.un(UnOp::Atan),
        UnaryOp::Sinh => x.un(UnOp::Sinh),
        UnaryOp::Cosh => x.un(UnOp::Cosh),
        UnaryOp::Asinh => x.un(UnOp::Asinh),
        UnaryOp::Acosh => x.un(UnOp::Acosh),
        UnaryOp::Atanh => x.un(UnOp::Atanh),
        UnaryOp::Tanh => x.un(UnOp::Tanh),
        UnaryOp::Erf => x.un(UnOp::Erf),
        UnaryOp::Sigmoid => c(1.0).bin(BinOp::Div, c(1.0) + exp(-x)),
        UnaryOp::Relu => x.max(c(0.0)),
        UnaryOp::Not | UnaryOp::BitwiseNot => x.un(UnOp::Not),
        UnaryOp::IsNan => x.un(UnOp::IsNan),
        UnaryOp::IsInf {
            detect_positive,
            detect_negative,
        } => {
            let inf = x.clone().un(UnOp::IsInf);
            match (detect_positive, detect_negative) {
                (true, true) => inf,
                (true, false) => inf.and(x.gt(c(0.0))),
                (false, true) => inf.and(x.lt(c(0.0))),
                (false, false) => Expr::B(false),
            }
        }
        UnaryOp::Softplus => (exp(x) + c(1.0)).un(UnOp::Log),
        UnaryOp::Softsign => x.clone().bin(BinOp::Div, c(1.0) + x.un(UnOp::Abs)),
        UnaryOp::HardSwish => x.clone() * (x * c(1.0 / 6.0) + c(0.5)).min(c(1.0)).max(c(0.0)),
        UnaryOp::Mish => x.clone() * (exp(x) + c(1.0)).un(UnOp::Log).un(UnOp::Tanh),
        UnaryOp::LeakyRelu { alpha } => {
            Expr::select(x.clone().lt(c(0.0)), x.clone() * c(*alpha as f64), x)
        }
        UnaryOp::Elu { alpha } => Expr::select(
            x.clone().lt(c(0.0)),
            c(*alpha as f64) * (exp(x.clone()) - c(1.0)),
            x,
        ),
        UnaryOp::Selu { alpha, gamma } => {
            let neg = c(*alpha as f64) * exp(x.clone()) - c(*alpha as f64);
            c(*gamma as f64) * Expr::select(x.clone().le(c(0.0)), neg, x)
        }
        UnaryOp::Celu { alpha } => {
            let a = *alpha as f64;
            x.clone().max(c(0.0)) + (c(a) * (exp(x.bin(BinOp::Div, c(a))) - c(1.0))).min(c(0.0))
        }
        UnaryOp::HardSigmoid { alpha, beta } => (c(*alpha as f64) * x + c(*beta as f64))
            .min(c(1.0))
            .max(c(0.0)),
        UnaryOp::ThresholdedRelu { alpha } => {
            Expr::select(x.clone().gt(c(*alpha as f64)), x, c(0.0))
        }
        UnaryOp::Gelu { tanh: false } => {
            c(0.5) * x.clone() * (c(1.0) + (x * c(std::f64::consts::FRAC_1_SQRT_2)).un(UnOp::Erf))
        }
        UnaryOp::Gelu { tanh: true } => {
            let inner = c((2.0 / std::f64::consts::PI).sqrt())
                * (x.clone() + c(0.044715) * x.clone() * x.clone() * x.clone());
            c(0.5) * x * (c(1.0) + inner.un(UnOp::Tanh))
        }
        UnaryOp::Shrink { bias, lambd } => {
            let (b, l) = (*bias as f64, *lambd as f64);
            Expr::select(
                x.clone().lt(c(-l)),
                x.clone() + c(b),
                Expr::select(x.clone().gt(c(l)), x - c(b), c(0.0)),
            )
        }
    })
}

/// The expression of a binary op on `a: ta` and `b: tb`.
pub fn binary_expr(
    op: BinaryOp,
    a: Expr,
    b: Expr,
    ta: DType,
    tb: DType,
) -> std::result::Result<Expr, String> {
    let b = if ta != tb { b.cast(ta) } else { b };
    let zero = Expr::constant(ta, 0.0);
    Ok(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a.bin(BinOp::Div, b),
        BinaryOp::Pow => a.bin(BinOp::Pow, b),
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Fmod => a.bin(BinOp::Rem, b),
        BinaryOp::Mod => {
            let r = a.bin(BinOp::Rem, b.clone());
            let fix = r.clone().bin(BinOp::Ne, zero.clone()).and(
                r.clone()
                    .lt(zero.clone())
                    .bin(BinOp::Ne, b.clone().lt(zero)),
            );
            Expr::select(fix, r.clone() + b, r)
        }
        BinaryOp::Equal => a.eq_(b),
        BinaryOp::Less => a.lt(b),
        BinaryOp::LessOrEqual => a.le(b),
        BinaryOp::Greater => a.gt(b),
        BinaryOp::GreaterOrEqual => a.ge(b),
        BinaryOp::And | BinaryOp::BitwiseAnd => a.bin(BinOp::And, b),
        BinaryOp::Or | BinaryOp::BitwiseOr => a.bin(BinOp::Or, b),
        BinaryOp::Xor | BinaryOp::BitwiseXor => a.bin(BinOp::Xor, b),
        BinaryOp::BitShiftLeft => a.bin(BinOp::Shl, b),
        BinaryOp::BitShiftRight => a.bin(BinOp::Shr, b),
        BinaryOp::PRelu => Expr::select(a.clone().lt(zero), a.clone() * b, a),
    })
}
