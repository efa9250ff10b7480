//! Activation B packed at run time (see `gemm.rs`): the variant's packed
//! layout written by generated copy loops, chunk by chunk, each chunk
//! followed by one kernel call.

use super::gemm::{act_values, Call, CallEpi, NO_ACT};
use super::kernel::{KernelCx, R};
use super::ops::mflags;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_runtime::gemm::Variant;

/// A matmul whose B is packed at run time, chunk by chunk.
pub(super) struct Runtime {
    pub(super) call: Call,
    pub(super) variant: Variant,
    /// Byte address of B(0, 0).
    pub(super) src: Value,
    /// Byte address of the packed chunk.
    pub(super) packed: Value,
    pub(super) pa: Value,
    pub(super) pc: Value,
    /// B's row stride in elements (its column stride is 1).
    pub(super) rs: i64,
    /// The call's flags (bit 0 accumulate, bit 1 per-row bias).
    pub(super) flags: i64,
    /// Bias and residual addresses at column 0 (0: none), for the first row chunk.
    pub(super) bias: Value,
    pub(super) bias_rows: bool,
    pub(super) res: Value,
    /// All rows of B, and the clamp for the last row chunk.
    pub(super) k: i64,
    pub(super) act: (f32, f32),
}

impl Runtime {
    /// Columns in chunks of `nch`, rows in chunks of `kch`: full chunks in
    /// counted loops, the remainders straight after.
    pub(super) fn emit(&self, cx: &mut KernelCx, n: i64, k: i64, nch: i64, kch: i64) -> R<()> {
        let cols = |cx: &mut KernelCx, j0: Value, jw: i64| -> R<()> {
            let nk = k / kch;
            if nk == 1 {
                let p0 = cx.b.ins().iconst(I64, 0);
                self.piece(cx, j0, jw, p0, kch)?;
            } else if nk > 1 {
                cx.counted_loop(0, nk * kch, kch, &mut |cx, p0| {
                    self.piece(cx, j0, jw, p0, kch)
                })?;
            }
            if k % kch > 0 {
                let p0 = cx.b.ins().iconst(I64, nk * kch);
                self.piece(cx, j0, jw, p0, k % kch)?;
            }
            Ok(())
        };
        let nj = n / nch;
        if nj == 1 {
            let j0 = cx.b.ins().iconst(I64, 0);
            cols(cx, j0, nch)?;
        } else if nj > 1 {
            cx.counted_loop(0, nj * nch, nch, &mut |cx, j0| cols(cx, j0, nch))?;
        }
        if n % nch > 0 {
            let j0 = cx.b.ins().iconst(I64, nj * nch);
            cols(cx, j0, n % nch)?;
        }
        Ok(())
    }

    /// Packs rows `p0..p0+kw`, columns `j0..j0+jw` of B and multiplies them in.
    fn piece(&self, cx: &mut KernelCx, j0: Value, jw: i64, p0: Value, kw: i64) -> R<()> {
        let row = cx.b.ins().imul_imm_s(p0, self.rs * 4);
        let col = cx.b.ins().ishl_imm_s(j0, 2);
        let src = cx.b.ins().iadd(self.src, row);
        let src = cx.b.ins().iadd(src, col);
        self.pack(cx, src, kw, jw)?;
        let p4 = cx.b.ins().ishl_imm_s(p0, 2);
        let a = cx.b.ins().iadd(self.pa, p4);
        let c = cx.b.ins().iadd(self.pc, col);
        // The first row chunk carries the epilogue's bias and residual (at
        // this column block); later ones accumulate onto it.
        let bias = if self.bias_rows {
            self.bias
        } else {
            self.column(cx, self.bias, col)
        };
        let res = self.column(cx, self.res, col);
        let (flags, bias, res) = if kw == self.k {
            (cx.b.ins().iconst(I32, self.flags), bias, res)
        } else {
            let first = cx.b.ins().icmp_imm_s(IntCC::Equal, p0, 0);
            let f0 = cx.b.ins().iconst(I32, self.flags);
            let f1 = cx.b.ins().iconst(I32, self.flags | 1);
            let z = cx.b.ins().iconst(I64, 0);
            (
                cx.b.ins().select(first, f0, f1),
                cx.b.ins().select(first, bias, z),
                cx.b.ins().select(first, res, z),
            )
        };
        // Earlier row chunks store partial sums: only the last one clamps.
        let act = if kw == self.k || self.act == NO_ACT {
            act_values(cx, self.act)
        } else {
            let [lo, hi] = act_values(cx, self.act);
            let [nlo, nhi] = act_values(cx, NO_ACT);
            let last = cx.b.ins().icmp_imm_s(IntCC::Equal, p0, self.k - kw);
            [
                cx.b.ins().select(last, lo, nlo),
                cx.b.ins().select(last, hi, nhi),
            ]
        };
        let epi = CallEpi {
            flags,
            bias,
            res,
            act,
        };
        let jw = cx.b.ins().iconst(I64, jw);
        self.call.emit(cx, jw, kw, [a, self.packed, c], epi);
        Ok(())
    }

