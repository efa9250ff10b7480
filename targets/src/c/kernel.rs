//! Kernel IR → C statements. Values follow the interpreter's lane kinds: f32
//! (`float`), f64 (`double`), every integer type as `int64_t` (wrapping), bool
//! as `int`; a store converts to the buffer's element type.

use super::{c_elem_type, index, math, CError, RenderOptions};
use kiln_ir::kernel::{BinOp, BufId, BufferDecl, Expr, Matmul, RedOp, Stmt, UnOp, VarId};
use kiln_ir::DType;
use std::collections::HashMap;
use std::fmt::Write;

/// The lane kind of a C value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    F,
    D,
    I,
    B,
}

impl Kind {
    fn of(dt: DType) -> Kind {
        match dt {
            DType::F64 => Kind::D,
            DType::Bool => Kind::B,
            d if d.is_float() => Kind::F,
            _ => Kind::I,
        }
    }

    fn c(self) -> &'static str {
        match self {
            Kind::F => "float",
            Kind::D => "double",
            Kind::I => "int64_t",
            Kind::B => "int",
        }
    }
}

/// Renders the body of one kernel.
pub(crate) struct KernelWriter<'a> {
    bufs: &'a [BufferDecl],
    vars: HashMap<VarId, Kind>,
    tmp: usize,
    opts: RenderOptions,
    /// Ranges of the integer variables in scope that are small (see [`index`]).
    ranges: HashMap<VarId, index::Range>,
    /// Inside a jammed loop: per copy, what each variable reads as.
    subst: Vec<HashMap<VarId, String>>,
    pub(crate) out: String,
}

type R<T> = Result<T, CError>;

/// Hex-float literal of a finite double (exact), or a macro for NaN/inf.
pub(crate) fn hex_double(x: f64) -> String {
    if x.is_nan() {
        return "KILN_NAN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "KILN_INF".into()
        } else {
            "(-KILN_INF)".into()
        };
    }
    let bits = x.to_bits();
    let sign = if bits >> 63 == 1 { "-" } else { "" };
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let mant = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        if mant == 0 {
            return format!("{sign}0x0p+0");
        }
        return format!("{sign}0x0.{mant:013x}p-1022");
    }
    format!("{sign}0x1.{mant:013x}p{:+}", exp - 1023)
}

/// An f32 constant as C source (exact).
pub(crate) fn hex_float(x: f32) -> String {
    if !x.is_finite() {
        return format!("((float){})", hex_double(x as f64));
    }
    format!("{}f", hex_double(x as f64))
}

