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
use cranelift_codegen::ir::types::{F32, F32X4, I16, I16X8, I32, I32X4, I64, I64X2};
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

    /// Four f16/bf16 elements (address, byte offset per lane) widened as one
    /// f32x4: the conversion runs once on the lanes instead of per element.
    pub(crate) fn load_half_lanes(&mut self, at: &[(Value, i32)], d: DType) -> Val {
        let mut v = self.ic(true, 0);
        for (l, &(a, off)) in at.iter().enumerate() {
            let h = self.b.ins().uload16(I32, super::ops::mflags(), a, off);
            v = self.b.ins().insertlane(v, h, l as u8);
        }
        Val::v(self.widen_half(v, d, true), Kind::F32)
    }

    /// Four adjacent f16/bf16 elements at `addr`: one 64-bit load, zero
    /// extended to i32 lanes, widened as one f32x4.
    pub(crate) fn load_half_contiguous(&mut self, addr: Value, d: DType) -> Val {
        let q = self.b.ins().load(I64, super::ops::mflags(), addr, 0);
        let v = self.b.ins().scalar_to_vector(I64X2, q);
        let v = self.b.ins().bitcast(I16X8, lane_flags(), v);
        let v = self.b.ins().uwiden_low(v);
        Val::v(self.widen_half(v, d, true), Kind::F32)
    }

    /// Stores an f32 value (scalar or lanes) into four adjacent f16/bf16
    /// elements at `addr` with one 64-bit store. The bits are biased by
    /// -0x8000 so the signed saturating narrow (plain SSE2) is exact.
    pub(crate) fn store_half_contiguous(&mut self, addr: Value, d: DType, v: Val) -> R<()> {
        if v.k != Kind::F32 {
            return Err(format!("storing {:?} lanes into {d}", v.k));
        }
        let x = self.splat(v)?;
        let bits = self.narrow_half(x, d, true);
        let biased = self.add_c(true, bits, -0x8000);
        let n = self.b.ins().snarrow(biased, biased);
        let k = self.b.ins().iconst(I16, -0x8000);
        let k = self.b.ins().splat(I16X8, k);
        let n = self.b.ins().bxor(n, k);
        let n = self.b.ins().bitcast(I64X2, lane_flags(), n);
        let q = self.b.ins().extractlane(n, 0);
        self.b.ins().store(super::ops::mflags(), q, addr, 0);
        Ok(())
    }

    /// Stores an f32 value (scalar or lanes) into four f16/bf16 elements,
    /// narrowing all lanes at once.
    pub(crate) fn store_half_lanes(&mut self, at: &[(Value, i32)], d: DType, v: Val) -> R<()> {
        if v.k != Kind::F32 {
            return Err(format!("storing {:?} lanes into {d}", v.k));
        }
        let x = self.splat(v)?;
        let bits = self.narrow_half(x, d, true);
        for (l, &(a, off)) in at.iter().enumerate() {
            let h = self.b.ins().extractlane(bits, l as u8);
            self.b.ins().istore16(super::ops::mflags(), h, a, off);
        }
        Ok(())
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
        let bits = self.b.ins().bitcast(I64, MemFlagsData::new(), x);
        let hi64 = self.b.ins().ushr_imm_s(bits, 32);
        let hi = self.b.ins().ireduce(I32, hi64);
        let lo = self.b.ins().ireduce(I32, bits);
        let sign = self.b.ins().ushr_imm_s(hi, 16);
        let sign = self.b.ins().band_imm_s(sign, 0x8000);
        let exp = self.b.ins().ushr_imm_s(hi, 20);
        let exp = self.b.ins().band_imm_s(exp, 0x7FF);
        let man = self.b.ins().band_imm_s(hi, 0x000F_FFFF);
        // Inf/NaN.
        let man_nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, man, 0);
        let lo_nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, lo, 0);
        let any = self.b.ins().bor(man_nz, lo_nz);
        let (q, z) = (self.b.ins().iconst(I32, 0x40), self.b.ins().iconst(I32, 0));
        let q = self.b.ins().select(any, q, z);
        let top = self.b.ins().ushr_imm_s(man, 13);
        let naninf = self.b.ins().bor_imm_s(top, 0x7F80);
        let naninf = self.b.ins().bor(naninf, q);
        let is_naninf = self.b.ins().icmp_imm_s(IntCC::Equal, exp, 0x7FF);
        // Exponent rebiased for bf16.
        let he = self.b.ins().iadd_imm_s(exp, 127 - 1023);
        let over = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, he, 0xFF);
        let inf = self.b.ins().iconst(I32, 0x7F80);
        // Normal: round bit 0x1000, ties to even.
        let ne = self.b.ins().ishl_imm_s(he, 7);
        let nr = self.b.ins().bor(ne, top);
        let rb = self.b.ins().band_imm_s(man, 0x1000);
        let st = self.b.ins().band_imm_s(man, 0x2FFF);
        let normal = self.round_up(nr, rb, st);
        // Subnormal: the hidden bit joins the mantissa, shifted by 14 - he.
        let m = self.b.ins().bor_imm_s(man, 0x0010_0000);
        let c14 = self.b.ins().iconst(I32, 14);
        let sh = self.b.ins().isub(c14, he);
        let hm = self.b.ins().ushr(m, sh);
        let one = self.b.ins().iconst(I32, 1);
        let c13 = self.b.ins().iconst(I32, 13);
        let sh2 = self.b.ins().isub(c13, he);
        let rbit = self.b.ins().ishl(one, sh2);
        let rb = self.b.ins().band(m, rbit);
        let mask = self.b.ins().imul_imm_s(rbit, 3);
        let mask = self.b.ins().iadd_imm_s(mask, -1);
        let st = self.b.ins().band(m, mask);
        let sub = self.round_up(hm, rb, st);
        let gone = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, he, -14);
        let zero = self.b.ins().iconst(I32, 0);
        let sub = self.b.ins().select(gone, zero, sub);
        let low = self.b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, he, 0);
        let r = self.b.ins().select(low, sub, normal);
        let r = self.b.ins().select(over, inf, r);
        let r = self.b.ins().select(is_naninf, naninf, r);
        self.b.ins().bor(r, sign)
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

