//! Structural checks on kernel IR: buffer and variable references resolve,
//! and stores target writable buffers. Run after every lowering in debug
//! builds and by tests, so a broken lowering fails where it is written.

use super::*;
use std::collections::HashSet;

/// Returns the first problem found, naming the kernel.
pub fn verify(p: &KernelProgram) -> Result<(), String> {
    for k in &p.kernels {
        let mut bound = HashSet::new();
        check_block(p, &k.body, &mut bound).map_err(|e| format!("kernel '{}': {e}", k.name))?;
    }
    Ok(())
}

fn check_block(p: &KernelProgram, b: &[Stmt], bound: &mut HashSet<VarId>) -> Result<(), String> {
    for s in b {
        match s {
            Stmt::For { var, body, .. } => {
                bound.insert(*var);
                check_block(p, body, bound)?;
            }
            Stmt::Let { var, value } => {
                check_expr(p, value, bound)?;
                bound.insert(*var);
            }
            Stmt::Store { buf, index, value } => {
                match p.buffers.get(*buf as usize) {
                    None => return Err(format!("store to unknown buffer b{buf}")),
                    Some(d) if matches!(d.role, BufferRole::Input(_)) => {
                        return Err(format!("store to input buffer b{buf} '{}'", d.name))
                    }
                    _ => {}
                }
                check_expr(p, index, bound)?;
                check_expr(p, value, bound)?;
            }
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => {
                check_expr(p, cond, bound)?;
                check_block(p, then_body, &mut bound.clone())?;
                check_block(p, else_body, &mut bound.clone())?;
            }
            Stmt::While { cond, body } => {
                check_expr(p, cond, bound)?;
                check_block(p, body, &mut bound.clone())?;
            }
            Stmt::Matmul(m) => {
                for v in [&m.a, &m.b, &m.c] {
                    if p.buffers.get(v.buf as usize).is_none() {
                        return Err(format!("matmul on unknown buffer b{}", v.buf));
                    }
                    check_expr(p, &v.offset, bound)?;
                }
            }
        }
    }
    Ok(())
}

fn check_expr(p: &KernelProgram, e: &Expr, bound: &HashSet<VarId>) -> Result<(), String> {
    match e {
        Expr::Var(v) if !bound.contains(v) => Err(format!("v{v} used before it is bound")),
        Expr::Load { buf, index } => {
            if p.buffers.get(*buf as usize).is_none() {
                return Err(format!("load from unknown buffer b{buf}"));
            }
            check_expr(p, index, bound)
        }
        Expr::Unary(_, a) | Expr::Cast(_, a) => check_expr(p, a, bound),
        Expr::Binary(_, a, b) => check_expr(p, a, bound).and(check_expr(p, b, bound)),
        Expr::Select(c, a, b) => check_expr(p, c, bound)
            .and(check_expr(p, a, bound))
            .and(check_expr(p, b, bound)),
        Expr::Reduce { var, body, .. } => {
            let mut inner = bound.clone();
            inner.insert(*var);
            check_expr(p, body, &inner)
        }
        _ => Ok(()),
    }
}
