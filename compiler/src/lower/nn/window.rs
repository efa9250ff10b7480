//! Shared pieces of the sliding-window ops (Conv, ConvTranspose, Pool).
//!
//! Padding is materialised once: the input is copied into a scratch buffer
//! with its borders filled (zero for sums, -inf for max), so the hot loops
//! read in-bounds addresses with no per-tap bounds test. This costs one copy
//! of the input (itself a vectorised row copy) and keeps the inner loops short
//! enough for every backend to vectorise.
//!
//! Output positions are visited one row at a time ([`row_nest`]): the last
//! spatial axis is the innermost loop, its index enters every address with a
//! constant coefficient, and everything that depends only on the row is bound
//! by a `Let` before the loop. No index needs a division, and a stride-1 window
//! reads contiguous elements, which the backends turn into vector loads.

use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{BinOp, BufId, Expr, RedOp, Stmt};

/// Geometry of a sliding window over the spatial axes of an `[N, C, *S]` tensor.
pub(super) struct Window<'a> {
    pub kernel: &'a [usize],
    pub strides: &'a [usize],
    pub dilations: &'a [usize],
    /// `[begin_0.., end_0..]`
    pub pads: &'a [usize],
}

impl Window<'_> {
    pub fn rank(&self) -> usize {
        self.kernel.len()
    }

    /// End padding that makes every window of an output of extent `out` fit
    /// (more than the declared end pad under ceil_mode, less when some of it is never read).
    pub fn end_pads(&self, in_sp: &[usize], out_sp: &[usize]) -> Vec<usize> {
        (0..self.rank())
            .map(|d| {
                let need = if out_sp[d] == 0 {
                    0
                } else {
                    (out_sp[d] - 1) * self.strides[d] + (self.kernel[d] - 1) * self.dilations[d] + 1
                };
                need.saturating_sub(self.pads[d] + in_sp[d])
            })
            .collect()
    }
}

/// A `[N, C, *S]` tensor in a buffer; `dims` includes N and C.
pub(super) struct Source {
    pub buf: BufId,
    pub dims: Vec<usize>,
}

impl Source {
    pub fn spatial_strides(&self) -> Vec<i64> {
        strides(&self.dims)[2..].to_vec()
    }

    /// Elements per (n, c) plane.
    pub fn plane(&self) -> i64 {
        self.dims[2..].iter().product::<usize>() as i64
    }
}

/// Copies `input` into a scratch buffer padded by `begin`/`end` on the
/// spatial axes, with the border set to `fill`. Without padding, `input` itself is the source.
pub(super) fn pad_source(
    pb: &mut ProgramBuilder,
    body: &mut Vec<Stmt>,
    input: Source,
    dtype: kiln_ir::DType,
    begin: &[usize],
    end: &[usize],
    fill: Expr,
) -> Source {
    if begin.iter().chain(end).all(|&p| p == 0) {
        return input;
    }
    pad_phased(pb, body, input, dtype, begin, end, fill, 1)
}

