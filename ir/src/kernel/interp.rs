//! The reference backend: an interpreter for kernel IR.
//!
//! Correctness first, but fast enough to run real models (a 300 M-MAC CNN in
//! seconds): the innermost loop of every nest runs as a vector of lanes, so
//! interpretation overhead is paid once per expression node per chunk rather
//! than per element, and [`Stmt::Matmul`] runs natively. A loop is run as a
//! vector only when that cannot change the result (see [`vector_safe`]).

use super::*;
use crate::tensor::Storage;
use half::{bf16, f16};
use thiserror::Error;

#[derive(Debug, Error, Clone)]
#[error("kernel '{kernel}': {msg}")]
pub struct InterpError {
    pub kernel: String,
    pub msg: String,
}

type R<T> = std::result::Result<T, String>;

/// Lanes of one expression. Length 1 means the same value in every lane.
#[derive(Clone, Debug)]
enum V {
    F(Vec<f32>),
    D(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl V {
    fn len(&self) -> usize {
        match self {
            V::F(v) => v.len(),
            V::D(v) => v.len(),
            V::I(v) => v.len(),
            V::B(v) => v.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            V::F(_) => "f32",
            V::D(_) => "f64",
            V::I(_) => "int",
            V::B(_) => "bool",
        }
    }
}

enum Slot<'a> {
    In(&'a Storage),
    Own(Storage),
}

impl Slot<'_> {
    fn get(&self) -> &Storage {
        match self {
            Slot::In(s) => s,
            Slot::Own(s) => s,
        }
    }
}

struct Ctx<'a> {
    bufs: Vec<Slot<'a>>,
    env: Env,
}

/// Variable bindings and the vector state of the loop being run.
struct Env {
    vars: Vec<Option<V>>,
    /// Lanes that are live under the enclosing `If`s of a vector loop.
    mask: Option<Vec<bool>>,
    /// Width of the vector loop being run (1 outside one).
    lanes: usize,
}

/// Runs `prog` on `inputs` (in [`BufferRole::Input`] order) and returns the
/// outputs (in [`BufferRole::Output`] order), zero-initialised before the run.
pub fn run_program(
    prog: &KernelProgram,
    inputs: &[Option<&Storage>],
) -> Result<Vec<Storage>, InterpError> {
    let err = |msg: String| InterpError {
        kernel: "<program>".into(),
        msg,
    };
    let mut bufs = Vec::with_capacity(prog.buffers.len());
    for b in &prog.buffers {
        bufs.push(match b.role {
            // An input the caller does not provide is empty: a program that
            // depends only on its inputs' shapes (Shape, Size) runs without
            // them, and one that reads it fails with an out-of-bounds load.
            BufferRole::Input(i) if inputs.get(i).copied().flatten().is_none() => {
                Slot::Own(Storage::zeros(b.dtype, 0))
            }
            BufferRole::Input(i) => {
                let s = inputs
                    .get(i)
                    .copied()
                    .flatten()
                    .ok_or_else(|| err(format!("missing input {i}")))?;
                if s.dtype() != b.dtype || s.len() != b.len {
                    return Err(err(format!(
                        "input {i} '{}' is {}x{}, program declares {}x{}",
                        b.name,
                        s.len(),
                        s.dtype(),
                        b.len,
                        b.dtype
                    )));
                }
                Slot::In(s)
            }
            _ if b.written_first => Slot::Own(Storage::poison(b.dtype, b.len)),
            _ => Slot::Own(Storage::zeros(b.dtype, b.len)),
        });
    }
    let max_var = prog
        .kernels
        .iter()
        .map(|k| max_var_block(&k.body))
        .max()
        .unwrap_or(0);
    let mut ctx = Ctx {
        bufs,
        env: Env {
            vars: vec![None; max_var as usize + 1],
            mask: None,
            lanes: 1,
        },
    };
    for k in &prog.kernels {
        exec_block(&mut ctx, &k.body).map_err(|msg| InterpError {
            kernel: k.name.clone(),
            msg,
        })?;
    }
    let mut outs: Vec<(usize, Storage)> = vec![];
    for (b, slot) in prog.buffers.iter().zip(ctx.bufs) {
        if let (BufferRole::Output(i), Slot::Own(s)) = (b.role, slot) {
            outs.push((i, s));
        }
    }
    outs.sort_by_key(|(i, _)| *i);
    Ok(outs.into_iter().map(|(_, s)| s).collect())
}

fn max_var_block(b: &[Stmt]) -> VarId {
    b.iter().map(max_var_stmt).max().unwrap_or(0)
}

fn max_var_stmt(s: &Stmt) -> VarId {
    match s {
        Stmt::For { var, body, .. } => (*var).max(max_var_block(body)),
        Stmt::Let { var, value } => (*var).max(max_var_expr(value)),
        Stmt::Store { index, value, .. } => max_var_expr(index).max(max_var_expr(value)),
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => max_var_expr(cond)
            .max(max_var_block(then_body))
            .max(max_var_block(else_body)),
        Stmt::While { cond, body } => max_var_expr(cond).max(max_var_block(body)),
        Stmt::Matmul(m) => max_var_expr(&m.a.offset)
            .max(max_var_expr(&m.b.offset))
            .max(max_var_expr(&m.c.offset)),
    }
}

fn max_var_expr(e: &Expr) -> VarId {
    match e {
        Expr::Var(v) => *v,
        Expr::Load { index, .. } => max_var_expr(index),
        Expr::Unary(_, a) | Expr::Cast(_, a) => max_var_expr(a),
        Expr::Binary(_, a, b) => max_var_expr(a).max(max_var_expr(b)),
        Expr::Select(c, a, b) => max_var_expr(c).max(max_var_expr(a)).max(max_var_expr(b)),
        Expr::Reduce { var, body, .. } => (*var).max(max_var_expr(body)),
        _ => 0,
    }
}

/// Lanes per vector chunk: long enough to amortise dispatch, short enough to stay in cache.
const CHUNK: u64 = 512;

fn exec_block(ctx: &mut Ctx, stmts: &[Stmt]) -> R<()> {
    for s in stmts {
        exec_stmt(ctx, s)?;
    }
    Ok(())
}

