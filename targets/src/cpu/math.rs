//! Elementwise float math emitted inline as Cranelift IR.
//!
//! Cranelift has no exp/log/trig instructions and the generated code must not
//! depend on a libm, so every function is a branch-free sequence of
//! arithmetic, comparisons, selects and bit tricks. One implementation serves
//! all four types: `f64`/`f64x2` run it in double precision with full-length
//! polynomials; `f32`/`f32x4` widen to double, run it with polynomials
//! truncated to what single precision needs, and round once at the end. That
//! keeps f32 results within about 1 ulp of the correctly rounded value over
//! the whole range (including arguments of sin/cos up to `f32::MAX`, whose
//! reduction is exact), and makes the scalar and vector forms bit-identical
//! because each lane executes the same operations.
//!
//! Known limit: `f64` sin/cos/tan use a three-part Cody–Waite reduction,
//! accurate for |x| < 2^20; beyond that the result stays in [-1, 1] but loses
//! accuracy. `f64` pow is `exp(y·log|x|)` in double precision, so its error
//! grows with |y·ln x| (about 1 ulp per unit).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I32, I32X4, I64, I64X2, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::kernel::UnOp;
use tables::{ERF0, ERF32_OFF, ERF32_ONE, ERF32_P, ERF32_SPLIT, ERF_C};

mod native;
mod tables;
mod trig;

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// ln 2 split so that `k * LN2_HI` is exact for |k| < 2^21.
const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
const PIO2: f64 = std::f64::consts::FRAC_PI_2;

/// Emits `op(x)` inline; None when `op` is not a float function this module
/// handles or `ty` is not `F32`, `F64`, `F32X4` or `F64X2`.
pub(crate) fn emit_unary(b: &mut FunctionBuilder, op: UnOp, ty: Type, x: Value) -> Option<Value> {
    if ![F32, F64, F32X4, F64X2].contains(&ty) {
        return None;
    }
    let single = ty.lane_type() == F32;
    match op {
        // The hardware square root is correctly rounded in every precision.
        UnOp::Sqrt => Some(b.ins().sqrt(x)),
        // The common activations stay in f32 lanes: twice the lanes of the
        // widened path and shorter polynomials, still within 2 ulp.
        UnOp::Exp if single => Some(native_f32(b, ty, x, &|m, v| m.exp_f32(v))),
        UnOp::Log if single => Some(native_f32(b, ty, x, &|m, v| m.log_f32(v))),
        UnOp::Tanh if single => Some(native_f32(b, ty, x, &|m, v| m.tanh_f32(v))),
        // GELU's erf too, with per-lane coefficient tables (within 1 ulp).
        UnOp::Erf if single => Some(erf_f32(b, ty, x)),
        UnOp::Exp
        | UnOp::Log
        | UnOp::Sin
        | UnOp::Cos
        | UnOp::Tan
        | UnOp::Asin
        | UnOp::Acos
        | UnOp::Atan
        | UnOp::Sinh
        | UnOp::Cosh
        | UnOp::Asinh
        | UnOp::Acosh
        | UnOp::Atanh
        | UnOp::Tanh
        | UnOp::Erf => lift(b, ty, &[x], &|m, a| m.unary(op, a[0])),
        _ => None,
    }
}

/// Emits the logistic function 1/(1+e^-x); None for a type other than
/// `F32`, `F64`, `F32X4`, `F64X2`.
// Reserved for fused Sigmoid/SiLU activations, which the kernel IR does not
// produce yet.
#[allow(dead_code)]
pub(crate) fn emit_sigmoid(b: &mut FunctionBuilder, ty: Type, x: Value) -> Option<Value> {
    if ty.lane_type() == F32 && (ty == F32 || ty == F32X4) {
        return Some(native_f32(b, ty, x, &|m, v| m.sigmoid_f32(v)));
    }
    lift(b, ty, &[x], &|m, a| m.sigmoid(a[0]))
}