/// Like [`pad_source`] (but always copying), with each padded row of the last
/// axis stored as `phases` runs of equal length `plen`: padded column `p` at
/// `(p % phases) * plen + p / phases`. A window strided by `phases` then reads
/// every tap as a contiguous run (tap column `q` of output column `o` is at
/// `(q % phases) * plen + o + q / phases`) instead of a gather. The source's
/// last dim is `phases * plen`; columns past the padded row are never written.
#[allow(clippy::too_many_arguments)]
pub(super) fn pad_phased(
    pb: &mut ProgramBuilder,
    body: &mut Vec<Stmt>,
    input: Source,
    dtype: kiln_ir::DType,
    begin: &[usize],
    end: &[usize],
    fill: Expr,
    phases: usize,
) -> Source {
    let (x, xd) = (input.buf, &input.dims[..]);
    let sp = begin.len();
    if sp == 0 {
        return input;
    }
    let ph = phases.max(1);
    let mut pd = xd.to_vec();
    for d in 0..sp {
        pd[2 + d] += begin[d] + end[d];
    }
    let last = sp - 1;
    let prow = pd[1 + sp];
    let plen = prow.div_ceil(ph);
    pd[1 + sp] = ph * plen;
    let len: usize = pd.iter().product();
    let buf = pb.scratch("padded", dtype, len);
    // One pass over the padded rows: a row inside the input gets, per phase,
    // its begin padding, a copy (contiguous when there is one phase) and its
    // end padding; any other row is all padding. Each element is written once.
    let (xrows, xlast) = (&xd[2..1 + sp], xd[1 + sp]);
    let xs = strides(&xd[2..]);
    let mut dims = vec![xd[0] * xd[1]];
    dims.extend_from_slice(&pd[2..1 + sp]);
    let xplane = xd[2..].iter().product::<usize>() as i64;
    let (b, w) = (begin[last], xlast);
    // Per phase: (first copied run index, end of the copy, end of the phase's columns).
    let runs: Vec<(usize, usize, usize)> = (0..ph)
        .map(|f| {
            let count = (prow + ph - 1 - f) / ph;
            let j0 = (b.saturating_sub(f)).div_ceil(ph).min(count);
            let j1 = if b + w > f {
                (b + w - f).div_ceil(ph).clamp(j0, count)
            } else {
                j0
            };
            (j0, j1, count)
        })
        .collect();
    body.extend(pb.nest(&dims, |pb, idx| {
        let (nc, rows) = (&idx[0], &idx[1..]);
        let prow_start = (nc.clone() * pd[2..1 + sp].iter().product::<usize>() as i64
            + linear_index(rows, &strides(&pd[2..1 + sp])))
            * (ph * plen) as i64;
        let start = pb.var();
        let mut inside = Expr::B(true);
        let mut xrow = nc.clone() * xplane;
        for d in 0..last {
            let r = rows[d].clone() - begin[d] as i64;
            inside = inside
                .and(r.clone().ge(Expr::i(0)))
                .and(r.clone().lt(Expr::i(xrows[d] as i64)));
            xrow = xrow + r * xs[d];
        }
        let xstart = pb.var();
        let fill_run = |pb: &mut ProgramBuilder, from: usize, n: usize| {
            if n <= 4 {
                // Typical padding: a few stores, no loop.
                return (0..n)
                    .map(|i| Stmt::Store {
                        buf,
                        index: Expr::var(start) + (from + i) as i64,
                        value: fill.clone(),
                    })
                    .collect();
            }
            pb.nest(&[n], |_, i| {
                vec![Stmt::Store {
                    buf,
                    index: Expr::var(start) + from as i64 + i[0].clone(),
                    value: fill.clone(),
                }]
            })
        };
        let mut then_body = vec![Stmt::Let {
            var: xstart,
            value: xrow,
        }];
        let mut else_body = vec![];
        for (f, &(j0, j1, count)) in runs.iter().enumerate() {
            let base = f * plen;
            then_body.extend(fill_run(pb, base, j0));
            if j1 > j0 {
                // Input column of run index j: j * ph + f - b.
                let x0 = (j0 * ph + f) as i64 - b as i64;
                then_body.extend(pb.nest(&[j1 - j0], |_, i| {
                    vec![Stmt::Store {
                        buf,
                        index: Expr::var(start) + (base + j0) as i64 + i[0].clone(),
                        value: Expr::load(x, Expr::var(xstart) + x0 + i[0].clone() * ph as i64),
                    }]
                }));
            }
            then_body.extend(fill_run(pb, base + j1, count - j1));
            else_body.extend(fill_run(pb, base, count));
        }
        let mut s = vec![Stmt::Let {
            var: start,
            value: prow_start,
        }];
        match inside {
            Expr::B(true) => s.extend(then_body),
            cond => s.push(Stmt::If {
                cond,
                then_body,
                else_body,
            }),
        }
        s
    }));
    Source { buf, dims: pd }
}

/// Loops over `outer` dims and then every output spatial axis (a single
/// output position, as in global pooling, makes the last outer loop the
/// innermost one). `f` gets the outer indices, each spatial output coordinate
/// and the flat spatial position.
pub(super) fn spatial_nest(
    pb: &mut ProgramBuilder,
    outer: &[usize],
    out_sp: &[usize],
    f: impl FnOnce(&mut ProgramBuilder, &[Expr], &[Expr], Expr) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let flat: usize = out_sp.iter().product();
    if flat == 1 && !outer.is_empty() {
        // A single output position (global pooling): the channel loop is the long one.
        let zeros = vec![Expr::i(0); out_sp.len()];
        return pb.nest(outer, |pb, idx| f(pb, idx, &zeros, Expr::i(0)));
    }
    row_nest(pb, outer, out_sp, |pb, o, coords, flat| {
        (vec![], f(pb, o, coords, flat))
    })
}

