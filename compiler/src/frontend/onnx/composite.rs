//! Composite ONNX ops (the losses and Attention) decomposed into kiln's
//! normalised graph ops, so that no target needs a kernel of their own. The
//! decompositions mirror `onnx.reference`, including its order of rounding
//! (Attention scales Q and K by `sqrt(scale)` each).

use super::emit::Emit as Ctx;
use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{BinaryOp, PadMode, ReduceOp, SliceAxis, UnaryOp};
use kiln_ir::{DType, Dim, Op, Region, Storage, Tensor, ValueId};

type Res<T> = Result<T, FrontendError>;
type Outs = Res<Vec<Option<ValueId>>>;

/// The ONNX ops this module converts (for the frontend's support check).
pub(crate) const OPS: &[&str] = &[
    "Attention",
    "NegativeLogLikelihoodLoss",
    "RotaryEmbedding",
    "SoftmaxCrossEntropyLoss",
];

impl Ctx<'_, '_> {
    fn reshape(&mut self, x: ValueId, shape: Vec<Dim>) -> Res<ValueId> {
        self.op(Op::Reshape { shape: Some(shape) }, vec![x])
    }
    /// `x[..., start..end:step]` on the last axis.
    fn last(&mut self, x: ValueId, start: usize, end: usize, step: usize) -> Res<ValueId> {
        let s = SliceAxis {
            axis: -1,
            start: start as i64,
            end: end as i64,
            step: step as i64,
        };
        self.op(
            Op::Slice {
                axes: Some(vec![s]),
            },
            vec![x],
        )
    }
    /// Sum of all elements, as a scalar.
    fn sum_all(&mut self, x: ValueId) -> Res<ValueId> {
        self.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: Some(vec![]),
                keep_dims: false,
                noop_with_empty_axes: false,
            },
            vec![x],
        )
    }
}

pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let mut cx = Ctx { imp, r, n };
    match n.p.op_type.as_str() {
        "NegativeLogLikelihoodLoss" => {
            let x = cx.imp.req(n, 0)?;
            Ok(vec![Some(nll(&mut cx, x)?)])
        }
        "SoftmaxCrossEntropyLoss" => {
            let x = cx.imp.req(n, 0)?;
            let lp = cx.op(Op::Softmax { axis: 1, log: true }, vec![x])?;
            let loss = nll(&mut cx, lp)?;
            Ok(vec![Some(loss), Some(lp)])
        }
        "Attention" => attention(&mut cx),
        "RotaryEmbedding" => Ok(vec![Some(rotary(&mut cx)?)]),
        o => Err(n.bad(format!("'{o}' is not a composite op"))),
    }
}

/// `-x[n, target[n, d..], d..]`, weighted and reduced; `x` holds log-probabilities.
fn nll(cx: &mut Ctx, x: ValueId) -> Res<ValueId> {
    let n = cx.n;
    let target = cx.imp.req(n, 1)?;
    let weight = cx.imp.inp(n, 2)?;
    let dtype = cx.imp.ty(x).dtype;
    let xr = cx.imp.ty(x).rank();
    if xr < 2 {
        return Err(n.shape_err(format!("input must have rank >= 2, got {xr}")));
    }
    let target = cx.cast(target, DType::I64)?;
    let tshape = cx.imp.ty(target).shape.clone();
    let ignore = n.attr("ignore_index").map(|a| a.i);
    // Ignored targets may name no class: gather at class 0 and weigh by 0.
    let (index, keep) = match ignore {
        Some(ii) => {
            let c = cx.scalar(DType::I64, ii as f64);
            let is_ii = cx.bin(BinaryOp::Equal, target, c)?;
            let zero = cx.scalar(DType::I64, 0.0);
            let idx = cx.op(Op::Select, vec![is_ii, zero, target])?;
            let keep = cx.un(UnaryOp::Not, is_ii)?;
            (idx, Some(cx.cast(keep, dtype)?))
        }
        None => (target, None),
    };
    let mut ishape = tshape.clone();
    ishape.insert(1, Dim::Known(1));
    let idx = cx.reshape(index, ishape)?;
    let picked = cx.op(Op::GatherElements { axis: 1 }, vec![x, idx])?;
    let picked = cx.reshape(picked, tshape)?;
    let loss = cx.un(UnaryOp::Neg, picked)?;
    let w = match weight {
        Some(wt) => {
            let g = cx.op(Op::Gather { axis: 0 }, vec![wt, index])?;
            match keep {
                Some(k) => Some(cx.bin(BinaryOp::Mul, g, k)?),
                None => Some(g),
            }
        }
        None => keep,
    };
    let loss = match w {
        Some(w) => cx.bin(BinaryOp::Mul, loss, w)?,
        None => loss,
    };
    match n.s("reduction", "mean").as_str() {
        "none" => Ok(loss),
        "sum" => cx.sum_all(loss),
        "mean" => {
            let total = cx.sum_all(loss)?;
            match w {
                Some(w) => {
                    let wsum = cx.sum_all(w)?;
                    cx.bin(BinaryOp::Div, total, wsum)
                }
                None => {
                    let count = cx.imp.ty(loss).num_elements().ok_or_else(|| {
                        n.shape_err("reduction 'mean' needs a static target shape")
                    })?;
                    let c = cx.scalar(dtype, count as f64);
                    cx.bin(BinaryOp::Div, total, c)
                }
            }
        }
        o => Err(n.bad(format!("unknown reduction '{o}'"))),
    }
}

