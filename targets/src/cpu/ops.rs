//! Element operations with the reference interpreter's exact semantics:
//! integers compute in i64 (wrapping), division by zero gives 0, shifts out of
//! range give 0, float Max/Min propagate NaN, float-to-int casts truncate and
//! saturate (NaN gives 0). Scalars use `F32`/`F64`/`I64`/`I8` (bool as 0/1);
//! vector lanes use `F32X4` and `I32X4` masks.

use super::kernel::{KernelCx, Kind, Val, R};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, I32, I32X4, I64, I8};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value};
use kiln_ir::kernel::{BinOp, UnOp};
use kiln_ir::DType;

/// Plain memory accesses: never trapping, alignment not promised (vector
/// loads may be unaligned, and a load folded into an SSE op needs alignment).
pub(crate) fn mflags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl KernelCx<'_, '_> {
    pub(crate) fn fconst(&mut self, k: Kind, x: f64) -> Value {
        match k {
            Kind::F64 => self.b.ins().f64const(x),
            _ => self.b.ins().f32const(x as f32),
        }
    }

    /// Broadcasts a scalar to lanes (F32 → F32X4, bool → I32X4 mask).
    pub(crate) fn splat(&mut self, v: Val) -> R<Value> {
        if v.vec {
            return Ok(v.v);
        }
        match v.k {
            Kind::F32 => Ok(self.b.ins().splat(F32X4, v.v)),
            Kind::Bool => {
                let w = self.b.ins().sextend(I32, v.v);
                let m = self.b.ins().ineg(w);
                Ok(self.b.ins().splat(I32X4, m))
            }
            k => Err(format!("{k:?} values cannot be vector lanes")),
        }
    }

    /// Lane `l` of a vector value as a scalar (bool masks become 0/1).
    pub(crate) fn lane(&mut self, v: Val, l: u8) -> Value {
        if !v.vec {
            return v.v;
        }
        let x = self.b.ins().extractlane(v.v, l);
        if v.k == Kind::Bool {
            self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
        } else {
            x
        }
    }

    /// Rebuilds a vector from four scalar lanes.
    pub(crate) fn gather(&mut self, k: Kind, lanes: &[Value]) -> R<Val> {
        let mut acc = self.splat(Val::s(lanes[0], k))?;
        for (l, &x) in lanes.iter().enumerate().skip(1) {
            let x = if k == Kind::Bool {
                let w = self.b.ins().sextend(I32, x);
                self.b.ins().ineg(w)
            } else {
                x
            };
            acc = self.b.ins().insertlane(acc, x, l as u8);
        }
        Ok(Val::v(acc, k))
    }

    /// Applies a scalar operation lane by lane (for ops without a vector form).
    pub(crate) fn per_lane(
        &mut self,
        args: &[Val],
        f: &mut dyn FnMut(&mut Self, &[Val]) -> R<Val>,
    ) -> R<Val> {
        let mut outs = vec![];
        let mut kind = Kind::F32;
        for l in 0..4u8 {
            let sc: Vec<Val> = args.iter().map(|a| Val::s(self.lane(*a, l), a.k)).collect();
            let r = f(self, &sc)?;
            kind = r.k;
            outs.push(r.v);
        }
        self.gather(kind, &outs)
    }

    // ------------------------------------------------------------ memory

    pub(crate) fn elem_addr(&mut self, buf: u32, idx: Value) -> R<(Value, DType)> {
        let d = self
            .bufs
            .get(buf as usize)
            .ok_or_else(|| format!("no buffer {buf}"))?
            .dtype;
        let size = d.size() as i64;
        let off = if size == 1 {
            idx
        } else {
            self.b.ins().ishl_imm_s(idx, size.trailing_zeros() as i64)
        };
        let base = self.base[buf as usize];
        Ok((self.b.ins().iadd(base, off), d))
    }

    /// Loads one element as its compute kind.
    pub(crate) fn load_scalar(&mut self, addr: Value, d: DType, off: i32) -> R<Val> {
        let f = mflags();
        let ins = self.b.ins();
        Ok(match d {
            DType::F32 => Val::s(ins.load(F32, f, addr, off), Kind::F32),
            DType::F64 => Val::s(ins.load(F64, f, addr, off), Kind::F64),
            DType::I8 => Val::s(ins.sload8(I64, f, addr, off), Kind::Int),
            DType::U8 => Val::s(ins.uload8(I64, f, addr, off), Kind::Int),
            DType::I16 => Val::s(ins.sload16(I64, f, addr, off), Kind::Int),
            DType::U16 => Val::s(ins.uload16(I64, f, addr, off), Kind::Int),
            DType::I32 => Val::s(ins.sload32(f, addr, off), Kind::Int),
            DType::U32 => Val::s(ins.uload32(f, addr, off), Kind::Int),
            DType::I64 | DType::U64 => Val::s(ins.load(I64, f, addr, off), Kind::Int),
            DType::Bool => {
                let x = ins.load(I8, f, addr, off);
                Val::s(self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0), Kind::Bool)
            }
            DType::F16 | DType::BF16 => {
                let h = ins.uload16(I32, f, addr, off);
                Val::s(self.widen_half(h, d, false), Kind::F32)
            }
        })
    }

    /// Stores a scalar, converting it to the buffer's dtype first.
    pub(crate) fn store_scalar(&mut self, addr: Value, d: DType, v: Val, off: i32) -> R<()> {
        let f = mflags();
        if super::half::is_half(d) {
            let bits = self.half_bits(v, d)?;
            self.b.ins().istore16(f, bits, addr, off);
            return Ok(());
        }
        let v = self.cast(v, d)?;
        match d.size() {
            1 if d != DType::Bool => {
                self.b.ins().istore8(f, v.v, addr, off);
            }
            2 => {
                self.b.ins().istore16(f, v.v, addr, off);
            }
            4 if d != DType::F32 => {
                self.b.ins().istore32(f, v.v, addr, off);
            }
            _ => {
                self.b.ins().store(f, v.v, addr, off);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ casts

    /// `Expr::Cast`: converts `v` to the compute kind of `t`.
    pub(crate) fn cast(&mut self, v: Val, t: DType) -> R<Val> {
        if super::half::is_half(t) {
            // Computed in f32, rounded to the narrow type's precision.
            let x = self.cast(v, DType::F32)?;
            return self.round_half(x, t);
        }
        let want = Kind::of(t);
        if v.vec {
            return match (v.k, want) {
                (Kind::F32, Kind::F32) | (Kind::Bool, Kind::Bool) => Ok(v),
                _ => self.per_lane(&[v], &mut |cx, a| cx.cast(a[0], t)),
            };
        }
        let x = v.v;
        let ins = self.b.ins();
        Ok(match (v.k, want) {
            (Kind::F32, Kind::F32) | (Kind::F64, Kind::F64) | (Kind::Bool, Kind::Bool) => v,
            (Kind::F64, Kind::F32) => Val::s(ins.fdemote(F32, x), Kind::F32),
            (Kind::F32, Kind::F64) => Val::s(ins.fpromote(F64, x), Kind::F64),
            (Kind::Int, Kind::F32) => Val::s(ins.fcvt_from_sint(F32, x), Kind::F32),
            (Kind::Int, Kind::F64) => Val::s(ins.fcvt_from_sint(F64, x), Kind::F64),
            (Kind::Bool, Kind::F32 | Kind::F64) => {
                let one = self.fconst(want, 1.0);
                let zero = self.fconst(want, 0.0);
                Val::s(self.b.ins().select(x, one, zero), want)
            }
            (Kind::Bool, Kind::Int) => Val::s(ins.uextend(I64, x), Kind::Int),
            (Kind::F32 | Kind::F64, Kind::Int) => self.float_to_int(v, t),
            (Kind::Int, Kind::Int) => Val::s(self.wrap_int(x, t), Kind::Int),
            (Kind::F32 | Kind::F64, Kind::Bool) => {
                let z = self.fconst(v.k, 0.0);
                Val::s(self.b.ins().fcmp(FloatCC::NotEqual, x, z), Kind::Bool)
            }
            (Kind::Int, Kind::Bool) => Val::s(ins.icmp_imm_s(IntCC::NotEqual, x, 0), Kind::Bool),
        })
    }

    /// Reduces an i64 to the range of `t` (two's-complement wrap), back in i64.
    fn wrap_int(&mut self, x: Value, t: DType) -> Value {
        let (ty, signed): (Type, bool) = match t {
            DType::I8 => (I8, true),
            DType::U8 => (I8, false),
            DType::I16 => (cranelift_codegen::ir::types::I16, true),
            DType::U16 => (cranelift_codegen::ir::types::I16, false),
            DType::I32 => (I32, true),
            DType::U32 => (I32, false),
            _ => return x,
        };
        let n = self.b.ins().ireduce(ty, x);
        if signed {
            self.b.ins().sextend(I64, n)
        } else {
            self.b.ins().uextend(I64, n)
        }
    }

    /// Truncation toward zero, saturating at `t`'s range; NaN gives 0.
    fn float_to_int(&mut self, v: Val, t: DType) -> Val {
        let x = if v.k == Kind::F32 {
            self.b.ins().fpromote(F64, v.v)
        } else {
            v.v
        };
        let (lo, hi) = t.min_max();
        let (lo, hi) = (self.b.ins().f64const(lo), self.b.ins().f64const(hi));
        let c = self.b.ins().fmax(x, lo);
        let c = self.b.ins().fmin(c, hi);
        let s = self.b.ins().fcvt_to_sint_sat(I64, c);
        if t != DType::U64 {
            return Val::s(s, Kind::Int);
        }
        // u64 values at or above 2^63 keep their bit pattern in the i64 lane.
        let u = self.b.ins().fcvt_to_uint_sat(I64, x);
        let big = self.b.ins().f64const(9.2e18);
        let is_big = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, big);
        Val::s(self.b.ins().select(is_big, u, s), Kind::Int)
    }

    // ------------------------------------------------------------ unary

    pub(crate) fn unary(&mut self, op: UnOp, a: Val) -> R<Val> {
        use UnOp::*;
        match a.k {
            Kind::Int => {
                if a.vec {
                    return Err("integer lanes".into());
                }
                let x = a.v;
                let r = match op {
                    Neg => self.b.ins().ineg(x),
                    Abs => {
                        let n = self.b.ins().ineg(x);
                        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
                        self.b.ins().select(neg, n, x)
                    }
                    Not => self.b.ins().bnot(x),
                    Floor | Ceil | Round => x,
                    _ => return Err(format!("{op:?} on integers")),
                };
                Ok(Val::s(r, Kind::Int))
            }
            Kind::Bool => match op {
                Not if a.vec => Ok(Val::v(self.b.ins().bnot(a.v), Kind::Bool)),
                Not => Ok(Val::s(self.b.ins().bxor_imm_s(a.v, 1), Kind::Bool)),
                _ => Err(format!("{op:?} on bool")),
            },
            Kind::F32 | Kind::F64 => self.float_unary(op, a),
        }
    }

    fn float_unary(&mut self, op: UnOp, a: Val) -> R<Val> {
        use UnOp::*;
        let x = a.v;
        let r = match op {
            Neg => self.b.ins().fneg(x),
            Abs => self.b.ins().fabs(x),
            Sqrt => self.b.ins().sqrt(x),
            Floor | Ceil | Round => self.rounding(op, a),
            IsNan => {
                let r = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                return Ok(Val {
                    v: r,
                    k: Kind::Bool,
                    vec: a.vec,
                });
            }
            IsInf => {
                let ab = self.b.ins().fabs(x);
                let inf = self.fconst(a.k, f64::INFINITY);
                let inf = if a.vec {
                    self.b.ins().splat(F32X4, inf)
                } else {
                    inf
                };
                let r = self.b.ins().fcmp(FloatCC::Equal, ab, inf);
                return Ok(Val {
                    v: r,
                    k: Kind::Bool,
                    vec: a.vec,
                });
            }
            Not => return Err("Not on floats".into()),
            _ => return self.transcendental(op, a),
        };
        Ok(Val { v: r, ..a })
    }

    /// Floor, Ceil and Round (half to even): native instructions where the ISA
    /// has them (SSE4.1, aarch64), otherwise the 2^23/2^52 addition trick,
    /// never a libm call.
    fn rounding(&mut self, op: UnOp, a: Val) -> Value {
        let x = a.v;
        if self.native_round {
            return match op {
                UnOp::Floor => self.b.ins().floor(x),
                UnOp::Ceil => self.b.ins().ceil(x),
                _ => self.b.ins().nearest(x),
            };
        }
        let big = if a.k == Kind::F64 {
            4503599627370496.0
        } else {
            8388608.0
        };
        let mk = |cx: &mut Self, c: f64| {
            let s = cx.fconst(a.k, c);
            if a.vec {
                cx.b.ins().splat(F32X4, s)
            } else {
                s
            }
        };
        let (bigv, one) = (mk(self, big), mk(self, 1.0));
        let ax = self.b.ins().fabs(x);
        let t = self.b.ins().fadd(ax, bigv);
        let t = self.b.ins().fsub(t, bigv);
        let r = self.b.ins().fcopysign(t, x);
        let small = self.b.ins().fcmp(FloatCC::LessThan, ax, bigv);
        let sel = |cx: &mut Self, c: Value, p: Value, q: Value| {
            if a.vec {
                let m = cx.b.ins().bitcast(F32X4, lane_flags(), c);
                cx.b.ins().bitselect(m, p, q)
            } else {
                cx.b.ins().select(c, p, q)
            }
        };
        let r = match op {
            UnOp::Floor => {
                let gt = self.b.ins().fcmp(FloatCC::GreaterThan, r, x);
                let m = self.b.ins().fsub(r, one);
                let f = sel(self, gt, m, r);
                self.b.ins().fcopysign(f, x)
            }
            UnOp::Ceil => {
                let lt = self.b.ins().fcmp(FloatCC::LessThan, r, x);
                let p = self.b.ins().fadd(r, one);
                let c = sel(self, lt, p, r);
                self.b.ins().fcopysign(c, x)
            }
            _ => r,
        };
        sel(self, small, r, x)
    }

    /// Exp, Log, trig, hyperbolic and Erf: inline polynomials from `math`
    /// when available, else the module's f64 helper functions.
    fn transcendental(&mut self, op: UnOp, a: Val) -> R<Val> {
        let ty = match (a.k, a.vec) {
            (Kind::F32, true) => F32X4,
            (Kind::F32, false) => F32,
            _ => F64,
        };
        // The inline math rounds with `nearest`/`floor`, which are libm calls
        // on x86 without SSE4.1; there the helpers (no rounding instructions) run.
        if self.native_round {
            if let Some(r) = super::math::emit_unary(self.b, op, ty, a.v) {
                return Ok(Val { v: r, ..a });
            }
        }
        if a.vec {
            return self.per_lane(&[a], &mut |cx, s| cx.transcendental(op, s[0]));
        }
        let x = if a.k == Kind::F32 {
            self.b.ins().fpromote(F64, a.v)
        } else {
            a.v
        };
        let r = self.call_helper(super::fallback::Helper::Un(op), &[x])?;
        let r = if a.k == Kind::F32 {
            self.b.ins().fdemote(F32, r)
        } else {
            r
        };
        Ok(Val::s(r, a.k))
    }

    pub(crate) fn call_helper(&mut self, h: super::fallback::Helper, args: &[Value]) -> R<Value> {
        let f = *self
            .helpers
            .get(&h)
            .ok_or_else(|| format!("no helper for {h:?}"))?;
        let call = self.b.ins().call(f, args);
        Ok(self.b.inst_results(call)[0])
    }

    // ------------------------------------------------------------ binary

    pub(crate) fn binary(&mut self, op: BinOp, a: Val, c: Val) -> R<Val> {
        if a.k != c.k {
            return Err(format!("{op:?} on {:?} and {:?}", a.k, c.k));
        }
        if a.vec || c.vec {
            return self.vector_binary(op, a, c);
        }
        let (x, y) = (a.v, c.v);
        match a.k {
            Kind::F32 | Kind::F64 => {
                if op.is_comparison() {
                    let r = self.b.ins().fcmp(fcc(op), x, y);
                    return Ok(Val::s(r, Kind::Bool));
                }
                let r = match op {
                    BinOp::Add => self.b.ins().fadd(x, y),
                    BinOp::Sub => self.b.ins().fsub(x, y),
                    BinOp::Mul => self.b.ins().fmul(x, y),
                    BinOp::Div => self.b.ins().fdiv(x, y),
                    BinOp::Max => self.b.ins().fmax(x, y),
                    BinOp::Min => self.b.ins().fmin(x, y),
                    BinOp::Rem | BinOp::Pow => return self.float_helper2(op, a, c),
                    _ => return Err(format!("{op:?} on floats")),
                };
                Ok(Val::s(r, a.k))
            }
            Kind::Int => self.int_binary(op, x, y),
            Kind::Bool => {
                let r = match op {
                    BinOp::And | BinOp::Min => self.b.ins().band(x, y),
                    BinOp::Or | BinOp::Max => self.b.ins().bor(x, y),
                    BinOp::Xor | BinOp::Ne => self.b.ins().bxor(x, y),
                    BinOp::Eq => self.b.ins().icmp(IntCC::Equal, x, y),
                    _ => self.b.ins().iconst(I8, 0),
                };
                Ok(Val::s(r, Kind::Bool))
            }
        }
    }

    /// Rem (exact fmod) and Pow, computed in f64 as the interpreter does.
    fn float_helper2(&mut self, op: BinOp, a: Val, c: Val) -> R<Val> {
        use super::fallback::Helper;
        let f32k = a.k == Kind::F32;
        let (x, y) = if f32k {
            (
                self.b.ins().fpromote(F64, a.v),
                self.b.ins().fpromote(F64, c.v),
            )
        } else {
            (a.v, c.v)
        };
        if op == BinOp::Pow && self.native_round {
            let ty = if f32k { F32 } else { F64 };
            if let Some(r) = super::math::emit_pow(self.b, ty, a.v, c.v) {
                return Ok(Val::s(r, a.k));
            }
        }
        let h = if op == BinOp::Rem {
            Helper::Fmod
        } else {
            Helper::Pow
        };
        let r = self.call_helper(h, &[x, y])?;
        let r = if f32k {
            self.b.ins().fdemote(F32, r)
        } else {
            r
        };
        Ok(Val::s(r, a.k))
    }

    fn int_binary(&mut self, op: BinOp, x: Value, y: Value) -> R<Val> {
        if op.is_comparison() {
            let r = self.b.ins().icmp(icc(op), x, y);
            return Ok(Val::s(r, Kind::Bool));
        }
        let r = match op {
            BinOp::Add => self.b.ins().iadd(x, y),
            BinOp::Sub => self.b.ins().isub(x, y),
            BinOp::Mul => self.b.ins().imul(x, y),
            BinOp::Div | BinOp::Rem => {
                // Division by zero and MIN / -1 give 0 (checked_div/rem in the interpreter).
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                let min = self.b.ins().icmp_imm_s(IntCC::Equal, x, i64::MIN);
                let ovf = self.b.ins().band(m1, min);
                let bad = self.b.ins().bor(zero, ovf);
                let one = self.b.ins().iconst(I64, 1);
                let safe = self.b.ins().select(bad, one, y);
                let q = if op == BinOp::Div {
                    self.b.ins().sdiv(x, safe)
                } else {
                    self.b.ins().srem(x, safe)
                };
                let z = self.b.ins().iconst(I64, 0);
                self.b.ins().select(bad, z, q)
            }
            BinOp::Pow => self.call_helper(super::fallback::Helper::IPow, &[x, y])?,
            BinOp::Max | BinOp::Min => {
                let cc = if op == BinOp::Max {
                    IntCC::SignedGreaterThan
                } else {
                    IntCC::SignedLessThan
                };
                let c = self.b.ins().icmp(cc, x, y);
                self.b.ins().select(c, x, y)
            }
            BinOp::And => self.b.ins().band(x, y),
            BinOp::Or => self.b.ins().bor(x, y),
            BinOp::Xor => self.b.ins().bxor(x, y),
            BinOp::Shl | BinOp::Shr => {
                let s = if op == BinOp::Shl {
                    self.b.ins().ishl(x, y)
                } else {
                    self.b.ins().sshr(x, y)
                };
                let ok = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, y, 64);
                let z = self.b.ins().iconst(I64, 0);
                self.b.ins().select(ok, s, z)
            }
            _ => return Err(format!("{op:?} on integers")),
        };
        Ok(Val::s(r, Kind::Int))
    }

    /// f32x4 max/min as `x` where `x` wins or is NaN, else `y`: NaN in
    /// either operand propagates, as the interpreter's max/min. Two compares,
    /// an or and a blend, where Cranelift's `fmax`/`fmin` (which also order
    /// −0 below +0) take about twice as many instructions: pooling windows
    /// and clamps are chains of these.
    fn vector_minmax(&mut self, op: BinOp, x: Value, y: Value) -> Value {
        let cc = if op == BinOp::Max {
            FloatCC::GreaterThan
        } else {
            FloatCC::LessThan
        };
        let wins = self.b.ins().fcmp(cc, x, y);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let pick = self.b.ins().bor(wins, nan);
        let lanes = MemFlagsData::new().with_endianness(Endianness::Little);
        let pick = self.b.ins().bitcast(F32X4, lanes, pick);
        self.b.ins().bitselect(pick, x, y)
    }

    fn vector_binary(&mut self, op: BinOp, a: Val, c: Val) -> R<Val> {
        match a.k {
            Kind::F32 => {
                if matches!(op, BinOp::Rem | BinOp::Pow) {
                    if op == BinOp::Pow && is_const_two(c, self) {
                        let x = self.splat(a)?;
                        return Ok(Val::v(self.b.ins().fmul(x, x), Kind::F32));
                    }
                    if op == BinOp::Pow && self.native_round {
                        let (x, y) = (self.splat(a)?, self.splat(c)?);
                        if let Some(r) = super::math::emit_pow(self.b, F32X4, x, y) {
                            return Ok(Val::v(r, Kind::F32));
                        }
                    }
                    return self.per_lane(&[a, c], &mut |cx, s| cx.binary(op, s[0], s[1]));
                }
                let (x, y) = (self.splat(a)?, self.splat(c)?);
                if op.is_comparison() {
                    return Ok(Val::v(self.b.ins().fcmp(fcc(op), x, y), Kind::Bool));
                }
                let r = match op {
                    BinOp::Add => self.b.ins().fadd(x, y),
                    BinOp::Sub => self.b.ins().fsub(x, y),
                    BinOp::Mul => self.b.ins().fmul(x, y),
                    BinOp::Div => self.b.ins().fdiv(x, y),
                    BinOp::Max | BinOp::Min => self.vector_minmax(op, x, y),
                    _ => return Err(format!("{op:?} on floats")),
                };
                Ok(Val::v(r, Kind::F32))
            }
            Kind::Bool => {
                let (x, y) = (self.splat(a)?, self.splat(c)?);
                let r = match op {
                    BinOp::And | BinOp::Min => self.b.ins().band(x, y),
                    BinOp::Or | BinOp::Max => self.b.ins().bor(x, y),
                    BinOp::Xor | BinOp::Ne => self.b.ins().bxor(x, y),
                    BinOp::Eq => {
                        let t = self.b.ins().bxor(x, y);
                        self.b.ins().bnot(t)
                    }
                    _ => {
                        let z = self.b.ins().iconst(I32, 0);
                        self.b.ins().splat(I32X4, z)
                    }
                };
                Ok(Val::v(r, Kind::Bool))
            }
            k => Err(format!("{k:?} lanes")),
        }
    }

    /// `Select(c, a, b)`, scalar or lanes.
    pub(crate) fn select(&mut self, c: Val, a: Val, e: Val) -> R<Val> {
        if a.k != e.k || c.k != Kind::Bool {
            return Err(format!(
                "select on {:?} between {:?} and {:?}",
                c.k, a.k, e.k
            ));
        }
        if !(c.vec || a.vec || e.vec) {
            return Ok(Val::s(self.b.ins().select(c.v, a.v, e.v), a.k));
        }
        let (m, x, y) = (self.splat(c)?, self.splat(a)?, self.splat(e)?);
        let r = if a.k == Kind::F32 {
            let m = self.b.ins().bitcast(F32X4, lane_flags(), m);
            self.b.ins().bitselect(m, x, y)
        } else {
            self.b.ins().bitselect(m, x, y)
        };
        Ok(Val::v(r, a.k))
    }

    /// The identity of a reduction (so folding from it is exact: -0 for Sum).
    pub(crate) fn red_identity(&mut self, op: kiln_ir::kernel::RedOp, k: Kind) -> R<Val> {
        use kiln_ir::kernel::RedOp::*;
        Ok(match k {
            Kind::F32 | Kind::F64 => {
                let x = match op {
                    Sum => -0.0,
                    Prod => 1.0,
                    Max => f64::NEG_INFINITY,
                    Min => f64::INFINITY,
                };
                Val::s(self.fconst(k, x), k)
            }
            Kind::Int => {
                let x = match op {
                    Sum => 0,
                    Prod => 1,
                    Max => i64::MIN,
                    Min => i64::MAX,
                };
                Val::s(self.b.ins().iconst(I64, x), k)
            }
            Kind::Bool => {
                let x = matches!(op, Min | Prod);
                Val::s(self.b.ins().iconst(I8, x as i64), k)
            }
        })
    }
}

fn is_const_two(c: Val, cx: &KernelCx) -> bool {
    !c.vec && cx.const_f(c.v) == Some(2.0)
}

fn fcc(op: BinOp) -> FloatCC {
    match op {
        BinOp::Eq => FloatCC::Equal,
        BinOp::Ne => FloatCC::NotEqual,
        BinOp::Lt => FloatCC::LessThan,
        BinOp::Le => FloatCC::LessThanOrEqual,
        BinOp::Gt => FloatCC::GreaterThan,
        _ => FloatCC::GreaterThanOrEqual,
    }
}

fn icc(op: BinOp) -> IntCC {
    match op {
        BinOp::Eq => IntCC::Equal,
        BinOp::Ne => IntCC::NotEqual,
        BinOp::Lt => IntCC::SignedLessThan,
        BinOp::Le => IntCC::SignedLessThanOrEqual,
        BinOp::Gt => IntCC::SignedGreaterThan,
        _ => IntCC::SignedGreaterThanOrEqual,
    }
}