fn exec_stmt(ctx: &mut Ctx, s: &Stmt) -> R<()> {
    match s {
        Stmt::For { var, extent, body } => {
            let vectorise =
                ctx.env.lanes == 1 && *extent > 1 && is_innermost(body) && vector_safe(*var, body);
            if vectorise {
                let mut start = 0;
                while start < *extent {
                    let end = (start + CHUNK).min(*extent);
                    ctx.env.vars[*var as usize] = Some(V::I((start as i64..end as i64).collect()));
                    ctx.env.lanes = (end - start) as usize;
                    let r = exec_block(ctx, body);
                    ctx.env.lanes = 1;
                    ctx.env.mask = None;
                    r?;
                    start = end;
                }
            } else {
                for i in 0..*extent {
                    ctx.env.vars[*var as usize] = Some(V::I(vec![i as i64]));
                    exec_block(ctx, body)?;
                }
            }
            Ok(())
        }
        Stmt::Let { var, value } => {
            let v = eval(&ctx.bufs, &mut ctx.env, value)?;
            ctx.env.vars[*var as usize] = Some(v);
            Ok(())
        }
        Stmt::Store { buf, index, value } => {
            let idx = eval(&ctx.bufs, &mut ctx.env, index)?;
            let val = eval(&ctx.bufs, &mut ctx.env, value)?;
            store(ctx, *buf, idx, val)
        }
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => {
            let c = match eval(&ctx.bufs, &mut ctx.env, cond)? {
                V::B(c) => c,
                v => return Err(format!("If condition is {}, not bool", v.kind())),
            };
            if c.len() == 1 || c.iter().all(|&x| x == c[0]) {
                let live = ctx.env.mask.as_ref().is_none_or(|m| m.iter().any(|&x| x));
                if live {
                    exec_block(ctx, if c[0] { then_body } else { else_body })?;
                }
                return Ok(());
            }
            let outer = ctx.env.mask.clone();
            for (branch, want) in [(then_body, true), (else_body, false)] {
                if branch.is_empty() {
                    continue;
                }
                let m: Vec<bool> = c
                    .iter()
                    .enumerate()
                    .map(|(l, &x)| x == want && outer.as_ref().is_none_or(|o| o[l]))
                    .collect();
                if m.iter().any(|&x| x) {
                    ctx.env.mask = Some(m);
                    exec_block(ctx, branch)?;
                }
            }
            ctx.env.mask = outer;
            Ok(())
        }
        Stmt::Matmul(m) => matmul(ctx, m),
        Stmt::While { cond, body } => {
            if ctx.env.lanes != 1 {
                return Err("While inside a vectorised loop".into());
            }
            loop {
                match eval(&ctx.bufs, &mut ctx.env, cond)? {
                    V::B(c) if c.len() == 1 => {
                        if !c[0] {
                            return Ok(());
                        }
                    }
                    v => {
                        return Err(format!(
                            "While condition is {}, not a bool scalar",
                            v.kind()
                        ))
                    }
                }
                exec_block(ctx, body)?;
            }
        }
    }
}

fn is_innermost(body: &[Stmt]) -> bool {
    body.iter().all(|s| match s {
        Stmt::For { .. } | Stmt::Matmul(_) | Stmt::While { .. } => false,
        Stmt::If {
            then_body,
            else_body,
            ..
        } => is_innermost(then_body) && is_innermost(else_body),
        _ => true,
    })
}

/// Running the iterations of a loop as lanes is exact unless one iteration
/// reads what another writes. Allowed: a buffer that is both stored and
/// loaded only at one index expression that is injective in `var` (each
/// iteration touches its own element).
pub fn vector_safe(var: VarId, body: &[Stmt]) -> bool {
    let mut stores: Vec<(BufId, &Expr)> = vec![];
    let mut loads: Vec<(BufId, &Expr)> = vec![];
    collect_block(body, &mut stores, &mut loads);
    stores.iter().all(|(b, sidx)| {
        let touched: Vec<&&Expr> = loads
            .iter()
            .filter(|(lb, _)| lb == b)
            .map(|(_, i)| i)
            .collect();
        touched.is_empty()
            || (touched.iter().all(|i| **i == *sidx)
                && stores
                    .iter()
                    .filter(|(sb, _)| sb == b)
                    .all(|(_, i)| *i == *sidx)
                && affine_coeff(sidx, var).is_some_and(|c| c != 0))
    })
}

