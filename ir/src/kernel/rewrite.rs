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
                let zero = Expr::I(0, DType::I64);
                let inner = body
                    .into_iter()
                    .map(|s| subst_stmt(s, var, &zero))
                    .collect();
                out.extend(peel_unit_loops(inner));
            }
            s => out.push(s),
        }
    }
    out
}

/// `s` with variable `v` replaced by `by`.
fn subst_stmt(s: Stmt, v: VarId, by: &Expr) -> Stmt {
    let e = |x: Expr| subst(x, v, by);
    let b = |xs: Vec<Stmt>| xs.into_iter().map(|s| subst_stmt(s, v, by)).collect();
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
    subst(x, v, &Expr::I(0, DType::I64))
}

/// `x` with `v` replaced by `by`, folding the `0·y` and `y + 0` it creates.
fn subst(x: Expr, v: VarId, by: &Expr) -> Expr {
    let go = |y: Box<Expr>| Box::new(subst(*y, v, by));
    match x {
        Expr::Var(w) if w == v => by.clone(),
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

/// `for v in 0..n { body }` as `for o in 0..n/chunk { for i in 0..chunk {
/// body[v := o·chunk + i] } }` plus, when `chunk` does not divide `n`, the
/// remainder `for i in 0..n%chunk { body[v := n − n%chunk + i] }`: the same
/// iterations in the same order, with an outer loop a renderer can split
/// over threads while the inner one stays vectorisable. `outer` and `inner`
/// must be variables unused in the kernel. `None` if `s` is not a loop or
/// has fewer than two chunks.
pub fn chunk_loop(
    s: &Stmt,
    chunk: u64,
    outer: VarId,
    inner: VarId,
) -> Option<(Stmt, Option<Stmt>)> {
    let Stmt::For { var, extent, body } = s else {
        return None;
    };
    if chunk == 0 || *extent / chunk < 2 {
        return None;
    }
    let full = *extent / chunk;
    let at = Expr::Binary(
        BinOp::Add,
        Box::new(Expr::Binary(
            BinOp::Mul,
            Box::new(Expr::Var(outer)),
            Box::new(Expr::I(chunk as i64, DType::I64)),
        )),
        Box::new(Expr::Var(inner)),
    );
    let main = Stmt::For {
        var: outer,
        extent: full,
        body: vec![Stmt::For {
            var: inner,
            extent: chunk,
            body: body
                .iter()
                .map(|s| subst_stmt(s.clone(), *var, &at))
                .collect(),
        }],
    };
    let rest = (*extent % chunk > 0).then(|| {
        let at = Expr::Binary(
            BinOp::Add,
            Box::new(Expr::I((full * chunk) as i64, DType::I64)),
            Box::new(Expr::Var(inner)),
        );
        Stmt::For {
            var: inner,
            extent: *extent % chunk,
            body: body
                .iter()
                .map(|s| subst_stmt(s.clone(), *var, &at))
                .collect(),
        }
    });
    Some((main, rest))
}

/// The largest variable id bound in `body` (loops, lets, reductions), if any.
pub fn max_var(body: &[Stmt]) -> Option<VarId> {
    fn expr(e: &Expr, m: &mut Option<VarId>) {
        match e {
            Expr::Load { index, .. } => expr(index, m),
            Expr::Unary(_, a) | Expr::Cast(_, a) => expr(a, m),
            Expr::Binary(_, a, b) => {
                expr(a, m);
                expr(b, m);
            }
            Expr::Select(c, a, b) => {
                expr(c, m);
                expr(a, m);
                expr(b, m);
            }
            Expr::Reduce { var, body, .. } => {
                *m = Some(m.map_or(*var, |x| x.max(*var)));
                expr(body, m);
            }
            Expr::Var(v) => *m = Some(m.map_or(*v, |x| x.max(*v))),
            _ => {}
        }
    }
    fn block(b: &[Stmt], m: &mut Option<VarId>) {
        for s in b {
            match s {
                Stmt::For { var, body, .. } => {
                    *m = Some(m.map_or(*var, |x| x.max(*var)));
                    block(body, m);
                }
                Stmt::Let { var, value } => {
                    *m = Some(m.map_or(*var, |x| x.max(*var)));
                    expr(value, m);
                }
                Stmt::Store { index, value, .. } => {
                    expr(index, m);
                    expr(value, m);
                }
                Stmt::If {
                    cond,
                    then_body,
                    else_body,
                } => {
                    expr(cond, m);
                    block(then_body, m);
                    block(else_body, m);
                }
                Stmt::Matmul(mm) => {
                    for v in [&mm.a, &mm.b, &mm.c] {
                        expr(&v.offset, m);
                    }
                }
                Stmt::While { cond, body } => {
                    expr(cond, m);
                    block(body, m);
                }
            }
        }
    }
    let mut m = None;
    block(body, &mut m);
    m
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