/// `[B, S, H*D]` → `[B, H, S, D]`.
fn split_heads(cx: &mut Ctx, x: ValueId, heads: usize) -> Res<ValueId> {
    let d = cx.dims(x)?;
    if heads == 0 || d[2] % heads != 0 {
        return Err(cx.n.bad(format!(
            "hidden size {} is not a multiple of {heads} heads",
            d[2]
        )));
    }
    let s = [d[0], d[1], heads, d[2] / heads].map(Dim::Known).to_vec();
    let x = cx.reshape(x, s)?;
    cx.transpose(x, vec![0, 2, 1, 3])
}

fn attention(cx: &mut Ctx) -> Outs {
    let n = cx.n;
    let (mut q, mut k, mut v) = (cx.imp.req(n, 0)?, cx.imp.req(n, 1)?, cx.imp.req(n, 2)?);
    let mask = cx.imp.inp(n, 3)?;
    let (past_k, past_v) = (cx.imp.inp(n, 4)?, cx.imp.inp(n, 5)?);
    let nonpad = cx.imp.inp(n, 6)?;
    let dtype = cx.imp.ty(q).dtype;
    let three_d = cx.imp.ty(q).rank() == 3;
    if three_d {
        let qh = n.i("q_num_heads", 0);
        let kvh = n.i("kv_num_heads", 0);
        if qh <= 0 || kvh <= 0 {
            return Err(n.bad("3-D inputs need q_num_heads and kv_num_heads"));
        }
        q = split_heads(cx, q, qh as usize)?;
        k = split_heads(cx, k, kvh as usize)?;
        v = split_heads(cx, v, kvh as usize)?;
    }
    let qd = cx.dims(q)?;
    if qd.len() != 4 || cx.imp.ty(k).rank() != 4 || cx.imp.ty(v).rank() != 4 {
        return Err(n.shape_err("Q, K and V must all be 3-D or all 4-D"));
    }
    let (batch, qh, sq, head) = (qd[0], qd[1], qd[2], qd[3]);
    let scale = match n.attr("scale") {
        Some(a) => a.f as f64,
        None => 1.0 / (head as f64).sqrt(),
    };
    let past_len = match past_k {
        Some(p) => cx.dims(p)?[2],
        None => 0,
    };
    if let Some(p) = past_k {
        k = cx.op(Op::Concat { axis: 2 }, vec![p, k])?;
    }
    if let Some(p) = past_v {
        v = cx.op(Op::Concat { axis: 2 }, vec![p, v])?;
    }
    let (present_k, present_v) = (k, v);
    let kd = cx.dims(k)?;
    let vd = cx.dims(v)?;
    let (kvh, skv) = (kd[1], kd[2]);

    let bias = attention_bias(cx, mask, nonpad, dtype, sq, skv, past_len, batch)?;

    // Grouped-query attention: each KV head serves `qh / kvh` consecutive query heads.
    if qh != kvh {
        if kvh == 0 || qh % kvh != 0 || vd[1] != kvh {
            return Err(n.shape_err(format!(
                "{qh} query heads cannot share {kvh} key/value heads"
            )));
        }
        let reps = qh / kvh;
        k = repeat_heads(cx, k, &kd, reps)?;
        v = repeat_heads(cx, v, &vd, reps)?;
    }
    let sc = cx.scalar(dtype, scale.sqrt());
    let qs = cx.bin(BinaryOp::Mul, q, sc)?;
    let ks = cx.bin(BinaryOp::Mul, k, sc)?;
    let kt = cx.transpose(ks, vec![0, 1, 3, 2])?;
    let mut qk = cx.op(Op::MatMul, vec![qs, kt])?;
    let softcap = n.f("softcap", 0.0);
    if softcap > 0.0 {
        let c = cx.scalar(dtype, softcap as f64);
        let y = cx.bin(BinaryOp::Div, qk, c)?;
        let y = cx.un(UnaryOp::Tanh, y)?;
        qk = cx.bin(BinaryOp::Mul, y, c)?;
    }
    let with_bias = match bias {
        Some(b) => cx.bin(BinaryOp::Add, qk, b)?,
        None => qk,
    };
    let prec = match n.attr("softmax_precision") {
        Some(a) => super::tensor::dtype_of(a.i as i32, &n.name)?,
        None => dtype,
    };
    let s = cx.cast(with_bias, prec)?;
    let s = cx.op(
        Op::Softmax {
            axis: -1,
            log: false,
        },
        vec![s],
    )?;
    let probs = cx.cast(s, dtype)?;
    let mut y = cx.op(Op::MatMul, vec![probs, v])?;
    if three_d {
        y = cx.transpose(y, vec![0, 2, 1, 3])?;
        let s = [batch, sq, qh * vd[3]].map(Dim::Known).to_vec();
        y = cx.reshape(y, s)?;
    }
    // onnx.reference returns the (softcapped) product for modes 0 and 1.
    let qk_out = match n.i("qk_matmul_output_mode", 0) {
        0 | 1 => qk,
        2 => with_bias,
        3 => probs,
        m => return Err(n.bad(format!("qk_matmul_output_mode {m} is not 0..3"))),
    };
    Ok(vec![
        Some(y),
        Some(present_k),
        Some(present_v),
        Some(qk_out),
    ])
}

