//! Expression and statement rewriting helpers for composing programs.

use kiln_ir::kernel::{BinOp, BufId, BufferDecl, Expr, KernelProgram, Stmt, VarId};
use kiln_ir::DType;
use std::collections::HashMap;

/// The largest variable id used in a program (`None` if none).
pub(super) fn max_var(prog: &KernelProgram) -> Option<VarId> {
    fn e(x: &Expr, m: &mut Option<VarId>) {
        match x {
            Expr::Var(v) => *m = (*m).max(Some(*v)),
            Expr::Load { index, .. } => e(index, m),
            Expr::Unary(_, a) | Expr::Cast(_, a) => e(a, m),
            Expr::Binary(_, a, b) => {
                e(a, m);
                e(b, m)
            }
            Expr::Select(c, a, b) => {
                e(c, m);
                e(a, m);
                e(b, m)
            }
            Expr::Reduce { var, body, .. } => {
                *m = (*m).max(Some(*var));
                e(body, m)
            }
            _ => {}
        }
    }
    fn s(b: &[Stmt], m: &mut Option<VarId>) {
        for st in b {
            match st {
                Stmt::For { var, body, .. } => {
                    *m = (*m).max(Some(*var));
                    s(body, m)
                }
                Stmt::Let { var, value } => {
                    *m = (*m).max(Some(*var));
                    e(value, m)
                }
                Stmt::Store { index, value, .. } => {
                    e(index, m);
                    e(value, m)
                }
                Stmt::If {
                    cond,
                    then_body,
                    else_body,
                } => {
                    e(cond, m);
                    s(then_body, m);
                    s(else_body, m)
                }
                Stmt::Matmul(mm) => {
                    for v in [&mm.a, &mm.b, &mm.c] {
                        e(&v.offset, m)
                    }
                }
                Stmt::While { cond, body } => {
                    e(cond, m);
                    s(body, m)
                }
            }
        }
    }
    let mut m = None;
    for k in &prog.kernels {
        s(&k.body, &mut m);
    }
    m
}

/// Rewrites an expression bottom-up: `f` may replace a node (after its children were rewritten).
pub(super) fn map_expr(x: &Expr, f: &mut impl FnMut(&Expr) -> Option<Expr>) -> Expr {
    let y = match x {
        Expr::Load { buf, index } => Expr::Load {
            buf: *buf,
            index: Box::new(map_expr(index, f)),
        },
        Expr::Unary(op, a) => Expr::Unary(*op, Box::new(map_expr(a, f))),
        Expr::Cast(t, a) => Expr::Cast(*t, Box::new(map_expr(a, f))),
        Expr::Binary(op, a, b) => {
            Expr::Binary(*op, Box::new(map_expr(a, f)), Box::new(map_expr(b, f)))
        }
        Expr::Select(c, a, b) => Expr::Select(
            Box::new(map_expr(c, f)),
            Box::new(map_expr(a, f)),
            Box::new(map_expr(b, f)),
        ),
        Expr::Reduce {
            op,
            var,
            extent,
            body,
        } => Expr::Reduce {
            op: *op,
            var: *var,
            extent: *extent,
            body: Box::new(map_expr(body, f)),
        },
        other => other.clone(),
    };
    f(&y).unwrap_or(y)
}

/// Renumbers buffers in a statement list.
pub(super) fn remap_bufs(b: &[Stmt], map: &[BufId]) -> Vec<Stmt> {
    let re = |x: &Expr| -> Expr {
        map_expr(x, &mut |y| match y {
            Expr::Load { buf, index } => Some(Expr::Load {
                buf: map[*buf as usize],
                index: index.clone(),
            }),
            _ => None,
        })
    };
    b.iter()
        .map(|s| match s {
            Stmt::For { var, extent, body } => Stmt::For {
                var: *var,
                extent: *extent,
                body: remap_bufs(body, map),
            },
            Stmt::Let { var, value } => Stmt::Let {
                var: *var,
                value: re(value),
            },
            Stmt::Store { buf, index, value } => Stmt::Store {
                buf: map[*buf as usize],
                index: re(index),
                value: re(value),
            },
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => Stmt::If {
                cond: re(cond),
                then_body: remap_bufs(then_body, map),
                else_body: remap_bufs(else_body, map),
            },
            Stmt::Matmul(m) => {
                let mut m = m.clone();
                for v in [&mut m.a, &mut m.b, &mut m.c] {
                    v.buf = map[v.buf as usize];
                    v.offset = re(&v.offset);
                }
                Stmt::Matmul(m)
            }
            Stmt::While { cond, body } => Stmt::While {
                cond: re(cond),
                body: remap_bufs(body, map),
            },
        })
        .collect()
}

/// The dtype of an expression where it is evident from the expression alone.
pub(super) fn dtype_of(x: &Expr, bufs: &[BufferDecl]) -> Option<DType> {
    match x {
        Expr::F(_, t) | Expr::I(_, t) | Expr::Cast(t, _) => Some(*t),
        Expr::B(_) => Some(DType::Bool),
        Expr::Load { buf, .. } => bufs.get(*buf as usize).map(|b| b.dtype),
        Expr::Binary(op, a, _) => {
            if op.is_comparison() {
                Some(DType::Bool)
            } else {
                dtype_of(a, bufs)
            }
        }
        Expr::Select(_, a, _) => dtype_of(a, bufs),
        Expr::Reduce { body, .. } => dtype_of(body, bufs),
        _ => None,
    }
}

/// `x` converted to `t`, as storing it into a buffer of dtype `t` would.
pub(super) fn as_dtype(x: Expr, t: DType, bufs: &[BufferDecl]) -> Expr {
    if dtype_of(&x, bufs) == Some(t) {
        x
    } else {
        x.cast(t)
    }
}

