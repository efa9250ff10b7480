//! Kernel IR → Cranelift IR for one kernel function.
//!
//! A kernel function takes one pointer to an array of buffer base pointers.
//! Loops are counted (extents are compile-time constants). An innermost loop
//! whose iterations are independent (the interpreter's `vector_safe` rule)
//! and whose lane-varying values are all f32 runs four iterations per step as
//! `f32x4`, with a scalar tail; everything that does not depend on the loop
//! variable stays scalar and is broadcast where it meets lanes.

use super::fallback::Helper;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32X4, I64};
use cranelift_codegen::ir::{FuncRef, InstBuilder, InstructionData, Opcode, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::kernel::interp::{affine_coeff, vector_safe};
use kiln_ir::kernel::{BufferDecl, Expr, RedOp, Stmt, VarId};
use kiln_ir::DType;
use std::collections::HashMap;

pub(crate) type R<T> = Result<T, String>;

/// The compute class of a value (integers are i64, as in the interpreter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    F32,
    F64,
    Int,
    Bool,
}

impl Kind {
    pub(crate) fn of(d: DType) -> Kind {
        match d {
            DType::F32 | DType::F16 | DType::BF16 => Kind::F32,
            DType::F64 => Kind::F64,
            DType::Bool => Kind::Bool,
            _ => Kind::Int,
        }
    }
}

/// Trip counts up to which an innermost loop is written out, not looped:
/// 16 elements are at most four vector bodies and three scalar ones.
const MAX_UNROLLED_TRIP: i64 = 16;

/// A translated value: a scalar, or four lanes (`F32X4`, or an `I32X4` mask for bool).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Val {
    pub v: Value,
    pub k: Kind,
    pub vec: bool,
}

impl Val {
    pub(crate) fn s(v: Value, k: Kind) -> Val {
        Val { v, k, vec: false }
    }
    pub(crate) fn v(v: Value, k: Kind) -> Val {
        Val { v, k, vec: true }
    }
}

/// Reductions longer than this are folded in chunks, as the interpreter does
/// outside vector loops, so results match it bit for bit.
const INTERP_CHUNK: u64 = 512;

pub(crate) struct KernelCx<'a, 'f> {
    pub b: &'a mut FunctionBuilder<'f>,
    pub bufs: &'a [BufferDecl],
    pub base: Vec<Value>,
    pub helpers: &'a HashMap<Helper, FuncRef>,
    /// SSE4.1 / aarch64: floor, ceil and nearest are single instructions.
    pub native_round: bool,
    vars: HashMap<VarId, Val>,
    /// The loop variable of the vector loop being emitted.
    lane_var: Option<VarId>,
    /// Inside a loop the interpreter runs as lanes (its reductions are sequential there).
    interp_vec: bool,
    /// The matmuls of this function that call the runtime's GEMM kernels.
    pub gemm: Option<super::gemm::GemmCx>,
}

impl<'a, 'f> KernelCx<'a, 'f> {
    pub(crate) fn new(
        b: &'a mut FunctionBuilder<'f>,
        bufs: &'a [BufferDecl],
        base: Vec<Value>,
        helpers: &'a HashMap<Helper, FuncRef>,
        native_round: bool,
    ) -> Self {
        KernelCx {
            b,
            bufs,
            base,
            helpers,
            native_round,
            vars: HashMap::new(),
            lane_var: None,
            interp_vec: false,
            gemm: None,
        }
    }

    /// The value of a float constant instruction, if `v` is one.
    pub(crate) fn const_f(&self, v: Value) -> Option<f64> {
        let inst = self.b.func.dfg.value_def(v).inst()?;
        match self.b.func.dfg.insts[inst] {
            InstructionData::UnaryIeee32 {
                opcode: Opcode::F32const,
                imm,
            } => Some(f32::from_bits(imm.bits()) as f64),
            InstructionData::UnaryIeee64 {
                opcode: Opcode::F64const,
                imm,
            } => Some(f64::from_bits(imm.bits())),
            _ => None,
        }
    }

