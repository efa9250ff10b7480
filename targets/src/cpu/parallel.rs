//! Which top-level loops of a kernel may run their iterations on several
//! threads (through the runtime's `kiln_parallel_for`).
//!
//! A loop `for v in 0..n { body }` qualifies when, for every buffer the body
//! stores, all accesses to that buffer (stores, loads, Matmul views) are
//! `c·v + r` with the same non-zero `c` and a remainder `r` whose range over
//! the inner loop variables spans less than `|c|`: iteration `v` then touches
//! only its own window of that buffer, so iterations neither overlap in what
//! they write nor read what another writes. The body must also use no
//! variable bound outside it (the task function receives only the buffers),
//! contain no `While`, and do enough work to pay for waking threads.

use kiln_ir::kernel::interp::affine_coeff;
use kiln_ir::kernel::{BinOp, BufId, Expr, Stmt, VarId};
use std::collections::HashMap;

/// Below this many innermost iterations (or matmul multiply-adds) a loop stays serial.
const MIN_WORK: u64 = 1 << 15;

/// Whether `s` is a loop worth running in parallel and safe to.
pub(crate) fn parallel_loop(s: &Stmt) -> bool {
    let Stmt::For { var, extent, body } = s else {
        return false;
    };
    if *extent < 2 || work(body).saturating_mul(*extent) < MIN_WORK {
        return false;
    }
    // A body that is itself innermost is better vectorised in place.
    if !body
        .iter()
        .any(|s| matches!(s, Stmt::For { .. } | Stmt::Matmul(_)))
    {
        return false;
    }
    let mut a = Analysis {
        var: *var,
        ranges: HashMap::new(),
        bound: vec![*var],
        accesses: vec![],
        forms: vec![],
        lets: HashMap::new(),
        extents: HashMap::new(),
        stored: vec![],
        ok: true,
    };
    a.ranges.insert(*var, (0, 0));
    a.block(body);
    if !a.ok {
        return false;
    }
    a.stored.iter().all(|b| {
        disjoint_by_form(&a.forms, *b, *extent) || {
            let mut coeff = None;
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            for acc in a.accesses.iter().filter(|x| x.buf == *b) {
                match (coeff, acc.coeff) {
                    (_, 0) => return false,
                    (None, c) => coeff = Some(c),
                    (Some(c0), c) if c0 != c => return false,
                    _ => {}
                }
                lo = lo.min(acc.lo);
                hi = hi.max(acc.hi);
            }
            coeff.is_some_and(|c| hi.saturating_sub(lo) < c.saturating_abs())
        }
    })
}

/// An access's index as `constant + coeff·v + Σ stride·u` over the parallel
/// variable `v` and inner loop variables `u` (terms as `(stride, extent)`,
/// sorted, trip counts of 1 dropped).
#[derive(Clone, Debug, PartialEq)]
struct Form {
    constant: i64,
    coeff: i64,
    terms: Vec<(i64, u64)>,
}

/// The second way iterations can be shown not to overlap in buffer `b`:
/// every access to `b` has the same [`Form`], and the map from
/// `(v, u…)` to the address is one-to-one (mixed radix: sorted by stride,
/// each stride exceeds the largest offset the smaller ones reach). Then two
/// iterations never touch the same element. This covers 2-D tiles, e.g. the
/// column blocks of a row-major matrix, which the interval rule rejects.
fn disjoint_by_form(forms: &[(BufId, Option<Form>)], b: BufId, extent: u64) -> bool {
    let mut mine = forms.iter().filter(|(x, _)| *x == b).map(|(_, f)| f);
    let Some(Some(first)) = mine.next() else {
        return false;
    };
    if !mine.all(|f| f.as_ref() == Some(first)) || first.coeff <= 0 {
        return false;
    }
    let mut terms = first.terms.clone();
    terms.push((first.coeff, extent));
    terms.sort();
    let mut reach: i64 = 0;
    for (stride, ext) in terms {
        if stride <= reach {
            return false;
        }
        let Some(r) = (ext as i64 - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(reach))
        else {
            return false;
        };
        reach = r;
    }
    true
}