#[cfg(test)]
mod tests {
    //! f16/bf16 against the reference interpreter (which converts with the
    //! `half` crate), bit for bit, NaN payloads included.

    use super::*;
    use crate::cpu::tests::{check, jit, map1, samples, DTYPES};
    use kiln_ir::kernel::build::ProgramBuilder;
    use kiln_ir::kernel::interp::run_program;
    use kiln_ir::kernel::{BinOp, BufferRole, Expr, KernelProgram, Stmt};
    use kiln_ir::Storage;

    /// Raw bits of every element (f16/bf16 as u16, f32 as u32), so NaN payloads count.
    fn bits(s: &Storage) -> Vec<u64> {
        match s {
            Storage::F16(v) | Storage::BF16(v) => v.iter().map(|&x| x as u64).collect(),
            Storage::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
            Storage::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
            s => (0..s.len()).map(|i| s.get_i64(i) as u64).collect(),
        }
    }

    /// Runs `p` on the interpreter and the JIT; every output identical in bits.
    fn same_bits(p: &KernelProgram, inputs: &[Storage], what: &str) -> Vec<Storage> {
        let refs: Vec<Option<&Storage>> = inputs.iter().map(Some).collect();
        let want = run_program(p, &refs).unwrap_or_else(|e| panic!("{what}: interpreter: {e}"));
        let got = jit(p, inputs);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let (gb, wb) = (bits(g), bits(w));
            assert_eq!(gb.len(), wb.len(), "{what}");
            if let Some(i) = (0..gb.len()).find(|&i| gb[i] != wb[i]) {
                panic!(
                    "{what}: output {k}[{i}]: got {:#x}, want {:#x} (input {:?})",
                    gb[i],
                    wb[i],
                    inputs.first().map(|x| x.get_f64(i.min(x.len() - 1)))
                );
            }
        }
        want
    }

    fn all_patterns(d: DType) -> Storage {
        let v: Vec<u16> = (0..=u16::MAX).collect();
        match d {
            DType::F16 => Storage::F16(v),
            _ => Storage::BF16(v),
        }
    }

    /// `o[i] = x[i]` for i in 0..n, through a stride-1 index (contiguous
    /// lanes) or a non-affine one (per-lane addresses).
    fn copy(from: DType, to: DType, n: usize, scalar: bool) -> KernelProgram {
        let mut pb = ProgramBuilder::new();
        let x = pb.buffer("x", from, n, BufferRole::Input(0));
        let o = pb.buffer("o", to, n, BufferRole::Output(0));
        let body = pb.nest(&[n], |_, idx| {
            let i = if scalar {
                // (i * 1) % n is i, but not affine for the vectoriser.
                Expr::Binary(
                    BinOp::Rem,
                    Box::new(idx[0].clone()),
                    Box::new(Expr::I(n as i64, DType::I64)),
                )
            } else {
                idx[0].clone()
            };
            vec![Stmt::Store {
                buf: o,
                index: i.clone(),
                value: Expr::load(x, i),
            }]
        });
        pb.kernel("copy", body);
        pb.finish()
    }

    /// Every f16 and bf16 bit pattern widens to the interpreter's f32, in
    /// vector loops and scalar code, and the constant folder agrees.
    #[test]
    fn widening_all_bit_patterns() {
        for d in [DType::F16, DType::BF16] {
            let x = all_patterns(d);
            for scalar in [false, true] {
                let p = copy(d, DType::F32, x.len(), scalar);
                let want = same_bits(&p, std::slice::from_ref(&x), &format!("{d} -> f32"));
                let Storage::F32(w) = &want[0] else {
                    panic!("f32 output")
                };
                for h in 0..=u16::MAX {
                    let c = match d {
                        DType::F16 => f16_bits_to_f32(h),
                        _ => bf16_bits_to_f32(h),
                    };
                    assert_eq!(c.to_bits(), w[h as usize].to_bits(), "{d} {h:#x}");
                }
            }
            // Round trip through the narrow type is the identity on its bits.
            same_bits(
                &copy(d, d, x.len(), false),
                std::slice::from_ref(&x),
                &format!("{d} -> {d}"),
            );
        }
    }

    /// f32 values around every rounding boundary of `d`: each representable
    /// value, the exact midpoints (ties), one f32 ulp either side, plus
    /// overflow, underflow, infinities and NaNs with payloads.
    fn narrowing_inputs(d: DType) -> Vec<f32> {
        let widen = |h: u16| match d {
            DType::F16 => f16_bits_to_f32(h),
            _ => bf16_bits_to_f32(h),
        };
        let top = if d == DType::F16 { 0x7C00u16 } else { 0x7F80 };
        let mut v = vec![];
        for h in 0..top {
            let (a, b) = (widen(h) as f64, widen(h + 1) as f64);
            let mid = ((a + b) / 2.0) as f32;
            for x in [widen(h), mid, mid.next_down(), mid.next_up()] {
                v.push(x);
                v.push(-x);
            }
        }
        for u in (0..=u32::MAX).step_by(65_521) {
            v.push(f32::from_bits(u));
        }
        v.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::from_bits(0xFF80_2001),
            f32::from_bits(0x7FBF_FFFF),
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            65504.0,
            65519.99,
            65520.0,
            5.960_464_5e-8,
            2.980_232_2e-8,
            2.980_232_4e-8,
        ]);
        v
    }

    /// Stores into f16/bf16 buffers and `Cast`s to them round like the
    /// interpreter (and like the constant folder) on every boundary case.
    #[test]
    fn narrowing_matches_interpreter() {
        for d in [DType::F16, DType::BF16] {
            let xs = narrowing_inputs(d);
            let x = Storage::F32(xs.clone());
            for scalar in [false, true] {
                let p = copy(DType::F32, d, xs.len(), scalar);
                let want = same_bits(&p, std::slice::from_ref(&x), &format!("store f32 -> {d}"));
                let w = bits(&want[0]);
                for (i, &f) in xs.iter().enumerate() {
                    let c = match d {
                        DType::F16 => f32_to_f16_bits(f),
                        _ => f32_to_bf16_bits(f),
                    };
                    assert_eq!(c as u64, w[i], "{d} of {f:e} ({:#x})", f.to_bits());
                }
            }
            let p = map1(DType::F32, DType::F32, xs.len(), |e| e.cast(d));
            same_bits(&p, std::slice::from_ref(&x), &format!("cast f32 -> {d}"));
        }
    }

    /// Every cast between f16/bf16 and every other dtype, both ways.
    #[test]
    fn every_cast_pair_matches_interpreter() {
        let halves = [DType::F16, DType::BF16];
        for from in DTYPES.iter().chain(&halves) {
            let x = samples(*from);
            for to in DTYPES.iter().chain(&halves) {
                if !is_half(*from) && !is_half(*to) {
                    continue;
                }
                let p = map1(*from, *to, x.len(), |e| e.cast(*to));
                same_bits(
                    &p,
                    std::slice::from_ref(&x),
                    &format!("cast {from} -> {to}"),
                );
            }
        }
    }

    /// f16 arithmetic is f32 arithmetic rounded once, on store; constants
    /// are rounded to the type they are written in.
    #[test]
    fn arithmetic_rounds_on_store_only() {
        for d in [DType::F16, DType::BF16] {
            let x = samples(d);
            let ops = [BinOp::Add, BinOp::Mul, BinOp::Div, BinOp::Max, BinOp::Min];
            for op in ops {
                let p = map1(d, d, x.len(), |e| {
                    let c = Expr::F(0.1, d);
                    let t = Expr::Binary(op, Box::new(e.clone()), Box::new(c));
                    Expr::Binary(BinOp::Mul, Box::new(t), Box::new(e))
                });
                check(
                    &p,
                    std::slice::from_ref(&x),
                    None,
                    &format!("{op:?} on {d}"),
                );
            }
            let p = map1(d, DType::Bool, x.len(), |e| e.lt(Expr::F(0.3, d)));
            check(&p, std::slice::from_ref(&x), None, &format!("compare {d}"));
        }
    }

    /// The f64-accumulated matmul stores like the interpreter's `from_f64`,
    /// including sums whose rounding depends on bits below the f64's top 32.
    #[test]
    fn f64_accumulated_stores() {
        use kiln_ir::kernel::Matmul;
        let p = |e: i32| 2f64.powi(e);
        // (dtype, a, b): c = a · b over k = 3, summed exactly in f64.
        let cases: [(DType, [f64; 3], [f64; 3]); 4] = [
            // A tie at bf16 precision decided by a bit below the top 32.
            (DType::BF16, [1.0, p(-8), p(-60)], [1.0; 3]),
            // Subnormal bf16: f64 -> f32 -> bf16 would round twice to 0.
            (DType::BF16, [p(-67), p(-75), 0.0], [p(-67), p(-75), 1.0]),
            (DType::F16, [1.0, p(-11), p(-12)], [1.0, 1.0, p(-12)]),
            (DType::F16, [p(-12), p(-13), 0.0], [p(-12), p(-13), 1.0]),
        ];
        for (d, va, vb) in cases {
            let a = Storage::from_f64s(d, va.to_vec());
            let b = Storage::from_f64s(d, vb.to_vec());
            let mut pb = ProgramBuilder::new();
            let ba = pb.buffer("a", d, 3, BufferRole::Input(0));
            let bb = pb.buffer("b", d, 3, BufferRole::Input(1));
            let bc = pb.buffer("c", d, 1, BufferRole::Output(0));
            let v = |buf, rs, cs| crate::cpu::test_util::view(buf, Expr::i(0), rs, cs);
            pb.kernel(
                "mm",
                vec![Stmt::Matmul(Matmul {
                    a: v(ba, 3, 1),
                    b: v(bb, 1, 1),
                    c: v(bc, 1, 1),
                    m: 1,
                    n: 1,
                    k: 3,
                    accumulate: false,
                })],
            );
            same_bits(&pb.finish(), &[a, b], &format!("matmul {d} {va:?} {vb:?}"));
        }
    }

    /// The conversions lower on every target: aarch64 (NEON) and x86-64
    /// without SSE4.1 (signed lane compares only, no rounding instructions).
    #[test]
    fn compiles_for_aarch64_and_baseline_x86() {
        use crate::cpu::{compile_object, CpuTarget};
        let progs = [
            copy(DType::F16, DType::F32, 37, false),
            copy(DType::F32, DType::BF16, 37, true),
            copy(DType::F32, DType::F16, 37, false),
            copy(DType::BF16, DType::BF16, 37, false),
            copy(DType::F64, DType::F64, 5, false),
            map1(DType::F32, DType::F32, 37, |e| e.cast(DType::F16)),
            map1(DType::BF16, DType::F16, 37, |e| e.cast(DType::F16)),
        ];
        for (triple, cpu) in [
            ("aarch64-unknown-linux-gnu", None),
            ("aarch64-apple-darwin", None),
            ("x86_64-unknown-linux-gnu", Some("x86-64")),
        ] {
            let t = CpuTarget::parse(triple, cpu).unwrap_or_else(|e| panic!("{e}"));
            for p in &progs {
                let prog = crate::cpu::test_util::single(p);
                compile_object(&prog, "h", &t).unwrap_or_else(|e| panic!("{triple}: {e}\n{p}"));
            }
        }
    }

    /// The aarch64 object, linked with a C driver and run under
    /// qemu-aarch64, gives the interpreter's bits for every f16 and bf16
    /// pattern widened and for the narrowing boundary cases.
    #[test]
    fn aarch64_object_runs_under_qemu() {
        use crate::cpu::{compile_object, CpuTarget};
        use std::process::Command;
        let n = 1usize << 16;
        let zs = narrowing_inputs(DType::F16);
        let m = zs.len();
        let mut pb = ProgramBuilder::new();
        let x = pb.buffer("x", DType::F16, n, BufferRole::Input(0));
        let w = pb.buffer("w", DType::BF16, n, BufferRole::Input(1));
        let z = pb.buffer("z", DType::F32, m, BufferRole::Input(2));
        let a = pb.buffer("a", DType::F32, n, BufferRole::Output(0));
        let d = pb.buffer("d", DType::F32, n, BufferRole::Output(1));
        let b = pb.buffer("b", DType::F16, m, BufferRole::Output(2));
        let c = pb.buffer("c", DType::BF16, m, BufferRole::Output(3));
        let e = pb.buffer("e", DType::F32, m, BufferRole::Output(4));
        let body = pb.nest(&[n], |_, i| {
            let st = |buf, v| Stmt::Store {
                buf,
                index: i[0].clone(),
                value: v,
            };
            vec![
                st(a, Expr::load(x, i[0].clone())),
                st(d, Expr::load(w, i[0].clone())),
            ]
        });
        pb.kernel("widen", body);
        let body = pb.nest(&[m], |_, i| {
            let zi = Expr::load(z, i[0].clone());
            let st = |buf, v| Stmt::Store {
                buf,
                index: i[0].clone(),
                value: v,
            };
            vec![
                st(b, zi.clone()),
                st(c, zi.clone()),
                st(e, zi.cast(DType::BF16)),
            ]
        });
        pb.kernel("narrow", body);
        let p = pb.finish();
        let inputs = [
            all_patterns(DType::F16),
            all_patterns(DType::BF16),
            Storage::F32(zs),
        ];
        let refs: Vec<Option<&Storage>> = inputs.iter().map(Some).collect();
        let want = run_program(&p, &refs).expect("interpreter");

        let prog = crate::cpu::test_util::single(&p);
        let t = CpuTarget::parse("aarch64-unknown-linux-gnu", None).expect("target");
        let obj = compile_object(&prog, "h", &t).unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("kiln-half-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("h.o"), &obj.object).expect("write object");
        for (i, s) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("in{i}.bin")), s.to_le_bytes()).expect("write input");
        }
        let driver = format!(
            "#include <stdio.h>\n#include <stdlib.h>\n#include <stddef.h>\n\
             extern const size_t h_input_sizes[{ni}], h_output_sizes[{no}];\n\
             int h_run(const void *const *, void *const *, void *);\n\
             int main(void) {{\n  const void *in[{ni}]; void *out[{no}]; char name[32];\n\
             for (int i = 0; i < {ni}; i++) {{ void *p = malloc(h_input_sizes[i]);\n\
               snprintf(name, sizeof name, \"in%d.bin\", i); FILE *f = fopen(name, \"rb\");\n\
               if (!f || fread(p, 1, h_input_sizes[i], f) != h_input_sizes[i]) return 2;\n\
               fclose(f); in[i] = p; }}\n\
             for (int i = 0; i < {no}; i++) out[i] = malloc(h_output_sizes[i]);\n\
             void *arena = aligned_alloc(64, {arena});\n\
             if (h_run(in, out, arena)) return 3;\n\
             for (int i = 0; i < {no}; i++) {{ snprintf(name, sizeof name, \"out%d.bin\", i);\n\
               FILE *f = fopen(name, \"wb\"); fwrite(out[i], 1, h_output_sizes[i], f); fclose(f); }}\n\
             return 0;\n}}\n",
            ni = inputs.len(),
            no = want.len(),
            arena = prog.arena_size.div_ceil(64).max(1) * 64,
        );
        std::fs::write(dir.join("main.c"), driver).expect("write driver");
        let tool = |cmd: &mut Command, what: &str| {
            let out = cmd.current_dir(&dir).output().unwrap_or_else(|e| {
                panic!("{what} is needed for this test and could not run: {e}")
            });
            assert!(
                out.status.success(),
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        tool(
            Command::new("aarch64-linux-gnu-gcc").args(["-O1", "main.c", "h.o", "-o", "main"]),
            "aarch64-linux-gnu-gcc",
        );
        tool(
            Command::new("timeout").args([
                "120",
                "qemu-aarch64",
                "-L",
                "/usr/aarch64-linux-gnu",
                "./main",
            ]),
            "qemu-aarch64",
        );
        for (k, w) in want.iter().enumerate() {
            let bytes = std::fs::read(dir.join(format!("out{k}.bin"))).expect("read output");
            let g = Storage::from_le_bytes(w.dtype(), &bytes).expect("output size");
            let (gb, wb) = (bits(&g), bits(w));
            let bad = (0..wb.len()).filter(|&i| gb[i] != wb[i]).count();
            assert_eq!(
                bad,
                0,
                "aarch64 output {k} ({}): {bad} elements differ",
                w.dtype()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
