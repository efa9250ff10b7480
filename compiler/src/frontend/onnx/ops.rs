//! The mapping from ONNX ops to kiln's normalised ops: dispatch, elementwise,
//! reductions and data movement. Convolution, pooling, normalisation and
//! softmax live in `nn`, control flow in `control`, recurrent cells in `rnn`.

use super::{data, nn, rnn, Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{BinaryOp, ReduceOp, ScalarValue, ScatterReduction, SliceAxis, UnaryOp};
use kiln_ir::{DType, Op, Region, Tensor, ValueId};

type Outs = Result<Vec<Option<ValueId>>, FrontendError>;

const ONNX_OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "BitShift",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Compress",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumProd",
    "CumSum",
    "DepthToSpace",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "If",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "Loop",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "MeanVarianceNormalization",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "NonZero",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "RNN",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "Round",
    "Scan",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

/// Whether kiln's op set can express this node. `ai.onnx.ml` is accepted as
/// an import (tf2onnx declares it), but none of its ops are.
pub(crate) fn is_supported(domain: &str, op: &str) -> bool {
    (domain.is_empty() || domain == "ai.onnx")
        && (ONNX_OPS.binary_search(&op).is_ok()
            || super::composite::OPS.contains(&op)
            || super::decomp::OPS.contains(&op)
            || super::quant::OPS.contains(&op)
            || super::signal::OPS.contains(&op))
}

fn unary(op: &str) -> Option<UnaryOp> {
    Some(match op {
        "Neg" => UnaryOp::Neg,
        "Abs" => UnaryOp::Abs,
        "Exp" => UnaryOp::Exp,
        "Log" => UnaryOp::Log,
        "Sqrt" => UnaryOp::Sqrt,
        "Reciprocal" => UnaryOp::Reciprocal,
        "Floor" => UnaryOp::Floor,
        "Ceil" => UnaryOp::Ceil,
        "Round" => UnaryOp::Round,
        "Sign" => UnaryOp::Sign,
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        "Tan" => UnaryOp::Tan,
        "Asin" => UnaryOp::Asin,
        "Acos" => UnaryOp::Acos,
        "Atan" => UnaryOp::Atan,
        "Sinh" => UnaryOp::Sinh,
        "Cosh" => UnaryOp::Cosh,
        "Asinh" => UnaryOp::Asinh,
        "Acosh" => UnaryOp::Acosh,
        "Atanh" => UnaryOp::Atanh,
        "Tanh" => UnaryOp::Tanh,
        "Erf" => UnaryOp::Erf,
        "Sigmoid" => UnaryOp::Sigmoid,
        "Relu" => UnaryOp::Relu,
        "Not" => UnaryOp::Not,
        "BitwiseNot" => UnaryOp::BitwiseNot,
        "IsNaN" => UnaryOp::IsNan,
        "Softplus" => UnaryOp::Softplus,
        "Softsign" => UnaryOp::Softsign,
        "HardSwish" => UnaryOp::HardSwish,
        "Mish" => UnaryOp::Mish,
        _ => return None,
    })
}

fn binary(op: &str) -> Option<BinaryOp> {
    Some(match op {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "Div" => BinaryOp::Div,
        "Pow" => BinaryOp::Pow,
        "Equal" => BinaryOp::Equal,
        "Less" => BinaryOp::Less,
        "LessOrEqual" => BinaryOp::LessOrEqual,
        "Greater" => BinaryOp::Greater,
        "GreaterOrEqual" => BinaryOp::GreaterOrEqual,
        "And" => BinaryOp::And,
        "Or" => BinaryOp::Or,
        "Xor" => BinaryOp::Xor,
        "BitwiseAnd" => BinaryOp::BitwiseAnd,
        "BitwiseOr" => BinaryOp::BitwiseOr,
        "BitwiseXor" => BinaryOp::BitwiseXor,
        "PRelu" => BinaryOp::PRelu,
        _ => return None,
    })
}

fn reduce(op: &str) -> Option<ReduceOp> {
    Some(match op {
        "ReduceSum" => ReduceOp::Sum,
        "ReduceMean" => ReduceOp::Mean,
        "ReduceMax" => ReduceOp::Max,
        "ReduceMin" => ReduceOp::Min,
        "ReduceProd" => ReduceOp::Prod,
        "ReduceL1" => ReduceOp::L1,
        "ReduceL2" => ReduceOp::L2,
        "ReduceLogSum" => ReduceOp::LogSum,
        "ReduceLogSumExp" => ReduceOp::LogSumExp,
        "ReduceSumSquare" => ReduceOp::SumSquare,
        _ => return None,
    })
}

/// All inputs positionally (`None` for omitted ones).
pub(crate) fn all_inputs(imp: &Importer, n: &N) -> Result<Vec<Option<ValueId>>, FrontendError> {
    (0..n.n_in()).map(|i| imp.inp(n, i)).collect()
}

fn one(v: ValueId) -> Outs {
    Ok(vec![Some(v)])
}

/// Converts one node; returns a value per ONNX output (`None` where kiln does not compute it).
pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let t = n.p.op_type.as_str();
    let name = n.name.as_str();
    if let Some(u) = unary(t) {
        let x = imp.req(n, 0)?;
        return one(imp.add1(r, name, Op::Unary { op: u }, vec![Some(x)])?);
    }
    if let Some(b) = binary(t) {
        let (a, c) = (imp.req(n, 0)?, imp.req(n, 1)?);
        return one(imp.add1(r, name, Op::Binary { op: b }, vec![Some(a), Some(c)])?);
    }
    if let Some(red) = reduce(t) {
        return convert_reduce(imp, r, n, red);
    }
    let param_unary = |u: UnaryOp| -> Op { Op::Unary { op: u } };
    let op = match t {
        "LeakyRelu" => param_unary(UnaryOp::LeakyRelu {
            alpha: n.f("alpha", 0.01),
        }),
        "Elu" => param_unary(UnaryOp::Elu {
            alpha: n.f("alpha", 1.0),
        }),
        "Selu" => param_unary(UnaryOp::Selu {
            alpha: n.f("alpha", 1.673_263_2),
            gamma: n.f("gamma", 1.050_701),
        }),
        "Celu" => param_unary(UnaryOp::Celu {
            alpha: n.f("alpha", 1.0),
        }),
        "HardSigmoid" => param_unary(UnaryOp::HardSigmoid {
            alpha: n.f("alpha", 0.2),
            beta: n.f("beta", 0.5),
        }),
        "ThresholdedRelu" => param_unary(UnaryOp::ThresholdedRelu {
            alpha: n.f("alpha", 1.0),
        }),
        "Shrink" => param_unary(UnaryOp::Shrink {
            bias: n.f("bias", 0.0),
            lambd: n.f("lambd", 0.5),
        }),
        "IsInf" => param_unary(UnaryOp::IsInf {
            detect_positive: n.i("detect_positive", 1) != 0,
            detect_negative: n.i("detect_negative", 1) != 0,
        }),
        "Gelu" => match n.s("approximate", "none").as_str() {
            "none" => param_unary(UnaryOp::Gelu { tanh: false }),
            "tanh" => param_unary(UnaryOp::Gelu { tanh: true }),
            o => return Err(n.bad(format!("approximate '{o}' is not 'none' or 'tanh'"))),
        },
        _ => return convert_other(imp, r, n),
    };
    let x = imp.req(n, 0)?;
    one(imp.add1(r, name, op, vec![Some(x)])?)
}

