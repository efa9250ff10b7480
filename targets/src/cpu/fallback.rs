//! Double-precision helper functions for the math the ISA lacks: exp, log,
//! trig, hyperbolic, erf, pow, fmod and integer pow. Each becomes one local
//! function per module, called from kernels for the ops `math.rs` does not
//! inline. Accurate to ~1e-15 relative in the usual ranges (so f32 results
//! are correctly rounded or within an ulp); never a libm call, so objects
//! link without libm. Argument reduction for sin/cos/tan is exact only for
//! |x| below ~1e9.

// The split constants (ln 2, π/2 in parts) are written as published, with
// more digits than an f64 holds; the parsed values are the intended ones.
#![allow(clippy::excessive_precision)]

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F64, I64};
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;
use kiln_ir::kernel::UnOp;
use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, LN_2};

/// A helper function a kernel may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Helper {
    /// `f64 -> f64` for a transcendental unary op.
    Un(UnOp),
    /// `(f64, f64) -> f64`, C `pow`.
    Pow,
    /// `(f64, f64) -> f64`, C `fmod` (exact).
    Fmod,
    /// `(i64, i64) -> i64`, the interpreter's wrapping integer pow.
    IPow,
}

const UNARY: [UnOp; 15] = [
    UnOp::Exp,
    UnOp::Log,
    UnOp::Sin,
    UnOp::Cos,
    UnOp::Tan,
    UnOp::Asin,
    UnOp::Acos,
    UnOp::Atan,
    UnOp::Sinh,
    UnOp::Cosh,
    UnOp::Asinh,
    UnOp::Acosh,
    UnOp::Atanh,
    UnOp::Tanh,
    UnOp::Erf,
];

impl std::hash::Hash for Helper {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Helper::Un(op) => (0u8, *op as u8).hash(state),
            Helper::Pow => (1u8, 0u8).hash(state),
            Helper::Fmod => (2u8, 0u8).hash(state),
            Helper::IPow => (3u8, 0u8).hash(state),
        }
    }
}

impl Helper {
    pub(crate) fn all() -> Vec<Helper> {
        let mut v: Vec<Helper> = UNARY.iter().map(|u| Helper::Un(*u)).collect();
        v.extend([Helper::Pow, Helper::Fmod, Helper::IPow]);
        v
    }

    /// Symbol suffix (the module prefixes the model name).
    pub(crate) fn symbol(self) -> String {
        match self {
            Helper::Un(op) => format!("{op:?}").to_ascii_lowercase(),
            Helper::Pow => "pow".into(),
            Helper::Fmod => "fmod".into(),
            Helper::IPow => "ipow".into(),
        }
    }

    pub(crate) fn signature(self, cc: CallConv) -> Signature {
        let mut s = Signature::new(cc);
        let (t, n) = match self {
            Helper::Un(_) => (F64, 1),
            Helper::Pow | Helper::Fmod => (F64, 2),
            Helper::IPow => (I64, 2),
        };
        for _ in 0..n {
            s.params.push(AbiParam::new(t));
        }
        s.returns.push(AbiParam::new(t));
        s
    }
}

/// Builds the body of `h` (the builder is positioned nowhere; this creates the entry block).
pub(crate) fn define(b: &mut FunctionBuilder, h: Helper) {
    let ps = super::emit::entry(b);
    let mut m = M { b };
    let r = match h {
        Helper::Un(op) => m.unary(op, ps[0]),
        Helper::Pow => m.pow(ps[0], ps[1]),
        Helper::Fmod => m.fmod(ps[0], ps[1]),
        Helper::IPow => m.ipow(ps[0], ps[1]),
    };
    m.b.ins().return_(&[r]);
}

struct M<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
}

impl M<'_, '_> {
    fn c(&mut self, x: f64) -> Value {
        self.b.ins().f64const(x)
    }
    fn add(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fadd(x, y)
    }
    fn sub(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fsub(x, y)
    }
    fn mul(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fmul(x, y)
    }
    fn div(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fdiv(x, y)
    }
    fn mulc(&mut self, x: Value, k: f64) -> Value {
        let k = self.c(k);
        self.mul(x, k)
    }
    fn addc(&mut self, x: Value, k: f64) -> Value {
        let k = self.c(k);
        self.add(x, k)
    }
    fn cmpc(&mut self, cc: FloatCC, x: Value, k: f64) -> Value {
        let k = self.c(k);
        self.b.ins().fcmp(cc, x, k)
    }
    fn sel(&mut self, c: Value, x: Value, y: Value) -> Value {
        self.b.ins().select(c, x, y)
    }

