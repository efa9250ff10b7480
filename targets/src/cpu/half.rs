//! f16 and bf16 in the CPU backend.
//!
//! Narrow floats are computed in f32, as the reference interpreter computes
//! them: a load widens to f32, a store or a `Cast` to f16/bf16 rounds to the
//! nearest representable value (ties to even). Arithmetic between the two is
//! plain f32, with no rounding after each operation.
//!
//! The conversions are integer and f32 operations only, so they need no
//! F16C, AVX512-FP16 or Armv8.2 FP16 and give the same bits on every target,
//! scalar or `f32x4`. They reproduce the `half` crate the interpreter uses,
//! NaN payloads included: a NaN keeps the top bits of its payload and gets
//! its quiet bit set, both ways. Subnormals are kept (no flush to zero).
//!
//! Stores of f64 values (the f64-accumulated matmul into an f16 or bf16
//! buffer) follow the interpreter's `from_f64` on this project's x86 hosts:
//! f16 goes through f32 (F16C converts `f as f32`), bf16 through the `half`
//! crate's software path, which rounds the top 32 bits of the f64.

use super::kernel::{KernelCx, Kind, Val, R};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use kiln_ir::DType;

/// Whether the backend can hold buffers of dtype `d` (every dtype today; the
/// match is exhaustive so a new dtype must be decided here).
pub(crate) fn storable(d: DType) -> bool {
    match d {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 | DType::Bool => true,
        DType::I8 | DType::U8 | DType::I16 | DType::U16 => true,
        DType::I32 | DType::U32 | DType::I64 | DType::U64 => true,
    }
}

/// Whether `d` is a narrow float (stored as 16 bits, computed in f32).
pub(crate) fn is_half(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

/// f32 → f16 bits, round to nearest even (the algorithm the emitted code runs).
pub(crate) fn f32_to_f16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    let sign = (u >> 16) & 0x8000;
    let a = u & 0x7FFF_FFFF;
    let o = if a > 0x7F80_0000 {
        0x7E00 | ((a >> 13) & 0x3FF)
    } else if a >= 0x4780_0000 {
        0x7C00
    } else if a < 0x3880_0000 {
        // Below 2^-14: adding 0.5 leaves the f16 subnormal grid (2^-24) as the
        // f32 ulp, so the FPU's own rounding is the rounding.
        (f32::from_bits(a) + 0.5).to_bits() - 0.5f32.to_bits()
    } else {
        let odd = (a >> 13) & 1;
        (a.wrapping_sub(0x3800_0000) + 0xFFF + odd) >> 13
    };
    (sign | o) as u16
}

/// f16 bits → f32 (exact).
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let mut o = (h & 0x7FFF) << 13;
    let exp = o & 0x0F80_0000;
    o += 0x3800_0000;
    if exp == 0x0F80_0000 {
        o += 0x3800_0000;
        if h & 0x3FF != 0 {
            o |= 0x0040_0000;
        }
    } else if exp == 0 {
        o = (f32::from_bits(o + 0x0080_0000) - f32::from_bits(0x3880_0000)).to_bits();
    }
    f32::from_bits(o | ((h & 0x8000) << 16))
}

/// f32 → bf16 bits, round to nearest even.
pub(crate) fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32 (exact).
pub(crate) fn bf16_bits_to_f32(h: u16) -> f32 {
    let q = if h & 0x7FFF > 0x7F80 { 0x40 } else { 0 };
    f32::from_bits(((h | q) as u32) << 16)
}

/// `x` rounded to the precision of `d` (a compile-time constant).
pub(crate) fn round_const(x: f32, d: DType) -> f32 {
    match d {
        DType::F16 => f16_bits_to_f32(f32_to_f16_bits(x)),
        DType::BF16 => bf16_bits_to_f32(f32_to_bf16_bits(x)),
        _ => x,
    }
}

fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl KernelCx<'_, '_> {
    /// An i32 constant, or four lanes of it.
    fn ic(&mut self, vec: bool, c: i64) -> Value {
        let s = self.b.ins().iconst(I32, c);
        if vec {
            self.b.ins().splat(I32X4, s)
        } else {
            s
        }
    }

    fn and_c(&mut self, vec: bool, x: Value, c: i64) -> Value {
        let k = self.ic(vec, c);
        self.b.ins().band(x, k)
    }

    fn or_c(&mut self, vec: bool, x: Value, c: i64) -> Value {
        let k = self.ic(vec, c);
        self.b.ins().bor(x, k)
    }

    fn add_c(&mut self, vec: bool, x: Value, c: i64) -> Value {
        let k = self.ic(vec, c);
        self.b.ins().iadd(x, k)
    }

    /// `c ? a : e` for an `icmp` result (scalar flag or lane mask).
    fn isel(&mut self, vec: bool, c: Value, a: Value, e: Value) -> Value {
        if vec {
            self.b.ins().bitselect(c, a, e)
        } else {
            self.b.ins().select(c, a, e)
        }
    }

    /// Signed compare against a constant (operands here are below 2^31, and
    /// signed lane compares are plain SSE2).
    fn icmp_c(&mut self, vec: bool, cc: IntCC, x: Value, c: i64) -> Value {
        if vec {
            let k = self.ic(true, c);
            self.b.ins().icmp(cc, x, k)
        } else {
            self.b.ins().icmp_imm_s(cc, x, c)
        }
    }

    fn f_to_i(&mut self, vec: bool, x: Value) -> Value {
        if vec {
            self.b.ins().bitcast(I32X4, lane_flags(), x)
        } else {
            self.b.ins().bitcast(I32, MemFlagsData::new(), x)
        }
    }

    fn i_to_f(&mut self, vec: bool, x: Value) -> Value {
        if vec {
            self.b.ins().bitcast(F32X4, lane_flags(), x)
        } else {
            self.b.ins().bitcast(F32, MemFlagsData::new(), x)
        }
    }

    /// f16/bf16 bits (low 16 bits of an i32, or of each i32x4 lane, upper
    /// bits zero) → f32 or f32x4.
    pub(crate) fn widen_half(&mut self, h: Value, d: DType, vec: bool) -> Value {
        if d == DType::BF16 {
            let mag = self.and_c(vec, h, 0x7FFF);
            let nan = self.icmp_c(vec, IntCC::SignedGreaterThan, mag, 0x7F80);
            let (q, z) = (self.ic(vec, 0x40), self.ic(vec, 0));
            let q = self.isel(vec, nan, q, z);
            let h = self.b.ins().bor(h, q);
            let o = self.b.ins().ishl_imm_s(h, 16);
            return self.i_to_f(vec, o);
        }
        let mag = self.and_c(vec, h, 0x7FFF);
        let o = self.b.ins().ishl_imm_s(mag, 13);
        let exp = self.and_c(vec, o, 0x0F80_0000);
        let o = self.add_c(vec, o, 0x3800_0000);
        // Inf/NaN: exponent 31 becomes 255; a NaN gets its quiet bit.
        let infnan = self.icmp_c(vec, IntCC::Equal, exp, 0x0F80_0000);
        let nan = self.icmp_c(vec, IntCC::SignedGreaterThan, mag, 0x7C00);
        let big = self.add_c(vec, o, 0x3800_0000);
        let (q, z) = (self.ic(vec, 0x0040_0000), self.ic(vec, 0));
        let q = self.isel(vec, nan, q, z);
        let big = self.b.ins().bor(big, q);
        // Zero/subnormal: renormalised exactly by an f32 subtraction.
        let tiny = self.icmp_c(vec, IntCC::Equal, exp, 0);
        let t = self.add_c(vec, o, 0x0080_0000);
        let t = self.i_to_f(vec, t);
        let magic = self.b.ins().f32const(f32::from_bits(0x3880_0000));
        let magic = if vec {
            self.b.ins().splat(F32X4, magic)
        } else {
            magic
        };
        let t = self.b.ins().fsub(t, magic);
        let t = self.f_to_i(vec, t);
        let o = self.isel(vec, tiny, t, o);
        let o = self.isel(vec, infnan, big, o);
        let s = self.and_c(vec, h, 0x8000);
        let s = self.b.ins().ishl_imm_s(s, 16);
        let o = self.b.ins().bor(o, s);
        self.i_to_f(vec, o)
    }

    /// f32 or f32x4 → f16/bf16 bits in the low 16 bits of i32 (lanes),
    /// rounded to nearest even.
    pub(crate) fn narrow_half(&mut self, x: Value, d: DType, vec: bool) -> Value {
        let u = self.f_to_i(vec, x);
        if d == DType::BF16 {
            let a = self.and_c(vec, u, 0x7FFF_FFFF);
            let nan = self.icmp_c(vec, IntCC::SignedGreaterThan, a, 0x7F80_0000);
            let hi = self.b.ins().ushr_imm_s(u, 16);
            let qn = self.or_c(vec, hi, 0x40);
            let odd = self.and_c(vec, hi, 1);
            let r = self.add_c(vec, u, 0x7FFF);
            let r = self.b.ins().iadd(r, odd);
            let r = self.b.ins().ushr_imm_s(r, 16);
            return self.isel(vec, nan, qn, r);
        }
        let sign = self.and_c(vec, u, 0x8000_0000u32 as i32 as i64);
        let sign = self.b.ins().ushr_imm_s(sign, 16);
        let a = self.and_c(vec, u, 0x7FFF_FFFF);
        // NaN keeps the top of its payload, quieted; overflow gives infinity.
        let nan = self.icmp_c(vec, IntCC::SignedGreaterThan, a, 0x7F80_0000);
        let pay = self.b.ins().ushr_imm_s(a, 13);
        let pay = self.and_c(vec, pay, 0x3FF);
        let qn = self.or_c(vec, pay, 0x7E00);
        let big = self.icmp_c(vec, IntCC::SignedGreaterThan, a, 0x477F_FFFF);
        let inf = self.ic(vec, 0x7C00);
        // Subnormal results: the FPU rounds on the 2^-24 grid of [0.5, 1).
        let tiny = self.icmp_c(vec, IntCC::SignedLessThan, a, 0x3880_0000);
        let af = self.i_to_f(vec, a);
        let half = self.b.ins().f32const(0.5);
        let half = if vec {
            self.b.ins().splat(F32X4, half)
        } else {
            half
        };
        let t = self.b.ins().fadd(af, half);
        let t = self.f_to_i(vec, t);
        let t = self.add_c(vec, t, -(0.5f32.to_bits() as i64));
        // Normal results: rebias, round half to even through the carry.
        let odd = self.b.ins().ushr_imm_s(a, 13);
        let odd = self.and_c(vec, odd, 1);
        let n = self.add_c(vec, a, 0xFFF - 0x3800_0000);
        let n = self.b.ins().iadd(n, odd);
        let n = self.b.ins().ushr_imm_s(n, 13);
        let o = self.isel(vec, tiny, t, n);
        let o = self.isel(vec, big, inf, o);
        let o = self.isel(vec, nan, qn, o);
        self.b.ins().bor(o, sign)
    }

    /// An f32 value rounded to the precision of `d` (a `Cast` to f16/bf16).
    pub(crate) fn round_half(&mut self, v: Val, d: DType) -> R<Val> {
        if v.k != Kind::F32 {
            return Err(format!("rounding a {:?} value to {d}", v.k));
        }
        if let Some(c) = self.const_f(v.v) {
            if !v.vec {
                let r = round_const(c as f32, d);
                return Ok(Val::s(self.b.ins().f32const(r), Kind::F32));
            }
        }
        let bits = self.narrow_half(v.v, d, v.vec);
        Ok(Val {
            v: self.widen_half(bits, d, v.vec),
            ..v
        })
    }

    /// f16/bf16 bits (i32) for a scalar value about to be stored in a `d` buffer.
    pub(crate) fn half_bits(&mut self, v: Val, d: DType) -> R<Value> {
        if v.vec {
            return Err(format!("storing lanes as scalar {d}"));
        }
        Ok(match v.k {
            Kind::F64 if d == DType::BF16 => self.f64_to_bf16(v.v),
            Kind::F64 => {
                let x = self.b.ins().fdemote(F32, v.v);
                self.narrow_half(x, d, false)
            }
            _ => {
                let x = self.cast(v, DType::F32)?;
                self.narrow_half(x.v, d, false)
            }
        })
    }

    /// f64 → bf16 bits as the `half` crate's software `from_f64` does:
    /// round to nearest even using only the top 32 bits of the f64.
    fn f64_to_bf16(&mut self, x: Value) -> Value {
        let ins = |cx: &mut Self| cx.b.ins();
        let bits = ins(self).bitcast(I64, MemFlagsData::new(), x);
        let hi64 = ins(self).ushr_imm_s(bits, 32);
        let hi = ins(self).ireduce(I32, hi64);
        let lo = ins(self).ireduce(I32, bits);
        let sign = ins(self).ushr_imm_s(hi, 16);
        let sign = ins(self).band_imm_s(sign, 0x8000);
        let exp = ins(self).ushr_imm_s(hi, 20);
        let exp = ins(self).band_imm_s(exp, 0x7FF);
        let man = ins(self).band_imm_s(hi, 0x000F_FFFF);
        // Inf/NaN.
        let man_nz = ins(self).icmp_imm_s(IntCC::NotEqual, man, 0);
        let lo_nz = ins(self).icmp_imm_s(IntCC::NotEqual, lo, 0);
        let any = ins(self).bor(man_nz, lo_nz);
        let (q, z) = (ins(self).iconst(I32, 0x40), ins(self).iconst(I32, 0));
        let q = ins(self).select(any, q, z);
        let top = ins(self).ushr_imm_s(man, 13);
        let naninf = ins(self).bor_imm_s(top, 0x7F80);
        let naninf = ins(self).bor(naninf, q);
        let is_naninf = ins(self).icmp_imm_s(IntCC::Equal, exp, 0x7FF);
        // Exponent rebiased for bf16.
        let he = ins(self).iadd_imm_s(exp, 127 - 1023);
        let over = ins(self).icmp_imm_s(IntCC::SignedGreaterThanOrEqual, he, 0xFF);
        let inf = ins(self).iconst(I32, 0x7F80);
        // Normal: round bit 0x1000, ties to even.
        let ne = ins(self).ishl_imm_s(he, 7);
        let nr = ins(self).bor(ne, top);
        let rb = ins(self).band_imm_s(man, 0x1000);
        let st = ins(self).band_imm_s(man, 0x2FFF);
        let normal = self.round_up(nr, rb, st);
        // Subnormal: the hidden bit joins the mantissa, shifted by 14 - he.
        let m = ins(self).bor_imm_s(man, 0x0010_0000);
        let sh = ins(self).irsub_imm_s(he, 14);
        let hm = ins(self).ushr(m, sh);
        let one = ins(self).iconst(I32, 1);
        let sh2 = ins(self).irsub_imm_s(he, 13);
        let rbit = ins(self).ishl(one, sh2);
        let rb = ins(self).band(m, rbit);
        let mask = ins(self).imul_imm_s(rbit, 3);
        let mask = ins(self).iadd_imm_s(mask, -1);
        let st = ins(self).band(m, mask);
        let sub = self.round_up(hm, rb, st);
        let gone = ins(self).icmp_imm_s(IntCC::SignedLessThan, he, -14);
        let zero = ins(self).iconst(I32, 0);
        let sub = ins(self).select(gone, zero, sub);
        let low = ins(self).icmp_imm_s(IntCC::SignedLessThanOrEqual, he, 0);
        let r = ins(self).select(low, sub, normal);
        let r = ins(self).select(over, inf, r);
        let r = ins(self).select(is_naninf, naninf, r);
        ins(self).bor(r, sign)
    }

    /// `x + 1` when the round bit and (a sticky bit or the last bit) are set.
    fn round_up(&mut self, x: Value, round_bit: Value, sticky_or_odd: Value) -> Value {
        let a = self.b.ins().icmp_imm_s(IntCC::NotEqual, round_bit, 0);
        let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, sticky_or_odd, 0);
        let up = self.b.ins().band(a, c);
        let up = self.b.ins().uextend(I32, up);
        self.b.ins().iadd(x, up)
    }
}
