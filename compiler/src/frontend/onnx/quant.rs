//! ONNX quantisation ops, expressed as small graphs of kiln ops so that their
//! meaning comes from the existing elementwise, MatMul and Conv lowerings.
//! The decompositions follow `onnx.reference`: integer products are exact in
//! i32, requantisation computes in f64 (numpy promotes `i32 * f32` to f64) and
//! rounds half to even before clipping to the target type's range.

use super::emit::Emit as Ctx;
use super::{Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::graph::{BinaryOp, ReduceOp, UnaryOp};
use kiln_ir::{DType, Dim, Op, Region, Tensor, ValueId};

type Res<T> = Result<T, FrontendError>;
type Outs = Res<Vec<Option<ValueId>>>;

/// The ONNX ops this module converts (for the frontend's support check).
pub(crate) const OPS: &[&str] = &[
    "ConvInteger",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
];

impl Ctx<'_, '_> {
    fn reshape_dims(&mut self, x: ValueId, shape: Vec<usize>) -> Res<ValueId> {
        let shape = shape.into_iter().map(Dim::Known).collect();
        self.op_opt(Op::Reshape { shape: Some(shape) }, vec![Some(x)])
    }
    /// `min(max(x, lo), hi)` with constants of `x`'s dtype.
    fn clip(&mut self, x: ValueId, lo: f64, hi: f64) -> Res<ValueId> {
        let dt = self.imp.ty(x).dtype;
        let (l, h) = (self.imp.scalar(dt, lo), self.imp.scalar(dt, hi));
        let x = self.bin(BinaryOp::Max, x, l)?;
        self.bin(BinaryOp::Min, x, h)
    }
    /// `x - zp` in i32 (`x` as is when there is no zero point).
    fn sub_zp_i32(&mut self, x: ValueId, zp: Option<ValueId>) -> Res<ValueId> {
        let x = self.cast(x, DType::I32)?;
        match zp {
            Some(z) => {
                let z = self.cast(z, DType::I32)?;
                self.bin(BinaryOp::Sub, x, z)
            }
            None => Ok(x),
        }
    }
    /// Reshapes a scale or zero point to broadcast against `x` (of `xdims`)
    /// along `axis`, repeating each entry `block` times for blocked quantisation.
    fn along(&mut self, v: ValueId, xdims: &[usize], axis: i64, block: i64) -> Res<ValueId> {
        let vd = self.dims(v)?;
        let n = self.n;
        let count: usize = vd.iter().product();
        if vd.is_empty() {
            return Ok(v);
        }
        if count == 1 {
            return self.reshape_dims(v, vec![]);
        }
        let r = xdims.len() as i64;
        let ax = if axis < 0 { axis + r } else { axis };
        if !(0..r).contains(&ax) {
            return Err(n.bad(format!("axis {axis} is out of range for rank {r}")));
        }
        let ax = ax as usize;
        if block <= 0 {
            if vd.len() != 1 || vd[0] != xdims[ax] {
                return Err(n.shape_err(format!(
                    "per-axis parameter of shape {vd:?} does not match axis {ax} of {xdims:?}"
                )));
            }
            let mut s = vec![1; xdims.len()];
            s[ax] = count;
            return self.reshape_dims(v, s);
        }
        let b = block as usize;
        if vd.len() != xdims.len() || vd[ax] * b < xdims[ax] {
            return Err(n.shape_err(format!(
                "blocked parameter of shape {vd:?} does not match {xdims:?} with block {b}"
            )));
        }
        let idx: Vec<i64> = (0..xdims[ax]).map(|i| (i / b) as i64).collect();
        let idx = self
            .imp
            .add_const("block_index", Tensor::from_i64(vec![idx.len()], idx));
        self.op_opt(Op::Gather { axis: ax as i64 }, vec![Some(v), Some(idx)])
    }
}

pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let mut cx = Ctx { imp, r, n };
    match n.p.op_type.as_str() {
        "DequantizeLinear" => Ok(vec![Some(dequantize(&mut cx)?)]),
        "QuantizeLinear" => Ok(vec![Some(quantize(&mut cx)?)]),
        "DynamicQuantizeLinear" => dynamic_quantize(&mut cx),
        "MatMulInteger" => {
            let (a, b) = (cx.imp.req(n, 0)?, cx.imp.req(n, 1)?);
            let (za, zb) = (cx.imp.inp(n, 2)?, cx.imp.inp(n, 3)?);
            let a = cx.sub_zp_i32(a, za)?;
            let b = cx.sub_zp_i32(b, zb)?;
            Ok(vec![Some(cx.op_opt(Op::MatMul, vec![Some(a), Some(b)])?)])
        }
        "ConvInteger" => {
            let (x, w) = (cx.imp.req(n, 0)?, cx.imp.req(n, 1)?);
            let (zx, zw) = (cx.imp.inp(n, 2)?, cx.imp.inp(n, 3)?);
            let y = int_conv(&mut cx, x, zx, w, zw, None)?;
            Ok(vec![Some(y)])
        }
        "QLinearMatMul" => Ok(vec![Some(qlinear_matmul(&mut cx)?)]),
        "QLinearConv" => Ok(vec![Some(qlinear_conv(&mut cx)?)]),
        o => Err(n.bad(format!("'{o}' is not a quantisation op"))),
    }
}

