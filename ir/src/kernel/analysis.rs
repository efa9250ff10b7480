//! Which buffers of a kernel program need no zeroing before it runs.
//!
//! The interpreter hands every program zeroed outputs and scratch, and the
//! renderers reproduce that. Most buffers, though, are first touched by a
//! loop nest that stores every element (an output written in row-major
//! order, a padded copy, a bias broadcast before a GEMM) or by a GEMM that
//! overwrites all of its C; zeroing those is wasted work (about 8% of the
//! instructions of a small CNN on a Cortex-M). A buffer is left unzeroed only
//! when this is provable from the kernel IR: the first top-level statement
//! referring to it is a non-accumulating dense GEMM into it, or a perfect loop
//! nest whose straight-line body unconditionally stores it at exactly the
//! row-major index of the nest, the extents multiplying to the buffer length,
//! with nothing in the nest reading it. Every renderer asks this one question
//! here, so they zero the same buffers.

use super::{BinOp, BufId, BufferRole, Expr, KernelProgram, Matmul, Stmt, VarId};
use std::collections::HashMap;

/// Whether a renderer must zero-fill `buf` before running `prog`: the
/// interpreter's zero-initialised outputs and scratch are the meaning, so
/// only a buffer whose lowering promised it is written before it is read
/// ([`BufferDecl::written_first`]), or that provably is, may start with
/// whatever memory holds.
pub fn needs_zero_fill(prog: &KernelProgram, buf: BufId) -> bool {
    match prog.buffers.get(buf as usize) {
        Some(d) if d.len == 0 || matches!(d.role, BufferRole::Input(_)) || d.written_first => false,
        Some(_) => !fully_written_first(prog, buf),
        None => false,
    }
}

/// Whether `buf` of `prog` is fully written before anything reads it.
pub fn fully_written_first(prog: &KernelProgram, buf: BufId) -> bool {
    let len = match prog.buffers.get(buf as usize) {
        Some(d) => d.len as u64,
        None => return false,
    };
    for k in &prog.kernels {
        for s in &k.body {
            if touches(s, buf) {
                return covers(s, buf, len);
            }
        }
    }
    false
}

fn touches(s: &Stmt, buf: BufId) -> bool {
    let mut hit = false;
    visit_stmt(s, &mut |e| {
        if matches!(e, Expr::Load { buf: b, .. } if *b == buf) {
            hit = true;
        }
    });
    hit || stores_to(s, buf)
}

fn stores_to(s: &Stmt, buf: BufId) -> bool {
    match s {
        Stmt::Store { buf: b, .. } => *b == buf,
        Stmt::Matmul(Matmul { a, b, c, .. }) => a.buf == buf || b.buf == buf || c.buf == buf,
        Stmt::For { body, .. } | Stmt::While { body, .. } => body.iter().any(|s| stores_to(s, buf)),
        Stmt::If {
            then_body,
            else_body,
            ..
        } => then_body.iter().chain(else_body).any(|s| stores_to(s, buf)),
        Stmt::Let { .. } => false,
    }
}