    /// `c[0] + x*(c[1] + x*(c[2] + ...))`.
    fn poly(&mut self, x: Value, c: &[f64]) -> Value {
        let mut acc = self.c(c[c.len() - 1]);
        for &k in c[..c.len() - 1].iter().rev() {
            let t = self.mul(acc, x);
            acc = self.addc(t, k);
        }
        acc
    }

    /// Odd series `x * P(x²)` for the given coefficients of P.
    fn odd(&mut self, x: Value, c: &[f64]) -> Value {
        let x2 = self.mul(x, x);
        let p = self.poly(x2, c);
        self.mul(x, p)
    }

    /// `round(t)` (half away from zero) as i64; saturates for huge t.
    fn round_i(&mut self, t: Value) -> Value {
        let half = self.c(0.5);
        let h = self.b.ins().fcopysign(half, t);
        let s = self.add(t, h);
        self.b.ins().fcvt_to_sint_sat(I64, s)
    }

    /// 2^k for an integer k in [-1022, 1023].
    fn pow2(&mut self, k: Value) -> Value {
        let e = self.b.ins().iadd_imm_s(k, 1023);
        let e = self.b.ins().ishl_imm_s(e, 52);
        self.b.ins().bitcast(F64, MemFlagsData::new(), e)
    }

    /// x · 2^k for k in [-2044, 2046], in two exact steps.
    fn ldexp(&mut self, x: Value, k: Value) -> Value {
        let k1 = self.b.ins().sshr_imm_s(k, 1);
        let k2 = self.b.ins().isub(k, k1);
        let (s1, s2) = (self.pow2(k1), self.pow2(k2));
        let t = self.mul(x, s1);
        self.mul(t, s2)
    }