/// The representable range of an integer quantised type.
fn int_range(n: &N, dt: DType) -> Res<(f64, f64)> {
    Ok(match dt {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        o => return Err(n.bad(format!("quantised type {o:?} is not supported"))),
    })
}

/// `(Cast(x, f32) - zp) * scale`, in the scale's dtype (or `output_dtype`).
fn dequantize(cx: &mut Ctx) -> Res<ValueId> {
    let n = cx.n;
    let (x, scale, zp) = (cx.imp.req(n, 0)?, cx.imp.req(n, 1)?, cx.imp.inp(n, 2)?);
    let xd = cx.dims(x)?;
    let (axis, block) = (n.i("axis", 1), n.i("block_size", 0));
    let out = match n.attr("output_dtype").map(|a| a.i as i32) {
        Some(c) if c != 0 => super::tensor::dtype_of(c, &n.name)?,
        _ => cx.imp.ty(scale).dtype,
    };
    let mut dx = cx.cast(x, DType::F32)?;
    if let Some(z) = zp {
        let z = cx.along(z, &xd, axis, block)?;
        let z = cx.cast(z, DType::F32)?;
        dx = cx.bin(BinaryOp::Sub, dx, z)?;
    }
    let s = cx.along(scale, &xd, axis, block)?;
    let s = cx.cast(s, DType::F32)?;
    let y = cx.bin(BinaryOp::Mul, dx, s)?;
    cx.cast(y, out)
}

