//! Value ranges of integer expressions, so index arithmetic can be rendered
//! with native C operators on `ptrdiff_t` instead of the interpreter-exact
//! 64-bit wrapping helpers (which cost two instructions per operation, and a
//! library call per division, on a 32-bit core).
//!
//! An expression qualifies when it is built only from loop variables,
//! integer constants, `+ - *`, division and remainder by a positive constant,
//! min/max, select and widening casts, and every intermediate value provably
//! lies in the 32-bit signed range: then no wrapping can occur and native
//! arithmetic gives exactly the interpreter's result on every platform.

use kiln_ir::kernel::{BinOp, Expr, VarId};
use kiln_ir::DType;
use std::collections::HashMap;

/// Inclusive bounds.
pub(crate) type Range = (i64, i64);

const LO: i128 = i32::MIN as i128;
const HI: i128 = i32::MAX as i128;

fn fit(lo: i128, hi: i128) -> Option<Range> {
    (lo >= LO && hi <= HI).then_some((lo as i64, hi as i64))
}

/// The range of an integer constant of type `t`, after the interpreter's wrapping.
pub(crate) fn const_range(v: i64) -> Option<Range> {
    fit(v as i128, v as i128)
}

/// The bounds of `e`, or None when it is not index arithmetic within 32 bits.
/// `vars` holds the ranges of variables known to be small (loop counters and
/// index lets); `wrap` applies the interpreter's wrapping to a typed constant.
pub(crate) fn range(
    e: &Expr,
    vars: &HashMap<VarId, Range>,
    wrap: &dyn Fn(i64, DType) -> i64,
) -> Option<Range> {
    let r = |x: &Expr| range(x, vars, wrap);
    match e {
        Expr::I(v, t) => const_range(wrap(*v, *t)),
        Expr::Var(v) => vars.get(v).copied(),
        Expr::Binary(op, a, b) => {
            let (al, ah) = r(a)?;
            let (bl, bh) = r(b)?;
            let (al, ah, bl, bh) = (al as i128, ah as i128, bl as i128, bh as i128);
            match op {
                BinOp::Add => fit(al + bl, ah + bh),
                BinOp::Sub => fit(al - bh, ah - bl),
                BinOp::Mul => {
                    let p = [al * bl, al * bh, ah * bl, ah * bh];
                    fit(*p.iter().min()?, *p.iter().max()?)
                }
                // Truncating division by a positive constant is monotone.
                BinOp::Div if bl == bh && bl > 0 => fit(al / bl, ah / bl),
                BinOp::Rem if bl == bh && bl > 0 => {
                    let m = bl - 1;
                    let lo = if al >= 0 { 0 } else { -m.min(-al) };
                    let hi = if ah <= 0 { 0 } else { m.min(ah) };
                    fit(lo, hi)
                }
                BinOp::Max => fit(al.max(bl), ah.max(bh)),
                BinOp::Min => fit(al.min(bl), ah.min(bh)),
                _ => None,
            }
        }
        Expr::Select(_, a, b) => {
            let (al, ah) = r(a)?;
            let (bl, bh) = r(b)?;
            Some((al.min(bl), ah.max(bh)))
        }
        Expr::Cast(t, a) if t.is_int() => {
            let (lo, hi) = r(a)?;
            let (tl, th) = t.min_max();
            (lo as f64 >= tl && hi as f64 <= th).then_some((lo, hi))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(v: i64, _: DType) -> i64 {
        v
    }

    #[test]
    fn bounds_follow_the_arithmetic() {
        let vars: HashMap<VarId, Range> = [(0, (0, 9)), (1, (0, 99))].into_iter().collect();
        let v = |i| Box::new(Expr::Var(i));
        let c = |x| Box::new(Expr::I(x, DType::I64));
        let e = Expr::Binary(
            BinOp::Add,
            Box::new(Expr::Binary(BinOp::Mul, v(0), c(100))),
            Box::new(Expr::Binary(BinOp::Rem, v(1), c(7))),
        );
        assert_eq!(range(&e, &vars, &ident), Some((0, 906)));
        let big = Expr::Binary(BinOp::Mul, v(1), c(1 << 30));
        assert_eq!(range(&big, &vars, &ident), None);
        let div0 = Expr::Binary(BinOp::Div, v(1), c(0));
        assert_eq!(range(&div0, &vars, &ident), None);
        let neg = Expr::Binary(
            BinOp::Rem,
            Box::new(Expr::Binary(BinOp::Sub, v(0), c(5))),
            c(3),
        );
        assert_eq!(range(&neg, &vars, &ident), Some((-2, 2)));
        assert_eq!(range(&Expr::Var(7), &vars, &ident), None);
    }
}