pub(super) fn loads_of(x: &Expr, out: &mut Vec<BufId>) {
    match x {
        Expr::Load { buf, index } => {
            out.push(*buf);
            loads_of(index, out)
        }
        Expr::Unary(_, a) | Expr::Cast(_, a) => loads_of(a, out),
        Expr::Binary(_, a, b) => {
            loads_of(a, out);
            loads_of(b, out)
        }
        Expr::Select(c, a, b) => {
            loads_of(c, out);
            loads_of(b, out);
            loads_of(a, out)
        }
        Expr::Reduce { body, .. } => loads_of(body, out),
        _ => {}
    }
}

/// `e` as `c + sum(coef[v] * v)` over loop variables, if it is affine.
pub(crate) fn affine(e: &Expr) -> Option<(i64, HashMap<VarId, i64>)> {
    match e {
        Expr::I(c, _) => Some((*c, HashMap::new())),
        Expr::Var(v) => Some((0, HashMap::from([(*v, 1)]))),
        Expr::Binary(BinOp::Add | BinOp::Sub, a, b) => {
            let sign = if matches!(e, Expr::Binary(BinOp::Sub, ..)) {
                -1
            } else {
                1
            };
            let (ca, mut ma) = affine(a)?;
            let (cb, mb) = affine(b)?;
            for (v, k) in mb {
                *ma.entry(v).or_insert(0) += sign * k;
            }
            Some((ca.checked_add(sign * cb)?, ma))
        }
        Expr::Binary(BinOp::Mul, a, b) => {
            let (ca, ma) = affine(a)?;
            let (cb, mb) = affine(b)?;
            let (k, c, m) = match (ma.is_empty(), mb.is_empty()) {
                (true, _) => (ca, cb, mb),
                (_, true) => (cb, ca, ma),
                _ => return None,
            };
            Some((
                c.checked_mul(k)?,
                m.into_iter().map(|(v, x)| (v, x * k)).collect(),
            ))
        }
        _ => None,
    }
}

/// Buffers a statement reads (loads anywhere inside it, GEMM operands).
pub(super) fn loads_in_stmt(s: &Stmt, out: &mut Vec<BufId>) {
    match s {
        Stmt::For { body, .. } | Stmt::While { body, .. } => {
            if let Stmt::While { cond, .. } = s {
                loads_of(cond, out);
            }
            body.iter().for_each(|x| loads_in_stmt(x, out))
        }
        Stmt::Let { value, .. } => loads_of(value, out),
        Stmt::Store { index, value, .. } => {
            loads_of(index, out);
            loads_of(value, out)
        }
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => {
            loads_of(cond, out);
            then_body
                .iter()
                .chain(else_body)
                .for_each(|x| loads_in_stmt(x, out))
        }
        Stmt::Matmul(m) => {
            out.extend([m.a.buf, m.b.buf]);
            for v in [&m.a, &m.b, &m.c] {
                loads_of(&v.offset, out);
            }
        }
    }
}

/// Trip counts of the loop variables of `kernels`; a variable bound by two
/// loops of different extents is left out.
pub(super) fn loop_ranges(kernels: &[kiln_ir::kernel::Kernel]) -> HashMap<VarId, u64> {
    fn go(b: &[Stmt], m: &mut HashMap<VarId, u64>, bad: &mut Vec<VarId>) {
        for s in b {
            match s {
                Stmt::For { var, extent, body } => {
                    if m.insert(*var, *extent).is_some_and(|e| e != *extent) {
                        bad.push(*var);
                    }
                    go(body, m, bad)
                }
                Stmt::If {
                    then_body,
                    else_body,
                    ..
                } => {
                    go(then_body, m, bad);
                    go(else_body, m, bad)
                }
                Stmt::While { body, .. } => go(body, m, bad),
                _ => {}
            }
        }
    }
    let (mut m, mut bad) = (HashMap::new(), vec![]);
    for k in kernels {
        go(&k.body, &mut m, &mut bad);
    }
    for v in bad {
        m.remove(&v);
    }
    m
}

/// The coordinates of index `flat` in a row-major nest of extents `ext`,
/// without division: possible when `flat` is affine in loop variables of
/// known trip count (`range`) and each term moves one coordinate without
/// carrying into the next (a GEMM tile's rows and columns, a store's loops).
pub(super) fn split_affine(
    flat: &Expr,
    ext: &[u64],
    range: &dyn Fn(VarId) -> Option<u64>,
) -> Option<Vec<Expr>> {
    let (c0, coefs) = affine(flat)?;
    let ext: Vec<i64> = ext.iter().map(|&e| e as i64).collect();
    let mut st = vec![1i64; ext.len()];
    for d in (0..ext.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1].checked_mul(ext[d + 1])?;
    }
    let (mut lo, mut rest) = (Vec::with_capacity(ext.len()), c0);
    for &s in &st {
        if s <= 0 {
            return None;
        }
        lo.push(rest / s);
        rest %= s;
    }
    if rest != 0 || lo.iter().any(|&u| u < 0) {
        return None;
    }
    let mut hi = lo.clone();
    let mut coords: Vec<Expr> = lo.iter().map(|&u| Expr::i(u)).collect();
    let mut terms: Vec<(VarId, i64)> = coefs.into_iter().collect();
    terms.sort_unstable();
    for (v, c) in terms {
        let r = range(v)?;
        if r <= 1 || c == 0 {
            continue;
        }
        let d = (0..ext.len()).find(|&d| c > 0 && c % st[d] == 0 && c / st[d] < ext[d])?;
        let q = c / st[d];
        hi[d] += q * (r as i64 - 1);
        coords[d] = coords[d].clone() + Expr::var(v) * q;
    }
    hi.iter().zip(&ext).all(|(h, e)| h < e).then_some(coords)
}