/// A linear integer expression: constant plus coefficient per variable.
type Lin = (i64, Vec<(VarId, i64)>);

fn lin_add(a: Lin, b: Lin, sign: i64) -> Option<Lin> {
    let mut terms = a.1;
    for (v, c) in b.1 {
        let c = c.checked_mul(sign)?;
        match terms.iter_mut().find(|(w, _)| *w == v) {
            Some(t) => t.1 = t.1.checked_add(c)?,
            None => terms.push((v, c)),
        }
    }
    Some((a.0.checked_add(b.0.checked_mul(sign)?)?, terms))
}

fn lin_scale(a: Lin, k: i64) -> Option<Lin> {
    let terms =
        a.1.into_iter()
            .map(|(v, c)| Some((v, c.checked_mul(k)?)))
            .collect::<Option<Vec<_>>>()?;
    Some((a.0.checked_mul(k)?, terms))
}

/// Below this many iterations a flat loop stays serial.
const MIN_FLAT: u64 = 1 << 15;

/// A flat (innermost) loop cut into chunks whose outer loop may run in
/// parallel: `(chunked loop, serial remainder)`, using fresh variables
/// `fresh` and `fresh + 1`. About 16 chunks, each a multiple of 16
/// iterations (whole vectors) and at least 2048.
pub(crate) fn chunked(s: &Stmt, fresh: VarId) -> Option<(Stmt, Option<Stmt>)> {
    let Stmt::For { extent, body, .. } = s else {
        return None;
    };
    if *extent < MIN_FLAT
        || body
            .iter()
            .any(|s| matches!(s, Stmt::For { .. } | Stmt::Matmul(_) | Stmt::While { .. }))
    {
        return None;
    }
    let chunk = (*extent / 16).next_multiple_of(16).max(2048);
    let (main, rest) = kiln_ir::kernel::rewrite::chunk_loop(s, chunk, fresh, fresh + 1)?;
    parallel_loop(&main).then_some((main, rest))
}

/// Innermost iterations (and matmul multiply-adds) of one execution of `b`,
/// an iteration weighted by what its expressions cost (see [`cost`]).
fn work(b: &[Stmt]) -> u64 {
    b.iter()
        .map(|s| match s {
            Stmt::For { extent, body, .. } => extent.saturating_mul(work(body).max(1)),
            Stmt::Matmul(m) => m.m.saturating_mul(m.n).saturating_mul(m.k.max(1)),
            Stmt::If {
                then_body,
                else_body,
                ..
            } => work(then_body).max(work(else_body)),
            Stmt::Let { value, .. } => 1 + cost(value),
            Stmt::Store { index, value, .. } => 1 + cost(index) + cost(value),
            Stmt::While { .. } => 1,
        })
        .sum()
}

/// Extra work of evaluating `e`, in units of a plain load-op-store: a
/// reduction counts its iterations, and the functions a backend expands
/// into polynomials (`exp`, `erf`, `log`, ...) several units each, so that
/// a softmax's or GELU's loop over a few thousand elements splits as one
/// over tens of thousands of additions does.
fn cost(e: &Expr) -> u64 {
    use kiln_ir::kernel::UnOp;
    match e {
        Expr::Load { index, .. } => cost(index),
        Expr::Unary(op, a) => {
            let own = match op {
                UnOp::Neg
                | UnOp::Abs
                | UnOp::Not
                | UnOp::Floor
                | UnOp::Ceil
                | UnOp::Round
                | UnOp::IsNan
                | UnOp::IsInf => 0,
                UnOp::Sqrt => 2,
                _ => 8,
            };
            own + cost(a)
        }
        Expr::Cast(_, a) => cost(a),
        Expr::Binary(op, a, b) => {
            let own = match op {
                BinOp::Div => 2,
                BinOp::Pow | BinOp::Rem => 8,
                _ => 0,
            };
            own + cost(a) + cost(b)
        }
        Expr::Select(c, a, b) => cost(c) + cost(a) + cost(b),
        Expr::Reduce { extent, body, .. } => extent.saturating_mul(1 + cost(body)),
        _ => 0,
    }
}

