//! Circular functions: sin/cos/tan after reduction modulo π/2, and
//! atan/asin/acos through one reduced atan.

use super::{inv_factorial, Trig, M, PIO2};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::Value;

/// π/2 as three pieces of 33, 33 and 53 bits: `k * PIO2_1` and `k * PIO2_2`
/// are exact for |k| < 2^20 (Cody–Waite reduction).
const PIO2_1: f64 = 1.570_796_326_734_125_6;
const PIO2_2: f64 = 6.077_100_506_303_966e-11;
const PIO2_3: f64 = 2.022_266_248_795_950_6e-21;
/// 2/π as 24-bit integer chunks; chunk `i` weighs 2^(-24(i+1)). Ten chunks
/// (240 bits) reduce every f32 argument exactly enough (Payne–Hanek).
const TWO_OVER_PI_24: [u32; 10] = [
    0xa2f983, 0x6e4e44, 0x1529fc, 0x2757d1, 0xf534dd, 0xc0db62, 0x95993c, 0x439041, 0xfe5163,
    0xabdebb,
];
/// atan(k/8) for k = 0..=8, the centres of the atan reduction.
const ATAN_K8: [f64; 9] = [
    0.0,
    0.124_354_994_546_761_44,
    0.244_978_663_126_864_14,
    0.358_770_670_270_572_25,
    0.463_647_609_000_806_1,
    0.558_599_315_343_562_4,
    0.643_501_108_793_284_4,
    0.718_829_999_621_624_5,
    std::f64::consts::FRAC_PI_4,
];

impl M<'_, '_> {
    /// atan of a non-negative (or NaN) `a`: a > 1 maps to π/2 - atan(1/a);
    /// then atan(y) = atan(k/8) + atan((y - k/8)/(1 + y·k/8)) with |t| ≤ 1/16.
    fn atan_pos(&mut self, a: Value) -> Value {
        let inv = self.cmpc(FloatCC::GreaterThan, a, 1.0);
        let one = self.c(1.0);
        let ra = self.div(one, a);
        let y = self.sel(inv, ra, a);
        let y8 = self.mulc(y, 8.0);
        let k = self.nearest(y8);
        let tc = self.mulc(k, 0.125);
        let num = self.sub(y, tc);
        let den = self.mul(y, tc);
        let den = self.addc(den, 1.0);
        let t = self.div(num, den);
        let z = self.mul(t, t);
        let coef: Vec<f64> = (1..=7)
            .map(|j| if j % 2 == 1 { -1.0 } else { 1.0 } / (2 * j + 1) as f64)
            .collect();
        let p = self.poly(z, &coef, 4);
        let p = self.mul(z, p);
        let p = self.mul(t, p);
        let p = self.add(t, p);
        let mut theta = self.c(0.0);
        for (j, &v) in ATAN_K8.iter().enumerate().skip(1) {
            let m = self.cmpc(FloatCC::Equal, k, j as f64);
            theta = self.selc(m, v, theta);
        }
        let r = self.add(theta, p);
        let flipped = self.rsubc(PIO2, r);
        self.sel(inv, flipped, r)
    }

    pub(super) fn atan(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let r = self.atan_pos(a);
        self.copysign(r, x)
    }

    pub(super) fn asin(&mut self, x: Value) -> Value {
        // asin(a) = atan(a/√((1-a)(1+a))); |x| > 1 gives √(<0) = NaN.
        let a = self.abs(x);
        let p = self.rsubc(1.0, a);
        let q = self.addc(a, 1.0);
        let d = self.mul(p, q);
        let d = self.sqrt(d);
        let y = self.div(a, d);
        let r = self.atan_pos(y);
        self.copysign(r, x)
    }

    pub(super) fn acos(&mut self, x: Value) -> Value {
        // acos(x) = 2·atan(√((1-x)/(1+x))).
        let p = self.rsubc(1.0, x);
        let q = self.addc(x, 1.0);
        let y = self.div(p, q);
        let y = self.sqrt(y);
        let r = self.atan_pos(y);
        self.mulc(r, 2.0)
    }

