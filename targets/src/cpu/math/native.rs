//! Single-precision forms of exp, log, sigmoid and tanh that
//! run in f32 lanes directly: twice the lanes of the widened path and shorter
//! polynomials, still within 2 ulp.

use super::{inv_factorials, LOG2E, M};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Taylor coefficients of tanh for x³, x⁵, …, x¹⁷.
const TANH_TAYLOR: [f64; 8] = [
    -1.0 / 3.0,
    2.0 / 15.0,
    -17.0 / 315.0,
    62.0 / 2835.0,
    -1382.0 / 155_925.0,
    21844.0 / 6_081_075.0,
    -929_569.0 / 638_512_875.0,
    6_404_582.0 / 10_854_718_875.0,
];

impl M<'_, '_> {
    /// exp in native single precision: |r| ≤ ln2/2 needs degree 7.
    pub(super) fn exp_f32(&mut self, x: Value) -> Value {
        let x = self.clamp(x, -104.0, 89.0);
        let t = self.mulc(x, LOG2E);
        let k = self.nearest(t);
        // ln 2 = 0.693359375 - 2.12194440e-4; k·0.693359375 is exact.
        let hi = self.mulc(k, 0.693_359_375);
        let r = self.sub(x, hi);
        let lo = self.mulc(k, -2.121_944_4e-4);
        let r = self.sub(r, lo);
        let p = self.poly(r, &inv_factorials(0, 8), 8);
        let (s1, s2) = self.pow2_split(k);
        let p = self.mul(p, s1);
        self.mul(p, s2)
    }

    /// 1/(1+e^-x) for x ≥ 0 and e^x/(1+e^x) below, so e^|x| never
    /// overflows and tiny results keep their subnormal bits.
    pub(super) fn sigmoid_f32(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let na = self.neg(a);
        let e = self.exp_f32(na);
        let d = self.addc(e, 1.0);
        let neg = self.cmpc(FloatCC::LessThan, x, 0.0);
        let one = self.c(1.0);
        let n = self.sel(neg, e, one);
        self.div(n, d)
    }

    /// tanh in native single precision: odd Taylor series below 0.5,
    /// (1 - e^-2a)/(1 + e^-2a) above (no cancellation there).
    pub(super) fn tanh_f32(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let m2a = self.mulc(a, -2.0);
        let t = self.exp_f32(m2a);
        let num = self.rsubc(1.0, t);
        let den = self.addc(t, 1.0);
        let big = self.div(num, den);
        let z = self.mul(a, a);
        let p = self.poly(z, &TANH_TAYLOR, TANH_TAYLOR.len());
        let p = self.mul(z, p);
        let p = self.mul(a, p);
        let small = self.add(a, p);
        let is_small = self.cmpc(FloatCC::LessThan, a, 0.5);
        let r = self.sel(is_small, small, big);
        self.copysign(r, x)
    }

    /// log in native single precision: x = 2^k·m, m in [√½, √2), then
    /// log m = f - f²/2 + s·(f²/2 + R) with s = f/(2+f) and R = Σ 2z^j/(2j+1).
    pub(super) fn log_f32(&mut self, x: Value) -> Value {
        let tiny = self.cmpc(FloatCC::LessThan, x, f64::from(f32::MIN_POSITIVE));
        let scaled = self.mulc(x, 8_388_608.0); // 2^23
        let xs = self.sel(tiny, scaled, x);
        let zero = self.c(0.0);
        let eadj = self.selc(tiny, -23.0, zero);
        let ix = self.bits(xs);
        let off = self.ci(0x3f80_0000 - 0x3f35_04f3);
        let u = self.b.ins().iadd(ix, off);
        let eb = self.b.ins().ushr_imm_u(u, 23);
        let sh = self.b.ins().ishl_imm_u(eb, 23);
        let mb = self.b.ins().isub(ix, sh);
        let one = self.ci(0x3f80_0000);
        let mb = self.b.ins().iadd(mb, one);
        let m = self.float_of(mb);
        let magic = self.ci(0x4b00_0000);
        let kb = self.b.ins().bor(eb, magic);
        let kb = self.float_of(kb);
        let k = self.addc(kb, -8_388_608.0 - 127.0);
        let k = self.add(k, eadj);
        let f = self.addc(m, -1.0);
        let d = self.addc(f, 2.0);
        let s = self.div(f, d);
        let z = self.mul(s, s);
        let r = self.poly(z, &[2.0 / 3.0, 2.0 / 5.0, 2.0 / 7.0, 2.0 / 9.0], 4);
        let r = self.mul(z, r);
        let ff = self.mul(f, f);
        let hfsq = self.mulc(ff, 0.5);
        let t = self.add(hfsq, r);
        let t = self.mul(s, t);
        // ln 2 = 0.693359375 - 2.12194440e-4; k·0.693359375 is exact.
        let klo = self.mulc(k, -2.121_944_4e-4);
        let t = self.add(t, klo);
        let t = self.sub(hfsq, t);
        let t = self.sub(t, f);
        let khi = self.mulc(k, 0.693_359_375);
        let res = self.sub(khi, t);
        self.log_specials(x, res)
    }
}