/// `[B, H, S, D]` → `[B, H*reps, S, D]`, each head repeated `reps` times in place.
fn repeat_heads(cx: &mut Ctx, x: ValueId, d: &[usize], reps: usize) -> Res<ValueId> {
    let s5 = [d[0], d[1], 1, d[2], d[3]].map(Dim::Known).to_vec();
    let x = cx.reshape(x, s5)?;
    let shape = [d[0], d[1], reps, d[2], d[3]].map(|v| v as i64).to_vec();
    let x = cx.op(Op::Expand { shape: Some(shape) }, vec![x])?;
    let s4 = [d[0], d[1] * reps, d[2], d[3]].map(Dim::Known).to_vec();
    cx.reshape(x, s4)
}

/// The additive bias on the scores: the mask (bool masks become 0 / -inf,
/// short masks are padded with -inf), the causal triangle (offset by the past
/// length) and the key padding given by `nonpad_kv_seqlen`.
#[allow(clippy::too_many_arguments)]
fn attention_bias(
    cx: &mut Ctx,
    mask: Option<ValueId>,
    nonpad: Option<ValueId>,
    dtype: DType,
    sq: usize,
    skv: usize,
    past_len: usize,
    batch: usize,
) -> Res<Option<ValueId>> {
    let n = cx.n;
    let mut bias = None;
    if let Some(m) = mask {
        let m = if cx.imp.ty(m).dtype == DType::Bool {
            let zero = cx.scalar(dtype, 0.0);
            let ninf = cx.scalar(dtype, f64::NEG_INFINITY);
            cx.op(Op::Select, vec![m, zero, ninf])?
        } else {
            cx.cast(m, dtype)?
        };
        let md = cx.dims(m)?;
        let last = md.last().copied().unwrap_or(1);
        let m = if last < skv && !md.is_empty() {
            let r = md.len();
            let mut pads = vec![0i64; 2 * r];
            pads[2 * r - 1] = (skv - last) as i64;
            cx.op(
                Op::Pad {
                    mode: PadMode::Constant,
                    pads: Some(pads),
                    value: f64::NEG_INFINITY,
                },
                vec![m],
            )?
        } else {
            m
        };
        bias = Some(m);
    }
    if n.i("is_causal", 0) != 0 {
        let vals = (0..sq).flat_map(|i| {
            (0..skv).map(move |j| {
                if j > i + past_len {
                    f64::NEG_INFINITY
                } else {
                    0.0
                }
            })
        });
        let t = Tensor::new(vec![sq, skv], Storage::from_f64s(dtype, vals))
            .ok_or_else(|| n.shape_err("causal mask shape"))?;
        let c = cx.imp.add_const("causal", t);
        bias = Some(match bias {
            Some(b) => cx.bin(BinaryOp::Add, b, c)?,
            None => c,
        });
    }
    if let Some(len) = nonpad {
        let len = cx.cast(len, DType::I64)?;
        let len = cx.reshape(len, vec![Dim::Known(batch), Dim::Known(1)])?;
        let ar = cx.imp.add_const(
            "arange",
            Tensor::from_i64(vec![skv], (0..skv as i64).collect()),
        );
        let valid = cx.bin(BinaryOp::Less, ar, len)?;
        let valid = cx.reshape(valid, [batch, 1, 1, skv].map(Dim::Known).to_vec())?;
        let zero = cx.scalar(dtype, 0.0);
        let ninf = cx.scalar(dtype, f64::NEG_INFINITY);
        let pad = cx.op(Op::Select, vec![valid, zero, ninf])?;
        bias = Some(match bias {
            Some(b) => cx.bin(BinaryOp::Add, b, pad)?,
            None => pad,
        });
    }
    Ok(bias)
}