fn covers(s: &Stmt, buf: BufId, len: u64) -> bool {
    // A GEMM that overwrites its whole, densely laid out C and reads it nowhere.
    if let Stmt::Matmul(m) = s {
        return m.c.buf == buf
            && m.a.buf != buf
            && m.b.buf != buf
            && !m.accumulate
            && matches!(m.c.offset, Expr::I(0, _))
            && m.c.col_stride == 1
            && m.c.row_stride == m.n as i64
            && m.m.checked_mul(m.n) == Some(len)
            && m.k > 0;
    }
    // Descend the perfect nest.
    let mut nest: Vec<(VarId, u64)> = vec![];
    let mut cur = s;
    let body = loop {
        match cur {
            Stmt::For { var, extent, body } => {
                nest.push((*var, *extent));
                match body.as_slice() {
                    [only @ Stmt::For { .. }] => cur = only,
                    b => break b,
                }
            }
            _ => return false,
        }
    };
    if nest.iter().map(|n| n.1).product::<u64>() != len {
        return false;
    }
    if !body
        .iter()
        .all(|s| matches!(s, Stmt::Let { .. } | Stmt::Store { .. }))
    {
        return false;
    }
    let mut reads = false;
    visit_stmt(s, &mut |e| {
        if matches!(e, Expr::Load { buf: b, .. } if *b == buf) {
            reads = true;
        }
    });
    if reads {
        return false;
    }
    // Row-major strides of the nest.
    let mut want: HashMap<VarId, i64> = HashMap::new();
    let mut stride = 1i64;
    for (v, ext) in nest.iter().rev() {
        if *ext > 1 {
            want.insert(*v, stride);
        }
        stride = stride.saturating_mul(*ext as i64);
    }
    body.iter().any(|s| match s {
        Stmt::Store { buf: b, index, .. } if *b == buf => {
            let Some((mut coef, c)) = linear(index) else {
                return false;
            };
            // Loops of one iteration contribute nothing whatever their coefficient.
            coef.retain(|v, k| *k != 0 && nest.iter().any(|(n, e)| n == v && *e > 1));
            let only_nest = linear(index)
                .is_some_and(|(all, _)| all.keys().all(|v| nest.iter().any(|(n, _)| n == v)));
            c == 0 && only_nest && coef == want
        }
        _ => false,
    })
}

/// `e` as `sum(coef[v] * v) + c`, when it is that.
fn linear(e: &Expr) -> Option<(HashMap<VarId, i64>, i64)> {
    match e {
        Expr::I(c, _) => Some((HashMap::new(), *c)),
        Expr::Var(v) => Some((HashMap::from([(*v, 1)]), 0)),
        Expr::Cast(_, a) => linear(a),
        Expr::Binary(op @ (BinOp::Add | BinOp::Sub), a, b) => {
            let (mut x, xc) = linear(a)?;
            let (y, yc) = linear(b)?;
            let sign = if *op == BinOp::Add { 1 } else { -1 };
            for (v, k) in y {
                *x.entry(v).or_insert(0) += sign * k;
            }
            Some((x, xc.checked_add(sign * yc)?))
        }
        Expr::Binary(BinOp::Mul, a, b) => {
            let (x, xc) = linear(a)?;
            let (y, yc) = linear(b)?;
            let (vars, k, c) = match (x.is_empty(), y.is_empty()) {
                (true, _) => (y, xc, yc),
                (_, true) => (x, yc, xc),
                _ => return None,
            };
            let vars = vars
                .into_iter()
                .map(|(v, m)| m.checked_mul(k).map(|p| (v, p)))
                .collect::<Option<_>>()?;
            Some((vars, c.checked_mul(k)?))
        }
        _ => None,
    }
}

/// Calls `f` on `e` and every sub-expression.
fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Load { index, .. } => walk(index, f),
        Expr::Unary(_, a) | Expr::Cast(_, a) => walk(a, f),
        Expr::Binary(_, a, b) => {
            walk(a, f);
            walk(b, f);
        }
        Expr::Select(c, a, b) => {
            walk(c, f);
            walk(a, f);
            walk(b, f);
        }
        Expr::Reduce { body, .. } => walk(body, f),
        _ => {}
    }
}

