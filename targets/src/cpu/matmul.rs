//! `Stmt::Matmul`: a register-tiled f32 loop nest (4 rows × 8 columns of
//! `f32x4` accumulators when B's rows are contiguous, 4×4 scalars otherwise).
//!
//! Every output element accumulates its products in increasing `p` with a
//! separate multiply and add, exactly as the interpreter does, so results
//! match it bit for bit. Other dtypes use a plain triple loop (f64 or wrapping
//! i64 accumulation, as the interpreter).

use super::kernel::{KernelCx, Kind, Val, R};
use super::ops::mflags;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;
use kiln_ir::kernel::Matmul;
use kiln_ir::DType;

/// Rows of A per register tile.
const MR: i64 = 4;
/// Products per pass over C: a 4×8 tile's strip of B (KC rows) fits in L1.
const KC: i64 = 256;

#[derive(Clone, Copy)]
enum Group {
    /// Four contiguous columns starting at this column of the tile.
    Vec(i64),
    /// One column.
    Scalar(i64),
}

/// Emits `C = A·B (+C)` for views whose offsets are the scalar i64 values `offs`.
pub(crate) fn emit_matmul(cx: &mut KernelCx, mm: &Matmul, offs: [Value; 3]) -> R<()> {
    if super::gemm::emit(cx, mm, offs)? {
        return Ok(());
    }
    let dt = |b: u32| -> R<DType> {
        Ok(cx
            .bufs
            .get(b as usize)
            .ok_or_else(|| format!("matmul: no buffer {b}"))?
            .dtype)
    };
    let (da, db, dc) = (dt(mm.a.buf)?, dt(mm.b.buf)?, dt(mm.c.buf)?);
    if da != db || db != dc {
        return Err(format!("matmul of {da} x {db} into {dc}"));
    }
    if mm.c.buf == mm.a.buf || mm.c.buf == mm.b.buf {
        return Err("matmul output aliases an operand".into());
    }
    let dims = [mm.m, mm.n, mm.k].map(i64::try_from);
    let [Ok(m), Ok(n), Ok(k)] = dims else {
        return Err("matmul too large".into());
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    if dc != DType::F32 {
        return generic(cx, mm, offs, (m, n, k), dc);
    }
    // Byte addresses of the three view origins.
    let origin =
        |cx: &mut KernelCx, buf: u32, off: Value| -> R<Value> { Ok(cx.elem_addr(buf, off)?.0) };
    let pa = origin(cx, mm.a.buf, offs[0])?;
    let pb = origin(cx, mm.b.buf, offs[1])?;
    let pc = origin(cx, mm.c.buf, offs[2])?;
    let t = Tiles { pa, pb, pc, mm };
    let (main_groups, main_w, rest): (Vec<Group>, i64, Vec<Group>) = if mm.b.col_stride == 1 {
        let w = n / 8 * 8;
        let r = n - w;
        let mut rest = vec![];
        if r >= 4 {
            // Two vectors, overlapping when r < 8: both are loaded before
            // either is stored, so the shared columns get the same value.
            rest.push(Group::Vec(0));
            if r > 4 {
                rest.push(Group::Vec(r - 4));
            }
        } else {
            rest.extend((0..r).map(Group::Scalar));
        }
        (vec![Group::Vec(0), Group::Vec(4)], w, rest)
    } else {
        let w = n / 4 * 4;
        let rest = (0..n - w).map(Group::Scalar).collect();
        ((0..4).map(Group::Scalar).collect(), w, rest)
    };
    let mrow = m / MR * MR;
    // One pass over all of C for products p0..p0+kc: column strips outside,
    // row blocks inside, so a strip of B (kc rows) stays in L1 across rows.
    let pass = |cx: &mut KernelCx, p0: Value, kc: i64, acc: bool| -> R<()> {
        let rows = |cx: &mut KernelCx, j0: Value, groups: &[Group]| -> R<()> {
            cx.counted_loop(0, mrow, MR, &mut |cx, i0| {
                t.tile(cx, i0, j0, MR, groups, p0, kc, acc)
            })?;
            if m > mrow {
                let i0 = cx.b.ins().iconst(I64, mrow);
                t.tile(cx, i0, j0, m - mrow, groups, p0, kc, acc)?;
            }
            Ok(())
        };
        let step = groups_width(&main_groups);
        cx.counted_loop(0, main_w, step, &mut |cx, j0| rows(cx, j0, &main_groups))?;
        if !rest.is_empty() {
            let j0 = cx.b.ins().iconst(I64, main_w);
            rows(cx, j0, &rest)?;
        }
        Ok(())
    };
    let (blocks, tail) = (k / KC, k % KC);
    if blocks >= 1 {
        let p0 = cx.b.ins().iconst(I64, 0);
        pass(cx, p0, KC, mm.accumulate)?;
    }
    if blocks >= 2 {
        cx.counted_loop(1, blocks, 1, &mut |cx, blk| {
            let p0 = cx.b.ins().imul_imm_s(blk, KC);
            pass(cx, p0, KC, true)
        })?;
    }
    if tail > 0 || k == 0 {
        let p0 = cx.b.ins().iconst(I64, blocks * KC);
        pass(cx, p0, tail, mm.accumulate || blocks >= 1)?;
    }
    Ok(())
}

fn groups_width(g: &[Group]) -> i64 {
    g.iter()
        .map(|g| match g {
            Group::Vec(c) => c + 4,
            Group::Scalar(c) => c + 1,
        })
        .max()
        .unwrap_or(1)
}

struct Tiles<'m> {
    pa: Value,
    pb: Value,
    pc: Value,
    mm: &'m Matmul,
}