/// Emits `x^y` with C99 `pow` special cases (pow(x, ±0) = 1, pow(1, y) = 1,
/// negative bases with integer exponents, NaN for negative bases with
/// non-integer exponents, infinities and signed zeros); None for a type
/// other than `F32`, `F64`, `F32X4`, `F64X2`.
pub(crate) fn emit_pow(b: &mut FunctionBuilder, ty: Type, x: Value, y: Value) -> Option<Value> {
    lift(b, ty, &[x, y], &|m, a| m.pow(a[0], a[1]))
}

/// Runs `f` in double precision: directly for `F64`/`F64X2`, by widening
/// (and splitting `F32X4` into two `F64X2` halves) for single precision.
fn lift(
    b: &mut FunctionBuilder,
    ty: Type,
    args: &[Value],
    f: &dyn Fn(&mut M, &[Value]) -> Value,
) -> Option<Value> {
    // One NaN encoding, so scalar and vector forms agree bit for bit
    // whatever NaN the min/max/select lowering happened to produce.
    let f = |m: &mut M, a: &[Value]| {
        let r = f(m, a);
        let nan = m.is_nan(r);
        m.selc(nan, f64::NAN, r)
    };
    match ty {
        F64 | F64X2 => Some(f(&mut M::new(b, ty, false), args)),
        F32 => {
            let wide: Vec<Value> = args.iter().map(|&a| b.ins().fpromote(F64, a)).collect();
            let r = f(&mut M::new(b, F64, true), &wide);
            Some(b.ins().fdemote(F32, r))
        }
        F32X4 => {
            let lanes = lane_flags();
            let hi_mask: Vec<u8> = (8..16).chain(0..8).collect();
            let hi_mask = b.func.dfg.immediates.push(ConstantData::from(hi_mask));
            let mut lo = Vec::new();
            let mut hi = Vec::new();
            for &a in args {
                lo.push(b.ins().fvpromote_low(a));
                let bytes = b.ins().bitcast(I8X16, lanes, a);
                let swapped = b.ins().shuffle(bytes, bytes, hi_mask);
                let swapped = b.ins().bitcast(F32X4, lanes, swapped);
                hi.push(b.ins().fvpromote_low(swapped));
            }
            let r_lo = f(&mut M::new(b, F64X2, true), &lo);
            let r_hi = f(&mut M::new(b, F64X2, true), &hi);
            let n_lo = b.ins().fvdemote(r_lo);
            let n_hi = b.ins().fvdemote(r_hi);
            let n_lo = b.ins().bitcast(I8X16, lanes, n_lo);
            let n_hi = b.ins().bitcast(I8X16, lanes, n_hi);
            let join: Vec<u8> = (0..8).chain(16..24).collect();
            let join = b.func.dfg.immediates.push(ConstantData::from(join));
            let r = b.ins().shuffle(n_lo, n_hi, join);
            Some(b.ins().bitcast(F32X4, lanes, r))
        }
        _ => None,
    }
}

/// Runs `f` directly on `F32`/`F32X4` lanes.
fn native_f32(
    b: &mut FunctionBuilder,
    ty: Type,
    x: Value,
    f: &dyn Fn(&mut M, Value) -> Value,
) -> Value {
    let mut m = M::new(b, ty, true);
    let r = f(&mut m, x);
    let nan = m.is_nan(r);
    m.selc(nan, f64::NAN, r)
}

/// Single-precision erf in f32x4 lanes. The scalar form runs the vector
/// code on a splat and takes lane 0: its per-lane table lookups have no
/// scalar counterpart, and this keeps both forms bit-identical.
fn erf_f32(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    if ty == F32X4 {
        return native_f32(b, ty, x, &|m, v| m.erf_f32(v));
    }
    let v = b.ins().splat(F32X4, x);
    let r = native_f32(b, F32X4, v, &|m, v| m.erf_f32(v));
    b.ins().extractlane(r, 0)
}