struct Access {
    buf: BufId,
    coeff: i64,
    lo: i64,
    hi: i64,
}

struct Analysis {
    var: VarId,
    /// Ranges of the loop variables in scope (the parallel variable at 0).
    ranges: HashMap<VarId, (i64, i64)>,
    /// Variables bound inside the body (and the loop variable).
    bound: Vec<VarId>,
    accesses: Vec<Access>,
    /// The [`Form`] of every access (None: not linear in loop variables).
    forms: Vec<(BufId, Option<Form>)>,
    /// Linear values of `let`-bound integer variables.
    lets: HashMap<VarId, Lin>,
    /// Trip counts of the loops inside the body.
    extents: HashMap<VarId, u64>,
    stored: Vec<BufId>,
    ok: bool,
}

impl Analysis {
    fn block(&mut self, b: &[Stmt]) {
        for s in b {
            match s {
                Stmt::For { var, extent, body } => {
                    self.extents.insert(*var, *extent);
                    self.bound.push(*var);
                    self.ranges
                        .insert(*var, (0, (*extent as i64).saturating_sub(1).max(0)));
                    self.block(body);
                }
                Stmt::Let { var, value } => {
                    self.expr(value);
                    if let Some(l) = self.lin(value) {
                        self.lets.insert(*var, l);
                    }
                    self.bound.push(*var);
                }
                Stmt::Store { buf, index, value } => {
                    self.stored.push(*buf);
                    self.access(*buf, index);
                    let f = self.lin(index).and_then(|l| self.form(l, &[]));
                    self.forms.push((*buf, f));
                    self.expr(index);
                    self.expr(value);
                }
                Stmt::If {
                    cond,
                    then_body,
                    else_body,
                } => {
                    self.expr(cond);
                    self.block(then_body);
                    self.block(else_body);
                }
                Stmt::Matmul(m) => {
                    let span = |rows: u64, cols: u64, rs: i64, cs: i64| {
                        let r = (rows.max(1) as i64 - 1).saturating_mul(rs);
                        let c = (cols.max(1) as i64 - 1).saturating_mul(cs);
                        r.min(0).saturating_add(c.min(0))..=r.max(0).saturating_add(c.max(0))
                    };
                    self.stored.push(m.c.buf);
                    for (v, rows, cols) in [(&m.a, m.m, m.k), (&m.b, m.k, m.n), (&m.c, m.m, m.n)] {
                        self.expr(&v.offset);
                        let sp = span(rows, cols, v.row_stride, v.col_stride);
                        self.access(v.buf, &v.offset);
                        let f = self.lin(&v.offset).and_then(|l| {
                            self.form(l, &[(v.row_stride, rows), (v.col_stride, cols)])
                        });
                        self.forms.push((v.buf, f));
                        if let Some(a) = self.accesses.last_mut() {
                            a.lo = a.lo.saturating_add(*sp.start());
                            a.hi = a.hi.saturating_add(*sp.end());
                        }
                    }
                }
                Stmt::While { .. } => self.ok = false,
            }
        }
    }

    fn access(&mut self, buf: BufId, index: &Expr) {
        let coeff = affine_coeff(index, self.var);
        match (coeff, self.range(index)) {
            (Some(coeff), Some((lo, hi))) => self.accesses.push(Access { buf, coeff, lo, hi }),
            _ => self.accesses.push(Access {
                buf,
                coeff: 0,
                lo: i64::MIN,
                hi: i64::MAX,
            }),
        }
    }

