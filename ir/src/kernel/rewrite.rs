//! Structure-only rewrites of kernel bodies that every renderer profits
//! from. They never change what a kernel computes.
//!
//! Why unit loops matter: lowerings keep batch and group loops even when
//! their trip count is 1, so a kernel's only top-level statement is often
//! `for n in 0..1 { for c in 0..C { ... } }`. Renderers look for work to
//! split over threads among top-level loops; peeling the unit loops exposes
//! the loop that has the iterations.

use super::{BinOp, Expr, Stmt, VarId};
use crate::dtype::DType;

/// Replaces every top-level `for v in 0..1 { body }` by `body` with `v`
/// set to 0, repeatedly, so the statements inside become top-level.
/// Loops nested deeper are left as they are (renderers match their shape).
pub fn peel_unit_loops(body: Vec<Stmt>) -> Vec<Stmt> {
    let mut out = Vec::with_capacity(body.len());
    for s in body {
        match s {
            Stmt::For {
                var,
                extent: 1,
                body,
            } => {
                let inner = body.into_iter().map(|s| subst_stmt(s, var)).collect();
                out.extend(peel_unit_loops(inner));
            }
            s => out.push(s),
        }
    }
    out
}

/// `s` with variable `v` replaced by the constant 0.
fn subst_stmt(s: Stmt, v: VarId) -> Stmt {
    let e = |x: Expr| subst(x, v);
    let b = |xs: Vec<Stmt>| xs.into_iter().map(|s| subst_stmt(s, v)).collect();
    match s {
        Stmt::For { var, extent, body } => Stmt::For {
            var,
            extent,
            body: b(body),
        },
        Stmt::Let { var, value } => Stmt::Let {
            var,
            value: e(value),
        },
        Stmt::Store { buf, index, value } => Stmt::Store {
            buf,
            index: e(index),
            value: e(value),
        },
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => Stmt::If {
            cond: e(cond),
            then_body: b(then_body),
            else_body: b(else_body),
        },
        Stmt::Matmul(mut m) => {
            for view in [&mut m.a, &mut m.b, &mut m.c] {
                view.offset = e(std::mem::replace(&mut view.offset, Expr::B(false)));
            }
            Stmt::Matmul(m)
        }
        Stmt::While { cond, body } => Stmt::While {
            cond: e(cond),
            body: b(body),
        },
    }
}

fn is_zero(e: &Expr) -> bool {
    matches!(e, Expr::I(0, _))
}

/// `x` with `v` replaced by an i64 zero, folding the `0·y` and `y + 0` it
/// creates: the part of an affine index that does not depend on `v`.
pub fn subst_zero(x: Expr, v: VarId) -> Expr {
    subst(x, v)
}

fn subst(x: Expr, v: VarId) -> Expr {
    let go = |y: Box<Expr>| Box::new(subst(*y, v));
    match x {
        Expr::Var(w) if w == v => Expr::I(0, DType::I64),
        Expr::Load { buf, index } => Expr::Load {
            buf,
            index: go(index),
        },
        Expr::Unary(op, a) => Expr::Unary(op, go(a)),
        Expr::Cast(t, a) => Expr::Cast(t, go(a)),
        Expr::Binary(op, a, b) => {
            let (a, b) = (go(a), go(b));
            match op {
                BinOp::Mul if is_zero(&a) || is_zero(&b) => Expr::I(0, DType::I64),
                BinOp::Add if is_zero(&a) => *b,
                BinOp::Add | BinOp::Sub if is_zero(&b) => *a,
                _ => Expr::Binary(op, a, b),
            }
        }
        Expr::Select(c, a, b) => Expr::Select(go(c), go(a), go(b)),
        Expr::Reduce {
            op,
            var,
            extent,
            body,
        } => Expr::Reduce {
            op,
            var,
            extent,
            body: go(body),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_loops_peel_to_the_first_real_loop() {
        // for a in 0..1 { for b in 0..4 { out[a*4 + b] = 1 } }
        let store = Stmt::Store {
            buf: 0,
            index: Expr::Binary(
                BinOp::Add,
                Box::new(Expr::Binary(
                    BinOp::Mul,
                    Box::new(Expr::Var(0)),
                    Box::new(Expr::I(4, DType::I64)),
                )),
                Box::new(Expr::Var(1)),
            ),
            value: Expr::F(1.0, DType::F32),
        };
        let body = vec![Stmt::For {
            var: 0,
            extent: 1,
            body: vec![Stmt::For {
                var: 1,
                extent: 4,
                body: vec![store],
            }],
        }];
        let got = peel_unit_loops(body);
        let want = vec![Stmt::For {
            var: 1,
            extent: 4,
            body: vec![Stmt::Store {
                buf: 0,
                index: Expr::Var(1),
                value: Expr::F(1.0, DType::F32),
            }],
        }];
        assert_eq!(got, want);
    }
}