    /// `for iv in start..end step step { body(iv) }`, rotated (body first).
    pub(crate) fn counted_loop(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value) -> R<()>,
    ) -> R<()> {
        if start >= end {
            return Ok(());
        }
        if start + step >= end {
            let iv = self.b.ins().iconst(I64, start);
            return body(self, iv);
        }
        let var = self.b.declare_var(I64);
        let init = self.b.ins().iconst(I64, start);
        self.b.def_var(var, init);
        let head = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let iv = self.b.use_var(var);
        body(self, iv)?;
        let next = self.b.ins().iadd_imm_s(iv, step);
        self.b.def_var(var, next);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, end);
        self.b.ins().brif(more, head, &[], exit, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// `for var in begin..end { body }` with bounds known only at run time
    /// (the range a parallel task is given).
    pub(crate) fn range_loop(
        &mut self,
        var: VarId,
        begin: Value,
        end: Value,
        body: &[Stmt],
    ) -> R<()> {
        let v = self.b.declare_var(I64);
        self.b.def_var(v, begin);
        let (head, body_b, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let iv = self.b.use_var(v);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, iv, end);
        self.b.ins().brif(more, body_b, &[], exit, &[]);
        self.b.seal_block(body_b);
        self.b.switch_to_block(body_b);
        self.vars.insert(var, Val::s(iv, Kind::Int));
        self.block(body)?;
        let next = self.b.ins().iadd_imm_s(iv, 1);
        self.b.def_var(v, next);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    pub(crate) fn block(&mut self, stmts: &[Stmt]) -> R<()> {
        for s in stmts {
            if self.gemm.as_ref().is_some_and(|g| g.folds(s)) {
                continue;
            }
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        match s {
            Stmt::For { var, extent, body } => self.for_loop(*var, *extent, body),
            Stmt::Let { var, value } => {
                let v = self.eval(value)?;
                self.vars.insert(*var, v);
                Ok(())
            }
            Stmt::Store { buf, index, value } => self.store(*buf, index, value),
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => {
                let c = self.eval(cond)?;
                if c.k != Kind::Bool || c.vec {
                    return Err("If condition must be a scalar bool".into());
                }
                let (tb, eb, join) = (
                    self.b.create_block(),
                    self.b.create_block(),
                    self.b.create_block(),
                );
                self.b.ins().brif(c.v, tb, &[], eb, &[]);
                self.b.seal_block(tb);
                self.b.seal_block(eb);
                let saved = self.vars.clone();
                self.b.switch_to_block(tb);
                self.block(then_body)?;
                self.b.ins().jump(join, &[]);
                self.vars = saved.clone();
                self.b.switch_to_block(eb);
                self.block(else_body)?;
                self.b.ins().jump(join, &[]);
                self.vars = saved;
                self.b.switch_to_block(join);
                self.b.seal_block(join);
                Ok(())
            }
            Stmt::While { cond, body } => {
                if self.lane_var.is_some() {
                    return Err("While inside a vector loop".into());
                }
                let (head, body_b, exit) = (
                    self.b.create_block(),
                    self.b.create_block(),
                    self.b.create_block(),
                );
                self.b.ins().jump(head, &[]);
                self.b.switch_to_block(head);
                let c = self.eval(cond)?;
                if c.k != Kind::Bool || c.vec {
                    return Err("While condition must be a scalar bool".into());
                }
                self.b.ins().brif(c.v, body_b, &[], exit, &[]);
                self.b.seal_block(body_b);
                self.b.switch_to_block(body_b);
                let saved = self.vars.clone();
                self.block(body)?;
                self.vars = saved;
                self.b.ins().jump(head, &[]);
                self.b.seal_block(head);
                self.b.switch_to_block(exit);
                self.b.seal_block(exit);
                Ok(())
            }
            Stmt::Matmul(m) => {
                if self.lane_var.is_some() {
                    return Err("Matmul inside a vector loop".into());
                }
                let oa = self.eval_index(&m.a.offset)?;
                let ob = self.eval_index(&m.b.offset)?;
                let oc = self.eval_index(&m.c.offset)?;
                super::matmul::emit_matmul(self, m, [oa, ob, oc])
            }
        }
    }

    /// `body` over `var` in `start..end` by `step`: a counted loop, or with
    /// `unroll` one copy per iteration and no loop control, for short
    /// innermost loops (an im2col row of a 10-wide image is two vectors and
    /// two scalars) where the counter and branch cost as much as the body.
    fn loop_body(
        &mut self,
        var: VarId,
        body: &[Stmt],
        (start, end, step): (i64, i64, i64),
        unroll: bool,
    ) -> R<()> {
        let mut f = |cx: &mut Self, iv| {
            cx.vars.insert(var, Val::s(iv, Kind::Int));
            cx.block(body)
        };
        if !unroll {
            return self.counted_loop(start, end, step, &mut f);
        }
        for i in (start..end).step_by(step as usize) {
            let iv = self.b.ins().iconst(I64, i);
            f(self, iv)?;
        }
        Ok(())
    }

    fn for_loop(&mut self, var: VarId, extent: u64, body: &[Stmt]) -> R<()> {
        let extent = i64::try_from(extent).map_err(|_| "loop extent too large".to_string())?;
        let innermost = is_innermost(body);
        let interp_vec = self.interp_vec || (extent > 1 && innermost && vector_safe(var, body));
        let outer_interp = std::mem::replace(&mut self.interp_vec, interp_vec);
        // Short innermost loops are written out (see `loop_body`).
        let unroll = innermost && extent <= MAX_UNROLLED_TRIP;
        let mut done = 0;
        if self.lane_var.is_none()
            && extent >= 4
            && innermost
            && !body.iter().any(stmt_has_row_reduce)
            && vectorisable(var, body, self.bufs, &self.vars)
        {
            done = extent / 4 * 4;
            self.lane_var = Some(var);
            let r = self.loop_body(var, body, (0, done, 4), unroll);
            self.lane_var = None;
            r?;
        }
        let r = self.loop_body(var, body, (done, extent, 1), unroll);
        self.interp_vec = outer_interp;
        r
    }

    /// A scalar i64 index (evaluated with the vector loop variable at lane 0).
    pub(crate) fn eval_index(&mut self, e: &Expr) -> R<Value> {
        let v = self.eval(e)?;
        if v.k != Kind::Int || v.vec {
            return Err("an index must be a scalar integer".into());
        }
        Ok(v.v)
    }

    /// The index of lane `l` of a per-lane access (index not affine in the loop variable).
    fn lane_index(&mut self, e: &Expr, var: VarId, l: i64) -> R<Value> {
        let saved = self.vars[&var];
        let iv = self.b.ins().iadd_imm_s(saved.v, l);
        self.vars.insert(var, Val::s(iv, Kind::Int));
        self.lane_var = None;
        let r = self.eval_index(e);
        self.lane_var = Some(var);
        self.vars.insert(var, saved);
        r
    }

    /// Element addresses of the four lanes of an access at `index`, or one
    /// contiguous address (`Ok(Err(addr))`) when consecutive lanes are adjacent.
    fn lane_addrs(&mut self, buf: u32, index: &Expr, var: VarId) -> R<Result<Vec<Value>, Value>> {
        match affine_coeff(index, var) {
            Some(c) => {
                let i0 = self.eval_index(index)?;
                let (a0, d) = self.elem_addr(buf, i0)?;
                if c == 1 {
                    return Ok(Err(a0));
                }
                let step = c * d.size() as i64;
                Ok(Ok((0..4)
                    .map(|l| self.b.ins().iadd_imm_s(a0, l * step))
                    .collect()))
            }
            None => {
                let mut v = vec![];
                for l in 0..4 {
                    let i = self.lane_index(index, var, l)?;
                    v.push(self.elem_addr(buf, i)?.0);
                }
                Ok(Ok(v))
            }
        }
    }

    fn store(&mut self, buf: u32, index: &Expr, value: &Expr) -> R<()> {
        let d = self
            .bufs
            .get(buf as usize)
            .ok_or_else(|| format!("no buffer {buf}"))?
            .dtype;
        let val = match value {
            // narrow(widen(narrow(x))) is narrow(x), NaN payloads included.
            Expr::Cast(t, inner) if *t == d && super::half::is_half(d) => {
                let v = self.eval(inner)?;
                if v.k == Kind::F32 {
                    v
                } else {
                    self.cast(v, d)?
                }
            }
            _ => self.eval(value)?,
        };
        match self.lane_var {
            Some(var) if index.uses_var(var) => match self.lane_addrs(buf, index, var)? {
                Err(addr) if val.k == Kind::F32 && d == DType::F32 => {
                    let v = self.splat(val)?;
                    self.b.ins().store(super::ops::mflags(), v, addr, 0);
                    Ok(())
                }
                Err(addr) if super::half::is_half(d) && val.k == Kind::F32 => {
                    self.store_half_contiguous(addr, d, val)
                }
                Ok(addrs) if super::half::is_half(d) && val.k == Kind::F32 => {
                    let at: Vec<_> = addrs.into_iter().map(|a| (a, 0)).collect();
                    self.store_half_lanes(&at, d, val)
                }
                Err(addr) => {
                    for l in 0..4u8 {
                        let x = Val::s(self.lane(val, l), val.k);
                        self.store_scalar(addr, d, x, l as i32 * d.size() as i32)?;
                    }
                    Ok(())
                }
                Ok(addrs) => {
                    for (l, a) in addrs.into_iter().enumerate() {
                        let x = Val::s(self.lane(val, l as u8), val.k);
                        self.store_scalar(a, d, x, 0)?;
                    }
                    Ok(())
                }
            },
            _ => {
                // Every lane writes the same element: the last one wins.
                let x = Val::s(self.lane(val, 3), val.k);
                let i = self.eval_index(index)?;
                let (addr, d) = self.elem_addr(buf, i)?;
                self.store_scalar(addr, d, x, 0)
            }
        }
    }

    pub(crate) fn eval(&mut self, e: &Expr) -> R<Val> {
        Ok(match e {
            Expr::F(x, t) => match t {
                DType::F64 => Val::s(self.b.ins().f64const(*x), Kind::F64),
                DType::F32 => Val::s(self.b.ins().f32const(*x as f32), Kind::F32),
                DType::F16 | DType::BF16 => {
                    let r = super::half::round_const(*x as f32, *t);
                    Val::s(self.b.ins().f32const(r), Kind::F32)
                }
                _ => return Err(format!("{t} constants are not supported")),
            },
            Expr::I(x, t) => {
                let c = self.b.ins().iconst(I64, *x);
                self.cast(Val::s(c, Kind::Int), *t)?
            }
            Expr::B(x) => Val::s(
                self.b
                    .ins()
                    .iconst(cranelift_codegen::ir::types::I8, *x as i64),
                Kind::Bool,
            ),
            Expr::Var(v) => *self
                .vars
                .get(v)
                .ok_or_else(|| format!("variable v{v} used before it is bound"))?,
            Expr::Load { buf, index } => self.load(*buf, index)?,
            Expr::Unary(op, a) => {
                let a = self.eval(a)?;
                self.unary(*op, a)?
            }
            Expr::Binary(op, a, b) => {
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                if *op == kiln_ir::kernel::BinOp::Pow
                    && !a.vec
                    && matches!(a.k, Kind::F32 | Kind::F64)
                    && !b.vec
                    && self.const_f(b.v) == Some(2.0)
                {
                    // x^2 rounded once is what pow gives for an exponent of 2.
                    Val::s(self.b.ins().fmul(a.v, a.v), a.k)
                } else {
                    self.binary(*op, a, b)?
                }
            }
            Expr::Select(c, a, b) => {
                let c = self.eval(c)?;
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                self.select(c, a, b)?
            }
            Expr::Cast(t, a) => {
                let a = self.eval(a)?;
                self.cast(a, *t)?
            }
            Expr::Reduce {
                op,
                var,
                extent,
                body,
            } => self.reduce(*op, *var, *extent, body)?,
        })
    }

    fn load(&mut self, buf: u32, index: &Expr) -> R<Val> {
        if let Some(var) = self.lane_var {
            if index.uses_var(var) {
                let d = self.bufs[buf as usize].dtype;
                if d == DType::F32 && affine_coeff(index, var) == Some(2) {
                    return self.load_stride2(buf, index);
                }
                return match self.lane_addrs(buf, index, var)? {
                    Err(addr) if d == DType::F32 => {
                        let v = self.b.ins().load(F32X4, super::ops::mflags(), addr, 0);
                        Ok(Val::v(v, Kind::F32))
                    }
                    Err(addr) if super::half::is_half(d) => Ok(self.load_half_contiguous(addr, d)),
                    Ok(addrs) if super::half::is_half(d) => {
                        let at: Vec<_> = addrs.into_iter().map(|a| (a, 0)).collect();
                        Ok(self.load_half_lanes(&at, d))
                    }
                    Err(addr) => {
                        let mut xs = vec![];
                        for l in 0..4 {
                            xs.push(self.load_scalar(addr, d, l * d.size() as i32)?.v);
                        }
                        self.gather(Kind::of(d), &xs)
                    }
                    Ok(addrs) => {
                        let mut xs = vec![];
                        for a in addrs {
                            xs.push(self.load_scalar(a, d, 0)?.v);
                        }
                        self.gather(Kind::of(d), &xs)
                    }
                };
            }
        }
        let i = self.eval_index(index)?;
        let (addr, d) = self.elem_addr(buf, i)?;
        self.load_scalar(addr, d, 0)
    }

    /// Four f32 lanes two elements apart (a stride-2 window: pooling, a
    /// strided slice) as two vector loads and one shuffle instead of four
    /// scalar loads: elements 0..3 and 3..6 from the first lane's address,
    /// lanes 0, 2 of the first and 1, 3 of the second. Never reads past the
    /// last lane's element.
    fn load_stride2(&mut self, buf: u32, index: &Expr) -> R<Val> {
        use cranelift_codegen::ir::types::I8X16;
        use cranelift_codegen::ir::{ConstantData, Endianness, MemFlagsData};
        let i0 = self.eval_index(index)?;
        let (a0, _) = self.elem_addr(buf, i0)?;
        let fl = super::ops::mflags();
        let lo = self.b.ins().load(F32X4, fl, a0, 0);
        let hi = self.b.ins().load(F32X4, fl, a0, 12);
        let lanes = MemFlagsData::new().with_endianness(Endianness::Little);
        let lo = self.b.ins().bitcast(I8X16, lanes, lo);
        let hi = self.b.ins().bitcast(I8X16, lanes, hi);
        let mask: Vec<u8> = [0u8, 2, 5, 7]
            .iter()
            .flat_map(|&l| (0..4).map(move |b| l * 4 + b))
            .collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(mask));
        let v = self.b.ins().shuffle(lo, hi, mask);
        let v = self.b.ins().bitcast(F32X4, lanes, v);
        Ok(Val::v(v, Kind::F32))
    }

    fn reduce(&mut self, op: RedOp, var: VarId, extent: u64, body: &Expr) -> R<Val> {
        let extent = i64::try_from(extent).map_err(|_| "reduction too long".to_string())?;
        let kind = self.kind_of(body)?;
        if self.lane_var.is_none()
            && kind == Kind::F32
            && extent >= 8
            && matches!(op, RedOp::Max | RedOp::Min)
            && reduce_vectorisable(var, body, self.bufs, &self.vars)
        {
            return self.reduce_lanes(op, var, extent, body);
        }
        let lanes = self.lane_var.is_some_and(|lv| self.varies(body, lv));
        let init = self.red_identity(op, kind)?;
        let init = if lanes {
            Val::v(self.splat(init)?, kind)
        } else {
            init
        };
        let ty = self.b.func.dfg.value_type(init.v);
        let acc = self.b.declare_var(ty);
        self.b.def_var(acc, init.v);
        let saved = self.vars.get(&var).copied();
        let chunked = !self.interp_vec && extent > INTERP_CHUNK as i64;
        let fold = |cx: &mut Self, acc: cranelift_frontend::Variable, lo: i64, hi: i64| {
            cx.counted_loop(lo, hi, 1, &mut |cx, iv| {
                cx.vars.insert(var, Val::s(iv, Kind::Int));
                let x = cx.eval(body)?;
                let a = Val {
                    v: cx.b.use_var(acc),
                    k: kind,
                    vec: lanes,
                };
                let r = cx.red_step(op, a, x)?;
                cx.b.def_var(acc, r.v);
                Ok(())
            })
        };
        if chunked {
            // The interpreter folds each 512-element chunk, then combines the chunks.
            self.interp_vec = true;
            let part = self.b.declare_var(ty);
            let mut lo = 0;
            while lo < extent {
                let hi = (lo + INTERP_CHUNK as i64).min(extent);
                let id = self.red_identity(op, kind)?;
                self.b.def_var(part, id.v);
                fold(self, part, lo, hi)?;
                let a = Val::s(self.b.use_var(acc), kind);
                let p = Val::s(self.b.use_var(part), kind);
                let r = self.red_step(op, a, p)?;
                self.b.def_var(acc, r.v);
                lo = hi;
            }
            self.interp_vec = false;
        } else {
            fold(self, acc, 0, extent)?;
        }
        match saved {
            Some(s) => self.vars.insert(var, s),
            None => self.vars.remove(&var),
        };
        Ok(Val {
            v: self.b.use_var(acc),
            k: kind,
            vec: lanes,
        })
    }

    /// An f32 max or min over a loop whose body runs as lanes: four partial
    /// results, one per lane, folded pairwise at the end, then the
    /// iterations past the last whole vector one by one. Exact in any order
    /// (a sum is not: it stays a fold in the interpreter's order, so that
    /// native and interpreted reductions agree bit for bit).
    fn reduce_lanes(&mut self, op: RedOp, var: VarId, extent: i64, body: &Expr) -> R<Val> {
        let init = self.red_identity(op, Kind::F32)?;
        let vinit = self.splat(init)?;
        let vacc = self.b.declare_var(F32X4);
        self.b.def_var(vacc, vinit);
        let saved = self.vars.get(&var).copied();
        let done = extent / 4 * 4;
        self.lane_var = Some(var);
        let r = self.counted_loop(0, done, 4, &mut |cx, iv| {
            cx.vars.insert(var, Val::s(iv, Kind::Int));
            let x = cx.eval(body)?;
            let x = if x.vec {
                x
            } else {
                Val::v(cx.splat(x)?, Kind::F32)
            };
            let a = Val::v(cx.b.use_var(vacc), Kind::F32);
            let r = cx.red_step(op, a, x)?;
            cx.b.def_var(vacc, r.v);
            Ok(())
        });
        self.lane_var = None;
        r?;
        let v = self.b.use_var(vacc);
        let lane = |cx: &mut Self, l: u8| Val::s(cx.b.ins().extractlane(v, l), Kind::F32);
        let (l0, l1, l2, l3) = (lane(self, 0), lane(self, 1), lane(self, 2), lane(self, 3));
        let lo = self.red_step(op, l0, l1)?;
        let hi = self.red_step(op, l2, l3)?;
        let folded = self.red_step(op, lo, hi)?;
        let acc = self.b.declare_var(cranelift_codegen::ir::types::F32);
        self.b.def_var(acc, folded.v);
        self.counted_loop(done, extent, 1, &mut |cx, iv| {
            cx.vars.insert(var, Val::s(iv, Kind::Int));
            let x = cx.eval(body)?;
            let a = Val::s(cx.b.use_var(acc), Kind::F32);
            let r = cx.red_step(op, a, x)?;
            cx.b.def_var(acc, r.v);
            Ok(())
        })?;
        match saved {
            Some(s) => self.vars.insert(var, s),
            None => self.vars.remove(&var),
        };
        Ok(Val::s(self.b.use_var(acc), Kind::F32))
    }

    fn red_step(&mut self, op: RedOp, a: Val, x: Val) -> R<Val> {
        use kiln_ir::kernel::BinOp;
        let bop = match op {
            RedOp::Sum if a.k == Kind::Bool => BinOp::Or,
            RedOp::Sum => BinOp::Add,
            RedOp::Prod if a.k == Kind::Bool => BinOp::And,
            RedOp::Prod => BinOp::Mul,
            RedOp::Max => BinOp::Max,
            RedOp::Min => BinOp::Min,
        };
        let r = self.binary(bop, a, x)?;
        if a.vec && !r.vec {
            return Ok(Val::v(self.splat(r)?, r.k));
        }
        Ok(r)
    }

    /// Whether `e`'s value differs between the lanes of the vector loop over `lv`.
    fn varies(&self, e: &Expr, lv: VarId) -> bool {
        match e {
            Expr::Var(v) => *v == lv || self.vars.get(v).is_some_and(|x| x.vec),
            Expr::Load { index, .. } => self.varies(index, lv),
            Expr::Unary(_, a) | Expr::Cast(_, a) => self.varies(a, lv),
            Expr::Binary(_, a, b) => self.varies(a, lv) || self.varies(b, lv),
            Expr::Select(c, a, b) => self.varies(c, lv) || self.varies(a, lv) || self.varies(b, lv),
            Expr::Reduce { body, .. } => self.varies(body, lv),
            _ => false,
        }
    }

    /// The compute kind of `e` given the variables bound so far.
    fn kind_of(&self, e: &Expr) -> R<Kind> {
        let mut lets = HashMap::new();
        for (v, x) in &self.vars {
            lets.insert(*v, x.k);
        }
        kind_in(e, &lets, self.bufs)
    }
}

/// The compute kind of `e`; `lets` gives the kinds of bound variables (loop variables are ints).
fn kind_in(e: &Expr, lets: &HashMap<VarId, Kind>, bufs: &[BufferDecl]) -> R<Kind> {
    use kiln_ir::kernel::UnOp;
    Ok(match e {
        Expr::F(_, DType::F64) => Kind::F64,
        Expr::F(..) => Kind::F32,
        Expr::I(..) => Kind::Int,
        Expr::B(_) => Kind::Bool,
        Expr::Var(v) => lets.get(v).copied().unwrap_or(Kind::Int),
        Expr::Load { buf, .. } => Kind::of(
            bufs.get(*buf as usize)
                .ok_or_else(|| format!("no buffer {buf}"))?
                .dtype,
        ),
        Expr::Unary(UnOp::IsNan | UnOp::IsInf, _) => Kind::Bool,
        Expr::Unary(_, a) => kind_in(a, lets, bufs)?,
        Expr::Binary(op, a, _) => {
            if op.is_comparison() {
                Kind::Bool
            } else {
                kind_in(a, lets, bufs)?
            }
        }
        Expr::Select(_, a, _) => kind_in(a, lets, bufs)?,
        Expr::Cast(t, _) => Kind::of(*t),
        Expr::Reduce { body, .. } => kind_in(body, lets, bufs)?,
    })
}

/// Whether a statement holds a reduction that runs as lanes of its own
/// loop (see `reduce_lanes`): one over contiguous elements. Lanes of the
/// enclosing loop instead would load each lane's row element by element.
fn stmt_has_row_reduce(s: &Stmt) -> bool {
    match s {
        Stmt::Let { value, .. } => has_row_reduce(value),
        Stmt::Store { index, value, .. } => has_row_reduce(index) || has_row_reduce(value),
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => {
            has_row_reduce(cond)
                || then_body.iter().any(stmt_has_row_reduce)
                || else_body.iter().any(stmt_has_row_reduce)
        }
        _ => false,
    }
}

fn has_row_reduce(e: &Expr) -> bool {
    e.any(&mut |x| match x {
        Expr::Reduce {
            op,
            var,
            extent,
            body,
        } => matches!(op, RedOp::Max | RedOp::Min) && *extent >= 8 && loads_contiguous(body, *var),
        _ => false,
    })
}

/// Whether some load in `e` reads consecutive elements as `var` steps.
fn loads_contiguous(e: &Expr, var: VarId) -> bool {
    e.any(&mut |x| matches!(x, Expr::Load { index, .. } if affine_coeff(index, var) == Some(1)))
}

pub(crate) fn is_innermost(body: &[Stmt]) -> bool {
    body.iter().all(|s| match s {
        Stmt::For { .. } | Stmt::Matmul(_) | Stmt::While { .. } => false,
        Stmt::If {
            then_body,
            else_body,
            ..
        } => is_innermost(then_body) && is_innermost(else_body),
        _ => true,
    })
}

/// Whether the loop over `var` can run as f32x4 lanes: its iterations are
/// independent, every lane-varying value is f32 (or a bool mask from f32
/// comparisons), lane-varying indices depend on `var` directly, and `If`
/// conditions are the same in every lane.
fn vectorisable(
    var: VarId,
    body: &[Stmt],
    bufs: &[BufferDecl],
    outer: &HashMap<VarId, Val>,
) -> bool {
    if !vector_safe(var, body) {
        return false;
    }
    VecCheck::new(var, bufs, outer).block(body).is_some()
}

/// Whether a reduction's body can run as lanes of its own loop variable.
fn reduce_vectorisable(
    var: VarId,
    body: &Expr,
    bufs: &[BufferDecl],
    outer: &HashMap<VarId, Val>,
) -> bool {
    VecCheck::new(var, bufs, outer).expr(body).is_some()
}

struct VecCheck<'a> {
    var: VarId,
    /// Variables whose value differs between lanes.
    varying: Vec<VarId>,
    kinds: HashMap<VarId, Kind>,
    bufs: &'a [BufferDecl],
}