    /// Checks variables are bound inside the body, and records loads.
    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Var(v) if !self.bound.contains(v) => self.ok = false,
            Expr::Load { buf, index } => {
                self.access(*buf, index);
                let f = self.lin(index).and_then(|l| self.form(l, &[]));
                self.forms.push((*buf, f));
                self.expr(index);
            }
            Expr::Unary(_, a) | Expr::Cast(_, a) => self.expr(a),
            Expr::Binary(_, a, b) => {
                self.expr(a);
                self.expr(b);
            }
            Expr::Select(c, a, b) => {
                self.expr(c);
                self.expr(a);
                self.expr(b);
            }
            Expr::Reduce {
                var, extent, body, ..
            } => {
                self.bound.push(*var);
                self.ranges
                    .insert(*var, (0, (*extent as i64).saturating_sub(1).max(0)));
                self.expr(body);
            }
            _ => {}
        }
    }

    /// `e` as a linear function of loop variables (lets expanded).
    fn lin(&self, e: &Expr) -> Option<Lin> {
        match e {
            Expr::I(c, _) => Some((*c, vec![])),
            Expr::Var(v) => match self.lets.get(v) {
                Some(l) => Some(l.clone()),
                None => Some((0, vec![(*v, 1)])),
            },
            Expr::Binary(BinOp::Add, a, b) => lin_add(self.lin(a)?, self.lin(b)?, 1),
            Expr::Binary(BinOp::Sub, a, b) => lin_add(self.lin(a)?, self.lin(b)?, -1),
            Expr::Binary(BinOp::Mul, a, b) => {
                let (x, y) = (self.lin(a)?, self.lin(b)?);
                match (x.1.is_empty(), y.1.is_empty()) {
                    (true, _) => lin_scale(y, x.0),
                    (_, true) => lin_scale(x, y.0),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The [`Form`] of an address `l` plus extra `(stride, extent)` terms
    /// (a matmul view's rows and columns).
    fn form(&self, l: Lin, extra: &[(i64, u64)]) -> Option<Form> {
        let mut coeff = 0;
        let mut terms = vec![];
        for (v, c) in l.1 {
            if c == 0 {
                continue;
            }
            if v == self.var {
                coeff = c;
            } else {
                let e = *self.extents.get(&v)?;
                if c < 0 {
                    return None;
                }
                terms.push((c, e));
            }
        }
        for &(s, e) in extra {
            if s < 0 {
                return None;
            }
            terms.push((s, e));
        }
        terms.retain(|&(s, e)| e > 1 && s != 0);
        terms.sort();
        Some(Form {
            constant: l.0,
            coeff,
            terms,
        })
    }

    /// Interval of an integer index expression with the parallel variable at 0.
    fn range(&self, e: &Expr) -> Option<(i64, i64)> {
        Some(match e {
            Expr::I(c, _) => (*c, *c),
            Expr::Var(v) => *self.ranges.get(v)?,
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.range(a)?, self.range(b)?);
                match op {
                    BinOp::Add => (x.0.checked_add(y.0)?, x.1.checked_add(y.1)?),
                    BinOp::Sub => (x.0.checked_sub(y.1)?, x.1.checked_sub(y.0)?),
                    BinOp::Mul => {
                        let p = [
                            x.0.checked_mul(y.0)?,
                            x.0.checked_mul(y.1)?,
                            x.1.checked_mul(y.0)?,
                            x.1.checked_mul(y.1)?,
                        ];
                        (*p.iter().min()?, *p.iter().max()?)
                    }
                    BinOp::Div if y.0 == y.1 && y.0 > 0 && x.0 >= 0 => (x.0 / y.0, x.1 / y.0),
                    BinOp::Rem if y.0 == y.1 && y.0 > 0 && x.0 >= 0 => (0, (y.0 - 1).min(x.1)),
                    BinOp::Max => (x.0.max(y.0), x.1.max(y.1)),
                    BinOp::Min => (x.0.min(y.0), x.1.min(y.1)),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }
}
