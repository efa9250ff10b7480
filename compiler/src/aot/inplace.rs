//! In-place reuse: when may a program's output share memory with one of its
//! inputs? Decided from the kernel IR alone, never from op names.
//!
//! The rule proven here: the program is one kernel, a loop nest whose
//! innermost body is straight-line (`Let`s and `Store`s), with
//! - exactly one store to the output, at an index `I` that is an affine
//!   function of the loop variables and injective over the nest (every
//!   iteration writes its own element);
//! - every load of the input (and of the output) at exactly `I`, with `Let`s
//!   inlined, and none after the store.
//!
//! Then iteration `t` reads element `I(t)` before writing it, and no other
//! iteration touches `I(t)`, so overwriting the input element by element is
//! the same as writing a separate buffer. `I` must also cover every element
//! (a bijection onto `0..len`), so a renderer need not zero-fill the output
//! first and no element keeps stale input data. Programs with GEMMs, conditionals,
//! gathers or reductions over the input are refused.

use crate::lower::fused::expr::affine;
use kiln_ir::kernel::{BufId, Expr, KernelProgram, Stmt, VarId};
use std::collections::HashMap;

/// Whether output buffer `out` may be placed over input buffers `inputs`
/// (the buffers bound to the same dying value).
pub fn can_overwrite(prog: &KernelProgram, out: BufId, inputs: &[BufId]) -> bool {
    let (Some(o), true) = (prog.buffers.get(out as usize), !inputs.is_empty()) else {
        return false;
    };
    for &i in inputs {
        match prog.buffers.get(i as usize) {
            Some(b) if b.len == o.len && b.dtype.size() == o.dtype.size() => {}
            _ => return false,
        }
    }
    let [k] = prog.kernels.as_slice() else {
        return false;
    };
    let mut loops: Vec<(VarId, u64)> = vec![];
    let mut body = k.body.as_slice();
    while let [Stmt::For {
        var,
        extent,
        body: b,
    }] = body
    {
        loops.push((*var, *extent));
        body = b;
    }
    let mut lets: HashMap<VarId, Expr> = HashMap::new();
    let mut store_index: Option<Expr> = None;
    let mut touched = inputs.to_vec();
    touched.push(out);
    let mut reads: Vec<Expr> = vec![];
    for s in body {
        let mut r = vec![];
        match s {
            Stmt::Let { var, value } => {
                let v = inline(value, &lets);
                if !loads_ok(&v, &touched, &mut r) {
                    return false;
                }
                lets.insert(*var, v);
            }
            Stmt::Store { buf, index, value } => {
                let idx = inline(index, &lets);
                if !loads_ok(&idx, &touched, &mut r)
                    || !loads_ok(&inline(value, &lets), &touched, &mut r)
                {
                    return false;
                }
                if *buf == out {
                    if store_index.is_some() {
                        return false;
                    }
                    reads.append(&mut r);
                    store_index = Some(idx);
                    continue;
                }
            }
            _ => return false,
        }
        // Anything after the store must not read the shared memory.
        if store_index.is_some() && !r.is_empty() {
            return false;
        }
        reads.append(&mut r);
    }
    let Some(idx) = store_index else {
        return false;
    };
    reads.iter().all(|r| *r == idx) && injective(&idx, &loops) && covers(&idx, &loops, o.len)
}

/// Whether an (injective) affine index takes every value of `0..len`: its
/// smallest value over the nest is 0, its largest `len - 1`, and the nest has
/// `len` points. Then no element keeps the input's data unless the program
/// writes it, whatever the zero-initialisation of outputs.
fn covers(idx: &Expr, loops: &[(VarId, u64)], len: usize) -> bool {
    let Some((c, coef)) = affine(idx) else {
        return false;
    };
    let (mut lo, mut hi, mut points) = (c, c, 1u64);
    for &(v, ext) in loops {
        let span = coef
            .get(&v)
            .copied()
            .unwrap_or(0)
            .checked_mul(ext.saturating_sub(1) as i64);
        let Some(span) = span else { return false };
        lo += span.min(0);
        hi += span.max(0);
        points = match points.checked_mul(ext) {
            Some(p) => p,
            None => return false,
        };
    }
    lo == 0 && hi == len as i64 - 1 && points == len as u64
}