fn convert_other(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let t = n.p.op_type.as_str();
    let name = n.name.as_str();
    let ins = all_inputs(imp, n)?;
    let opset = imp.opset;
    let simple = |op: Op| -> Op { op };
    let op = match t {
        "Mod" => Op::Binary {
            op: if n.i("fmod", 0) != 0 {
                BinaryOp::Fmod
            } else {
                BinaryOp::Mod
            },
        },
        "BitShift" => match n.s("direction", "").as_str() {
            "LEFT" => Op::Binary {
                op: BinaryOp::BitShiftLeft,
            },
            "RIGHT" => Op::Binary {
                op: BinaryOp::BitShiftRight,
            },
            d => return Err(n.bad(format!("direction '{d}' is not LEFT or RIGHT"))),
        },
        "Sum" | "Max" | "Min" | "Mean" => return variadic(imp, r, n, &ins),
        "Clip" => return clip(imp, r, n),
        "Where" => Op::Select,
        "Cast" => Op::Cast {
            to: super::tensor::dtype_of(n.i("to", 0) as i32, &n.name)?,
        },
        "CastLike" => {
            let to = imp.ty(imp.req(n, 1)?).dtype;
            let x = imp.req(n, 0)?;
            return one(imp.add1(r, name, Op::Cast { to }, vec![Some(x)])?);
        }
        "Identity" => return one(imp.req(n, 0)?),
        "Dropout" => return data::dropout(imp, r, n),
        "Constant" => return one(constant(imp, n)?),
        "ArgMax" | "ArgMin" => Op::ArgReduce {
            max: t == "ArgMax",
            axis: n.i("axis", 0),
            keep_dims: n.i("keepdims", 1) != 0,
            select_last_index: n.i("select_last_index", 0) != 0,
        },
        "CumSum" | "CumProd" => Op::CumSum {
            axis: None,
            exclusive: n.i("exclusive", 0) != 0,
            reverse: n.i("reverse", 0) != 0,
            prod: t == "CumProd",
        },
        "MatMul" => Op::MatMul,
        "Einsum" => Op::Einsum {
            equation: n.s("equation", ""),
        },
        "Reshape" => {
            let x = imp.req(n, 0)?;
            let s = imp.req(n, 1)?;
            if n.i("allowzero", 0) != 0 {
                if let Some(c) = imp.konst(s).cloned() {
                    let dims = kiln_ir::infer::specialize::resolve_reshape(
                        &imp.ty(x).shape,
                        &c.to_i64_vec(),
                        true,
                    )
                    .map_err(|e| n.shape_err(e.msg))?;
                    return one(imp.add1(
                        r,
                        name,
                        Op::Reshape { shape: Some(dims) },
                        vec![Some(x)],
                    )?);
                }
                return Err(n.bad("allowzero = 1 needs a constant shape"));
            }
            return one(imp.add1(r, name, Op::Reshape { shape: None }, vec![Some(x), Some(s)])?);
        }
        "Flatten" | "Squeeze" | "Unsqueeze" => return data::reshape_like(imp, r, n),
        "Transpose" => {
            let x = imp.req(n, 0)?;
            let rank = imp.ty(x).rank();
            let perm = match n.ints("perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| kiln_ir::infer::norm_axis(a, rank).map_err(|e| n.bad(e.msg)))
                    .collect::<Result<Vec<_>, _>>()?,
                None => (0..rank).rev().collect(),
            };
            return one(imp.add1(r, name, Op::Transpose { perm }, vec![Some(x)])?);
        }
        "Concat" => Op::Concat {
            axis: n
                .attr("axis")
                .map(|a| a.i)
                .ok_or_else(|| n.bad("missing attribute axis"))?,
        },
        "Split" => return data::split(imp, r, n),
        "Slice" => {
            if opset < 10 {
                let starts = n
                    .ints("starts")
                    .ok_or_else(|| n.bad("missing attribute starts"))?;
                let ends = n
                    .ints("ends")
                    .ok_or_else(|| n.bad("missing attribute ends"))?;
                let axes = n
                    .ints("axes")
                    .unwrap_or_else(|| (0..starts.len() as i64).collect());
                if ends.len() != starts.len() || axes.len() != starts.len() {
                    return Err(n.bad("starts, ends and axes differ in length"));
                }
                let spec = (0..starts.len())
                    .map(|i| SliceAxis {
                        axis: axes[i],
                        start: starts[i],
                        end: ends[i],
                        step: 1,
                    })
                    .collect();
                return one(imp.add1(
                    r,
                    name,
                    Op::Slice { axes: Some(spec) },
                    vec![Some(imp.req(n, 0)?)],
                )?);
            }
            Op::Slice { axes: None }
        }
        "Gather" => Op::Gather {
            axis: n.i("axis", 0),
        },
        "GatherElements" => Op::GatherElements {
            axis: n.i("axis", 0),
        },
        "GatherND" => Op::GatherNd {
            batch_dims: n.i("batch_dims", 0).max(0) as usize,
        },
        "Scatter" | "ScatterElements" => Op::ScatterElements {
            axis: n.i("axis", 0),
            reduction: scatter_red(n)?,
        },
        "ScatterND" => Op::ScatterNd {
            reduction: scatter_red(n)?,
        },
        "Pad" => return data::pad(imp, r, n),
        "Expand" => Op::Expand { shape: None },
        "Tile" => Op::Tile { repeats: None },
        "DepthToSpace" => Op::DepthToSpace {
            block: block(n)?,
            crd: n.s("mode", "DCR") == "CRD",
        },
        "SpaceToDepth" => Op::SpaceToDepth { block: block(n)? },
        "Trilu" => Op::Trilu {
            upper: n.i("upper", 1) != 0,
            k: None,
        },
        "Resize" | "Upsample" => return data::resize(imp, r, n),
        "ReverseSequence" => Op::ReverseSequence {
            batch_axis: n.i("batch_axis", 1).max(0) as usize,
            time_axis: n.i("time_axis", 0).max(0) as usize,
        },
        "Compress" => Op::Compress {
            axis: n.attr("axis").map(|a| a.i),
        },
        "Shape" => Op::Shape {
            start: n.i("start", 0),
            end: n.attr("end").map(|a| a.i),
        },
        "Size" => Op::Size,
        "ConstantOfShape" => {
            let value = match n.attr("value").and_then(|a| a.t.as_ref()) {
                Some(tp) => {
                    let tv = super::tensor_from_proto(tp, None)?;
                    if tv.len() != 1 {
                        return Err(n.bad("value must hold exactly one element"));
                    }
                    ScalarValue {
                        dtype: tv.dtype(),
                        value: tv.data.get_f64(0),
                    }
                }
                None => ScalarValue {
                    dtype: DType::F32,
                    value: 0.0,
                },
            };
            Op::ConstantOfShape { shape: None, value }
        }
        "Range" => Op::Range,
        "NonZero" => Op::NonZero,
        "TopK" => {
            let (axis, largest, sorted) = (
                n.i("axis", -1),
                n.i("largest", 1) != 0,
                n.i("sorted", 1) != 0,
            );
            let x = imp.req(n, 0)?;
            let outs = if opset < 10 {
                let k = n
                    .attr("k")
                    .map(|a| a.i)
                    .ok_or_else(|| n.bad("missing attribute k"))?;
                imp.add(
                    r,
                    name,
                    Op::TopK {
                        axis,
                        largest,
                        sorted,
                        k: Some(k.max(0) as usize),
                    },
                    vec![Some(x)],
                    2,
                )?
            } else {
                imp.add(
                    r,
                    name,
                    Op::TopK {
                        axis,
                        largest,
                        sorted,
                        k: None,
                    },
                    vec![Some(x), Some(imp.req(n, 1)?)],
                    2,
                )?
            };
            return Ok(outs.into_iter().map(Some).collect());
        }
        "OneHot" => Op::OneHot {
            axis: n.i("axis", -1),
            depth: None,
        },
        "EyeLike" => Op::EyeLike {
            k: n.i("k", 0),
            dtype: match n.attr("dtype") {
                Some(a) => Some(super::tensor::dtype_of(a.i as i32, &n.name)?),
                None => None,
            },
        },
        "If" | "Loop" | "Scan" => return super::control::convert(imp, r, n),
        "LSTM" | "GRU" | "RNN" => return rnn::convert(imp, r, n),
        t if super::composite::OPS.contains(&t) => return super::composite::convert(imp, r, n),
        t if super::decomp::OPS.contains(&t) => return super::decomp::convert(imp, r, n),
        t if super::quant::OPS.contains(&t) => return super::quant::convert(imp, r, n),
        t if super::signal::OPS.contains(&t) => return super::signal::convert(imp, r, n),
        _ => return nn::convert(imp, r, n),
    };
    let op = simple(op);
    let num_outputs = n.n_out().max(1);
    let outs = imp.add(r, name, op, ins, num_outputs)?;
    Ok(outs.into_iter().map(Some).collect())
}