    /// x = q·π/2 + r with q in {0,1,2,3} and |r| ≤ π/4.
    fn reduce_pio2(&mut self, x: Value) -> (Value, Value) {
        if self.single {
            return self.reduce_pio2_exact_f32(x);
        }
        let t = self.mulc(x, std::f64::consts::FRAC_2_PI);
        let k = self.nearest(t);
        let mut r = x;
        for p in [PIO2_1, PIO2_2, PIO2_3] {
            let kp = self.mulc(k, p);
            r = self.sub(r, kp);
        }
        (self.mod4(k), r)
    }

    /// Payne–Hanek reduction for values that are exactly f32: each product
    /// x·chunk is exact in double (24 × 24 bits); integer parts are kept
    /// mod 4 and the fractions summed, renormalising after each step so the
    /// sum stays exact while it matters.
    fn reduce_pio2_exact_f32(&mut self, x: Value) -> (Value, Value) {
        let mut acc = self.c(0.0);
        let mut q = self.c(0.0);
        for (i, &g) in TWO_OVER_PI_24.iter().enumerate() {
            let w = g as f64 * (-24.0 * (i as f64 + 1.0)).exp2();
            let p = self.mulc(x, w);
            let n = self.nearest(p);
            let f = self.sub(p, n);
            let n4 = self.mod4(n);
            q = self.add(q, n4);
            acc = self.add(acc, f);
            let t = self.nearest(acc);
            acc = self.sub(acc, t);
            q = self.add(q, t);
        }
        let r = self.mulc(acc, PIO2);
        (self.mod4(q), r)
    }

    /// `k mod 4` in [0, 4) for an integer-valued `k` (0 for |k| ≥ 2^54).
    fn mod4(&mut self, k: Value) -> Value {
        let h = self.mulc(k, 0.25);
        let h = self.floor(h);
        let h = self.mulc(h, 4.0);
        self.sub(k, h)
    }

    pub(super) fn sin_cos_tan(&mut self, x: Value, which: Trig) -> Value {
        let (q, r) = self.reduce_pio2(x);
        let z = self.mul(r, r);
        // sin r = r + r·z·S(z), cos r = 1 - z/2 + z²·C(z) (Taylor).
        let sc: Vec<f64> = (1..=9)
            .map(|j| if j % 2 == 1 { -1.0 } else { 1.0 } * inv_factorial(2 * j + 1))
            .collect();
        let sp = self.poly(z, &sc, 5);
        let sp = self.mul(z, sp);
        let sp = self.mul(r, sp);
        let s = self.add(r, sp);
        let cc: Vec<f64> = (2..=8)
            .map(|j| if j % 2 == 0 { 1.0 } else { -1.0 } * inv_factorial(2 * j))
            .collect();
        let cp = self.poly(z, &cc, 5);
        let z2 = self.mul(z, z);
        let cp = self.mul(z2, cp);
        let hz = self.mulc(z, 0.5);
        let w = self.rsubc(1.0, hz);
        let lost = self.rsubc(1.0, w);
        let lost = self.sub(lost, hz);
        let lost = self.add(lost, cp);
        let c = self.add(w, lost);
        let qh = self.mulc(q, 0.5);
        let qh = self.floor(qh);
        let qh = self.mulc(qh, 2.0);
        let qodd = self.sub(q, qh);
        let odd = self.cmpc(FloatCC::Equal, qodd, 1.0);
        let res = match which {
            Trig::Sin => {
                let v = self.sel(odd, c, s);
                let neg = self.cmpc(FloatCC::GreaterThanOrEqual, q, 2.0);
                let nv = self.neg(v);
                self.sel(neg, nv, v)
            }
            Trig::Cos => {
                let v = self.sel(odd, s, c);
                let q1 = self.cmpc(FloatCC::Equal, q, 1.0);
                let q2 = self.cmpc(FloatCC::Equal, q, 2.0);
                let neg = self.or(q1, q2);
                let nv = self.neg(v);
                self.sel(neg, nv, v)
            }
            Trig::Tan => {
                let nc = self.neg(c);
                let num = self.sel(odd, nc, s);
                let den = self.sel(odd, s, c);
                self.div(num, den)
            }
        };
        if which == Trig::Cos {
            return res;
        }
        // Keep the sign of zero.
        let zero = self.cmpc(FloatCC::Equal, x, 0.0);
        self.sel(zero, x, res)
    }
}
