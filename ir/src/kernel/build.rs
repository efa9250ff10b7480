//! Constructors that keep lowerings short: arithmetic operators on [`Expr`]
//! (with constant folding of index arithmetic, so printed kernels stay
//! readable), and a [`ProgramBuilder`] that hands out buffers and variables.

use super::*;
use std::ops::{Add, Div, Mul, Neg, Rem, Sub};

impl Expr {
    /// An i64 index constant.
    pub fn i(v: i64) -> Expr {
        Expr::I(v, DType::I64)
    }

    pub fn f32(v: f32) -> Expr {
        Expr::F(v as f64, DType::F32)
    }

    /// A float or integer constant of `dtype` (bool: non-zero is true).
    pub fn constant(dtype: DType, v: f64) -> Expr {
        if dtype.is_float() {
            Expr::F(v, dtype)
        } else if dtype == DType::Bool {
            Expr::B(v != 0.0)
        } else {
            Expr::I(v as i64, dtype)
        }
    }

    pub fn var(v: VarId) -> Expr {
        Expr::Var(v)
    }

    pub fn load(buf: BufId, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
        }
    }

    pub fn un(self, op: UnOp) -> Expr {
        Expr::Unary(op, Box::new(self))
    }

    pub fn bin(self, op: BinOp, rhs: Expr) -> Expr {
        if let (Expr::I(a, t), Expr::I(b, u)) = (&self, &rhs) {
            if t == u && *t == DType::I64 {
                let folded = match op {
                    BinOp::Add => a.checked_add(*b),
                    BinOp::Sub => a.checked_sub(*b),
                    BinOp::Mul => a.checked_mul(*b),
                    BinOp::Div if *b != 0 => a.checked_div(*b),
                    BinOp::Rem if *b != 0 => a.checked_rem(*b),
                    BinOp::Max => Some(*a.max(b)),
                    BinOp::Min => Some(*a.min(b)),
                    _ => None,
                };
                if let Some(v) = folded {
                    return Expr::i(v);
                }
            }
        }
        // Identities on index arithmetic only; float identities (x*1, x+0) are left alone
        // because they change NaN/-0 behaviour.
        match (op, &self, &rhs) {
            (BinOp::Add, Expr::I(0, DType::I64), _) => return rhs,
            (BinOp::Add | BinOp::Sub, _, Expr::I(0, DType::I64)) => return self,
            (BinOp::Mul, Expr::I(1, DType::I64), _) => return rhs,
            (BinOp::Mul | BinOp::Div, _, Expr::I(1, DType::I64)) => return self,
            (BinOp::Mul, Expr::I(0, DType::I64), _) | (BinOp::Mul, _, Expr::I(0, DType::I64)) => {
                return Expr::i(0)
            }
            _ => {}
        }
        Expr::Binary(op, Box::new(self), Box::new(rhs))
    }

    pub fn max(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Max, rhs)
    }

    pub fn min(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Min, rhs)
    }

    pub fn lt(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Lt, rhs)
    }

    pub fn le(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Le, rhs)
    }

    pub fn gt(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Gt, rhs)
    }

    pub fn ge(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Ge, rhs)
    }

    pub fn eq_(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Eq, rhs)
    }

    pub fn and(self, rhs: Expr) -> Expr {
        match (&self, &rhs) {
            (Expr::B(true), _) => rhs,
            (_, Expr::B(true)) => self,
            _ => self.bin(BinOp::And, rhs),
        }
    }

    pub fn or(self, rhs: Expr) -> Expr {
        self.bin(BinOp::Or, rhs)
    }

    /// `cond ? self : other`
    pub fn select(cond: Expr, a: Expr, b: Expr) -> Expr {
        match cond {
            Expr::B(true) => a,
            Expr::B(false) => b,
            c => Expr::Select(Box::new(c), Box::new(a), Box::new(b)),
        }
    }

    pub fn cast(self, to: DType) -> Expr {
        Expr::Cast(to, Box::new(self))
    }

    pub fn reduce(op: RedOp, var: VarId, extent: u64, body: Expr) -> Expr {
        Expr::Reduce {
            op,
            var,
            extent,
            body: Box::new(body),
        }
    }

    /// Whether variable `var` appears in this expression.
    pub fn uses_var(&self, var: VarId) -> bool {
        self.any(&mut |x| matches!(x, Expr::Var(v) if *v == var))
    }

    /// Whether `f` holds for this expression or any inside it (load
    /// indices and reduction bodies included), visited outside in.
    pub fn any(&self, f: &mut impl FnMut(&Expr) -> bool) -> bool {
        if f(self) {
            return true;
        }
        match self {
            Expr::Load { index, .. } => index.any(f),
            Expr::Unary(_, a) | Expr::Cast(_, a) => a.any(f),
            Expr::Binary(_, a, b) => a.any(f) || b.any(f),
            Expr::Select(c, a, b) => c.any(f) || a.any(f) || b.any(f),
            Expr::Reduce { body, .. } => body.any(f),
            Expr::F(..) | Expr::I(..) | Expr::B(_) | Expr::Var(_) => false,
        }
    }
}

