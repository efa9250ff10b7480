//! Shared pieces of the sliding-window ops (Conv, ConvTranspose, Pool).
//!
//! Padding is materialised once: the input is copied into a scratch buffer
//! with its borders filled (zero for sums, -inf for max), so the hot loops
//! read in-bounds addresses with no per-tap bounds test. This costs one copy
//! of the input and keeps the inner loops short enough for every backend to
//! vectorise.

use kiln_ir::kernel::build::{strides, ProgramBuilder};
use kiln_ir::kernel::{BufId, Expr, RedOp, Stmt};

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
    let (x, xd) = (input.buf, &input.dims[..]);
    let mut pd = xd.to_vec();
    for d in 0..begin.len() {
        pd[2 + d] += begin[d] + end[d];
    }
    let len: usize = pd.iter().product();
    let buf = pb.scratch("padded", dtype, len);
    body.extend(pb.nest(&[len], |_, i| {
        vec![Stmt::Store {
            buf,
            index: i[0].clone(),
            value: fill,
        }]
    }));
    // One innermost loop per (n, c) plane, so short rows do not cost a loop each.
    let ps = strides(&pd[2..]);
    let (xplane, pplane) = (
        xd[2..].iter().product::<usize>() as i64,
        pd[2..].iter().product::<usize>() as i64,
    );
    body.extend(spatial_nest(
        pb,
        &[xd[0] * xd[1]],
        &xd[2..],
        |_, o, coords, flat| {
            let at = (0..begin.len()).fold(o[0].clone() * pplane, |acc, d| {
                acc + (coords[d].clone() + begin[d] as i64) * ps[d]
            });
            vec![Stmt::Store {
                buf,
                index: at,
                value: Expr::load(x, o[0].clone() * xplane + flat),
            }]
        },
    ));
    Source { buf, dims: pd }
}

/// Loops over `outer` dims and then the flattened output spatial positions
/// (one long innermost loop, even when rows are short; the last outer loop
/// when there is only one position). `f` gets the outer
/// indices and each spatial output coordinate.
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
    let mut dims = outer.to_vec();
    dims.push(flat);
    let os = strides(out_sp);
    pb.nest(&dims, |pb, idx| {
        let (o_idx, flat_idx) = (&idx[..outer.len()], idx[outer.len()].clone());
        let coords: Vec<Expr> = (0..out_sp.len())
            .map(|d| {
                let q = if os[d] == 1 {
                    flat_idx.clone()
                } else {
                    flat_idx.clone() / os[d]
                };
                if d == 0 {
                    q
                } else {
                    q % out_sp[d] as i64
                }
            })
            .collect();
        f(pb, o_idx, &coords, flat_idx)
    })
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