    fn unary(&mut self, op: UnOp, x: Value) -> Value {
        match op {
            UnOp::Exp => self.exp(x),
            UnOp::Log => self.log(x),
            UnOp::Sin | UnOp::Cos | UnOp::Tan => self.trig(op, x),
            UnOp::Atan => self.atan(x),
            UnOp::Asin => {
                let one = self.c(1.0);
                let a = self.sub(one, x);
                let b = self.add(one, x);
                let d = self.mul(a, b);
                let d = self.b.ins().sqrt(d);
                let q = self.div(x, d);
                self.atan(q)
            }
            UnOp::Acos => {
                let one = self.c(1.0);
                let a = self.sub(one, x);
                let b = self.add(one, x);
                let q = self.div(a, b);
                let q = self.b.ins().sqrt(q);
                let t = self.atan(q);
                self.add(t, t)
            }
            UnOp::Sinh | UnOp::Cosh => {
                let ax = self.b.ins().fabs(x);
                let e = self.exp(ax);
                let one = self.c(1.0);
                let inv = self.div(one, e);
                if op == UnOp::Cosh {
                    let s = self.add(e, inv);
                    return self.mulc(s, 0.5);
                }
                let d = self.sub(e, inv);
                let big = self.mulc(d, 0.5);
                let small = self.odd(
                    ax,
                    &[
                        1.0,
                        1.0 / 6.0,
                        1.0 / 120.0,
                        1.0 / 5040.0,
                        1.0 / 362880.0,
                        1.0 / 39916800.0,
                    ],
                );
                let is_small = self.cmpc(FloatCC::LessThan, ax, 0.125);
                let r = self.sel(is_small, small, big);
                self.b.ins().fcopysign(r, x)
            }
            UnOp::Tanh => {
                let ax = self.b.ins().fabs(x);
                let two = self.add(ax, ax);
                let e = self.exp(two);
                let num = self.addc(e, -1.0);
                let den = self.addc(e, 1.0);
                let t = self.div(num, den);
                let small = self.odd(
                    ax,
                    &[
                        1.0,
                        -1.0 / 3.0,
                        2.0 / 15.0,
                        -17.0 / 315.0,
                        62.0 / 2835.0,
                        -1382.0 / 155925.0,
                        21844.0 / 6081075.0,
                    ],
                );
                let is_small = self.cmpc(FloatCC::LessThan, ax, 0.0625);
                let r = self.sel(is_small, small, t);
                let one = self.c(1.0);
                let big = self.cmpc(FloatCC::GreaterThan, ax, 20.0);
                let r = self.sel(big, one, r);
                self.b.ins().fcopysign(r, x)
            }
            UnOp::Asinh => {
                let ax = self.b.ins().fabs(x);
                let sq = self.mul(ax, ax);
                let sq = self.addc(sq, 1.0);
                let sq = self.b.ins().sqrt(sq);
                let s = self.add(ax, sq);
                let mid = self.log(s);
                let la = self.log(ax);
                let big = self.addc(la, LN_2);
                let small = self.odd(
                    ax,
                    &[
                        1.0,
                        -1.0 / 6.0,
                        3.0 / 40.0,
                        -15.0 / 336.0,
                        105.0 / 3456.0,
                        -945.0 / 42240.0,
                    ],
                );
                let is_big = self.cmpc(FloatCC::GreaterThan, ax, 1e150);
                let is_small = self.cmpc(FloatCC::LessThan, ax, 0.0625);
                let r = self.sel(is_big, big, mid);
                let r = self.sel(is_small, small, r);
                self.b.ins().fcopysign(r, x)
            }
            UnOp::Acosh => {
                let a = self.addc(x, -1.0);
                let b = self.addc(x, 1.0);
                let d = self.mul(a, b);
                let d = self.b.ins().sqrt(d);
                let s = self.add(x, d);
                let mid = self.log(s);
                let lx = self.log(x);
                let big = self.addc(lx, LN_2);
                let is_big = self.cmpc(FloatCC::GreaterThan, x, 1e150);
                self.sel(is_big, big, mid)
            }
            UnOp::Atanh => {
                let ax = self.b.ins().fabs(x);
                let one = self.c(1.0);
                let n = self.add(one, ax);
                let d = self.sub(one, ax);
                let q = self.div(n, d);
                let l = self.log(q);
                let mid = self.mulc(l, 0.5);
                let small = self.odd(
                    ax,
                    &[
                        1.0,
                        1.0 / 3.0,
                        1.0 / 5.0,
                        1.0 / 7.0,
                        1.0 / 9.0,
                        1.0 / 11.0,
                        1.0 / 13.0,
                    ],
                );
                let is_small = self.cmpc(FloatCC::LessThan, ax, 0.0625);
                let r = self.sel(is_small, small, mid);
                self.b.ins().fcopysign(r, x)
            }
            UnOp::Erf => self.erf(x),
            _ => x,
        }
    }

    fn exp(&mut self, x: Value) -> Value {
        let lo = self.c(-746.0);
        let hi = self.c(710.0);
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        let t = self.mulc(x, std::f64::consts::LOG2_E);
        let k = self.round_i(t);
        let kf = self.b.ins().fcvt_from_sint(F64, k);
        let h = self.mulc(kf, 6.931_471_803_691_238_164_9e-1);
        let l = self.mulc(kf, 1.908_214_929_270_587_700_02e-10);
        let r = self.sub(x, h);
        let r = self.sub(r, l);
        let mut c = vec![1.0f64];
        for n in 1..=14 {
            let prev = c[n - 1];
            c.push(prev / n as f64);
        }
        let p = self.poly(r, &c);
        self.ldexp(p, k)
    }