impl<'a> VecCheck<'a> {
    /// The check for lanes of `var`, with the kinds of the variables in scope.
    fn new(var: VarId, bufs: &'a [BufferDecl], outer: &HashMap<VarId, Val>) -> Self {
        VecCheck {
            var,
            varying: vec![var],
            kinds: outer.iter().map(|(v, x)| (*v, x.k)).collect(),
            bufs,
        }
    }

    fn block(&mut self, b: &[Stmt]) -> Option<()> {
        for s in b {
            match s {
                Stmt::Let { var, value } => {
                    let k = kind_in(value, &self.kinds, self.bufs).ok()?;
                    if self.expr(value)? {
                        if k != Kind::F32 {
                            return None;
                        }
                        self.varying.push(*var);
                    }
                    self.kinds.insert(*var, k);
                }
                Stmt::Store { buf, index, value } => {
                    self.index(index)?;
                    let d = self.bufs.get(*buf as usize)?.dtype;
                    let lanes_ok = d == DType::F32 || super::half::is_half(d);
                    if self.expr(value)? && (!lanes_ok || self.kind(value)? != Kind::F32) {
                        return None;
                    }
                }
                Stmt::If {
                    cond,
                    then_body,
                    else_body,
                } => {
                    if self.expr(cond)? {
                        return None;
                    }
                    self.block(then_body)?;
                    self.block(else_body)?;
                }
                _ => return None,
            }
        }
        Some(())
    }