macro_rules! arith {
    ($tr:ident, $m:ident, $op:ident) => {
        impl $tr for Expr {
            type Output = Expr;
            fn $m(self, rhs: Expr) -> Expr {
                self.bin(BinOp::$op, rhs)
            }
        }
        impl $tr<i64> for Expr {
            type Output = Expr;
            fn $m(self, rhs: i64) -> Expr {
                self.bin(BinOp::$op, Expr::i(rhs))
            }
        }
    };
}
arith!(Add, add, Add);
arith!(Sub, sub, Sub);
arith!(Mul, mul, Mul);
arith!(Div, div, Div);
arith!(Rem, rem, Rem);

impl Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        self.un(UnOp::Neg)
    }
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as i64;
    }
    s
}

/// `sum(idx[i] * strides[i])`
pub fn linear_index(idx: &[Expr], strides: &[i64]) -> Expr {
    idx.iter()
        .zip(strides)
        .fold(Expr::i(0), |acc, (e, &s)| acc + e.clone() * s)
}

/// Hands out buffers and variables while a lowering assembles a program.
#[derive(Default)]
pub struct ProgramBuilder {
    pub program: KernelProgram,
    next_var: VarId,
}

impl ProgramBuilder {
    pub fn new() -> ProgramBuilder {
        ProgramBuilder::default()
    }

    pub fn buffer(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        len: usize,
        role: BufferRole,
    ) -> BufId {
        self.program.buffers.push(BufferDecl {
            name: name.into(),
            dtype,
            len,
            role,
            written_first: false,
        });
        (self.program.buffers.len() - 1) as BufId
    }

    /// Promises that every output and scratch buffer declared so far is
    /// written before it is read (see [`BufferDecl::written_first`]).
    pub fn mark_written_first(&mut self) {
        for b in &mut self.program.buffers {
            if !matches!(b.role, BufferRole::Input(_)) {
                b.written_first = true;
            }
        }
    }

    pub fn scratch(&mut self, name: impl Into<String>, dtype: DType, len: usize) -> BufId {
        self.buffer(name, dtype, len, BufferRole::Scratch)
    }

    pub fn var(&mut self) -> VarId {
        self.next_var += 1;
        self.next_var - 1
    }

    pub fn kernel(&mut self, name: impl Into<String>, body: Vec<Stmt>) {
        self.program.kernels.push(Kernel {
            name: name.into(),
            body,
            call: None,
        });
    }

    /// A kernel whose body a library routine may replace (see [`super::call`]).
    pub fn kernel_with_call(
        &mut self,
        name: impl Into<String>,
        body: Vec<Stmt>,
        call: super::call::LibraryCall,
    ) {
        self.program.kernels.push(Kernel {
            name: name.into(),
            body,
            call: Some(call),
        });
    }

    /// Loops over every index of `dims` (outermost first), calling `f` with the
    /// index expressions to build the innermost body. A rank-0 shape runs the body once.
    pub fn nest(
        &mut self,
        dims: &[usize],
        f: impl FnOnce(&mut Self, &[Expr]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let vars: Vec<VarId> = dims.iter().map(|_| self.var()).collect();
        let idx: Vec<Expr> = vars.iter().map(|&v| Expr::Var(v)).collect();
        let mut body = f(self, &idx);
        for (&v, &d) in vars.iter().zip(dims).rev() {
            body = vec![Stmt::For {
                var: v,
                extent: d as u64,
                body,
            }];
        }
        body
    }

    pub fn finish(self) -> KernelProgram {
        self.program
    }
}