    fn log(&mut self, x: Value) -> Value {
        let tiny = self.cmpc(FloatCC::LessThan, x, f64::MIN_POSITIVE);
        let scaled = self.mulc(x, 18014398509481984.0); // 2^54
        let xs = self.sel(tiny, scaled, x);
        let adj0 = self.b.ins().iconst(I64, 0);
        let adjs = self.b.ins().iconst(I64, -54);
        let adj = self.sel(tiny, adjs, adj0);
        let bits = self.b.ins().bitcast(I64, MemFlagsData::new(), xs);
        let e = self.b.ins().ushr_imm_s(bits, 52);
        let e = self.b.ins().iadd_imm_s(e, -1023);
        let e = self.b.ins().iadd(e, adj);
        let mb = self.b.ins().band_imm_s(bits, 0x000f_ffff_ffff_ffff);
        let mb = self.b.ins().bor_imm_s(mb, 0x3ff0_0000_0000_0000);
        let m = self.b.ins().bitcast(F64, MemFlagsData::new(), mb);
        let hi = self.cmpc(FloatCC::GreaterThan, m, std::f64::consts::SQRT_2);
        let half = self.mulc(m, 0.5);
        let m = self.sel(hi, half, m);
        let e1 = self.b.ins().iadd_imm_s(e, 1);
        let e = self.sel(hi, e1, e);
        let num = self.addc(m, -1.0);
        let den = self.addc(m, 1.0);
        let f = self.div(num, den);
        let c: Vec<f64> = (0..12).map(|n| 2.0 / (2 * n + 1) as f64).collect();
        let lm = self.odd(f, &c);
        let ef = self.b.ins().fcvt_from_sint(F64, e);
        let lo = self.mulc(ef, 1.908_214_929_270_587_700_02e-10);
        let lm = self.add(lm, lo);
        let h = self.mulc(ef, 6.931_471_803_691_238_164_9e-1);
        let r = self.add(h, lm);
        // Special values: negative → NaN, 0 → -inf, +inf → +inf, NaN → NaN.
        let nan = self.c(f64::NAN);
        let ninf = self.c(f64::NEG_INFINITY);
        let neg = self.cmpc(FloatCC::LessThan, x, 0.0);
        let zero = self.cmpc(FloatCC::Equal, x, 0.0);
        let inf = self.cmpc(FloatCC::Equal, x, f64::INFINITY);
        let isnan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let r = self.sel(inf, x, r);
        let r = self.sel(zero, ninf, r);
        let r = self.sel(neg, nan, r);
        self.sel(isnan, x, r)
    }

    fn trig(&mut self, op: UnOp, x: Value) -> Value {
        let t = self.mulc(x, 2.0 / std::f64::consts::PI);
        let q = self.round_i(t);
        let qf = self.b.ins().fcvt_from_sint(F64, q);
        let mut r = x;
        for p in [
            1.570_796_326_734_125_614_17,
            6.077_100_506_303_965_976_6e-11,
            2.022_266_248_711_166_455_8e-21,
        ] {
            let s = self.mulc(qf, p);
            r = self.sub(r, s);
        }
        let mut sc = vec![];
        let mut cc = vec![];
        let mut f = 1.0f64;
        for n in 0..10 {
            let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
            cc.push(sign / f);
            f *= (2 * n + 1) as f64;
            sc.push(sign / f);
            f *= (2 * n + 2) as f64;
        }
        let s = self.odd(r, &sc);
        let r2 = self.mul(r, r);
        let c = self.poly(r2, &cc);
        let n = self.b.ins().band_imm_s(q, 3);
        let (ns, nc) = (self.b.ins().fneg(s), self.b.ins().fneg(c));
        let pick = |m: &mut Self, v: [Value; 4]| {
            let is1 = m.b.ins().icmp_imm_s(IntCC::Equal, n, 1);
            let is2 = m.b.ins().icmp_imm_s(IntCC::Equal, n, 2);
            let is3 = m.b.ins().icmp_imm_s(IntCC::Equal, n, 3);
            let r = m.sel(is1, v[1], v[0]);
            let r = m.sel(is2, v[2], r);
            m.sel(is3, v[3], r)
        };
        let r = match op {
            UnOp::Sin => pick(self, [s, c, ns, nc]),
            UnOp::Cos => pick(self, [c, ns, nc, s]),
            _ => {
                let num = pick(self, [s, c, ns, nc]);
                let den = pick(self, [c, ns, nc, s]);
                self.div(num, den)
            }
        };
        let ax = self.b.ins().fabs(x);
        let finite = self.cmpc(FloatCC::LessThan, ax, f64::INFINITY);
        let nan = self.c(f64::NAN);
        let r = self.sel(finite, r, nan);
        let isnan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        self.sel(isnan, x, r)
    }