fn block(n: &N) -> Result<usize, FrontendError> {
    match n.i("blocksize", 0) {
        b if b > 0 => Ok(b as usize),
        b => Err(n.bad(format!("blocksize {b} must be positive"))),
    }
}

fn scatter_red(n: &N) -> Result<ScatterReduction, FrontendError> {
    Ok(match n.s("reduction", "none").as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        o => return Err(n.bad(format!("unknown reduction '{o}'"))),
    })
}

fn convert_reduce(imp: &mut Importer, r: &mut Region, n: &N, red: ReduceOp) -> Outs {
    let keep_dims = n.i("keepdims", 1) != 0;
    let noop = n.i("noop_with_empty_axes", 0) != 0;
    let axes_as_input = imp.opset >= 18 || (red == ReduceOp::Sum && imp.opset >= 13);
    let x = imp.req(n, 0)?;
    let (op, ins) = if axes_as_input {
        (
            Op::Reduce {
                op: red,
                axes: None,
                keep_dims,
                noop_with_empty_axes: noop,
            },
            vec![Some(x), imp.inp(n, 1)?],
        )
    } else {
        let axes = n.ints("axes").unwrap_or_default();
        (
            Op::Reduce {
                op: red,
                axes: Some(axes),
                keep_dims,
                noop_with_empty_axes: false,
            },
            vec![Some(x)],
        )
    };
    one(imp.add1(r, &n.name, op, ins)?)
}