    /// `base + col` bytes, or 0 when `base` is 0 (no operand).
    fn column(&self, cx: &mut KernelCx, base: Value, col: Value) -> Value {
        let moved = cx.b.ins().iadd(base, col);
        let z = cx.b.ins().iconst(I64, 0);
        cx.b.ins().select(base, moved, z)
    }

    /// The variant's packed layout of a `kw × jw` block at `src` (see
    /// `kiln_runtime::gemm`): per `KC` rows, `NR`-column panels of rows.
    fn pack(&self, cx: &mut KernelCx, src: Value, kw: i64, jw: i64) -> R<()> {
        let bl = self.variant.blocking();
        let (kc_max, nr) = (bl.kc as i64, bl.nr as i64);
        let jw_pad = (jw + nr - 1) / nr * nr;
        let rs4 = self.rs * 4;
        let mut pc = 0;
        while pc < kw {
            let kc = kc_max.min(kw - pc);
            let blk_src = cx.b.ins().iadd_imm_s(src, pc * rs4);
            let blk_dst = cx.b.ins().iadd_imm_s(self.packed, pc * jw_pad * 4);
            let full = jw / nr;
            // One panel: `cols` valid columns from `s`, zero-padded to NR at `d`.
            let panel = |cx: &mut KernelCx, s: Value, d: Value, cols: i64| -> R<()> {
                cx.counted_loop(0, kc, 1, &mut |cx, p| {
                    let so = cx.b.ins().imul_imm_s(p, rs4);
                    let sp = cx.b.ins().iadd(s, so);
                    let dof = cx.b.ins().imul_imm_s(p, nr * 4);
                    let dp = cx.b.ins().iadd(d, dof);
                    let vecs = cols / 4;
                    for v in 0..vecs {
                        let x = cx.b.ins().load(F32X4, mflags(), sp, (v * 16) as i32);
                        cx.b.ins().store(mflags(), x, dp, (v * 16) as i32);
                    }
                    for j in vecs * 4..cols {
                        let x = cx.b.ins().load(F32, mflags(), sp, (j * 4) as i32);
                        cx.b.ins().store(mflags(), x, dp, (j * 4) as i32);
                    }
                    if cols < nr {
                        let z = cx.b.ins().f32const(0.0);
                        for j in cols..nr {
                            cx.b.ins().store(mflags(), z, dp, (j * 4) as i32);
                        }
                    }
                    Ok(())
                })
            };
            if full > 0 {
                cx.counted_loop(0, full, 1, &mut |cx, q| {
                    let so = cx.b.ins().imul_imm_s(q, nr * 4);
                    let s = cx.b.ins().iadd(blk_src, so);
                    let dof = cx.b.ins().imul_imm_s(q, kc * nr * 4);
                    let d = cx.b.ins().iadd(blk_dst, dof);
                    panel(cx, s, d, nr)
                })?;
            }
            if jw % nr > 0 {
                let s = cx.b.ins().iadd_imm_s(blk_src, full * nr * 4);
                let d = cx.b.ins().iadd_imm_s(blk_dst, full * kc * nr * 4);
                panel(cx, s, d, jw % nr)?;
            }
            pc += kc;
        }
        Ok(())
    }
}