    fn atan(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let inv = self.cmpc(FloatCC::GreaterThan, ax, 1.0);
        let one = self.c(1.0);
        let rcp = self.div(one, ax);
        let t = self.sel(inv, rcp, ax);
        let big = self.cmpc(FloatCC::GreaterThan, t, 0.414_213_562_373_095_03);
        let num = self.addc(t, -1.0);
        let den = self.addc(t, 1.0);
        let red = self.div(num, den);
        let u = self.sel(big, red, t);
        let q4 = self.c(FRAC_PI_4);
        let z = self.c(0.0);
        let base = self.sel(big, q4, z);
        let c: Vec<f64> = (0..26)
            .map(|n| if n % 2 == 0 { 1.0 } else { -1.0 } / (2 * n + 1) as f64)
            .collect();
        let p = self.odd(u, &c);
        let r = self.add(base, p);
        let h = self.c(FRAC_PI_2);
        let rr = self.sub(h, r);
        let r = self.sel(inv, rr, r);
        let r = self.b.ins().fcopysign(r, x);
        let isnan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        self.sel(isnan, x, r)
    }

    /// erf as the interpreter computes it: Maclaurin series below 2.5, a
    /// continued fraction for erfc below 6, 1 above (fixed iteration counts).
    fn erf(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let series_b = self.b.create_block();
        let rest_b = self.b.create_block();
        let cf_b = self.b.create_block();
        let join = self.b.create_block();
        let res = self.b.append_block_param(join, F64);
        let x2 = self.mul(ax, ax);
        let lt = self.cmpc(FloatCC::LessThan, ax, 2.5);
        self.b.ins().brif(lt, series_b, &[], rest_b, &[]);
        self.b.seal_block(series_b);
        self.b.seal_block(rest_b);

        // sum = ax; term = ax; for n in 1..=60: term *= -x²/n; sum += term/(2n+1)
        self.b.switch_to_block(series_b);
        let nx2 = self.b.ins().fneg(x2);
        let (vs, vt, vn) = (
            self.b.declare_var(F64),
            self.b.declare_var(F64),
            self.b.declare_var(F64),
        );
        self.b.def_var(vs, ax);
        self.b.def_var(vt, ax);
        let one = self.c(1.0);
        self.b.def_var(vn, one);
        let lp = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().jump(lp, &[]);
        self.b.switch_to_block(lp);
        let (s, t, n) = (self.b.use_var(vs), self.b.use_var(vt), self.b.use_var(vn));
        let q = self.div(nx2, n);
        let t = self.mul(t, q);
        let n2 = self.add(n, n);
        let d = self.addc(n2, 1.0);
        let add = self.div(t, d);
        let s = self.add(s, add);
        let n1 = self.addc(n, 1.0);
        self.b.def_var(vs, s);
        self.b.def_var(vt, t);
        self.b.def_var(vn, n1);
        let more = self.cmpc(FloatCC::LessThanOrEqual, n1, 60.0);
        self.b.ins().brif(more, lp, &[], done, &[]);
        self.b.seal_block(lp);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        let s = self.b.use_var(vs);
        let r = self.mulc(s, std::f64::consts::FRAC_2_SQRT_PI);
        self.b.ins().jump(join, &[r.into()]);

        self.b.switch_to_block(rest_b);
        let lt6 = self.cmpc(FloatCC::LessThan, ax, 6.0);
        let one_b = self.b.create_block();
        self.b.ins().brif(lt6, cf_b, &[], one_b, &[]);
        self.b.seal_block(cf_b);
        self.b.seal_block(one_b);
        self.b.switch_to_block(one_b);
        // 1 for large |x|; NaN stays NaN.
        let one = self.c(1.0);
        let isnan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let r = self.sel(isnan, x, one);
        self.b.ins().jump(join, &[r.into()]);

        // f = 0; for k in (1..60).rev(): f = (k/2) / (ax + f)
        self.b.switch_to_block(cf_b);
        let (vf, vk) = (self.b.declare_var(F64), self.b.declare_var(F64));
        let z = self.c(0.0);
        self.b.def_var(vf, z);
        let k0 = self.c(59.0);
        self.b.def_var(vk, k0);
        let lp = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().jump(lp, &[]);
        self.b.switch_to_block(lp);
        let (f, k) = (self.b.use_var(vf), self.b.use_var(vk));
        let hk = self.mulc(k, 0.5);
        let d = self.add(ax, f);
        let f = self.div(hk, d);
        let k1 = self.addc(k, -1.0);
        self.b.def_var(vf, f);
        self.b.def_var(vk, k1);
        let more = self.cmpc(FloatCC::GreaterThanOrEqual, k1, 1.0);
        self.b.ins().brif(more, lp, &[], done, &[]);
        self.b.seal_block(lp);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        let f = self.b.use_var(vf);
        let nx2 = self.b.ins().fneg(x2);
        let e = self.exp(nx2);
        let d = self.add(ax, f);
        let q = self.div(e, d);
        let q = self.mulc(q, 1.0 / std::f64::consts::PI.sqrt());
        let one = self.c(1.0);
        let r = self.sub(one, q);
        self.b.ins().jump(join, &[r.into()]);

        self.b.switch_to_block(join);
        self.b.seal_block(join);
        self.b.ins().fcopysign(res, x)
    }