/// Sum, Mean, Max, Min over any number of inputs: a chain of binary ops.
fn variadic(imp: &mut Importer, r: &mut Region, n: &N, ins: &[Option<ValueId>]) -> Outs {
    let ins: Vec<ValueId> = ins.iter().flatten().copied().collect();
    let Some((&first, rest)) = ins.split_first() else {
        return Err(n.bad("needs at least one input"));
    };
    let bop = match n.p.op_type.as_str() {
        "Max" => BinaryOp::Max,
        "Min" => BinaryOp::Min,
        _ => BinaryOp::Add,
    };
    let mut acc = first;
    let last = rest.len();
    for (i, &v) in rest.iter().enumerate() {
        let nm = if i + 1 == last && n.p.op_type != "Mean" {
            n.name.clone()
        } else {
            imp.fresh(&n.name)
        };
        acc = imp.add1(r, &nm, Op::Binary { op: bop }, vec![Some(acc), Some(v)])?;
    }
    if n.p.op_type == "Mean" && ins.len() > 1 {
        let c = imp.scalar(imp.ty(acc).dtype, ins.len() as f64);
        acc = imp.add1(
            r,
            &n.name,
            Op::Binary { op: BinaryOp::Div },
            vec![Some(acc), Some(c)],
        )?;
    }
    one(acc)
}