/// Rotates pairs of channels (halves, or even/odd when interleaved) of the
/// first `rotary_embedding_dim` channels of each head by the cached angles.
fn rotary(cx: &mut Ctx) -> Res<ValueId> {
    let n = cx.n;
    let x = cx.imp.req(n, 0)?;
    let (cos, sin) = (cx.imp.req(n, 1)?, cx.imp.req(n, 2)?);
    let pos = cx.imp.inp(n, 3)?;
    let xd = cx.dims(x)?;
    // Work in [B, S, H, D].
    let x4 = match xd.len() {
        4 => cx.transpose(x, vec![0, 2, 1, 3])?,
        3 => {
            let nh = n.i("num_heads", 0);
            if nh <= 0 || xd[2] % nh as usize != 0 {
                return Err(n.bad(format!(
                    "num_heads {nh} does not divide the hidden size {}",
                    xd[2]
                )));
            }
            let nh = nh as usize;
            cx.reshape(x, [xd[0], xd[1], nh, xd[2] / nh].map(Dim::Known).to_vec())?
        }
        r => return Err(n.shape_err(format!("input must be 3-D or 4-D, got rank {r}"))),
    };
    let d4 = cx.dims(x4)?;
    let (b, s, h, d) = (d4[0], d4[1], d4[2], d4[3]);
    let rd = match n.i("rotary_embedding_dim", 0) {
        0 => d,
        r if r > 0 && r as usize <= d && r % 2 == 0 => r as usize,
        r => return Err(n.bad(format!("rotary_embedding_dim {r} is not even and <= {d}"))),
    };
    let half = rd / 2;
    let (cos, sin) = match pos {
        Some(p) => (
            cx.op(Op::Gather { axis: 0 }, vec![cos, p])?,
            cx.op(Op::Gather { axis: 0 }, vec![sin, p])?,
        ),
        None => (cos, sin),
    };
    let cshape = [b, s, 1, half].map(Dim::Known).to_vec();
    let cos = cx.reshape(cos, cshape.clone())?;
    let sin = cx.reshape(sin, cshape)?;
    let interleaved = n.i("interleaved", 0) != 0;
    let (x1, x2) = if interleaved {
        (cx.last(x4, 0, rd, 2)?, cx.last(x4, 1, rd, 2)?)
    } else {
        (cx.last(x4, 0, half, 1)?, cx.last(x4, half, rd, 1)?)
    };
    let (a, c) = (
        cx.bin(BinaryOp::Mul, cos, x1)?,
        cx.bin(BinaryOp::Mul, sin, x2)?,
    );
    let real = cx.bin(BinaryOp::Sub, a, c)?;
    let (a, c) = (
        cx.bin(BinaryOp::Mul, sin, x1)?,
        cx.bin(BinaryOp::Mul, cos, x2)?,
    );
    let imag = cx.bin(BinaryOp::Add, a, c)?;
    let rot = if interleaved {
        let s5 = [b, s, h, half, 1].map(Dim::Known).to_vec();
        let re = cx.reshape(real, s5.clone())?;
        let im = cx.reshape(imag, s5)?;
        let y = cx.op(Op::Concat { axis: -1 }, vec![re, im])?;
        cx.reshape(y, [b, s, h, rd].map(Dim::Known).to_vec())?
    } else {
        cx.op(Op::Concat { axis: -1 }, vec![real, imag])?
    };
    let y = if rd < d {
        let rest = cx.last(x4, rd, d, 1)?;
        cx.op(Op::Concat { axis: -1 }, vec![rot, rest])?
    } else {
        rot
    };
    if xd.len() == 3 {
        cx.reshape(y, xd.into_iter().map(Dim::Known).collect())
    } else {
        cx.transpose(y, vec![0, 2, 1, 3])
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_onnx_bytes;
    use crate::exec::run_model;
    use crate::frontend::FrontendError;
    use kiln_ir::Tensor;
    use onnx_protobuf::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
        ValueInfoProto,
    };
    use protobuf::Message;

    fn vinfo(name: &str, dims: &[i64]) -> ValueInfoProto {
        use onnx_protobuf::tensor_shape_proto::{dimension::Value as DV, Dimension};
        use onnx_protobuf::type_proto::{Tensor as TT, Value as TV};
        let mut shape = onnx_protobuf::TensorShapeProto::new();
        for &d in dims {
            let mut dim = Dimension::new();
            dim.value = Some(DV::DimValue(d));
            shape.dim.push(dim);
        }
        let mut tt = TT::new();
        tt.elem_type = 1;
        tt.shape = protobuf::MessageField::some(shape);
        let mut ty = onnx_protobuf::TypeProto::new();
        ty.value = Some(TV::TensorType(tt));
        let mut v = ValueInfoProto::new();
        v.name = name.into();
        v.type_ = protobuf::MessageField::some(ty);
        v
    }

    /// One node over float input `x` (and initializers), opset 23.
    fn model(node: NodeProto, x: &[i64], inits: Vec<TensorProto>) -> Vec<u8> {
        let mut g = GraphProto::new();
        g.output.push(vinfo(&node.output[0], &[]));
        g.node.push(node);
        g.initializer = inits;
        g.input.push(vinfo("x", x));
        let mut m = ModelProto::new();
        m.ir_version = 10;
        let mut o = OperatorSetIdProto::new();
        o.version = 23;
        m.opset_import.push(o);
        m.graph = protobuf::MessageField::some(g);
        m.write_to_bytes().unwrap()
    }

    fn node(op: &str, ins: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = "n".into();
        n.input = ins.iter().map(|s| s.to_string()).collect();
        n.output = vec!["y".into()];
        n.attribute = attrs;
        n
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.i = v;
        a.type_ = onnx_protobuf::attribute_proto::AttributeType::INT.into();
        a
    }

    fn str_attr(name: &str, v: &str) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.s = v.as_bytes().to_vec();
        a.type_ = onnx_protobuf::attribute_proto::AttributeType::STRING.into();
        a
    }

    fn targets(v: &[i64]) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = "t".into();
        t.data_type = 7;
        t.dims = vec![v.len() as i64];
        t.int64_data = v.to_vec();
        t
    }

    /// An ignored target outside the class range must neither be gathered nor counted.
    #[test]
    fn nll_ignore_index_out_of_range() {
        let x = Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for (red, want) in [("none", vec![-3.0, 0.0]), ("mean", vec![-3.0])] {
            let n = node(
                "NegativeLogLikelihoodLoss",
                &["x", "t"],
                vec![int_attr("ignore_index", -7), str_attr("reduction", red)],
            );
            let m = load_onnx_bytes(&model(n, &[2, 3], vec![targets(&[2, -7])]), None).unwrap();
            let y = run_model(&m, vec![x.clone()]).unwrap();
            assert_eq!(y[0].to_f64_vec(), want, "{red}");
        }
    }

    #[test]
    fn attention_3d_needs_head_counts() {
        let n = node("Attention", &["x", "x", "x"], vec![]);
        let e = load_onnx_bytes(&model(n, &[1, 2, 4], vec![]), None).unwrap_err();
        assert!(
            matches!(&e, FrontendError::BadAttribute { node, .. } if node == "n"),
            "{e}"
        );
    }
}