/// `saturate(Round(x / scale) + zp)` in i32, then cast to the quantised type.
fn quantize(cx: &mut Ctx) -> Res<ValueId> {
    let n = cx.n;
    let (x, scale, zp) = (cx.imp.req(n, 0)?, cx.imp.req(n, 1)?, cx.imp.inp(n, 2)?);
    let xd = cx.dims(x)?;
    let (axis, block) = (n.i("axis", 1), n.i("block_size", 0));
    let attr_dt = match n.attr("output_dtype").map(|a| a.i as i32) {
        Some(c) if c != 0 => Some(super::tensor::dtype_of(c, &n.name)?),
        _ => None,
    };
    let target = match (zp, attr_dt) {
        (Some(z), _) => cx.imp.ty(z).dtype,
        (None, Some(d)) => d,
        (None, None) => DType::U8,
    };
    let (lo, hi) = int_range(n, target)?;
    let xt = cx.imp.ty(x).dtype;
    let st = cx.imp.ty(scale).dtype;
    let work = match n.attr("precision").map(|a| a.i as i32) {
        Some(c) if c != 0 => super::tensor::dtype_of(c, &n.name)?,
        _ if xt == st => xt,
        _ if xt == DType::F64 || st == DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let s = cx.along(scale, &xd, axis, block)?;
    let s = cx.cast(s, work)?;
    let xw = cx.cast(x, work)?;
    let q = cx.bin(BinaryOp::Div, xw, s)?;
    let q = cx.un(UnaryOp::Round, q)?;
    let mut q = cx.cast(q, DType::I32)?;
    if let Some(z) = zp {
        let z = cx.along(z, &xd, axis, block)?;
        let z = cx.cast(z, DType::I32)?;
        q = cx.bin(BinaryOp::Add, q, z)?;
    }
    let q = cx.clip(q, lo, hi)?;
    cx.cast(q, target)
}

fn reduce_all(cx: &mut Ctx, op: ReduceOp, x: ValueId) -> Res<ValueId> {
    cx.op_opt(
        Op::Reduce {
            op,
            axes: Some(vec![]),
            keep_dims: false,
            noop_with_empty_axes: false,
        },
        vec![Some(x)],
    )
}

/// Scale and zero point from the range of `x` (widened to include 0), then
/// quantisation to uint8.
fn dynamic_quantize(cx: &mut Ctx) -> Outs {
    let n = cx.n;
    let x = cx.imp.req(n, 0)?;
    let xt = cx.imp.ty(x).dtype;
    let xf = cx.cast(x, DType::F32)?;
    let zero = cx.imp.scalar(DType::F32, 0.0);
    let mx = reduce_all(cx, ReduceOp::Max, xf)?;
    let mx = cx.bin(BinaryOp::Max, mx, zero)?;
    let mn = reduce_all(cx, ReduceOp::Min, xf)?;
    let mn = cx.bin(BinaryOp::Min, mn, zero)?;
    let span = cx.bin(BinaryOp::Sub, mx, mn)?;
    let same = cx.bin(BinaryOp::Equal, mx, mn)?;
    let one = cx.imp.scalar(DType::F32, 1.0);
    let span = cx.op_opt(Op::Select, vec![Some(same), Some(one), Some(span)])?;
    let c255 = cx.imp.scalar(DType::F32, 255.0);
    let scale = cx.bin(BinaryOp::Div, span, c255)?;
    let izp = cx.bin(BinaryOp::Div, mn, scale)?;
    let izp = cx.bin(BinaryOp::Sub, zero, izp)?;
    let izp = cx.clip(izp, 0.0, 255.0)?;
    let zpi = cx.un(UnaryOp::Round, izp)?;
    let q = cx.bin(BinaryOp::Div, xf, scale)?;
    let q = cx.un(UnaryOp::Round, q)?;
    let q = cx.bin(BinaryOp::Add, q, zpi)?;
    let q = cx.clip(q, 0.0, 255.0)?;
    let y = cx.cast(q, DType::U8)?;
    let scale = cx.cast(scale, xt)?;
    let zp = cx.cast(zpi, DType::U8)?;
    Ok(vec![Some(y), Some(scale), Some(zp)])
}

/// Integer convolution of zero-point-corrected inputs, in i32; `w_zp` may be
/// per output channel.
fn int_conv(
    cx: &mut Ctx,
    x: ValueId,
    x_zp: Option<ValueId>,
    w: ValueId,
    w_zp: Option<ValueId>,
    bias: Option<ValueId>,
) -> Res<ValueId> {
    let n = cx.n;
    let wd = cx.dims(w)?;
    let x = cx.sub_zp_i32(x, x_zp)?;
    let w_zp = match w_zp {
        Some(z) => {
            let zd = cx.dims(z)?;
            if zd.len() == 1 && zd[0] > 1 {
                let mut s = vec![1; wd.len()];
                s[0] = zd[0];
                Some(cx.reshape_dims(z, s)?)
            } else {
                Some(z)
            }
        }
        None => None,
    };
    let w = cx.sub_zp_i32(w, w_zp)?;
    let bias = match bias {
        Some(b) => Some(cx.cast(b, DType::I32)?),
        None => None,
    };
    let conv = super::nn::conv_op(cx.imp, n, x, w)?;
    cx.op_opt(conv, vec![Some(x), Some(w), bias])
}

/// `saturate(Round(acc * multiplier + y_zp))` in f64, cast to the output type.
fn requantize(
    cx: &mut Ctx,
    acc: ValueId,
    mult: ValueId,
    y_zp: Option<ValueId>,
    out: DType,
) -> Res<ValueId> {
    let (lo, hi) = int_range(cx.n, out)?;
    let acc = cx.cast(acc, DType::F64)?;
    let mult = cx.cast(mult, DType::F64)?;
    let mut d = cx.bin(BinaryOp::Mul, acc, mult)?;
    if let Some(z) = y_zp {
        let z = cx.cast(z, DType::F64)?;
        d = cx.bin(BinaryOp::Add, d, z)?;
    }
    let d = cx.clip(d, lo, hi)?;
    let d = cx.un(UnaryOp::Round, d)?;
    cx.cast(d, out)
}

/// `a_scale * b_scale / y_scale` in the scales' dtype.
fn multiplier(cx: &mut Ctx, a: ValueId, b: ValueId, y: ValueId) -> Res<ValueId> {
    let ab = cx.bin(BinaryOp::Mul, a, b)?;
    cx.bin(BinaryOp::Div, ab, y)
}

fn qlinear_matmul(cx: &mut Ctx) -> Res<ValueId> {
    let n = cx.n;
    let a = cx.imp.req(n, 0)?;
    let (a_s, a_zp) = (cx.imp.req(n, 1)?, cx.imp.inp(n, 2)?);
    let b = cx.imp.req(n, 3)?;
    let (b_s, b_zp) = (cx.imp.req(n, 4)?, cx.imp.inp(n, 5)?);
    let (y_s, y_zp) = (cx.imp.req(n, 6)?, cx.imp.inp(n, 7)?);
    let out = match y_zp {
        Some(z) => cx.imp.ty(z).dtype,
        None => cx.imp.ty(a).dtype,
    };
    let ai = cx.sub_zp_i32(a, a_zp)?;
    let bi = cx.sub_zp_i32(b, b_zp)?;
    let c = cx.op_opt(Op::MatMul, vec![Some(ai), Some(bi)])?;
    let m = multiplier(cx, a_s, b_s, y_s)?;
    requantize(cx, c, m, y_zp, out)
}

fn qlinear_conv(cx: &mut Ctx) -> Res<ValueId> {
    let n = cx.n;
    let x = cx.imp.req(n, 0)?;
    let (x_s, x_zp) = (cx.imp.req(n, 1)?, cx.imp.inp(n, 2)?);
    let w = cx.imp.req(n, 3)?;
    let (w_s, w_zp) = (cx.imp.req(n, 4)?, cx.imp.inp(n, 5)?);
    let (y_s, y_zp) = (cx.imp.req(n, 6)?, cx.imp.inp(n, 7)?);
    let bias = cx.imp.inp(n, 8)?;
    let out = match y_zp {
        Some(z) => cx.imp.ty(z).dtype,
        None => cx.imp.ty(x).dtype,
    };
    let rank = cx.imp.ty(x).rank();
    let acc = int_conv(cx, x, x_zp, w, w_zp, bias)?;
    // A per-channel weight scale applies along the output's channel axis.
    let wsd = cx.dims(w_s)?;
    let w_s = if wsd.len() == 1 && wsd[0] > 1 {
        let mut s = vec![1; rank];
        s[1] = wsd[0];
        cx.reshape_dims(w_s, s)?
    } else {
        w_s
    };
    let m = multiplier(cx, x_s, w_s, y_s)?;
    requantize(cx, acc, m, y_zp, out)
}
