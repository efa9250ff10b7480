//! The small-image convolution GEMM run transposed (`Cᵀ = Bᵀ · Wᵀ`), and
//! the rule for when a conv takes it: pixels become the GEMM's rows, which
//! tiles take in any count, where as columns they would leave wide tiles
//! mostly empty.

use super::super::matmul::gemm;
use super::with_acc;
use kiln_ir::kernel::build::ProgramBuilder;
use kiln_ir::kernel::{BufId, Expr, Stmt};

/// Whether a conv's GEMM runs transposed (see [`Transposed`]): one group,
/// enough output channels to fill the columns of a transposed product, an
/// image of few pixels that would leave over a tenth of the columns the
/// tiles compute empty, and enough multiply-adds to pay for the transposing
/// copy (measured: 64 channels of 25x5, 0.5M MACs a layer, ran slower so).
/// 13x13 and 14x14 images fill over 90% (a last panel of at most half a
/// tile runs a half-width tile) and run faster as they are (Zen 4, one
/// thread, pointwise 256->1024 at 14x14: 1.51 -> 0.97 ms, 384->1536 at
/// 13x13: 2.42 -> 1.88 ms); 7x7 images fill 49 of 64 and stay transposed
/// (320->1280: 0.53 -> 0.42 ms, 3x3 512->512: 3.8 -> 2.4 ms).
pub(super) fn transposes(g: usize, ocg: usize, ospn: usize, k: usize) -> bool {
    g == 1
        && ocg >= TRANSPOSED_MIN_CHANNELS
        && ospn <= TRANSPOSED_MAX_PIXELS
        && tiled_columns(ospn) * 10 > ospn * 11
        && ocg * ospn * k >= TRANSPOSED_MIN_MACS
}

/// Columns the GEMM tiles compute for `n` columns of output: whole tiles of
/// [`WIDEST_TILE`], the last one half wide when at most half of it is used.
pub(super) fn tiled_columns(n: usize) -> usize {
    let rest = n % WIDEST_TILE;
    let last = match rest {
        0 => 0,
        r if r <= WIDEST_TILE / 2 => WIDEST_TILE / 2,
        _ => WIDEST_TILE,
    };
    n - rest + last
}

/// The widest register tile of the CPU GEMM kernels (AVX-512: 32 columns).
pub(super) const WIDEST_TILE: usize = 32;
/// Multiply-adds from which a small image's conv runs transposed.
const TRANSPOSED_MIN_MACS: usize = 1 << 20;

/// Output channels from which a small image's conv runs transposed.
const TRANSPOSED_MIN_CHANNELS: usize = 64;
/// Pixels up to which an image's conv runs transposed (16x16).
const TRANSPOSED_MAX_PIXELS: usize = 256;

/// Floats between rows of the transposed product `ct` for `ocg` output
/// channels: whole cache lines, an odd number of them. The copy into `y`
/// reads down a column of `ct`, one row per pixel; at a stride of a
/// multiple of 4 KiB (1024 or 2048 channels) those rows all fall into
/// one set of the L1 cache and every load missed it (ResNet-50's 7x7
/// layers spent ~0.3 ms each on the copy). An odd number of lines spreads
/// 64 rows over 64 different sets.
pub(super) fn ct_stride(ocg: usize) -> usize {
    let lines = ocg.div_ceil(16);
    (lines + usize::from(lines.is_multiple_of(2))) * 16
}

/// A conv block over a whole small image as `Cᵀ = Bᵀ · Wᵀ`: the
/// `cols × ocg` product into scratch `ct`, then copied transposed into `y`.
/// `W · B` puts the image's pixels on the GEMM's column side, whose
/// register tiles are wide (16 or 32 columns): 49 pixels (a 7x7 image) fill
/// 49 of 64 columns, 196 (14x14) 196 of 224. Transposed, the pixels are
/// rows, which tiles take in any count, and the many output channels the
/// columns. `B` is `k × cols` at `src.1` with rows `src.2` apart (the
/// column matrix, or a pointwise conv's input itself): read transposed, it
/// is the product's `A` as it lies.
pub(super) struct Transposed {
    pub(super) ct: BufId,
    pub(super) w: BufId,
    pub(super) bias: Option<BufId>,
    pub(super) src: (BufId, Expr, i64),
    pub(super) y: (BufId, Expr),
    pub(super) ocg: usize,
    pub(super) cols: usize,
    pub(super) k: usize,
}

impl Transposed {
    pub(super) fn block(self, pb: &mut ProgramBuilder) -> Vec<Stmt> {
        let Transposed {
            ct,
            w,
            bias,
            src: (sb, so, sld),
            y: (y, yo),
            ocg,
            cols,
            k,
        } = self;
        let ld = ct_stride(ocg);
        let mut mm = with_acc(
            gemm(cols, ocg, k, (sb, so), (w, Expr::i(0)), (ct, Expr::i(0))),
            bias.is_some(),
        );
        if let Stmt::Matmul(m) = &mut mm {
            // A(j, p) = B(p, j); Wᵀ(p, o) = w[o·k + p].
            m.a.row_stride = 1;
            m.a.col_stride = sld;
            m.b.row_stride = 1;
            m.b.col_stride = k as i64;
            m.c.row_stride = ld as i64;
        }
        // One bias per output channel: per column of the product.
        let mut s = match bias {
            Some(b) => pb.nest(&[cols, ocg], |_, i| {
                vec![Stmt::Store {
                    buf: ct,
                    index: i[0].clone() * ld as i64 + i[1].clone(),
                    value: Expr::load(b, i[1].clone()),
                }]
            }),
            None => vec![],
        };
        s.push(mm);
        s.extend(pb.nest(&[ocg, cols], |_, i| {
            vec![Stmt::Store {
                buf: y,
                index: yo.clone() + i[0].clone() * cols as i64 + i[1].clone(),
                value: Expr::load(ct, i[1].clone() * ld as i64 + i[0].clone()),
            }]
        }));
        s
    }
}