/// Loops over `outer` dims, then the output rows (all spatial axes but the
/// last), then the last spatial axis innermost. `f` gets the outer indices,
/// each spatial coordinate (the last one is the innermost loop variable) and
/// the flat spatial position, and returns the statements to run once per row
/// (row-invariant `Let`s, hoisted out of the inner loop) and the inner body.
/// With no spatial axes the inner loop runs once.
pub(super) fn row_nest(
    pb: &mut ProgramBuilder,
    outer: &[usize],
    out_sp: &[usize],
    f: impl FnOnce(&mut ProgramBuilder, &[Expr], &[Expr], Expr) -> (Vec<Stmt>, Vec<Stmt>),
) -> Vec<Stmt> {
    let sp = out_sp.len();
    let (rows, last) = match out_sp.split_last() {
        Some((&l, r)) => (r, l),
        None => (&[][..], 1),
    };
    let mut dims = outer.to_vec();
    dims.extend_from_slice(rows);
    let os = strides(out_sp);
    pb.nest(&dims, |pb, idx| {
        let inner = pb.var();
        let mut coords = idx[outer.len()..].to_vec();
        if sp > 0 {
            coords.push(Expr::var(inner));
        }
        let flat = linear_index(&coords, &os);
        let (mut pre, body) = f(pb, &idx[..outer.len()], &coords, flat);
        pre.push(Stmt::For {
            var: inner,
            extent: last as u64,
            body,
        });
        pre
    })
}

/// Every tap of a window, first spatial axis slowest.
pub(super) fn tap_list(kernel: &[usize]) -> Vec<Vec<usize>> {
    let mut all = vec![vec![]];
    for &k in kernel {
        all = all
            .into_iter()
            .flat_map(|t: Vec<usize>| {
                (0..k).map(move |i| {
                    let mut t = t.clone();
                    t.push(i);
                    t
                })
            })
            .collect();
    }
    all
}

/// Windows up to 5x5 are unrolled into explicit terms: the inner loop then
/// holds straight-line vector code instead of a nested reduction loop per lane.
pub(super) const MAX_UNROLLED_TAPS: usize = 25;

/// Folds `body` over the kernel taps with `op`: as explicit terms in window
/// order when the window is small, as nested reductions otherwise (the same
/// order either way).
pub(super) fn fold_taps(
    pb: &mut ProgramBuilder,
    kernel: &[usize],
    op: RedOp,
    mut body: impl FnMut(&[Expr]) -> Expr,
) -> Expr {
    let kk: usize = kernel.iter().product();
    if kk == 0 || kk > MAX_UNROLLED_TAPS {
        return over_taps(pb, kernel, op, body);
    }
    let bop = match op {
        RedOp::Sum => BinOp::Add,
        RedOp::Prod => BinOp::Mul,
        RedOp::Max => BinOp::Max,
        RedOp::Min => BinOp::Min,
    };
    let mut terms = tap_list(kernel).into_iter().map(|t| {
        let idx: Vec<Expr> = t.iter().map(|&i| Expr::i(i as i64)).collect();
        body(&idx)
    });
    if matches!(op, RedOp::Max | RedOp::Min) {
        // Max and min are exactly associative (NaN propagates either way):
        // a balanced tree halves the dependent chain a vector loop waits on.
        let mut level: Vec<Expr> = terms.collect();
        while level.len() > 1 {
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut it = level.into_iter();
            while let Some(a) = it.next() {
                next.push(match it.next() {
                    Some(b) => a.bin(bop, b),
                    None => a,
                });
            }
            level = next;
        }
        return level.pop().unwrap_or(Expr::i(0));
    }
    let first = terms.next();
    let mut acc = first.unwrap_or(Expr::i(0));
    for t in terms {
        acc = acc.bin(bop, t);
    }
    acc
}

/// Nested reductions over the kernel taps (first spatial axis outermost); `body` gets the tap indices.
pub(super) fn over_taps(
    pb: &mut ProgramBuilder,
    kernel: &[usize],
    op: RedOp,
    body: impl FnOnce(&[Expr]) -> Expr,
) -> Expr {
    let vars: Vec<_> = kernel.iter().map(|_| pb.var()).collect();
    let taps: Vec<Expr> = vars.iter().map(|&v| Expr::var(v)).collect();
    let mut e = body(&taps);
    for (&v, &k) in vars.iter().zip(kernel).rev() {
        e = Expr::reduce(op, v, k as u64, e);
    }
    e
}

/// The padded copy `pad` as a kernel of its own (where there is one), then
/// `body` carrying `call`: the routine that may replace the body reads the
/// copy, so it must not replace the copy too.
pub(super) fn kernels_with_call(
    pb: &mut ProgramBuilder,
    node: &str,
    pad: Vec<Stmt>,
    body: Vec<Stmt>,
    call: kiln_ir::kernel::call::LibraryCall,
) {
    if !pad.is_empty() {
        pb.kernel(format!("{node}_pad"), pad);
    }
    pb.kernel_with_call(node, body, call);
}
