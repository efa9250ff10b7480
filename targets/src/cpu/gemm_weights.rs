//! Weights read only as the B operand of matmuls whose B was packed at
//! compile time: their original layout is never read, so the object stores
//! one byte for them instead of a second copy of the data.

use crate::plan::{AotProgram, BufferLoc};
use kiln_ir::kernel::{BufId, Expr, Stmt};
use std::collections::HashSet;

/// Indices of weights bound somewhere and read nowhere but through packed
/// matmuls (`packed` holds those matmuls' addresses).
/// A kernel rendered as a direct-conv call reads its weight buffer only
/// through the call's packed copy, and is taken to read every other buffer.
pub(super) fn unread_weights(
    prog: &AotProgram,
    packed: &HashSet<usize>,
    convs: &super::conv_call::ConvCalls,
) -> HashSet<usize> {
    let mut bound = HashSet::new();
    let mut read = HashSet::new();
    for (si, step) in prog.steps.iter().enumerate() {
        for (bi, loc) in step.bindings.iter().enumerate() {
            let BufferLoc::Weight(wi) = *loc else {
                continue;
            };
            bound.insert(wi);
            let Ok(buf) = BufId::try_from(bi) else {
                read.insert(wi);
                continue;
            };
            let unread =
                |(ki, k): (usize, &kiln_ir::kernel::Kernel)| match convs.packed_weight(si, ki) {
                    Some(w) => w == buf,
                    None => only_packed(&k.body, buf, packed),
                };
            if !step.program.kernels.iter().enumerate().all(unread) {
                read.insert(wi);
            }
        }
    }
    for c in &prog.output_copies {
        if let BufferLoc::Weight(wi) = c.from {
            read.insert(wi);
        }
    }
    bound.difference(&read).copied().collect()
}

/// Whether `buf` appears in `body` only as the B view of a packed matmul.
fn only_packed(body: &[Stmt], buf: BufId, packed: &HashSet<usize>) -> bool {
    body.iter().all(|s| match s {
        Stmt::For { body, .. } => only_packed(body, buf, packed),
        Stmt::While { cond, body } => !loads(cond, buf) && only_packed(body, buf, packed),
        Stmt::Let { value, .. } => !loads(value, buf),
        Stmt::Store {
            buf: b,
            index,
            value,
        } => *b != buf && !loads(index, buf) && !loads(value, buf),
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => {
            !loads(cond, buf)
                && only_packed(then_body, buf, packed)
                && only_packed(else_body, buf, packed)
        }
        Stmt::Matmul(m) => {
            let offsets_ok = [&m.a.offset, &m.b.offset, &m.c.offset]
                .iter()
                .all(|e| !loads(e, buf));
            offsets_ok
                && m.a.buf != buf
                && m.c.buf != buf
                && (m.b.buf != buf || packed.contains(&(m as *const _ as usize)))
        }
    })
}

fn loads(e: &Expr, buf: BufId) -> bool {
    match e {
        Expr::Load { buf: b, index } => *b == buf || loads(index, buf),
        Expr::Unary(_, a) | Expr::Cast(_, a) => loads(a, buf),
        Expr::Binary(_, a, b) => loads(a, buf) || loads(b, buf),
        Expr::Select(c, a, b) => loads(c, buf) || loads(a, buf) || loads(b, buf),
        Expr::Reduce { body, .. } => loads(body, buf),
        Expr::F(..) | Expr::I(..) | Expr::B(_) | Expr::Var(_) => false,
    }
}