/// Bitcasts that change the lane count must name a byte order.
fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

#[derive(Clone, Copy, PartialEq)]
enum Trig {
    Sin,
    Cos,
    Tan,
}

/// Emission context: `ty` is `F64` or `F64X2`; `single` truncates the
/// polynomials to the length an f32 result needs.
struct M<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    ty: Type,
    single: bool,
}

/// A comparison result: `I8` for scalars, an `I64X2` lane mask for vectors.
type Mask = Value;

impl<'a, 'b> M<'a, 'b> {
    fn new(b: &'a mut FunctionBuilder<'b>, ty: Type, single: bool) -> Self {
        M { b, ty, single }
    }

    /// Dispatches one of the ops `emit_unary` accepts.
    fn unary(&mut self, op: UnOp, x: Value) -> Value {
        match op {
            UnOp::Exp => self.exp(x),
            UnOp::Log => self.log(x),
            UnOp::Sin => self.sin_cos_tan(x, Trig::Sin),
            UnOp::Cos => self.sin_cos_tan(x, Trig::Cos),
            UnOp::Tan => self.sin_cos_tan(x, Trig::Tan),
            UnOp::Asin => self.asin(x),
            UnOp::Acos => self.acos(x),
            UnOp::Atan => self.atan(x),
            UnOp::Sinh => self.sinh(x),
            UnOp::Cosh => self.cosh(x),
            UnOp::Asinh => self.asinh(x),
            UnOp::Acosh => self.acosh(x),
            UnOp::Atanh => self.atanh(x),
            UnOp::Tanh => self.tanh(x),
            UnOp::Erf => self.erf(x),
            // `emit_unary` only passes the ops above; sqrt is native.
            _ => self.sqrt(x),
        }
    }

    fn vector(&self) -> bool {
        self.ty.is_vector()
    }

    /// Native single precision (exp, tanh, sigmoid) rather than widened.
    fn f32_lanes(&self) -> bool {
        self.ty.lane_type() == F32
    }

    fn ity(&self) -> Type {
        match (self.f32_lanes(), self.vector()) {
            (false, false) => I64,
            (false, true) => I64X2,
            (true, false) => I32,
            (true, true) => I32X4,
        }
    }

    fn c(&mut self, v: f64) -> Value {
        let s = if self.f32_lanes() {
            self.b.ins().f32const(v as f32)
        } else {
            self.b.ins().f64const(v)
        };
        if self.vector() {
            self.b.ins().splat(self.ty, s)
        } else {
            s
        }
    }

    fn ci(&mut self, v: i64) -> Value {
        let ity = self.ity();
        let s = self.b.ins().iconst(ity.lane_type(), v);
        if self.vector() {
            self.b.ins().splat(ity, s)
        } else {
            s
        }
    }

    fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    fn addc(&mut self, a: Value, k: f64) -> Value {
        let k = self.c(k);
        self.add(a, k)
    }
    fn mulc(&mut self, a: Value, k: f64) -> Value {
        let k = self.c(k);
        self.mul(a, k)
    }
    /// `k - a`.
    fn rsubc(&mut self, k: f64, a: Value) -> Value {
        let k = self.c(k);
        self.sub(k, a)
    }
    fn abs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }
    fn neg(&mut self, a: Value) -> Value {
        self.b.ins().fneg(a)
    }
    fn sqrt(&mut self, a: Value) -> Value {
        self.b.ins().sqrt(a)
    }
    fn floor(&mut self, a: Value) -> Value {
        self.b.ins().floor(a)
    }
    fn nearest(&mut self, a: Value) -> Value {
        self.b.ins().nearest(a)
    }
    /// Clamps to [lo, hi]; NaN stays NaN. Compare-and-select is cheaper
    /// than fmin/fmax, whose NaN rules cost extra instructions on x86.
    fn clamp(&mut self, a: Value, lo: f64, hi: f64) -> Value {
        let over = self.cmpc(FloatCC::GreaterThan, a, hi);
        let a = self.selc(over, hi, a);
        let under = self.cmpc(FloatCC::LessThan, a, lo);
        self.selc(under, lo, a)
    }

    fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Mask {
        self.b.ins().fcmp(cc, a, b)
    }
    fn cmpc(&mut self, cc: FloatCC, a: Value, k: f64) -> Mask {
        let k = self.c(k);
        self.cmp(cc, a, k)
    }
    fn is_nan(&mut self, a: Value) -> Mask {
        self.cmp(FloatCC::Unordered, a, a)
    }
    fn or(&mut self, a: Mask, b: Mask) -> Mask {
        self.b.ins().bor(a, b)
    }
    fn and(&mut self, a: Mask, b: Mask) -> Mask {
        self.b.ins().band(a, b)
    }
    fn not(&mut self, a: Mask) -> Mask {
        if self.vector() {
            self.b.ins().bnot(a)
        } else {
            self.b.ins().bxor_imm_u(a, 1)
        }
    }
    /// `m ? a : b` per lane.
    fn sel(&mut self, m: Mask, a: Value, b: Value) -> Value {
        if self.vector() {
            let m = self.b.ins().bitcast(self.ty, MemFlagsData::new(), m);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(m, a, b)
        }
    }
    fn selc(&mut self, m: Mask, k: f64, b: Value) -> Value {
        let k = self.c(k);
        self.sel(m, k, b)
    }

    fn bits(&mut self, a: Value) -> Value {
        let ity = self.ity();
        self.b.ins().bitcast(ity, MemFlagsData::new(), a)
    }
    fn float_of(&mut self, a: Value) -> Value {
        self.b.ins().bitcast(self.ty, MemFlagsData::new(), a)
    }
    /// |mag| with the sign of `sign`.
    fn copysign(&mut self, mag: Value, sign: Value) -> Value {
        let mag = self.abs(mag);
        let mag = self.bits(mag);
        let s = self.bits(sign);
        let m = self.ci(if self.f32_lanes() {
            0x8000_0000
        } else {
            i64::MIN
        });
        let s = self.b.ins().band(s, m);
        let r = self.b.ins().bor(mag, s);
        self.float_of(r)
    }

    /// 2^k for an integer-valued `k` in the normal exponent range, built in
    /// the exponent field: adding 2^52 + 1023 (2^23 + 127 in single
    /// precision) puts the biased exponent in the low mantissa bits.
    fn pow2(&mut self, k: Value) -> Value {
        let (magic, magic_bits, shift) = if self.f32_lanes() {
            (8_388_608.0 + 127.0, 0x4b00_0000, 23)
        } else {
            (4_503_599_627_370_496.0 + 1023.0, 0x4330_0000_0000_0000, 52)
        };
        let t = self.addc(k, magic);
        let t = self.bits(t);
        let magic = self.ci(magic_bits);
        let e = self.b.ins().isub(t, magic);
        let e = self.b.ins().ishl_imm_u(e, shift);
        self.float_of(e)
    }

    /// Horner evaluation of `c[0] + c[1]·x + …`, keeping the first `n_single`
    /// coefficients in single mode.
    fn poly(&mut self, x: Value, c: &[f64], n_single: usize) -> Value {
        let n = if self.single {
            n_single.min(c.len())
        } else {
            c.len()
        };
        let mut r = self.c(c[n - 1]);
        for &k in c[..n - 1].iter().rev() {
            r = self.mul(r, x);
            r = self.addc(r, k);
        }
        r
    }

    /// Argument reduction for exp-like functions: x = k·ln2 + r, |r| ≤ ln2/2.
    fn reduce_ln2(&mut self, x: Value) -> (Value, Value) {
        let t = self.mulc(x, LOG2E);
        let k = self.nearest(t);
        let hi = self.mulc(k, LN2_HI);
        let r = self.sub(x, hi);
        let lo = self.mulc(k, LN2_LO);
        (k, self.sub(r, lo))
    }

    /// 2^k split in two factors so that k in [-1077, 1025] neither overflows
    /// nor flushes before the final product.
    fn pow2_split(&mut self, k: Value) -> (Value, Value) {
        let h = self.mulc(k, 0.5);
        let k1 = self.floor(h);
        let k2 = self.sub(k, k1);
        (self.pow2(k1), self.pow2(k2))
    }

    fn exp(&mut self, x: Value) -> Value {
        let x = self.clamp(x, -746.0, 710.0);
        let (k, r) = self.reduce_ln2(x);
        let p = self.poly(r, &inv_factorials(0, 14), 11);
        let (s1, s2) = self.pow2_split(k);
        let p = self.mul(p, s1);
        self.mul(p, s2)
    }

    fn expm1(&mut self, x0: Value) -> Value {
        let x = self.clamp(x0, -60.0, 710.0);
        let (k, r) = self.reduce_ln2(x);
        // e^r - 1 = r + r²·(1/2 + r/6 + …)
        let p = self.poly(r, &inv_factorials(2, 15), 10);
        let r2 = self.mul(r, r);
        let p = self.mul(r2, p);
        let em = self.add(r, p);
        let (s1, s2) = self.pow2_split(k);
        // Small k: 2^k·em + (2^k - 1) keeps the low bits; large k: the -1 is lost anyway.
        let a = self.mul(em, s1);
        let a = self.mul(a, s2);
        let two_k = self.mul(s1, s2);
        let b = self.addc(two_k, -1.0);
        let small = self.add(a, b);
        let e1 = self.addc(em, 1.0);
        let big = self.mul(e1, s1);
        let big = self.mul(big, s2);
        let is_big = self.cmpc(FloatCC::GreaterThan, k, 56.0);
        let r = self.sel(is_big, big, small);
        let zero = self.cmpc(FloatCC::Equal, x0, 0.0);
        self.sel(zero, x0, r)
    }

    fn log(&mut self, x: Value) -> Value {
        // Scale subnormals into the normal range.
        let tiny = self.cmpc(FloatCC::LessThan, x, f64::MIN_POSITIVE);
        let scaled = self.mulc(x, 18_014_398_509_481_984.0); // 2^54
        let xs = self.sel(tiny, scaled, x);
        let zero = self.c(0.0);
        let eadj = self.selc(tiny, -54.0, zero);
        // Split x = 2^k·m with m in [√½, √2).
        let ix = self.bits(xs);
        let off = self.ci(0x3ff0_0000_0000_0000 - 0x3fe6_a09e_667f_3bcd);
        let u = self.b.ins().iadd(ix, off);
        let eb = self.b.ins().ushr_imm_u(u, 52);
        let sh = self.b.ins().ishl_imm_u(eb, 52);
        let mb = self.b.ins().isub(ix, sh);
        let one = self.ci(0x3ff0_0000_0000_0000);
        let mb = self.b.ins().iadd(mb, one);
        let m = self.float_of(mb);
        let magic = self.ci(0x4330_0000_0000_0000);
        let kb = self.b.ins().bor(eb, magic);
        let kb = self.float_of(kb);
        let k = self.addc(kb, -4_503_599_627_370_496.0 - 1023.0);
        let k = self.add(k, eadj);
        // log(m) = f - f²/2 + s·(f²/2 + R), s = f/(2+f), R = Σ 2z^j/(2j+1).
        let f = self.addc(m, -1.0);
        let d = self.addc(f, 2.0);
        let s = self.div(f, d);
        let z = self.mul(s, s);
        let coef: Vec<f64> = (1..=10).map(|j| 2.0 / (2 * j + 1) as f64).collect();
        let r = self.poly(z, &coef, 7);
        let r = self.mul(z, r);
        let ff = self.mul(f, f);
        let hfsq = self.mulc(ff, 0.5);
        let t = self.add(hfsq, r);
        let t = self.mul(s, t);
        let klo = self.mulc(k, LN2_LO);
        let t = self.add(t, klo);
        let t = self.sub(hfsq, t);
        let t = self.sub(t, f);
        let khi = self.mulc(k, LN2_HI);
        let res = self.sub(khi, t);
        self.log_specials(x, res)
    }

    /// log(±0) = -inf, log(+inf) = +inf, log(x<0) = NaN, NaN stays.
    fn log_specials(&mut self, x: Value, res: Value) -> Value {
        let is0 = self.cmpc(FloatCC::Equal, x, 0.0);
        let res = self.selc(is0, f64::NEG_INFINITY, res);
        let isinf = self.cmpc(FloatCC::Equal, x, f64::INFINITY);
        let res = self.selc(isinf, f64::INFINITY, res);
        let neg = self.cmpc(FloatCC::LessThan, x, 0.0);
        let res = self.selc(neg, f64::NAN, res);
        let nan = self.is_nan(x);
        self.sel(nan, x, res)
    }

    fn log1p(&mut self, x: Value) -> Value {
        // log(u) + (x - (u - 1))/u corrects the rounding of u = 1 + x.
        let u = self.addc(x, 1.0);
        let l = self.log(u);
        let um1 = self.addc(u, -1.0);
        let c = self.sub(x, um1);
        let c = self.div(c, u);
        let u0 = self.cmpc(FloatCC::Equal, u, 0.0);
        let uinf = self.cmpc(FloatCC::Equal, u, f64::INFINITY);
        let bad = self.or(u0, uinf);
        let c = self.selc(bad, 0.0, c);
        let r = self.add(l, c);
        let zero = self.cmpc(FloatCC::Equal, x, 0.0);
        self.sel(zero, x, r)
    }

    fn sigmoid(&mut self, x: Value) -> Value {
        let nx = self.neg(x);
        let e = self.exp(nx);
        let d = self.addc(e, 1.0);
        let one = self.c(1.0);
        self.div(one, d)
    }

    fn tanh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let a = self.clamp(a, 0.0, 20.0);
        let a2 = self.mulc(a, 2.0);
        let em = self.expm1(a2);
        let d = self.addc(em, 2.0);
        let t = self.div(em, d);
        self.copysign(t, x)
    }

    fn sinh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let em = self.expm1(a);
        let e1 = self.addc(em, 1.0);
        let q = self.div(em, e1);
        let s = self.add(em, q);
        let small = self.mulc(s, 0.5);
        let big = self.half_exp_sq(a);
        let is_small = self.cmpc(FloatCC::LessThan, a, 22.0);
        let r = self.sel(is_small, small, big);
        self.copysign(r, x)
    }

    fn cosh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let e = self.exp(a);
        let one = self.c(1.0);
        let inv = self.div(one, e);
        let s = self.add(e, inv);
        let small = self.mulc(s, 0.5);
        let big = self.half_exp_sq(a);
        let is_small = self.cmpc(FloatCC::LessThan, a, 22.0);
        self.sel(is_small, small, big)
    }

    /// e^a / 2 as (e^(a/2)/2)·e^(a/2), finite up to the true overflow point.
    fn half_exp_sq(&mut self, a: Value) -> Value {
        let h = self.mulc(a, 0.5);
        let h = self.exp(h);
        let hh = self.mulc(h, 0.5);
        self.mul(hh, h)
    }

    fn asinh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        // Large: ln(2a); otherwise log1p(a + a²/(1 + √(1 + a²))).
        let l = self.log(a);
        let big = self.addc(l, std::f64::consts::LN_2);
        let a2 = self.mul(a, a);
        let r = self.addc(a2, 1.0);
        let r = self.sqrt(r);
        let r = self.addc(r, 1.0);
        let q = self.div(a2, r);
        let q = self.add(a, q);
        let small = self.log1p(q);
        let is_big = self.cmpc(FloatCC::GreaterThan, a, 268_435_456.0);
        let r = self.sel(is_big, big, small);
        self.copysign(r, x)
    }

    fn acosh(&mut self, x: Value) -> Value {
        let l = self.log(x);
        let big = self.addc(l, std::f64::consts::LN_2);
        // log1p(t + √(2t + t²)), t = x - 1.
        let t = self.addc(x, -1.0);
        let t2 = self.mul(t, t);
        let tt = self.add(t, t);
        let s = self.add(tt, t2);
        let s = self.sqrt(s);
        let s = self.add(t, s);
        let small = self.log1p(s);
        let is_big = self.cmpc(FloatCC::GreaterThan, x, 268_435_456.0);
        let r = self.sel(is_big, big, small);
        let below = self.cmpc(FloatCC::LessThan, x, 1.0);
        self.selc(below, f64::NAN, r)
    }

    fn atanh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let a2 = self.add(a, a);
        let d = self.rsubc(1.0, a);
        let q = self.div(a2, d);
        let l = self.log1p(q);
        let r = self.mulc(l, 0.5);
        self.copysign(r, x)
    }

    fn erf(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        // |x| < 0.5: odd Maclaurin series.
        let a2 = self.mul(a, a);
        let p0 = self.poly(a2, &ERF0, 9);
        let p0 = self.mul(a, p0);
        // 0.5 ≤ |x| < 6.5: Taylor series about the nearest integer c.
        let k = self.nearest(a);
        let k = self.clamp(k, 1.0, 6.0);
        let h = self.sub(a, k);
        let n = if self.single { 17 } else { 26 };
        let masks: Vec<Mask> = (2..=6)
            .map(|c| self.cmpc(FloatCC::Equal, k, c as f64))
            .collect();
        let mut p = self.c(0.0);
        for j in (0..n).rev() {
            let mut cj = self.c(ERF_C[0][j]);
            for (row, &m) in ERF_C[1..].iter().zip(&masks) {
                cj = self.selc(m, row[j], cj);
            }
            p = self.mul(p, h);
            p = self.add(p, cj);
        }
        let small = self.cmpc(FloatCC::LessThan, a, 0.5);
        let r = self.sel(small, p0, p);
        let big = self.cmpc(FloatCC::GreaterThanOrEqual, a, 6.0);
        let r = self.selc(big, 1.0, r);
        let r = self.copysign(r, x);
        let nan = self.is_nan(x);
        self.sel(nan, x, r)
    }

    /// erf in f32x4 lanes (`ty` must be `F32X4`), within 1 ulp: one
    /// degree-7 polynomial whose coefficients each lane picks from a
    /// four-entry table (one byte shuffle per coefficient), which costs far
    /// less than evaluating every interval's polynomial and selecting.
    /// Slot 0 (|x| < 1.2) returns a + a·P(a² - 0.7) so that tiny and
    /// subnormal inputs keep their precision; slots 1-3 return
    /// 1 + P(a - c). See `ERF32_P`.
    fn erf_f32(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let above: Vec<Mask> = ERF32_SPLIT
            .iter()
            .map(|&s| self.cmpc(FloatCC::GreaterThanOrEqual, a, f64::from(s)))
            .collect();
        // Byte offsets 4·slot + 0..3 of each lane's table entry.
        let step = self.ci(0x0404_0404);
        let mut idx = self.ci(0x0302_0100);
        for &m in &above {
            let d = self.b.ins().band(m, step);
            idx = self.b.ins().iadd(idx, d);
        }
        let idx = self.b.ins().bitcast(I8X16, lane_flags(), idx);
        // erf = base + base·P(t). Slot 0: base = a, t = a·a - 0.7;
        // slots 1-3: base = 1, t = a - c.
        let base = self.selc(above[0], 1.0, a);
        let off = self.lookup(idx, &ERF32_OFF);
        let t = self.mul(a, base);
        let t = self.sub(t, off);
        let mut p = self.lookup(idx, &ERF32_P[ERF32_P.len() - 1]);
        for row in ERF32_P[..ERF32_P.len() - 1].iter().rev() {
            let k = self.lookup(idx, row);
            p = self.mul(p, t);
            p = self.add(p, k);
        }
        let r = self.mul(base, p);
        let r = self.add(r, base);
        // Also turns the NaN that ±inf produced above into ±1.
        let one = self.cmpc(FloatCC::GreaterThanOrEqual, a, f64::from(ERF32_ONE));
        let r = self.selc(one, 1.0, r);
        // r ≥ 0 (or NaN): or in the sign of x.
        let sign = self.ci(0x8000_0000);
        let sx = self.bits(x);
        let sx = self.b.ins().band(sx, sign);
        let r = self.bits(r);
        let r = self.b.ins().bor(r, sx);
        self.float_of(r)
    }

    /// `tab[slot]` in each f32x4 lane, where `idx` holds the lane's byte
    /// offsets 4·slot + 0..3 into the 16-byte table.
    fn lookup(&mut self, idx: Value, tab: &[f32; 4]) -> Value {
        let bytes: Vec<u8> = tab.iter().flat_map(|v| v.to_le_bytes()).collect();
        let k = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        let t = self.b.ins().vconst(I8X16, k);
        let r = self.b.ins().swizzle(t, idx);
        self.b.ins().bitcast(F32X4, lane_flags(), r)
    }

    fn pow(&mut self, x: Value, y: Value) -> Value {
        let ax = self.abs(x);
        let l = self.log(ax);
        let yl = self.mul(y, l);
        let r = self.exp(yl);
        // Integer and odd-integer exponents (±inf count as even integers).
        let fy = self.floor(y);
        let y_int = self.cmp(FloatCC::Equal, fy, y);
        let hy = self.mulc(y, 0.5);
        let hy = self.floor(hy);
        let hy = self.mulc(hy, 2.0);
        let y_even = self.cmp(FloatCC::Equal, hy, y);
        let not_even = self.not(y_even);
        let y_odd = self.and(y_int, not_even);
        let one = self.c(1.0);
        let sx = self.copysign(one, x);
        let x_neg = self.cmpc(FloatCC::LessThan, sx, 0.0);
        let flip = self.and(x_neg, y_odd);
        let nr = self.neg(r);
        let r = self.sel(flip, nr, r);
        // A negative finite base with a non-integer exponent has no real power.
        let lt0 = self.cmpc(FloatCC::LessThan, x, 0.0);
        let finite = self.cmpc(FloatCC::NotEqual, x, f64::NEG_INFINITY);
        let y_frac = self.not(y_int);
        let dom = self.and(lt0, finite);
        let dom = self.and(dom, y_frac);
        let r = self.selc(dom, f64::NAN, r);
        // pow(±1, ±inf) = 1, pow(1, y) = 1 and pow(x, ±0) = 1, even for NaN.
        let ax1 = self.cmpc(FloatCC::Equal, ax, 1.0);
        let ay = self.abs(y);
        let yinf = self.cmpc(FloatCC::Equal, ay, f64::INFINITY);
        let m1 = self.and(ax1, yinf);
        let x1 = self.cmpc(FloatCC::Equal, x, 1.0);
        let y0 = self.cmpc(FloatCC::Equal, y, 0.0);
        let ones = self.or(m1, x1);
        let ones = self.or(ones, y0);
        self.selc(ones, 1.0, r)
    }
}

/// 1/n!.
fn inv_factorial(n: u32) -> f64 {
    1.0 / (1..=n).map(f64::from).product::<f64>()
}

/// [1/from!, 1/(from+1)!, …] with `len` entries.
fn inv_factorials(from: u32, len: u32) -> Vec<f64> {
    (from..from + len).map(inv_factorial).collect()
}

#[cfg(test)]
mod tests;