impl Tiles<'_> {
    /// One `mr` × groups tile at row `i0`, column `j0`, over products `p0..p0+kc`,
    /// starting from C when `acc`, else from zero.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        cx: &mut KernelCx,
        i0: Value,
        j0: Value,
        mr: i64,
        groups: &[Group],
        p0: Value,
        kc: i64,
        acc: bool,
    ) -> R<()> {
        let (a, b, c) = (&self.mm.a, &self.mm.b, &self.mm.c);
        let has_vec = groups.iter().any(|g| matches!(g, Group::Vec(_)));
        // Element (i0 + r, j0 + col) of C.
        let c_row = cx.b.ins().imul_imm_s(i0, c.row_stride * 4);
        let c_col = cx.b.ins().imul_imm_s(j0, c.col_stride * 4);
        let c0 = cx.b.ins().iadd(self.pc, c_row);
        let c0 = cx.b.ins().iadd(c0, c_col);
        let c_at = |cx: &mut KernelCx, r: i64, col: i64| {
            cx.b.ins()
                .iadd_imm_s(c0, (r * c.row_stride + col * c.col_stride) * 4)
        };
        let mut accs: Vec<Vec<Variable>> = vec![];
        for r in 0..mr {
            let mut row = vec![];
            for g in groups {
                let (ty, init) = match *g {
                    Group::Vec(col) => {
                        let init = if acc {
                            let p = c_at(cx, r, col);
                            self.load_c4(cx, p, c.col_stride)?
                        } else {
                            let z = cx.b.ins().f32const(0.0);
                            cx.b.ins().splat(F32X4, z)
                        };
                        (F32X4, init)
                    }
                    Group::Scalar(col) => {
                        let init = if acc {
                            let p = c_at(cx, r, col);
                            cx.b.ins().load(F32, mflags(), p, 0)
                        } else {
                            cx.b.ins().f32const(0.0)
                        };
                        (F32, init)
                    }
                };
                let v = cx.b.declare_var(ty);
                cx.b.def_var(v, init);
                row.push(v);
            }
            accs.push(row);
        }
        // Pointers to A(i0, p) and B(p, j0), advanced by one p per iteration.
        let a_row = cx.b.ins().imul_imm_s(i0, a.row_stride * 4);
        let b_col = cx.b.ins().imul_imm_s(j0, b.col_stride * 4);
        let a_p = cx.b.ins().imul_imm_s(p0, a.col_stride * 4);
        let b_p = cx.b.ins().imul_imm_s(p0, b.row_stride * 4);
        let a_row = cx.b.ins().iadd(a_row, a_p);
        let b_col = cx.b.ins().iadd(b_col, b_p);
        let (va, vb) = (cx.b.declare_var(I64), cx.b.declare_var(I64));
        let a0 = cx.b.ins().iadd(self.pa, a_row);
        let b0 = cx.b.ins().iadd(self.pb, b_col);
        cx.b.def_var(va, a0);
        cx.b.def_var(vb, b0);
        cx.counted_loop(0, kc, 1, &mut |cx, _p| {
            let (ap, bp) = (cx.b.use_var(va), cx.b.use_var(vb));
            let mut bv = vec![];
            for g in groups {
                bv.push(match *g {
                    Group::Vec(col) => cx.b.ins().load(F32X4, mflags(), bp, (col * 4) as i32),
                    Group::Scalar(col) => {
                        let q = cx.b.ins().iadd_imm_s(bp, col * b.col_stride * 4);
                        cx.b.ins().load(F32, mflags(), q, 0)
                    }
                });
            }
            for (r, row) in accs.iter().enumerate() {
                let q = cx.b.ins().iadd_imm_s(ap, r as i64 * a.row_stride * 4);
                let x = cx.b.ins().load(F32, mflags(), q, 0);
                let xs = if has_vec {
                    Some(cx.b.ins().splat(F32X4, x))
                } else {
                    None
                };
                for (gi, g) in groups.iter().enumerate() {
                    let lhs = match g {
                        Group::Vec(_) => xs.unwrap_or(x),
                        Group::Scalar(_) => x,
                    };
                    let prod = cx.b.ins().fmul(lhs, bv[gi]);
                    let acc = cx.b.use_var(row[gi]);
                    let s = cx.b.ins().fadd(acc, prod);
                    cx.b.def_var(row[gi], s);
                }
            }
            let na = cx.b.ins().iadd_imm_s(ap, a.col_stride * 4);
            let nb = cx.b.ins().iadd_imm_s(bp, b.row_stride * 4);
            cx.b.def_var(va, na);
            cx.b.def_var(vb, nb);
            Ok(())
        })?;
        for (r, row) in accs.iter().enumerate() {
            for (gi, g) in groups.iter().enumerate() {
                let v = cx.b.use_var(row[gi]);
                match *g {
                    Group::Vec(col) => {
                        let p = c_at(cx, r as i64, col);
                        if c.col_stride == 1 {
                            cx.b.ins().store(mflags(), v, p, 0);
                        } else {
                            for l in 0..4u8 {
                                let x = cx.b.ins().extractlane(v, l);
                                cx.b.ins().store(
                                    mflags(),
                                    x,
                                    p,
                                    (l as i64 * c.col_stride * 4) as i32,
                                );
                            }
                        }
                    }
                    Group::Scalar(col) => {
                        let p = c_at(cx, r as i64, col);
                        cx.b.ins().store(mflags(), v, p, 0);
                    }
                }
            }
        }
        Ok(())
    }

    fn load_c4(&self, cx: &mut KernelCx, p: Value, col_stride: i64) -> R<Value> {
        if col_stride == 1 {
            return Ok(cx.b.ins().load(F32X4, mflags(), p, 0));
        }
        let mut lanes = vec![];
        for l in 0..4 {
            let q = cx.b.ins().iadd_imm_s(p, l * col_stride * 4);
            lanes.push(cx.b.ins().load(F32, mflags(), q, 0));
        }
        Ok(cx.gather(Kind::F32, &lanes)?.v)
    }
}