/// `e` with `Let`-bound variables replaced by their (already inlined) values.
fn inline(e: &Expr, lets: &HashMap<VarId, Expr>) -> Expr {
    let go = |x: &Expr| Box::new(inline(x, lets));
    match e {
        Expr::Var(v) => lets.get(v).cloned().unwrap_or(Expr::Var(*v)),
        Expr::Load { buf, index } => Expr::Load {
            buf: *buf,
            index: go(index),
        },
        Expr::Unary(op, a) => Expr::Unary(*op, go(a)),
        Expr::Cast(t, a) => Expr::Cast(*t, go(a)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, go(a), go(b)),
        Expr::Select(c, a, b) => Expr::Select(go(c), go(a), go(b)),
        Expr::Reduce {
            op,
            var,
            extent,
            body,
        } => Expr::Reduce {
            op: *op,
            var: *var,
            extent: *extent,
            body: go(body),
        },
        other => other.clone(),
    }
}

/// Collects the indices of loads of `bufs` in `e`; false where such a load
/// sits inside a reduction (it would read many elements).
fn loads_ok(e: &Expr, bufs: &[BufId], reads: &mut Vec<Expr>) -> bool {
    match e {
        Expr::Load { buf, index } => {
            if bufs.contains(buf) {
                reads.push((**index).clone());
            }
            loads_ok(index, bufs, reads)
        }
        Expr::Unary(_, a) | Expr::Cast(_, a) => loads_ok(a, bufs, reads),
        Expr::Binary(_, a, b) => loads_ok(a, bufs, reads) && loads_ok(b, bufs, reads),
        Expr::Select(c, a, b) => {
            loads_ok(c, bufs, reads) && loads_ok(a, bufs, reads) && loads_ok(b, bufs, reads)
        }
        Expr::Reduce { body, .. } => {
            let mut inner = vec![];
            loads_ok(body, bufs, &mut inner) && inner.is_empty()
        }
        _ => true,
    }
}

/// Whether an affine index takes a distinct value at every point of the nest:
/// sorted by coefficient, each coefficient exceeds the largest offset the
/// smaller ones can reach (a mixed-radix numbering).
fn injective(idx: &Expr, loops: &[(VarId, u64)]) -> bool {
    let Some((_, coef)) = affine(idx) else {
        return false;
    };
    if coef.keys().any(|v| !loops.iter().any(|(l, _)| l == v)) {
        return false;
    }
    let mut terms: Vec<(i64, u64)> = vec![];
    for &(v, ext) in loops {
        let c = coef.get(&v).copied().unwrap_or(0);
        if ext > 1 {
            if c == 0 {
                return false; // two iterations write the same element
            }
            terms.push((c.abs(), ext));
        }
    }
    terms.sort_unstable();
    let mut reach: i64 = 0;
    for (c, ext) in terms {
        if c <= reach {
            return false;
        }
        reach = match c
            .checked_mul(ext as i64 - 1)
            .and_then(|x| x.checked_add(reach))
        {
            Some(r) => r,
            None => return false,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel::build::ProgramBuilder;
    use kiln_ir::kernel::BufferRole;
    use kiln_ir::DType;

    fn prog(read_at: impl Fn(&Expr) -> Expr) -> (KernelProgram, BufId, BufId) {
        let mut pb = ProgramBuilder::new();
        let x = pb.buffer("x", DType::F32, 12, BufferRole::Input(0));
        let y = pb.buffer("y", DType::F32, 12, BufferRole::Output(0));
        let body = pb.nest(&[3, 4], |_, i| {
            let at = i[0].clone() * 4 + i[1].clone();
            vec![Stmt::Store {
                buf: y,
                index: at.clone(),
                value: Expr::load(x, read_at(&at)) + Expr::f32(1.0),
            }]
        });
        pb.kernel("k", body);
        (pb.finish(), y, x)
    }

    #[test]
    fn same_element_may_be_overwritten() {
        let (p, y, x) = prog(|at| at.clone());
        assert!(can_overwrite(&p, y, &[x]));
    }

    #[test]
    fn shifted_or_reversed_reads_may_not() {
        let (p, y, x) = prog(|at| (at.clone() + 1).min(Expr::i(11)));
        assert!(!can_overwrite(&p, y, &[x]));
        let (p, y, x) = prog(|at| Expr::i(11) - at.clone());
        assert!(!can_overwrite(&p, y, &[x]));
    }

    #[test]
    fn injectivity() {
        let v = |i| Expr::Var(i);
        assert!(injective(&(v(0) * 4 + v(1)), &[(0, 3), (1, 4)]));
        assert!(!injective(&(v(0) * 3 + v(1)), &[(0, 3), (1, 4)]));
        assert!(!injective(&v(0), &[(0, 3), (1, 4)]));
    }
}