    fn kind(&self, e: &Expr) -> Option<Kind> {
        kind_in(e, &self.kinds, self.bufs).ok()
    }

    /// An index may vary only through the loop variable itself.
    fn index(&mut self, e: &Expr) -> Option<()> {
        let lets_vary = self.varying[1..].iter().any(|v| e.uses_var(*v));
        if lets_vary {
            return None;
        }
        // Non-affine indices are evaluated lane by lane, as scalars: they must
        // not contain reductions or loads that would themselves need lanes.
        Some(())
    }

    /// Whether `e` varies between lanes; `None` if it cannot run as lanes.
    fn expr(&mut self, e: &Expr) -> Option<bool> {
        Some(match e {
            Expr::F(..) | Expr::I(..) | Expr::B(_) => false,
            Expr::Var(v) if *v == self.var => return None,
            Expr::Var(v) => self.varying.contains(v),
            Expr::Load { buf, index } => {
                self.index(index)?;
                let varies = index.uses_var(self.var);
                let d = self.bufs.get(*buf as usize)?.dtype;
                if varies && d != DType::F32 && !super::half::is_half(d) {
                    return None;
                }
                varies
            }
            Expr::Unary(_, a) => {
                let v = self.expr(a)?;
                if v && !matches!(self.kind(a)?, Kind::F32 | Kind::Bool) {
                    return None;
                }
                v
            }
            Expr::Binary(_, a, b) => {
                let v = self.expr(a)? | self.expr(b)?;
                if v && !matches!(self.kind(a)?, Kind::F32 | Kind::Bool) {
                    return None;
                }
                v
            }
            Expr::Select(c, a, b) => {
                let v = self.expr(c)? | self.expr(a)? | self.expr(b)?;
                if v && !matches!(self.kind(a)?, Kind::F32 | Kind::Bool) {
                    return None;
                }
                v
            }
            Expr::Cast(t, a) => {
                let v = self.expr(a)?;
                let f32_lanes = *t == DType::F32 || super::half::is_half(*t);
                if v && (self.kind(a)? != Kind::F32 || !f32_lanes) {
                    return None;
                }
                v
            }
            Expr::Reduce { var, body, .. } => {
                self.kinds.insert(*var, Kind::Int);
                let v = self.expr(body)?;
                if v && self.kind(body)? != Kind::F32 {
                    return None;
                }
                v
            }
        })
    }
}