/// f64 and integer matmuls: one accumulator per element, in the interpreter's order.
fn generic(
    cx: &mut KernelCx,
    mm: &Matmul,
    offs: [Value; 3],
    (m, n, k): (i64, i64, i64),
    dt: DType,
) -> R<()> {
    let acc_t = if dt.is_float() {
        DType::F64
    } else {
        DType::I64
    };
    let kind = Kind::of(acc_t);
    let elem = |cx: &mut KernelCx,
                buf: u32,
                off: Value,
                i: Value,
                j: Value,
                rs: i64,
                cs: i64|
     -> R<Value> {
        let x = cx.b.ins().imul_imm_s(i, rs);
        let y = cx.b.ins().imul_imm_s(j, cs);
        let s = cx.b.ins().iadd(off, x);
        let s = cx.b.ins().iadd(s, y);
        Ok(cx.elem_addr(buf, s)?.0)
    };
    cx.counted_loop(0, m, 1, &mut |cx, i| {
        cx.counted_loop(0, n, 1, &mut |cx, j| {
            let pc = elem(
                cx,
                mm.c.buf,
                offs[2],
                i,
                j,
                mm.c.row_stride,
                mm.c.col_stride,
            )?;
            let init = if mm.accumulate {
                let v = cx.load_scalar(pc, dt, 0)?;
                cx.cast(v, acc_t)?
            } else {
                cx.red_identity(kiln_ir::kernel::RedOp::Sum, kind)?
            };
            let init = if kind == Kind::F64 {
                // The interpreter starts from +0.0, not the -0.0 identity.
                let z = cx.b.ins().f64const(0.0);
                if mm.accumulate {
                    init.v
                } else {
                    z
                }
            } else {
                init.v
            };
            let ty = cx.b.func.dfg.value_type(init);
            let acc = cx.b.declare_var(ty);
            cx.b.def_var(acc, init);
            cx.counted_loop(0, k, 1, &mut |cx, p| {
                let pa = elem(
                    cx,
                    mm.a.buf,
                    offs[0],
                    i,
                    p,
                    mm.a.row_stride,
                    mm.a.col_stride,
                )?;
                let pb = elem(
                    cx,
                    mm.b.buf,
                    offs[1],
                    p,
                    j,
                    mm.b.row_stride,
                    mm.b.col_stride,
                )?;
                let x = cx.load_scalar(pa, dt, 0)?;
                let x = cx.cast(x, acc_t)?;
                let y = cx.load_scalar(pb, dt, 0)?;
                let y = cx.cast(y, acc_t)?;
                let prod = cx.binary(kiln_ir::kernel::BinOp::Mul, x, y)?;
                let a = Val::s(cx.b.use_var(acc), kind);
                let s = cx.binary(kiln_ir::kernel::BinOp::Add, a, prod)?;
                cx.b.def_var(acc, s.v);
                Ok(())
            })?;
            let v = Val::s(cx.b.use_var(acc), kind);
            cx.store_scalar(pc, dt, v, 0)
        })
    })
}