    fn pow(&mut self, x: Value, y: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let l = self.log(ax);
        let yl = self.mul(y, l);
        let r = self.exp(yl);
        // Is y an integer, and an odd one?
        let ay = self.b.ins().fabs(y);
        let huge = self.cmpc(FloatCC::GreaterThanOrEqual, ay, 9007199254740992.0);
        let yi = self.b.ins().fcvt_to_sint_sat(I64, y);
        let yb = self.b.ins().fcvt_from_sint(F64, yi);
        let exact = self.b.ins().fcmp(FloatCC::Equal, yb, y);
        let is_int = self.b.ins().bor(huge, exact);
        let low = self.b.ins().band_imm_s(yi, 1);
        let odd_bit = self.b.ins().icmp_imm_s(IntCC::Equal, low, 1);
        let not_huge = self.b.ins().bxor_imm_s(huge, 1);
        let odd = self.b.ins().band(odd_bit, not_huge);
        let odd = self.b.ins().band(odd, exact);
        let xbits = self.b.ins().bitcast(I64, MemFlagsData::new(), x);
        let xneg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, xbits, 0);
        let flip = self.b.ins().band(xneg, odd);
        let nr = self.b.ins().fneg(r);
        let r = self.sel(flip, nr, r);
        let lt0 = self.cmpc(FloatCC::LessThan, x, 0.0);
        let not_int = self.b.ins().bxor_imm_s(is_int, 1);
        let bad = self.b.ins().band(lt0, not_int);
        let nan = self.c(f64::NAN);
        let r = self.sel(bad, nan, r);
        // pow(±1, ±inf) = 1, pow(1, y) = 1, pow(x, 0) = 1 (even for NaN).
        let one = self.c(1.0);
        let ax1 = self.cmpc(FloatCC::Equal, ax, 1.0);
        let yinf = self.cmpc(FloatCC::Equal, ay, f64::INFINITY);
        let c1 = self.b.ins().band(ax1, yinf);
        let x1 = self.cmpc(FloatCC::Equal, x, 1.0);
        let y0 = self.cmpc(FloatCC::Equal, y, 0.0);
        let r = self.sel(c1, one, r);
        let r = self.sel(x1, one, r);
        self.sel(y0, one, r)
    }

    /// Exact fmod on integer mantissas (10 bits of quotient per step).
    fn fmod(&mut self, x: Value, y: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let ay = self.b.ins().fabs(y);
        let work = self.b.create_block();
        let join = self.b.create_block();
        let res = self.b.append_block_param(join, F64);
        // NaN for y == 0, x inf, either NaN; x itself when |x| < |y| (incl. y inf).
        let nan = self.c(f64::NAN);
        let y0 = self.cmpc(FloatCC::Equal, y, 0.0);
        let xinf = self.cmpc(FloatCC::Equal, ax, f64::INFINITY);
        let un = self.b.ins().fcmp(FloatCC::Unordered, x, y);
        let bad = self.b.ins().bor(y0, xinf);
        let bad = self.b.ins().bor(bad, un);
        let small = self.b.ins().fcmp(FloatCC::LessThan, ax, ay);
        let early = self.sel(small, x, nan);
        let exit = self.b.ins().bor(bad, small);
        self.b.ins().brif(exit, join, &[early.into()], work, &[]);
        self.b.seal_block(work);
        self.b.switch_to_block(work);
        let split = |m: &mut Self, v: Value| {
            let bits = m.b.ins().bitcast(I64, MemFlagsData::new(), v);
            let e = m.b.ins().ushr_imm_s(bits, 52);
            let mant = m.b.ins().band_imm_s(bits, 0x000f_ffff_ffff_ffff);
            let norm = m.b.ins().bor_imm_s(mant, 1 << 52);
            let sub = m.b.ins().icmp_imm_s(IntCC::Equal, e, 0);
            let one = m.b.ins().iconst(I64, 1);
            let e = m.sel(sub, one, e);
            let mant = m.sel(sub, mant, norm);
            (e, mant)
        };
        let (ex, mx) = split(self, ax);
        let (ey, my) = split(self, ay);
        let (ve, vm) = (self.b.declare_var(I64), self.b.declare_var(I64));
        self.b.def_var(ve, ex);
        self.b.def_var(vm, mx);
        let head = self.b.create_block();
        let body = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let e = self.b.use_var(ve);
        let gt = self.b.ins().icmp(IntCC::SignedGreaterThan, e, ey);
        self.b.ins().brif(gt, body, &[], done, &[]);
        self.b.seal_block(body);
        self.b.switch_to_block(body);
        let m = self.b.use_var(vm);
        let d = self.b.ins().isub(e, ey);
        let ten = self.b.ins().iconst(I64, 10);
        let lt = self.b.ins().icmp(IntCC::SignedLessThan, d, ten);
        let s = self.sel(lt, d, ten);
        let sh = self.b.ins().ishl(m, s);
        let m = self.b.ins().urem(sh, my);
        let e = self.b.ins().isub(e, s);
        self.b.def_var(vm, m);
        self.b.def_var(ve, e);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        let m = self.b.use_var(vm);
        let m = self.b.ins().urem(m, my);
        let mf = self.b.ins().fcvt_from_uint(F64, m);
        let k = self.b.ins().iadd_imm_s(ey, -1075);
        let r = self.ldexp(mf, k);
        let r = self.b.ins().fcopysign(r, x);
        self.b.ins().jump(join, &[r.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        res
    }

    /// `a.wrapping_pow(b)` for b >= 0 (b capped at u32::MAX); for b < 0, 1 if a == 1 else 0.
    fn ipow(&mut self, a: Value, e: Value) -> Value {
        let join = self.b.create_block();
        let res = self.b.append_block_param(join, I64);
        let work = self.b.create_block();
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, e, 0);
        let is1 = self.b.ins().icmp_imm_s(IntCC::Equal, a, 1);
        let early = self.b.ins().uextend(I64, is1);
        self.b.ins().brif(neg, join, &[early.into()], work, &[]);
        self.b.seal_block(work);
        self.b.switch_to_block(work);
        let cap = self.b.ins().iconst(I64, u32::MAX as i64);
        let big = self.b.ins().icmp(IntCC::SignedGreaterThan, e, cap);
        let e = self.sel(big, cap, e);
        let (vr, vb, ve) = (
            self.b.declare_var(I64),
            self.b.declare_var(I64),
            self.b.declare_var(I64),
        );
        let one = self.b.ins().iconst(I64, 1);
        self.b.def_var(vr, one);
        self.b.def_var(vb, a);
        self.b.def_var(ve, e);
        let head = self.b.create_block();
        let body = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let ev = self.b.use_var(ve);
        let more = self.b.ins().icmp_imm_s(IntCC::NotEqual, ev, 0);
        self.b.ins().brif(more, body, &[], done, &[]);
        self.b.seal_block(body);
        self.b.switch_to_block(body);
        let (r, base) = (self.b.use_var(vr), self.b.use_var(vb));
        let bit = self.b.ins().band_imm_s(ev, 1);
        let bit = self.b.ins().icmp_imm_s(IntCC::NotEqual, bit, 0);
        let rm = self.b.ins().imul(r, base);
        let r = self.sel(bit, rm, r);
        let base = self.b.ins().imul(base, base);
        let ev = self.b.ins().ushr_imm_s(ev, 1);
        self.b.def_var(vr, r);
        self.b.def_var(vb, base);
        self.b.def_var(ve, ev);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        let r = self.b.use_var(vr);
        self.b.ins().jump(join, &[r.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        res
    }
}
