//! Which buffers a program overwrites completely before anything reads them,
//! so `NAME_run` can skip zero-filling them (the interpreter's contract is
//! that outputs and scratch start at zero; a buffer whose every element is
//! stored before any load cannot observe the difference).

use kiln_ir::kernel::interp::affine_coeff;
use kiln_ir::kernel::{BufId, Expr, KernelProgram, Stmt, VarId};

/// True when the first top-level statement (in kernel order) that mentions
/// `buf` is a perfect loop nest (or a non-accumulating Matmul) that stores
/// every element of `buf` exactly once at a row-major index, and never loads it.
pub(crate) fn fully_written(prog: &KernelProgram, buf: BufId) -> bool {
    let Some(decl) = prog.buffers.get(buf as usize) else {
        return false;
    };
    let first = prog
        .kernels
        .iter()
        .flat_map(|k| k.body.iter())
        .find(|s| mentions_block(std::slice::from_ref(*s), buf));
    let Some(first) = first else {
        return false;
    };
    let first = std::slice::from_ref(first);
    if loads_block(first, buf) {
        return false;
    }
    if let [Stmt::Matmul(m)] = first {
        return m.c.buf == buf
            && !m.accumulate
            && matches!(m.c.offset, Expr::I(0, _))
            && m.c.col_stride == 1
            && m.c.row_stride == m.n as i64
            && m.m.checked_mul(m.n) == Some(decl.len as u64)
            && m.k > 0;
    }
    let mut loops: Vec<(VarId, u64)> = vec![];
    let mut body = first;
    while let [Stmt::For {
        var,
        extent,
        body: b,
    }] = body
    {
        loops.push((*var, *extent));
        body = b;
    }
    let total = loops.iter().try_fold(1u64, |a, (_, e)| a.checked_mul(*e));
    if total != Some(decl.len as u64) || decl.len == 0 {
        return false;
    }
    // Exactly one store to buf, directly in the innermost body (not under an If).
    let mut stores = body.iter().filter_map(|s| match s {
        Stmt::Store { buf: b, index, .. } if *b == buf => Some(index),
        _ => None,
    });
    let (Some(index), None) = (stores.next(), stores.next()) else {
        return false;
    };
    if body
        .iter()
        .any(|s| !matches!(s, Stmt::Store { .. } | Stmt::Let { .. }))
    {
        return false;
    }
    // index = sum var_i * stride_i with row-major strides and no constant term.
    let mut stride = 1i64;
    for (var, extent) in loops.iter().rev() {
        if affine_coeff(index, *var) != Some(stride) {
            return false;
        }
        stride = stride.saturating_mul(*extent as i64);
    }
    let vars: Vec<VarId> = loops.iter().map(|(v, _)| *v).collect();
    only_vars(index, &vars) && constant_term_is_zero(index)
}

fn only_vars(e: &Expr, vars: &[VarId]) -> bool {
    match e {
        Expr::Var(v) => vars.contains(v),
        Expr::I(..) => true,
        Expr::Binary(_, a, b) => only_vars(a, vars) && only_vars(b, vars),
        _ => false,
    }
}

/// The value of an affine index with every variable at zero.
fn constant_term_is_zero(e: &Expr) -> bool {
    fn eval(e: &Expr) -> Option<i64> {
        use kiln_ir::kernel::BinOp;
        match e {
            Expr::Var(_) => Some(0),
            Expr::I(c, _) => Some(*c),
            Expr::Binary(BinOp::Add, a, b) => Some(eval(a)? + eval(b)?),
            Expr::Binary(BinOp::Sub, a, b) => Some(eval(a)? - eval(b)?),
            Expr::Binary(BinOp::Mul, a, b) => Some(eval(a)? * eval(b)?),
            _ => None,
        }
    }
    eval(e) == Some(0)
}

fn mentions_block(b: &[Stmt], buf: BufId) -> bool {
    b.iter().any(|s| match s {
        Stmt::For { body, .. } | Stmt::While { body, .. } => mentions_block(body, buf),
        Stmt::Store { buf: sb, .. } if *sb == buf => true,
        Stmt::Store { index, value, .. } => loads(index, buf) || loads(value, buf),
        Stmt::Let { value, .. } => loads(value, buf),
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => loads(cond, buf) || mentions_block(then_body, buf) || mentions_block(else_body, buf),
        Stmt::Matmul(m) => m.a.buf == buf || m.b.buf == buf || m.c.buf == buf,
    })
}

fn loads_block(b: &[Stmt], buf: BufId) -> bool {
    b.iter().any(|s| match s {
        Stmt::For { body, .. } => loads_block(body, buf),
        Stmt::While { cond, body } => loads(cond, buf) || loads_block(body, buf),
        Stmt::Store { index, value, .. } => loads(index, buf) || loads(value, buf),
        Stmt::Let { value, .. } => loads(value, buf),
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => loads(cond, buf) || loads_block(then_body, buf) || loads_block(else_body, buf),
        Stmt::Matmul(m) => m.a.buf == buf || m.b.buf == buf || (m.c.buf == buf && m.accumulate),
    })
}

fn loads(e: &Expr, buf: BufId) -> bool {
    match e {
        Expr::Load { buf: b, index } => *b == buf || loads(index, buf),
        Expr::Unary(_, a) | Expr::Cast(_, a) => loads(a, buf),
        Expr::Binary(_, a, b) => loads(a, buf) || loads(b, buf),
        Expr::Select(c, a, b) => loads(c, buf) || loads(a, buf) || loads(b, buf),
        Expr::Reduce { body, .. } => loads(body, buf),
        _ => false,
    }
}