/// A 64-bit integer constant as C source.
pub(crate) fn int_lit(v: i64) -> String {
    if v == i64::MIN {
        "INT64_MIN".into()
    } else {
        format!("INT64_C({v})")
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

impl<'a> KernelWriter<'a> {
    pub(crate) fn new(bufs: &'a [BufferDecl], opts: RenderOptions) -> Self {
        KernelWriter {
            bufs,
            vars: HashMap::new(),
            tmp: 0,
            opts,
            ranges: HashMap::new(),
            subst: vec![],
            out: String::new(),
        }
    }

    fn buf(&self, b: BufId) -> R<&BufferDecl> {
        self.bufs
            .get(b as usize)
            .ok_or_else(|| CError::Unsupported(format!("no buffer {b}")))
    }

    fn line(&mut self, ind: usize, s: &str) {
        let _ = writeln!(self.out, "{:w$}{s}", "", w = 2 * ind);
    }

    fn kind(&self, e: &Expr) -> R<Kind> {
        Ok(match e {
            Expr::F(_, DType::F64) => Kind::D,
            Expr::F(..) => Kind::F,
            Expr::I(..) => Kind::I,
            Expr::B(_) => Kind::B,
            Expr::Var(v) => *self.vars.get(v).unwrap_or(&Kind::I),
            Expr::Load { buf, .. } => Kind::of(self.buf(*buf)?.dtype),
            Expr::Unary(UnOp::IsNan | UnOp::IsInf, _) => Kind::B,
            Expr::Unary(_, a) => self.kind(a)?,
            Expr::Binary(op, a, _) => {
                if op.is_comparison() {
                    Kind::B
                } else {
                    self.kind(a)?
                }
            }
            Expr::Select(_, a, _) => self.kind(a)?,
            Expr::Cast(t, _) => Kind::of(*t),
            Expr::Reduce { body, .. } => self.kind(body)?,
        })
    }

    /// How `v` reads in copy `u` of a jammed loop body (see [`Self::jammed_for`]).
    fn var_name(&self, v: VarId, u: usize) -> String {
        self.subst
            .get(u)
            .and_then(|m| m.get(&v))
            .cloned()
            .unwrap_or_else(|| format!("v{v}"))
    }

    fn range(&self, e: &Expr) -> Option<index::Range> {
        index::range(e, &self.ranges, &wrap_int)
    }

    /// `e` (which has a 32-bit [`index::range`]) with native C operators.
    fn native(&mut self, e: &Expr, u: usize, ind: usize) -> R<String> {
        Ok(match e {
            Expr::I(v, t) => wrap_int(*v, *t).to_string(),
            Expr::Var(v) => self.var_name(*v, u),
            Expr::Binary(op, a, b) => {
                let x = self.native(a, u, ind)?;
                let y = self.native(b, u, ind)?;
                match op {
                    BinOp::Add => format!("({x} + {y})"),
                    BinOp::Sub => format!("({x} - {y})"),
                    BinOp::Mul => format!("({x} * {y})"),
                    BinOp::Div => format!("({x} / {y})"),
                    BinOp::Rem => format!("({x} % {y})"),
                    BinOp::Max => format!("({x} > {y} ? {x} : {y})"),
                    BinOp::Min => format!("({x} < {y} ? {x} : {y})"),
                    _ => return Err(CError::Unsupported(format!("index op {op:?}"))),
                }
            }
            Expr::Select(c, a, b) => {
                let c = self.exprs(c, ind)?.swap_remove(u);
                let a = self.native(a, u, ind)?;
                let b = self.native(b, u, ind)?;
                format!("({c} ? {a} : {b})")
            }
            Expr::Cast(_, a) => self.native(a, u, ind)?,
            _ => return Err(CError::Unsupported("index expression".into())),
        })
    }

    /// Renders `e` as a C expression; reductions become loops appended to `self.out` first.
    pub(crate) fn expr(&mut self, e: &Expr, ind: usize) -> R<String> {
        let mut v = self.exprs(e, ind)?;
        Ok(v.swap_remove(0))
    }

    /// Renders `e` once per copy of a jammed loop body (once outside one);
    /// a reduction becomes one loop carrying one accumulator per copy.
    fn exprs(&mut self, e: &Expr, ind: usize) -> R<Vec<String>> {
        let n = self.subst.len().max(1);
        if matches!(
            e,
            Expr::Binary(..) | Expr::Select(..) | Expr::Cast(..) | Expr::I(..)
        ) && self.kind(e)? == Kind::I
            && self.range(e).is_some()
        {
            return (0..n).map(|u| self.native(e, u, ind)).collect();
        }
        let all = |s: String| vec![s; n];
        Ok(match e {
            Expr::F(v, DType::F64) => all(hex_double(*v)),
            Expr::F(v, _) => all(hex_float(*v as f32)),
            Expr::I(v, t) => all(int_lit(wrap_int(*v, *t))),
            Expr::B(b) => all((if *b { "1" } else { "0" }).into()),
            Expr::Var(v) => (0..n).map(|u| self.var_name(*v, u)).collect(),
            Expr::Load { buf, index } => {
                let k = Kind::of(self.buf(*buf)?.dtype);
                let is = self.exprs(index, ind)?;
                is.iter()
                    .map(|i| match k {
                        Kind::I => format!("((int64_t)b{buf}[{i}])"),
                        Kind::B => format!("((int)b{buf}[{i}])"),
                        _ => format!("b{buf}[{i}]"),
                    })
                    .collect()
            }
            Expr::Unary(op, a) => {
                let k = self.kind(a)?;
                let xs = self.exprs(a, ind)?;
                xs.iter()
                    .map(|x| unary(*op, k, x, self.opts.f32_math))
                    .collect::<R<_>>()?
            }
            Expr::Binary(op @ (BinOp::Max | BinOp::Min), a, b)
                if matches!(self.kind(a)?, Kind::F | Kind::D)
                    && matches!(**b, Expr::F(c, _) if !c.is_nan()) =>
            {
                // Max/min against a constant that is not NaN (ReLU, clamps): one
                // comparison instead of two NaN tests and a compare. A NaN `x`
                // fails `x <= c`, so it propagates as the interpreter's does, and
                // ties (±0) give `c`, as `kiln_fmax`'s `a > b ? a : b` does.
                let xs = self.exprs(a, ind)?;
                let c = self.exprs(b, ind)?.swap_remove(0);
                let cmp = if *op == BinOp::Max { "<=" } else { ">=" };
                xs.iter()
                    .map(|x| format!("(!({x} {cmp} {c}) ? {x} : {c})"))
                    .collect()
            }
            Expr::Binary(op, a, b) => {
                let k = self.kind(a)?;
                let xs = self.exprs(a, ind)?;
                let ys = self.exprs(b, ind)?;
                xs.iter()
                    .zip(&ys)
                    .map(|(x, y)| binary(*op, k, x, y, self.opts.f32_math))
                    .collect::<R<_>>()?
            }
            Expr::Select(c, a, b) => {
                let cs = self.exprs(c, ind)?;
                let as_ = self.exprs(a, ind)?;
                let bs = self.exprs(b, ind)?;
                (0..n)
                    .map(|u| format!("({} ? {} : {})", cs[u], as_[u], bs[u]))
                    .collect()
            }
            Expr::Cast(t, a) => {
                let k = self.kind(a)?;
                let xs = self.exprs(a, ind)?;
                xs.iter().map(|x| cast(*t, k, x)).collect::<R<_>>()?
            }
            Expr::Reduce {
                op,
                var,
                extent,
                body,
            } => self.reduce(*op, *var, *extent, body, ind)?,
        })
    }

    /// The C declaration of a loop counter over `0..extent`, recording its range.
    fn counter(&mut self, var: VarId, extent: u64) -> &'static str {
        self.vars.insert(var, Kind::I);
        if extent <= i32::MAX as u64 {
            self.ranges.insert(var, (0, (extent as i64 - 1).max(0)));
            "ptrdiff_t"
        } else {
            self.ranges.remove(&var);
            "int64_t"
        }
    }

    fn reduce(
        &mut self,
        op: RedOp,
        var: VarId,
        extent: u64,
        body: &Expr,
        ind: usize,
    ) -> R<Vec<String>> {
        let k = self.kind(body)?;
        let n = self.subst.len().max(1);
        if extent == 0 {
            let v = match (op, k) {
                (RedOp::Sum, Kind::F) => "0.0f",
                (RedOp::Prod, Kind::F) => "1.0f",
                (RedOp::Max, Kind::F) => "((float)-KILN_INF)",
                (RedOp::Min, Kind::F) => "((float)KILN_INF)",
                (RedOp::Sum, Kind::D) => "0.0",
                (RedOp::Prod, Kind::D) => "1.0",
                (RedOp::Max, Kind::D) => "(-KILN_INF)",
                (RedOp::Min, Kind::D) => "KILN_INF",
                (RedOp::Max, Kind::B) => "0",
                (RedOp::Min, Kind::B) => "1",
                (RedOp::Sum, _) => "INT64_C(0)",
                (RedOp::Prod, _) => "INT64_C(1)",
                (RedOp::Max, _) => "INT64_MIN",
                (RedOp::Min, _) => "INT64_MAX",
            };
            return Ok(vec![v.to_string(); n]);
        }
        self.tmp += 1;
        let id = self.tmp;
        let name = |p: &str, u: usize| {
            if n == 1 {
                format!("{p}{id}")
            } else {
                format!("{p}{id}_{u}")
            }
        };
        // Start from the operation's exact identity (-0 for a float sum:
        // -0 + x == x for every x, +0 included), so the loop needs no
        // first-iteration test and the result equals the interpreter's fold.
        let init = match (op, k) {
            (RedOp::Sum, Kind::F) => "(-0.0f)",
            (RedOp::Sum, Kind::D) => "(-0.0)",
            (RedOp::Prod, Kind::F) => "1.0f",
            (RedOp::Prod, Kind::D) => "1.0",
            (RedOp::Max, Kind::F) => "((float)-KILN_INF)",
            (RedOp::Min, Kind::F) => "((float)KILN_INF)",
            (RedOp::Max, Kind::D) => "(-KILN_INF)",
            (RedOp::Min, Kind::D) => "KILN_INF",
            (RedOp::Max | RedOp::Sum, Kind::B) => "0",
            (RedOp::Min | RedOp::Prod, Kind::B) => "1",
            (RedOp::Sum, _) => "INT64_C(0)",
            (RedOp::Prod, _) => "INT64_C(1)",
            (RedOp::Max, _) => "INT64_MIN",
            (RedOp::Min, _) => "INT64_MAX",
        };
        let accs: Vec<String> = (0..n).map(|u| name("r", u)).collect();
        let decl: Vec<String> = accs.iter().map(|a| format!("{a} = {init}")).collect();
        self.line(ind, &format!("{} {};", k.c(), decl.join(", ")));
        let ty = self.counter(var, extent);
        if self.opts.unroll >= extent && extent > 1 {
            self.line(ind, &format!("KILN_UNROLL({extent})"));
        }
        self.line(
            ind,
            &format!("for ({ty} v{var} = 0; v{var} < {extent}; v{var}++) {{"),
        );
        let vals = self.exprs(body, ind + 1)?;
        let bop = match op {
            RedOp::Sum => BinOp::Add,
            RedOp::Prod => BinOp::Mul,
            RedOp::Max => BinOp::Max,
            RedOp::Min => BinOp::Min,
        };
        for (u, (acc, val)) in accs.iter().zip(&vals).enumerate() {
            let t = name("t", u);
            self.line(ind + 1, &format!("const {} {t} = {val};", k.c()));
            let comb = if k == Kind::B {
                // The interpreter folds bool lanes with or (Max/Sum) and and (Min/Prod).
                if matches!(op, RedOp::Max | RedOp::Sum) {
                    format!("({acc} | {t})")
                } else {
                    format!("({acc} & {t})")
                }
            } else {
                binary(bop, k, acc, &t, self.opts.f32_math)?
            };
            self.line(ind + 1, &format!("{acc} = {comb};"));
        }
        self.line(ind, "}");
        Ok(accs)
    }

    /// Renders a block of statements.
    pub(crate) fn block(&mut self, stmts: &[Stmt], ind: usize) -> R<()> {
        for s in stmts {
            self.stmt(s, ind)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt, ind: usize) -> R<()> {
        match s {
            Stmt::For { var, extent, body } => {
                let u = self.jam_width(*extent, body)?;
                if u > 1 {
                    return self.jammed_for(*var, *extent, body, u, ind);
                }
                let ty = self.counter(*var, *extent);
                self.line(
                    ind,
                    &format!("for ({ty} v{var} = 0; v{var} < {extent}; v{var}++) {{"),
                );
                self.block(body, ind + 1)?;
                self.line(ind, "}");
            }
            Stmt::Let { var, value } => {
                let k = self.kind(value)?;
                let vals = self.exprs(value, ind)?;
                let r = if k == Kind::I {
                    self.range(value)
                } else {
                    None
                };
                self.vars.insert(*var, k);
                match r {
                    Some(r) => self.ranges.insert(*var, r),
                    None => self.ranges.remove(var),
                };
                let ty = if r.is_some() { "ptrdiff_t" } else { k.c() };
                if self.subst.is_empty() {
                    self.line(ind, &format!("const {ty} v{var} = {};", vals[0]));
                } else {
                    for (u, v) in vals.iter().enumerate() {
                        let name = format!("v{var}_{u}");
                        self.line(ind, &format!("const {ty} {name} = {v};"));
                        self.subst[u].insert(*var, name);
                    }
                }
            }
            Stmt::Store { buf, index, value } => {
                let dt = self.buf(*buf)?.dtype;
                let is = self.exprs(index, ind)?;
                let vs = self.exprs(value, ind)?;
                let ty = c_elem_type(dt)?;
                for (i, v) in is.iter().zip(&vs) {
                    let v = if dt == DType::Bool {
                        format!("(uint8_t)(({v}) != 0)")
                    } else {
                        format!("({ty})({v})")
                    };
                    self.line(ind, &format!("b{buf}[{i}] = {v};"));
                }
            }
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => {
                let c = self.expr(cond, ind)?;
                self.line(ind, &format!("if ({c}) {{"));
                self.block(then_body, ind + 1)?;
                if !else_body.is_empty() {
                    self.line(ind, "} else {");
                    self.block(else_body, ind + 1)?;
                }
                self.line(ind, "}");
            }
            Stmt::Matmul(m) => self.matmul(m, ind)?,
            Stmt::While { cond, body } => {
                let c = self.expr(cond, ind)?;
                self.line(ind, &format!("while ({c}) {{"));
                self.block(body, ind + 1)?;
                self.line(ind, "}");
            }
        }
        Ok(())
    }

    /// How many iterations of a `For` to render side by side: loops whose
    /// body is straight-line code around a reduction (convolutions, pooling,
    /// softmax statistics), so the copies share every load that does not
    /// depend on the loop variable (the weights of a depthwise or direct
    /// convolution) and keep independent accumulators in registers.
    fn jam_width(&self, extent: u64, body: &[Stmt]) -> R<usize> {
        let u = self.opts.jam.max(1) as u64;
        if u < 2 || !self.subst.is_empty() || extent < u {
            return Ok(1);
        }
        if !body
            .iter()
            .all(|s| matches!(s, Stmt::Let { .. } | Stmt::Store { .. }))
        {
            return Ok(1);
        }
        let mut has_reduce = false;
        let mut loaded = vec![];
        let mut stored = vec![];
        for s in body {
            let mut see = |e: &Expr| {
                walk(e, &mut |x| match x {
                    Expr::Reduce { .. } => has_reduce = true,
                    Expr::Load { buf, .. } => loaded.push(*buf),
                    _ => {}
                })
            };
            match s {
                Stmt::Let { value, .. } => see(value),
                Stmt::Store { buf, index, value } => {
                    stored.push(*buf);
                    see(index);
                    see(value);
                }
                _ => {}
            }
        }
        // The copies' statements interleave: none may read what another writes.
        if !has_reduce || stored.iter().any(|b| loaded.contains(b)) {
            return Ok(1);
        }
        Ok(u as usize)
    }

    /// `for var in 0..extent` as `u` interleaved copies per step plus a remainder loop.
    fn jammed_for(
        &mut self,
        var: VarId,
        extent: u64,
        body: &[Stmt],
        u: usize,
        ind: usize,
    ) -> R<()> {
        let main = extent - extent % u as u64;
        let ty = self.counter(var, extent);
        self.line(
            ind,
            &format!("for ({ty} v{var} = 0; v{var} < {main}; v{var} += {u}) {{ /* {u} outputs per step */"),
        );
        self.subst = (0..u)
            .map(|k| {
                let s = if k == 0 {
                    format!("v{var}")
                } else {
                    format!("(v{var} + {k})")
                };
                HashMap::from([(var, s)])
            })
            .collect();
        let r = self.block(body, ind + 1);
        self.subst.clear();
        r?;
        self.line(ind, "}");
        if main < extent {
            let ty = self.counter(var, extent);
            self.line(
                ind,
                &format!("for ({ty} v{var} = {main}; v{var} < {extent}; v{var}++) {{"),
            );
            self.block(body, ind + 1)?;
            self.line(ind, "}");
        }
        Ok(())
    }

    /// A register-tiled matrix product (see [`super::gemm`]).
    fn matmul(&mut self, m: &Matmul, ind: usize) -> R<()> {
        let ty = c_elem_type(self.buf(m.c.buf)?.dtype)?;
        self.tmp += 1;
        let n = self.tmp;
        let oa = self.expr(&m.a.offset, ind)?;
        let ob = self.expr(&m.b.offset, ind)?;
        let oc = self.expr(&m.c.offset, ind)?;
        let g = super::gemm::Gemm {
            m,
            ty,
            offsets: [oa, ob, oc],
            id: n,
            bm: self.opts.block_m.max(1) as u64,
            bn: self.opts.block_n.max(1) as u64,
            unroll_k: self.opts.unroll > 0,
        };
        let text = g.render(ind);
        self.out.push_str(&text);
        Ok(())
    }
}

/// Calls `f` on `e` and every sub-expression.
pub(crate) fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
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

fn unary(op: UnOp, k: Kind, x: &str, f32_math: bool) -> R<String> {
    use UnOp::*;
    let bad = || CError::Unsupported(format!("{op:?} on {k:?}"));
    Ok(match k {
        Kind::F | Kind::D => {
            let single = k == Kind::F && f32_math;
            let f = match op {
                Neg => return Ok(format!("(-{x})")),
                IsNan if single => return Ok(format!("kiln_isnanf({x})")),
                IsInf if single => return Ok(format!("kiln_isinff({x})")),
                IsNan => return Ok(format!("kiln_isnan((double){x})")),
                IsInf => return Ok(format!("kiln_isinf((double){x})")),
                Not => return Err(bad()),
                Abs => "kiln_fabs",
                Exp => "kiln_exp",
                Log => "kiln_log",
                Sqrt => "kiln_sqrt",
                Sin => "kiln_sin",
                Cos => "kiln_cos",
                Tan => "kiln_tan",
                Asin => "kiln_asin",
                Acos => "kiln_acos",
                Atan => "kiln_atan",
                Sinh => "kiln_sinh",
                Cosh => "kiln_cosh",
                Asinh => "kiln_asinh",
                Acosh => "kiln_acosh",
                Atanh => "kiln_atanh",
                Tanh => "kiln_tanh",
                Erf => "kiln_erf",
                Floor => "kiln_floor",
                Ceil => "kiln_ceil",
                Round => "kiln_round_even",
            };
            if single && math::has_f32(f) {
                format!("{f}f({x})")
            } else if k == Kind::F {
                format!("((float){f}((double){x}))")
            } else {
                format!("{f}({x})")
            }
        }
        Kind::I => match op {
            Neg => format!("kiln_ineg({x})"),
            Abs => format!("kiln_iabs({x})"),
            Not => format!("(~{x})"),
            Floor | Ceil | Round => x.to_string(),
            _ => return Err(bad()),
        },
        Kind::B => match op {
            Not => format!("(!{x})"),
            _ => return Err(bad()),
        },
    })
}

fn binary(op: BinOp, k: Kind, x: &str, y: &str, f32_math: bool) -> R<String> {
    use BinOp::*;
    let bad = || CError::Unsupported(format!("{op:?} on {k:?}"));
    let cmp = |s: &str| format!("({x} {s} {y})");
    Ok(match op {
        Eq if k != Kind::B => cmp("=="),
        Ne if k != Kind::B => cmp("!="),
        Lt => cmp("<"),
        Le => cmp("<="),
        Gt => cmp(">"),
        Ge => cmp(">="),
        _ => match k {
            Kind::F | Kind::D => {
                let f = match op {
                    Add => return Ok(cmp("+")),
                    Sub => return Ok(cmp("-")),
                    Mul => return Ok(cmp("*")),
                    Div => return Ok(cmp("/")),
                    Rem => "kiln_fmod",
                    Pow => "kiln_pow",
                    Max => "kiln_fmax",
                    Min => "kiln_fmin",
                    _ => return Err(bad()),
                };
                if k == Kind::F && f32_math && math::has_f32(f) {
                    format!("{f}f({x}, {y})")
                } else if k == Kind::F {
                    format!("((float){f}((double){x}, (double){y}))")
                } else {
                    format!("{f}({x}, {y})")
                }
            }
            Kind::I => {
                let f = match op {
                    Add => "kiln_iadd",
                    Sub => "kiln_isub",
                    Mul => "kiln_imul",
                    Div => "kiln_idiv",
                    Rem => "kiln_irem",
                    Pow => "kiln_ipow",
                    Max => "kiln_imax",
                    Min => "kiln_imin",
                    And => return Ok(cmp("&")),
                    Or => return Ok(cmp("|")),
                    Xor => return Ok(cmp("^")),
                    Shl => "kiln_shl",
                    Shr => "kiln_shr",
                    _ => return Err(bad()),
                };
                format!("{f}({x}, {y})")
            }
            Kind::B => match op {
                And | Min => cmp("&"),
                Or | Max => cmp("|"),
                Xor | Ne => cmp("^"),
                Eq => cmp("=="),
                _ => "0".into(),
            },
        },
    })
}

fn cast(t: DType, k: Kind, x: &str) -> R<String> {
    let to = Kind::of(t);
    if matches!(t, DType::F16 | DType::BF16) {
        return Err(CError::Unsupported(format!("cast to {t}")));
    }
    Ok(match (to, k) {
        (Kind::F, Kind::F) | (Kind::D, Kind::D) | (Kind::B, Kind::B) => x.to_string(),
        (Kind::F, _) => format!("((float){x})"),
        (Kind::D, _) => format!("((double){x})"),
        (Kind::B, _) => format!("({x} != 0)"),
        (Kind::I, Kind::I) => match t {
            DType::I64 | DType::U64 => x.to_string(),
            _ => format!("((int64_t)({})({x}))", c_elem_type(t)?),
        },
        (Kind::I, Kind::B) => format!("((int64_t){x})"),
        (Kind::I, _) => {
            if t == DType::U64 {
                format!("kiln_f2u64((double){x})")
            } else {
                let (lo, hi) = t.min_max();
                format!(
                    "kiln_f2i((double){x}, {}, {})",
                    hex_double(lo),
                    hex_double(hi)
                )
            }
        }
    })
}