fn visit_stmt(s: &Stmt, f: &mut dyn FnMut(&Expr)) {
    let mut e = |x: &Expr| walk(x, f);
    match s {
        Stmt::For { body, .. } => body.iter().for_each(|s| visit_stmt(s, f)),
        Stmt::While { cond, body } => {
            e(cond);
            body.iter().for_each(|s| visit_stmt(s, f));
        }
        Stmt::Let { value, .. } => e(value),
        Stmt::Store { index, value, .. } => {
            e(index);
            e(value);
        }
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => {
            e(cond);
            then_body
                .iter()
                .chain(else_body)
                .for_each(|s| visit_stmt(s, f));
        }
        Stmt::Matmul(m) => {
            e(&m.a.offset);
            e(&m.b.offset);
            e(&m.c.offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{BufferDecl, BufferRole, Kernel};
    use crate::DType;

    fn prog(body: Vec<Stmt>) -> KernelProgram {
        let decl = |role| BufferDecl {
            name: "b".into(),
            dtype: DType::F32,
            len: 6,
            role,
            written_first: false,
        };
        KernelProgram {
            buffers: vec![decl(BufferRole::Input(0)), decl(BufferRole::Output(0))],
            kernels: vec![Kernel {
                name: "k".into(),
                body,
                call: None,
            }],
        }
    }

    fn v(i: VarId) -> Box<Expr> {
        Box::new(Expr::Var(i))
    }

    fn c(x: i64) -> Box<Expr> {
        Box::new(Expr::I(x, DType::I64))
    }

    /// `for i < 2 { for j < 3 { b1[index] = b0[i*3+j] } }`
    fn nest(index: Expr, value: Expr) -> Stmt {
        Stmt::For {
            var: 0,
            extent: 2,
            body: vec![Stmt::For {
                var: 1,
                extent: 3,
                body: vec![Stmt::Store {
                    buf: 1,
                    index,
                    value,
                }],
            }],
        }
    }

    fn row_major() -> Expr {
        Expr::Binary(
            BinOp::Add,
            Box::new(Expr::Binary(BinOp::Mul, v(0), c(3))),
            v(1),
        )
    }

    fn load(buf: BufId) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(row_major()),
        }
    }

    #[test]
    fn a_row_major_nest_writes_everything() {
        assert!(fully_written_first(
            &prog(vec![nest(row_major(), load(0))]),
            1
        ));
    }

    #[test]
    fn partial_or_self_reading_writes_keep_the_zeroing() {
        // Column-major order is a permutation, but only row-major is recognised.
        let transposed = Expr::Binary(
            BinOp::Add,
            Box::new(Expr::Binary(BinOp::Mul, v(1), c(2))),
            v(0),
        );
        assert!(!fully_written_first(
            &prog(vec![nest(transposed, load(0))]),
            1
        ));
        // Offset by one: leaves element 0 unwritten.
        let shifted = Expr::Binary(BinOp::Add, Box::new(row_major()), c(1));
        assert!(!fully_written_first(&prog(vec![nest(shifted, load(0))]), 1));
        // Reads its own (zero-initialised) contents.
        assert!(!fully_written_first(
            &prog(vec![nest(row_major(), load(1))]),
            1
        ));
        // Under a condition.
        let cond = Stmt::If {
            cond: Expr::B(true),
            then_body: vec![nest(row_major(), load(0))],
            else_body: vec![],
        };
        assert!(!fully_written_first(&prog(vec![cond]), 1));
        // Never written at all.
        assert!(!fully_written_first(&prog(vec![]), 1));
    }

    #[test]
    fn a_written_first_promise_drops_the_zero_fill_and_poisons_the_interpreter() {
        let shifted = Expr::Binary(BinOp::Add, Box::new(row_major()), c(1));
        let mut p = prog(vec![nest(shifted, load(0))]);
        p.buffers[1].len = 7;
        assert!(needs_zero_fill(&p, 1));
        assert!(!needs_zero_fill(&p, 0), "inputs are never filled");
        p.buffers[1].written_first = true;
        assert!(!needs_zero_fill(&p, 1));
        // Element 0 is never written: the interpreter shows the broken promise.
        let x = crate::tensor::Storage::F32(vec![1.0; 6]);
        let out = crate::kernel::interp::run_program(&p, &[Some(&x)]).expect("runs");
        match &out[0] {
            crate::tensor::Storage::F32(v) => {
                assert!(v[0].is_nan());
                assert!(v[1..].iter().all(|&e| e == 1.0));
            }
            other => panic!("unexpected storage {other:?}"),
        }
    }
}