fn clip(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let x = imp.req(n, 0)?;
    let dtype = imp.ty(x).dtype;
    let (lo, hi) = if imp.opset < 11 {
        let lo = n.attr("min").map(|a| a.f);
        let hi = n.attr("max").map(|a| a.f);
        (
            lo.map(|v| imp.scalar(dtype, v as f64)),
            hi.map(|v| imp.scalar(dtype, v as f64)),
        )
    } else {
        (imp.inp(n, 1)?, imp.inp(n, 2)?)
    };
    let mut y = x;
    if let Some(lo) = lo {
        let nm = if hi.is_some() {
            imp.fresh(&n.name)
        } else {
            n.name.clone()
        };
        y = imp.add1(
            r,
            &nm,
            Op::Binary { op: BinaryOp::Max },
            vec![Some(y), Some(lo)],
        )?;
    }
    if let Some(hi) = hi {
        y = imp.add1(
            r,
            &n.name,
            Op::Binary { op: BinaryOp::Min },
            vec![Some(y), Some(hi)],
        )?;
    }
    one(y)
}

fn constant(imp: &mut Importer, n: &N) -> Result<ValueId, FrontendError> {
    let a =
        n.p.attribute
            .first()
            .ok_or_else(|| n.bad("Constant has no value attribute"))?;
    let t = match a.name.as_str() {
        "value" => {
            let tp = a.t.as_ref().ok_or_else(|| n.bad("value holds no tensor"))?;
            let base = imp.base_dir.clone();
            super::tensor_from_proto(tp, base.as_deref())?
        }
        "value_float" => Tensor::from_f32(vec![], vec![a.f]),
        "value_floats" => Tensor::from_f32(vec![a.floats.len()], a.floats.clone()),
        "value_int" => Tensor::from_i64(vec![], vec![a.i]),
        "value_ints" => Tensor::from_i64(vec![a.ints.len()], a.ints.clone()),
        o => {
            return Err(n.bad(format!(
                "attribute '{o}' (strings and sparse tensors) is not supported"
            )))
        }
    };
    Ok(imp.add_const(&n.name, t))
}