fn collect_block<'a>(
    b: &'a [Stmt],
    st: &mut Vec<(BufId, &'a Expr)>,
    ld: &mut Vec<(BufId, &'a Expr)>,
) {
    for s in b {
        match s {
            Stmt::Store { buf, index, value } => {
                st.push((*buf, index));
                collect_expr(index, ld);
                collect_expr(value, ld);
            }
            Stmt::Let { value, .. } => collect_expr(value, ld),
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => {
                collect_expr(cond, ld);
                collect_block(then_body, st, ld);
                collect_block(else_body, st, ld);
            }
            Stmt::For { body, .. } => collect_block(body, st, ld),
            Stmt::While { cond, body } => {
                collect_expr(cond, ld);
                collect_block(body, st, ld);
            }
            Stmt::Matmul(_) => {}
        }
    }
}

fn collect_expr<'a>(e: &'a Expr, ld: &mut Vec<(BufId, &'a Expr)>) {
    match e {
        Expr::Load { buf, index } => {
            ld.push((*buf, index));
            collect_expr(index, ld);
        }
        Expr::Unary(_, a) | Expr::Cast(_, a) => collect_expr(a, ld),
        Expr::Binary(_, a, b) => {
            collect_expr(a, ld);
            collect_expr(b, ld)
        }
        Expr::Select(c, a, b) => {
            collect_expr(c, ld);
            collect_expr(a, ld);
            collect_expr(b, ld)
        }
        Expr::Reduce { body, .. } => collect_expr(body, ld),
        _ => {}
    }
}

/// The coefficient of `var` if `e` is `var * c + (terms free of var)`.
pub fn affine_coeff(e: &Expr, var: VarId) -> Option<i64> {
    if !e.uses_var(var) {
        return Some(0);
    }
    match e {
        Expr::Var(v) if *v == var => Some(1),
        Expr::Binary(BinOp::Add, a, b) => Some(affine_coeff(a, var)? + affine_coeff(b, var)?),
        Expr::Binary(BinOp::Sub, a, b) => Some(affine_coeff(a, var)? - affine_coeff(b, var)?),
        Expr::Binary(BinOp::Mul, a, b) => match (&**a, &**b) {
            (Expr::I(c, _), x) | (x, Expr::I(c, _)) => Some(c * affine_coeff(x, var)?),
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------- expressions

fn eval(bufs: &[Slot], env: &mut Env, e: &Expr) -> R<V> {
    Ok(match e {
        Expr::F(v, t) => match t {
            DType::F64 => V::D(vec![*v]),
            _ => V::F(vec![round_to(*v as f32, *t)]),
        },
        Expr::I(v, t) => V::I(vec![wrap_int(*v, *t)]),
        Expr::B(b) => V::B(vec![*b]),
        Expr::Var(v) => env.vars[*v as usize]
            .clone()
            .ok_or_else(|| format!("variable v{v} used before it is bound"))?,
        Expr::Load { buf, index } => {
            let idx = match eval(bufs, env, index)? {
                V::I(i) => i,
                v => return Err(format!("index of a load from buffer {buf} is {}", v.kind())),
            };
            load(bufs, env.mask.as_deref(), *buf, &idx)?
        }
        Expr::Unary(op, a) => unary(*op, eval(bufs, env, a)?)?,
        Expr::Binary(op, a, b) => {
            let a = eval(bufs, env, a)?;
            binary(*op, a, eval(bufs, env, b)?)?
        }
        Expr::Select(c, a, b) => {
            let c = match eval(bufs, env, c)? {
                V::B(c) => c,
                v => return Err(format!("select condition is {}", v.kind())),
            };
            let a = eval(bufs, env, a)?;
            select(&c, a, eval(bufs, env, b)?)?
        }
        Expr::Cast(t, a) => cast(eval(bufs, env, a)?, *t),
        Expr::Reduce {
            op,
            var,
            extent,
            body,
        } => reduce(bufs, env, *op, *var, *extent, body)?,
    })
}

/// Rounds an f32 lane to the precision of a narrow float type.
fn round_to(x: f32, t: DType) -> f32 {
    match t {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

fn wrap_int(v: i64, t: DType) -> i64 {
    match t {
        DType::I8 => v as i8 as i64,
        DType::U8 => v as u8 as i64,
        DType::I16 => v as i16 as i64,
        DType::U16 => v as u16 as i64,
        DType::I32 => v as i32 as i64,
        DType::U32 => v as u32 as i64,
        _ => v,
    }
}

fn load(bufs: &[Slot], mask: Option<&[bool]>, buf: BufId, idx: &[i64]) -> R<V> {
    let s = bufs
        .get(buf as usize)
        .ok_or_else(|| format!("no buffer {buf}"))?
        .get();
    let n = s.len() as i64;
    // Lanes masked off by an enclosing If are not loaded (they may be out of bounds).
    let check = |l: usize, i: i64| -> R<usize> {
        if mask.is_some_and(|m| m.len() == idx.len() && !m[l]) {
            return Ok(usize::MAX);
        }
        if i < 0 || i >= n {
            return Err(format!(
                "load from buffer {buf} at {i} is out of bounds (len {n})"
            ));
        }
        Ok(i as usize)
    };
    macro_rules! gather {
        ($v:expr, $ctor:ident, $zero:expr, $conv:expr) => {{
            let mut out = Vec::with_capacity(idx.len());
            for (l, &i) in idx.iter().enumerate() {
                let p = check(l, i)?;
                out.push(if p == usize::MAX { $zero } else { $conv($v[p]) });
            }
            V::$ctor(out)
        }};
    }
    Ok(match s {
        Storage::F32(v) => {
            if mask.is_none() && idx.len() > 1 && idx.windows(2).all(|w| w[1] == w[0] + 1) {
                let (a, b) = (idx[0], idx[idx.len() - 1]);
                if a < 0 || b >= n {
                    return Err(format!(
                        "load from buffer {buf} at {a}..={b} is out of bounds (len {n})"
                    ));
                }
                V::F(v[a as usize..=b as usize].to_vec())
            } else {
                gather!(v, F, 0.0, |x: f32| x)
            }
        }
        Storage::F16(v) => gather!(v, F, 0.0, |x: u16| f16::from_bits(x).to_f32()),
        Storage::BF16(v) => gather!(v, F, 0.0, |x: u16| bf16::from_bits(x).to_f32()),
        Storage::F64(v) => gather!(v, D, 0.0, |x: f64| x),
        Storage::I8(v) => gather!(v, I, 0, |x: i8| x as i64),
        Storage::U8(v) => gather!(v, I, 0, |x: u8| x as i64),
        Storage::I16(v) => gather!(v, I, 0, |x: i16| x as i64),
        Storage::U16(v) => gather!(v, I, 0, |x: u16| x as i64),
        Storage::I32(v) => gather!(v, I, 0, |x: i32| x as i64),
        Storage::U32(v) => gather!(v, I, 0, |x: u32| x as i64),
        Storage::I64(v) => gather!(v, I, 0, |x: i64| x),
        Storage::U64(v) => gather!(v, I, 0, |x: u64| x as i64),
        Storage::Bool(v) => gather!(v, B, false, |x: bool| x),
    })
}

fn store(ctx: &mut Ctx, buf: BufId, idx: V, val: V) -> R<()> {
    let idx = match idx {
        V::I(i) => i,
        v => return Err(format!("store index is {}", v.kind())),
    };
    let lanes = idx.len().max(val.len());
    let mask = ctx.env.mask.clone();
    let slot = ctx
        .bufs
        .get_mut(buf as usize)
        .ok_or_else(|| format!("no buffer {buf}"))?;
    let s = match slot {
        Slot::Own(s) => s,
        Slot::In(_) => return Err(format!("store into input buffer {buf}")),
    };
    let n = s.len() as i64;
    let at = |l: usize| if idx.len() == 1 { idx[0] } else { idx[l] };
    let on = |l: usize| mask.as_ref().is_none_or(|m| m.len() != lanes || m[l]);
    macro_rules! scatter {
        ($v:expr, $src:expr, $conv:expr) => {{
            let src = $src;
            for l in 0..lanes {
                if !on(l) {
                    continue;
                }
                let i = at(l);
                if i < 0 || i >= n {
                    return Err(format!(
                        "store to buffer {buf} at {i} is out of bounds (len {n})"
                    ));
                }
                let x = if src.len() == 1 { src[0] } else { src[l] };
                $v[i as usize] = $conv(x);
            }
        }};
    }
    let dt = s.dtype();
    match (s, val) {
        (Storage::F32(v), V::F(x)) => scatter!(v, x, |x: f32| x),
        (Storage::F16(v), V::F(x)) => scatter!(v, x, |x: f32| f16::from_f32(x).to_bits()),
        (Storage::BF16(v), V::F(x)) => scatter!(v, x, |x: f32| bf16::from_f32(x).to_bits()),
        (Storage::F64(v), V::D(x)) => scatter!(v, x, |x: f64| x),
        (Storage::I8(v), V::I(x)) => scatter!(v, x, |x: i64| x as i8),
        (Storage::U8(v), V::I(x)) => scatter!(v, x, |x: i64| x as u8),
        (Storage::I16(v), V::I(x)) => scatter!(v, x, |x: i64| x as i16),
        (Storage::U16(v), V::I(x)) => scatter!(v, x, |x: i64| x as u16),
        (Storage::I32(v), V::I(x)) => scatter!(v, x, |x: i64| x as i32),
        (Storage::U32(v), V::I(x)) => scatter!(v, x, |x: i64| x as u32),
        (Storage::I64(v), V::I(x)) => scatter!(v, x, |x: i64| x),
        (Storage::U64(v), V::I(x)) => scatter!(v, x, |x: i64| x as u64),
        (Storage::Bool(v), V::B(x)) => scatter!(v, x, |x: bool| x),
        (_, v) => {
            return Err(format!(
                "store of {} lanes into {dt} buffer {buf}",
                v.kind()
            ))
        }
    }
    Ok(())
}

fn map1<T: Copy, U>(v: &[T], f: impl Fn(T) -> U) -> Vec<U> {
    v.iter().map(|&x| f(x)).collect()
}

fn zip2<T: Copy, U>(a: &[T], b: &[T], f: impl Fn(T, T) -> U) -> Vec<U> {
    match (a.len(), b.len()) {
        (1, _) => b.iter().map(|&y| f(a[0], y)).collect(),
        (_, 1) => a.iter().map(|&x| f(x, b[0])).collect(),
        _ => a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect(),
    }
}

fn unary(op: UnOp, a: V) -> R<V> {
    use UnOp::*;
    Ok(match a {
        V::F(v) => match op {
            IsNan => V::B(map1(&v, f32::is_nan)),
            IsInf => V::B(map1(&v, f32::is_infinite)),
            Not => return Err("not on f32".into()),
            _ => V::F(map1(&v, |x| float_un(op, x as f64) as f32)),
        },
        V::D(v) => match op {
            IsNan => V::B(map1(&v, f64::is_nan)),
            IsInf => V::B(map1(&v, f64::is_infinite)),
            Not => return Err("not on f64".into()),
            _ => V::D(map1(&v, |x| float_un(op, x))),
        },
        V::I(v) => V::I(match op {
            Neg => map1(&v, i64::wrapping_neg),
            Abs => map1(&v, i64::wrapping_abs),
            Not => map1(&v, |x| !x),
            Floor | Ceil | Round => v,
            _ => return Err(format!("{op:?} on integers")),
        }),
        V::B(v) => match op {
            Not => V::B(map1(&v, |x| !x)),
            _ => return Err(format!("{op:?} on bool")),
        },
    })
}

/// Scalar float functions, computed in f64 for f32 lanes so the reference is
/// correctly rounded (renderers approximate and are tested against it).
fn float_un(op: UnOp, x: f64) -> f64 {
    use UnOp::*;
    match op {
        Neg => -x,
        Abs => x.abs(),
        Exp => x.exp(),
        Log => x.ln(),
        Sqrt => x.sqrt(),
        Sin => x.sin(),
        Cos => x.cos(),
        Tan => x.tan(),
        Asin => x.asin(),
        Acos => x.acos(),
        Atan => x.atan(),
        Sinh => x.sinh(),
        Cosh => x.cosh(),
        Asinh => x.asinh(),
        Acosh => x.acosh(),
        Atanh => x.atanh(),
        Tanh => x.tanh(),
        Erf => erf(x),
        Floor => x.floor(),
        Ceil => x.ceil(),
        Round => x.round_ties_even(),
        Not | IsNan | IsInf => f64::NAN,
    }
}

/// erf to f64 precision (W. J. Cody's rational approximations are overkill for
/// an f32 reference; this series/continued-fraction split is accurate to ~1e-15).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series.
        let mut sum = ax;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax < 6.0 {
        // Continued fraction for erfc.
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / (ax + f) / std::f64::consts::PI.sqrt()
    } else {
        1.0
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn fmin(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn float_bin(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Rem => a % b,
        BinOp::Pow => a.powf(b),
        BinOp::Max => fmax(a, b),
        BinOp::Min => fmin(a, b),
        _ => f64::NAN,
    }
}

fn cmp<T: PartialOrd>(op: BinOp, a: T, b: T) -> bool {
    match op {
        BinOp::Eq => a == b,
        BinOp::Ne => a != b,
        BinOp::Lt => a < b,
        BinOp::Le => a <= b,
        BinOp::Gt => a > b,
        _ => a >= b,
    }
}

fn binary(op: BinOp, a: V, b: V) -> R<V> {
    Ok(match (a, b) {
        (V::F(x), V::F(y)) => {
            if op.is_comparison() {
                V::B(zip2(&x, &y, |a, b| cmp(op, a, b)))
            } else {
                V::F(match op {
                    BinOp::Add => zip2(&x, &y, |a, b| a + b),
                    BinOp::Sub => zip2(&x, &y, |a, b| a - b),
                    BinOp::Mul => zip2(&x, &y, |a, b| a * b),
                    BinOp::Div => zip2(&x, &y, |a, b| a / b),
                    BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr => {
                        return Err(format!("{op:?} on floats"))
                    }
                    _ => zip2(&x, &y, |a, b| float_bin(op, a as f64, b as f64) as f32),
                })
            }
        }
        (V::D(x), V::D(y)) => {
            if op.is_comparison() {
                V::B(zip2(&x, &y, |a, b| cmp(op, a, b)))
            } else if matches!(
                op,
                BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr
            ) {
                return Err(format!("{op:?} on floats"));
            } else {
                V::D(zip2(&x, &y, |a, b| float_bin(op, a, b)))
            }
        }
        (V::I(x), V::I(y)) => {
            if op.is_comparison() {
                V::B(zip2(&x, &y, |a, b| cmp(op, a, b)))
            } else {
                V::I(zip2(&x, &y, |a, b| match op {
                    BinOp::Add => a.wrapping_add(b),
                    BinOp::Sub => a.wrapping_sub(b),
                    BinOp::Mul => a.wrapping_mul(b),
                    BinOp::Div => a.checked_div(b).unwrap_or(0),
                    BinOp::Rem => a.checked_rem(b).unwrap_or(0),
                    BinOp::Pow => {
                        if b < 0 {
                            if a == 1 {
                                1
                            } else {
                                0
                            }
                        } else {
                            a.wrapping_pow(b.min(u32::MAX as i64) as u32)
                        }
                    }
                    BinOp::Max => a.max(b),
                    BinOp::Min => a.min(b),
                    BinOp::And => a & b,
                    BinOp::Or => a | b,
                    BinOp::Xor => a ^ b,
                    BinOp::Shl if (0..64).contains(&b) => a << b,
                    BinOp::Shr if (0..64).contains(&b) => a >> b,
                    _ => 0,
                }))
            }
        }
        (V::B(x), V::B(y)) => V::B(zip2(&x, &y, |a, b| match op {
            BinOp::And => a & b,
            BinOp::Or => a | b,
            BinOp::Xor | BinOp::Ne => a ^ b,
            BinOp::Eq => a == b,
            BinOp::Max => a | b,
            BinOp::Min => a & b,
            _ => false,
        })),
        (a, b) => return Err(format!("{op:?} on {} and {}", a.kind(), b.kind())),
    })
}

fn select(c: &[bool], a: V, b: V) -> R<V> {
    let pick = |l: usize| if c.len() == 1 { c[0] } else { c[l] };
    fn sel<T: Copy>(c: &dyn Fn(usize) -> bool, n: usize, a: &[T], b: &[T]) -> Vec<T> {
        (0..n)
            .map(|l| {
                if c(l) {
                    a[if a.len() == 1 { 0 } else { l }]
                } else {
                    b[if b.len() == 1 { 0 } else { l }]
                }
            })
            .collect()
    }
    let n = c.len().max(a.len()).max(b.len());
    Ok(match (a, b) {
        (V::F(x), V::F(y)) => V::F(sel(&pick, n, &x, &y)),
        (V::D(x), V::D(y)) => V::D(sel(&pick, n, &x, &y)),
        (V::I(x), V::I(y)) => V::I(sel(&pick, n, &x, &y)),
        (V::B(x), V::B(y)) => V::B(sel(&pick, n, &x, &y)),
        (a, b) => return Err(format!("select between {} and {}", a.kind(), b.kind())),
    })
}

fn cast(a: V, t: DType) -> V {
    match t.compute_class() {
        crate::dtype::ComputeClass::F32 => V::F(match a {
            V::F(v) => map1(&v, |x| round_to(x, t)),
            V::D(v) => map1(&v, |x| round_to(x as f32, t)),
            V::I(v) => map1(&v, |x| round_to(x as f32, t)),
            V::B(v) => map1(&v, |x| x as u8 as f32),
        }),
        crate::dtype::ComputeClass::F64 => V::D(match a {
            V::F(v) => map1(&v, |x| x as f64),
            V::D(v) => v,
            V::I(v) => map1(&v, |x| x as f64),
            V::B(v) => map1(&v, |x| x as u8 as f64),
        }),
        crate::dtype::ComputeClass::Int => V::I(match a {
            V::F(v) => map1(&v, |x| float_to_int(x as f64, t)),
            V::D(v) => map1(&v, |x| float_to_int(x, t)),
            V::I(v) => map1(&v, |x| wrap_int(x, t)),
            V::B(v) => map1(&v, |x| x as i64),
        }),
        crate::dtype::ComputeClass::Bool => V::B(match a {
            V::F(v) => map1(&v, |x| x != 0.0),
            V::D(v) => map1(&v, |x| x != 0.0),
            V::I(v) => map1(&v, |x| x != 0),
            V::B(v) => v,
        }),
    }
}

/// Float to integer conversion: truncation, saturating at the target's range (NaN gives 0).
fn float_to_int(x: f64, t: DType) -> i64 {
    let (lo, hi) = t.min_max();
    if x.is_nan() {
        0
    } else if t == DType::U64 && x >= 9.2e18 {
        x as u64 as i64
    } else {
        x.trunc().clamp(lo, hi) as i64
    }
}

fn reduce(bufs: &[Slot], env: &mut Env, op: RedOp, var: VarId, extent: u64, body: &Expr) -> R<V> {
    let saved = env.vars[var as usize].take();
    let r = reduce_inner(bufs, env, op, var, extent, body);
    env.vars[var as usize] = saved;
    r
}

fn reduce_inner(
    bufs: &[Slot],
    env: &mut Env,
    op: RedOp,
    var: VarId,
    extent: u64,
    body: &Expr,
) -> R<V> {
    let mut acc: Option<V> = None;
    let combine = |acc: Option<V>, v: V| -> R<V> {
        Ok(match acc {
            None => v,
            Some(a) => binary(red_binop(op), a, v)?,
        })
    };
    // In a scalar context, run the reduction's iterations as lanes and fold them in order.
    if env.lanes == 1 && extent >= 8 && env.mask.is_none() {
        let mut start = 0;
        while start < extent {
            let end = (start + CHUNK).min(extent);
            env.vars[var as usize] = Some(V::I((start as i64..end as i64).collect()));
            env.lanes = (end - start) as usize;
            let v = eval(bufs, env, body);
            env.lanes = 1;
            let v = v?;
            let folded = if v.len() == 1 && end - start > 1 {
                repeat_fold(op, v, end - start)?
            } else {
                fold_lanes(op, v)?
            };
            acc = Some(combine(acc, folded)?);
            start = end;
        }
    } else {
        for r in 0..extent {
            env.vars[var as usize] = Some(V::I(vec![r as i64]));
            let v = eval(bufs, env, body)?;
            acc = Some(combine(acc, v)?);
        }
    }
    match acc {
        Some(a) => Ok(a),
        None => {
            // An empty reduction is the identity, of the kind the body would produce.
            let kind = expr_kind(bufs, body);
            Ok(match (op, kind) {
                (RedOp::Sum, 'f') => V::F(vec![0.0]),
                (RedOp::Prod, 'f') => V::F(vec![1.0]),
                (RedOp::Max, 'f') => V::F(vec![f32::NEG_INFINITY]),
                (RedOp::Min, 'f') => V::F(vec![f32::INFINITY]),
                (RedOp::Sum, 'd') => V::D(vec![0.0]),
                (RedOp::Prod, 'd') => V::D(vec![1.0]),
                (RedOp::Max, 'd') => V::D(vec![f64::NEG_INFINITY]),
                (RedOp::Min, 'd') => V::D(vec![f64::INFINITY]),
                (RedOp::Max, 'b') => V::B(vec![false]),
                (RedOp::Min, 'b') => V::B(vec![true]),
                (RedOp::Sum, _) => V::I(vec![0]),
                (RedOp::Prod, _) => V::I(vec![1]),
                (RedOp::Max, _) => V::I(vec![i64::MIN]),
                (RedOp::Min, _) => V::I(vec![i64::MAX]),
            })
        }
    }
}

/// Folds a body that did not depend on the reduction variable: `n` equal lanes.
fn repeat_fold(op: RedOp, v: V, n: u64) -> R<V> {
    let mut acc = v.clone();
    for _ in 1..n {
        acc = binary(red_binop(op), acc, v.clone())?;
    }
    Ok(acc)
}

fn fold_lanes(op: RedOp, v: V) -> R<V> {
    let bop = red_binop(op);
    Ok(match v {
        V::F(x) => {
            let mut acc = x[0];
            for &y in &x[1..] {
                acc = match op {
                    RedOp::Sum => acc + y,
                    RedOp::Prod => acc * y,
                    _ => float_bin(bop, acc as f64, y as f64) as f32,
                };
            }
            V::F(vec![acc])
        }
        V::D(x) => V::D(vec![x[1..].iter().fold(x[0], |a, &b| float_bin(bop, a, b))]),
        V::I(x) => {
            let mut acc = V::I(vec![x[0]]);
            for &y in &x[1..] {
                acc = binary(bop, acc, V::I(vec![y]))?;
            }
            acc
        }
        V::B(x) => V::B(vec![x[1..].iter().fold(x[0], |a, &b| {
            if op == RedOp::Max || op == RedOp::Sum {
                a | b
            } else {
                a & b
            }
        })]),
    })
}

fn red_binop(op: RedOp) -> BinOp {
    match op {
        RedOp::Sum => BinOp::Add,
        RedOp::Prod => BinOp::Mul,
        RedOp::Max => BinOp::Max,
        RedOp::Min => BinOp::Min,
    }
}

/// 'f', 'd', 'i' or 'b': the lane kind an expression produces (for empty reductions).
fn expr_kind(bufs: &[Slot], e: &Expr) -> char {
    match e {
        Expr::F(_, DType::F64) => 'd',
        Expr::F(..) => 'f',
        Expr::I(..) | Expr::Var(_) => 'i',
        Expr::B(_) => 'b',
        Expr::Load { buf, .. } => match bufs
            .get(*buf as usize)
            .map(|s| s.get().dtype().compute_class())
        {
            Some(crate::dtype::ComputeClass::F64) => 'd',
            Some(crate::dtype::ComputeClass::Int) => 'i',
            Some(crate::dtype::ComputeClass::Bool) => 'b',
            _ => 'f',
        },
        Expr::Unary(UnOp::IsNan | UnOp::IsInf, _) => 'b',
        Expr::Unary(_, a) => expr_kind(bufs, a),
        Expr::Binary(op, a, _) => {
            if op.is_comparison() {
                'b'
            } else {
                expr_kind(bufs, a)
            }
        }
        Expr::Select(_, a, _) => expr_kind(bufs, a),
        Expr::Cast(t, _) => match t.compute_class() {
            crate::dtype::ComputeClass::F32 => 'f',
            crate::dtype::ComputeClass::F64 => 'd',
            crate::dtype::ComputeClass::Int => 'i',
            crate::dtype::ComputeClass::Bool => 'b',
        },
        Expr::Reduce { body, .. } => expr_kind(bufs, body),
    }
}

// ---------------------------------------------------------------- matmul

fn scalar_offset(ctx: &mut Ctx, e: &Expr) -> R<i64> {
    match eval(&ctx.bufs, &mut ctx.env, e)? {
        V::I(v) if v.len() == 1 => Ok(v[0]),
        _ => Err("matmul offset must be a scalar integer".into()),
    }
}

fn matmul(ctx: &mut Ctx, mm: &Matmul) -> R<()> {
    let oa = scalar_offset(ctx, &mm.a.offset)?;
    let ob = scalar_offset(ctx, &mm.b.offset)?;
    let oc = scalar_offset(ctx, &mm.c.offset)?;
    let (m, n, k) = (mm.m as i64, mm.n as i64, mm.k as i64);
    let span =
        |off: i64, rs: i64, cs: i64, rows: i64, cols: i64, len: usize, what: &str| -> R<()> {
            if rows == 0 || cols == 0 {
                return Ok(());
            }
            let corners = [
                off,
                off + (rows - 1) * rs,
                off + (cols - 1) * cs,
                off + (rows - 1) * rs + (cols - 1) * cs,
            ];
            if corners.iter().any(|&c| c < 0 || c >= len as i64) {
                return Err(format!(
                    "matmul {what} view is out of bounds (buffer len {len})"
                ));
            }
            Ok(())
        };
    let len = |b: BufId| ctx.bufs.get(b as usize).map(|s| s.get().len()).unwrap_or(0);
    span(
        oa,
        mm.a.row_stride,
        mm.a.col_stride,
        m,
        k,
        len(mm.a.buf),
        "A",
    )?;
    span(
        ob,
        mm.b.row_stride,
        mm.b.col_stride,
        k,
        n,
        len(mm.b.buf),
        "B",
    )?;
    span(
        oc,
        mm.c.row_stride,
        mm.c.col_stride,
        m,
        n,
        len(mm.c.buf),
        "C",
    )?;
    if mm.c.buf == mm.a.buf || mm.c.buf == mm.b.buf {
        return Err("matmul output aliases an operand".into());
    }
    // Take C out of the buffer table so A and B can be borrowed without copying.
    let mut c_store = match &mut ctx.bufs[mm.c.buf as usize] {
        Slot::Own(s) => std::mem::replace(s, Storage::F32(Vec::new())),
        Slot::In(_) => return Err("matmul into an input buffer".into()),
    };
    let r = matmul_into(
        ctx.bufs[mm.a.buf as usize].get(),
        ctx.bufs[mm.b.buf as usize].get(),
        &mut c_store,
        mm,
        (oa, ob, oc),
    );
    if let Slot::Own(s) = &mut ctx.bufs[mm.c.buf as usize] {
        *s = c_store;
    }
    r
}

fn matmul_into(
    a_s: &Storage,
    b_s: &Storage,
    c_slot: &mut Storage,
    mm: &Matmul,
    (oa, ob, oc): (i64, i64, i64),
) -> R<()> {
    let (m, n, k) = (mm.m as i64, mm.n as i64, mm.k as i64);
    match (a_s, b_s, c_slot) {
        (Storage::F32(a), Storage::F32(b), Storage::F32(c)) => {
            let mut row = vec![0f32; n as usize];
            for i in 0..m {
                let cbase = oc + i * mm.c.row_stride;
                if mm.accumulate {
                    for j in 0..n {
                        row[j as usize] = c[(cbase + j * mm.c.col_stride) as usize];
                    }
                } else {
                    row.iter_mut().for_each(|x| *x = 0.0);
                }
                for p in 0..k {
                    let av = a[(oa + i * mm.a.row_stride + p * mm.a.col_stride) as usize];
                    let bbase = ob + p * mm.b.row_stride;
                    if mm.b.col_stride == 1 {
                        let brow = &b[bbase as usize..(bbase + n) as usize];
                        for (r, &bv) in row.iter_mut().zip(brow) {
                            *r += av * bv;
                        }
                    } else {
                        for j in 0..n {
                            row[j as usize] += av * b[(bbase + j * mm.b.col_stride) as usize];
                        }
                    }
                }
                for j in 0..n {
                    c[(cbase + j * mm.c.col_stride) as usize] = row[j as usize];
                }
            }
        }
        (a, b, c) if a.dtype() == b.dtype() && b.dtype() == c.dtype() => {
            let float = a.dtype().is_float();
            for i in 0..m {
                for j in 0..n {
                    let ci = (oc + i * mm.c.row_stride + j * mm.c.col_stride) as usize;
                    if float {
                        let mut acc = if mm.accumulate { c.get_f64(ci) } else { 0.0 };
                        for p in 0..k {
                            acc += a
                                .get_f64((oa + i * mm.a.row_stride + p * mm.a.col_stride) as usize)
                                * b.get_f64(
                                    (ob + p * mm.b.row_stride + j * mm.b.col_stride) as usize,
                                );
                        }
                        set_f64(c, ci, acc);
                    } else {
                        let mut acc = if mm.accumulate { c.get_i64(ci) } else { 0 };
                        for p in 0..k {
                            acc = acc.wrapping_add(
                                a.get_i64(
                                    (oa + i * mm.a.row_stride + p * mm.a.col_stride) as usize,
                                )
                                .wrapping_mul(b.get_i64(
                                    (ob + p * mm.b.row_stride + j * mm.b.col_stride) as usize,
                                )),
                            );
                        }
                        set_i64(c, ci, acc);
                    }
                }
            }
        }
        (a, b, c) => {
            return Err(format!(
                "matmul of {} x {} into {}",
                a.dtype(),
                b.dtype(),
                c.dtype()
            ))
        }
    }
    Ok(())
}

fn set_f64(s: &mut Storage, i: usize, x: f64) {
    match s {
        Storage::F32(v) => v[i] = x as f32,
        // Through f32, as F16C hardware does: the same result on every host.
        Storage::F16(v) => v[i] = f16::from_f32(x as f32).to_bits(),
        Storage::BF16(v) => v[i] = bf16::from_f64(x).to_bits(),
        Storage::F64(v) => v[i] = x,
        _ => set_i64(s, i, x as i64),
    }
}

fn set_i64(s: &mut Storage, i: usize, x: i64) {
    match s {
        Storage::I8(v) => v[i] = x as i8,
        Storage::U8(v) => v[i] = x as u8,
        Storage::I16(v) => v[i] = x as i16,
        Storage::U16(v) => v[i] = x as u16,
        Storage::I32(v) => v[i] = x as i32,
        Storage::U32(v) => v[i] = x as u32,
        Storage::I64(v) => v[i] = x,
        Storage::U64(v) => v[i] = x as u64,
        Storage::Bool(v) => v[i] = x != 0,
        _ => set_f64(s, i, x as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::build::ProgramBuilder;

    fn f32s(s: &Storage) -> Vec<f32> {
        match s {
            Storage::F32(v) => v.clone(),
            _ => panic!("not f32"),
        }
    }

    /// out[i, j] = sum_k a[i, k] * b[k, j] as an expression reduction and as a Matmul agree.
    #[test]
    fn reduce_and_matmul_agree() {
        let (m, n, k) = (3usize, 700usize, 5usize);
        let a: Vec<f32> = (0..m * k).map(|x| x as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|x| ((x * 7) % 13) as f32 - 6.0).collect();
        let mut pb = ProgramBuilder::new();
        let ba = pb.buffer("a", DType::F32, m * k, BufferRole::Input(0));
        let bb = pb.buffer("b", DType::F32, k * n, BufferRole::Input(1));
        let o1 = pb.buffer("o1", DType::F32, m * n, BufferRole::Output(0));
        let o2 = pb.buffer("o2", DType::F32, m * n, BufferRole::Output(1));
        let r = pb.var();
        let body = pb.nest(&[m, n], |_, idx| {
            let prod = Expr::load(ba, idx[0].clone() * k as i64 + Expr::var(r))
                * Expr::load(bb, Expr::var(r) * n as i64 + idx[1].clone());
            vec![Stmt::Store {
                buf: o1,
                index: idx[0].clone() * n as i64 + idx[1].clone(),
                value: Expr::reduce(RedOp::Sum, r, k as u64, prod),
            }]
        });
        pb.kernel("reduce", body);
        let view = |buf, rs, cs| MatView {
            buf,
            offset: Expr::i(0),
            row_stride: rs,
            col_stride: cs,
        };
        pb.kernel(
            "mm",
            vec![Stmt::Matmul(Matmul {
                m: m as u64,
                n: n as u64,
                k: k as u64,
                a: view(ba, k as i64, 1),
                b: view(bb, n as i64, 1),
                c: view(o2, n as i64, 1),
                accumulate: false,
            })],
        );
        let prog = pb.finish();
        crate::kernel::verify::verify(&prog).unwrap();
        let (sa, sb) = (Storage::F32(a.clone()), Storage::F32(b.clone()));
        let out = run_program(&prog, &[Some(&sa), Some(&sb)]).unwrap();
        let (x, y) = (f32s(&out[0]), f32s(&out[1]));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert_eq!(x[i * n + j], want);
                assert_eq!(y[i * n + j], want);
            }
        }
    }

    /// A loop that accumulates into one element must not be run as lanes.
    #[test]
    fn loop_carried_dependence_runs_scalar() {
        let mut pb = ProgramBuilder::new();
        let x = pb.buffer("x", DType::F32, 100, BufferRole::Input(0));
        let o = pb.buffer("o", DType::F32, 1, BufferRole::Output(0));
        let i = pb.var();
        let body = vec![Stmt::For {
            var: i,
            extent: 100,
            body: vec![Stmt::Store {
                buf: o,
                index: Expr::i(0),
                value: Expr::load(o, Expr::i(0)) + Expr::load(x, Expr::var(i)),
            }],
        }];
        assert!(!vector_safe(
            i,
            match &body[0] {
                Stmt::For { body, .. } => body,
                _ => unreachable!(),
            }
        ));
        pb.kernel("acc", body);
        let s = Storage::F32((0..100).map(|v| v as f32).collect());
        let out = run_program(&pb.finish(), &[Some(&s)]).unwrap();
        assert_eq!(f32s(&out[0]), vec![4950.0]);
    }

    /// Masked lanes of a vector If are neither loaded nor stored.
    #[test]
    fn masked_if_guards_loads() {
        let mut pb = ProgramBuilder::new();
        let x = pb.buffer("x", DType::F32, 4, BufferRole::Input(0));
        let o = pb.buffer("o", DType::F32, 8, BufferRole::Output(0));
        let i = pb.var();
        let body = vec![Stmt::For {
            var: i,
            extent: 8,
            body: vec![Stmt::If {
                cond: Expr::var(i).lt(Expr::i(4)),
                then_body: vec![Stmt::Store {
                    buf: o,
                    index: Expr::var(i),
                    value: Expr::load(x, Expr::var(i)),
                }],
                else_body: vec![Stmt::Store {
                    buf: o,
                    index: Expr::var(i),
                    value: Expr::f32(-1.0),
                }],
            }],
        }];
        pb.kernel("guard", body);
        let s = Storage::F32(vec![1.0, 2.0, 3.0, 4.0]);
        let out = run_program(&pb.finish(), &[Some(&s)]).unwrap();
        assert_eq!(
            f32s(&out[0]),
            vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0]
        );
    }

    #[test]
    fn out_of_bounds_load_is_an_error() {
        let mut pb = ProgramBuilder::new();
        let x = pb.buffer("x", DType::F32, 2, BufferRole::Input(0));
        let o = pb.buffer("o", DType::F32, 3, BufferRole::Output(0));
        let body = pb.nest(&[3], |_, idx| {
            vec![Stmt::Store {
                buf: o,
                index: idx[0].clone(),
                value: Expr::load(x, idx[0].clone()),
            }]
        });
        pb.kernel("oob", body);
        let s = Storage::F32(vec![1.0, 2.0]);
        let e = run_program(&pb.finish(), &[Some(&s)]).unwrap_err();
        assert!(e.to_string().contains("out of bounds"), "{e}");
    }

    #[test]
    fn casts_saturate_round_and_wrap() {
        let mut pb = ProgramBuilder::new();
        let x = pb.buffer("x", DType::F32, 4, BufferRole::Input(0));
        let o = pb.buffer("o", DType::I8, 4, BufferRole::Output(0));
        let h = pb.buffer("h", DType::F16, 4, BufferRole::Output(1));
        let body = pb.nest(&[4], |_, idx| {
            vec![
                Stmt::Store {
                    buf: o,
                    index: idx[0].clone(),
                    value: Expr::load(x, idx[0].clone()).cast(DType::I8),
                },
                Stmt::Store {
                    buf: h,
                    index: idx[0].clone(),
                    value: Expr::load(x, idx[0].clone()),
                },
            ]
        });
        pb.kernel("cast", body);
        let s = Storage::F32(vec![300.0, -2.7, f32::NAN, 1.0 / 3.0]);
        let out = run_program(&pb.finish(), &[Some(&s)]).unwrap();
        assert_eq!(out[0], Storage::I8(vec![127, -2, 0, 0]));
        assert_eq!(out[1].get_f64(3), half::f16::from_f32(1.0 / 3.0).to_f64());
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (3.0, 0.999_977_909_503_001_4),
            (-2.0, -0.995_322_265_018_952_7),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-13,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }
}
