//! Conv and ConvTranspose.
//!
//! Conv takes one of three shapes, by what is fastest for the geometry:
//! pointwise (1x1, stride 1, no padding) is a GEMM per (batch, group) straight
//! on the input; depthwise (one input channel per group, few output channels
//! each) is a direct loop, one output row at a time with the row's last axis
//! innermost and a small window unrolled into explicit multiply-adds;
//! everything else is im2col, a block of output rows at a time, into scratch,
//! each block followed by a GEMM (from a phase-split padded copy when strided
//! along the last axis, so every tap is a contiguous run). Small images with
//! many output channels run their GEMM transposed (`conv_transposed.rs`).
//! ConvTranspose is a GEMM into per-tap columns followed by a gather (col2im
//! written as a reduction, so no scatter).

use super::super::{LowerCtx, Result};
use super::matmul::gemm;
use super::window::{
    kernels_with_call, over_taps, pad_phased, pad_source, row_nest, tap_list, Source, Window,
    MAX_UNROLLED_TAPS,
};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::call::{Depthwise2d, LibraryCall};
use kiln_ir::kernel::{BinOp, BufId, Expr, RedOp, Stmt};
use kiln_ir::Op;

pub(super) fn lower_conv(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let Op::Conv {
        kernel,
        strides: st,
        pads,
        dilations,
        group,
    } = cx.op
    else {
        return Err(cx.err("not a Conv"));
    };
    let io = cx.io(pb)?;
    let (xd, wd, od) = (cx.in_dims(0)?, cx.in_dims(1)?, cx.out_dims(0)?);
    let dt = cx.outputs[0].dtype;
    check_dtypes(cx, dt)?;
    let sp = xd.len() - 2;
    let g = *group;
    let (n, c, oc, cg) = (xd[0], xd[1], wd[0], wd[1]);
    if g == 0 || c != cg * g || oc % g != 0 || wd[2..] != kernel[..] || od.len() != xd.len() {
        return Err(cx.err(format!(
            "inconsistent shapes: x {xd:?}, w {wd:?}, group {g}, kernel {kernel:?}"
        )));
    }
    let ocg = oc / g;
    let win = Window {
        kernel,
        strides: st,
        dilations,
        pads,
    };
    let (x, w, y) = (io.input(0), io.input(1), io.outputs[0]);
    let bias = io.inputs.get(2).copied().flatten();
    let osp = &od[2..];
    let ospn: usize = osp.iter().product();
    let isp: usize = xd[2..].iter().product();
    let kk: usize = kernel.iter().product();
    let mut body = vec![];

    if cg == 1 && oc / c < DIRECT_MAX_MULT {
        let geo = Direct {
            n,
            c,
            oc,
            xd: &xd,
            osp,
            win: &win,
        };
        let call = direct_depthwise(pb, &mut body, &geo, dt, (x, w, bias, y));
        match call {
            Some(call) => pb.kernel_with_call(cx.node, body, call),
            None => pb.kernel(cx.node, body),
        }
        return Ok(());
    }

    let acc = bias.is_some();
    let pointwise = kernel.iter().all(|&k| k == 1)
        && st.iter().all(|&s| s == 1)
        && pads.iter().all(|&p| p == 0);
    if pointwise {
        // y[n, g][:, block] (ocg x blen) = w[g] (ocg x cg) . x[n, g][:, block] (cg x blen),
        // over blocks of whole output rows small enough that the block of y a
        // GEMM has just written (and a fused epilogue then rewrites) is still in cache.
        let rows = osp.first().copied().unwrap_or(1).max(1);
        let row_len = ospn / rows;
        // A shallow input (all of it fits in L2) is one GEMM over the whole
        // image: the GEMM then sweeps it once per panel of output channels,
        // writing the output as a few long runs instead of many short ones
        // (MobileNetV2's 16 -> 96 expansion at 112x112: 0.85 -> 0.60 ms).
        let k_rows = if cg * ospn * dt.size() <= SHALLOW_INPUT_BYTES {
            rows
        } else {
            rows_per_block(rows, row_len, ocg * row_len * dt.size(), OUT_BLOCK_BYTES)
        };
        if transposes(g, ocg, ospn, cg) && k_rows == rows {
            let ct = pb.scratch("ct", dt, ospn * ct_stride(ocg));
            body.extend(pb.nest(&[n], |pb, i| {
                let xo = i[0].clone() * (c * isp) as i64;
                let yo = i[0].clone() * (oc * ospn) as i64;
                let t = Transposed {
                    ct,
                    w,
                    bias,
                    src: (x, xo, isp as i64),
                    y: (y, yo),
                    ocg,
                    cols: ospn,
                    k: cg,
                };
                t.block(pb)
            }));
            pb.kernel(cx.node, body);
            return Ok(());
        }
        // Blocks in runs that split evenly over threads (see `block_runs`):
        // 27 or 55 rows have only odd block counts, and 3 blocks on 2
        // threads leave one idle a third of the time.
        for run in block_runs(rows, k_rows) {
            let blen = (run.k_rows * row_len) as i64;
            body.extend(pb.nest(&[n, g, run.lanes, run.per_lane], |pb, i| {
                let (ni, gi) = (i[0].clone(), i[1].clone());
                let col0 = ((i[2].clone() * run.per_lane as i64 + i[3].clone())
                    * run.k_rows as i64
                    + run.first_row as i64)
                    * row_len as i64;
                let bias_at = bias.map(|b| (b, gi.clone() * ocg as i64));
                let a = (w, gi.clone() * (ocg * cg) as i64);
                let b = (
                    x,
                    ni.clone() * (c * isp) as i64 + gi.clone() * (cg * isp) as i64 + col0.clone(),
                );
                let yo = (y, ni * (oc * ospn) as i64 + gi * (ocg * ospn) as i64 + col0);
                let mut mm = with_acc(gemm(ocg, blen as usize, cg, a, b, yo), acc);
                if let Stmt::Matmul(m) = &mut mm {
                    // A block is a column range of x[n, g] and y[n, g].
                    m.b.row_stride = isp as i64;
                    m.c.row_stride = ospn as i64;
                }
                let mut s = bias_fill(pb, &mm, bias_at);
                s.push(mm);
                s
            }));
        }
        pb.kernel(cx.node, body);
        return Ok(());
    }

    // im2col in blocks of output rows: col[(ci, taps), o] = xpad[n, g*cg + ci, o*s + tap*d]
    // for the block's positions o, then y[n, g][:, block] = w[g] . col. A block of the
    // column matrix that fits in L2 keeps the GEMM fed from cache and the scratch
    // small; materialising the whole matrix would cost cg*kk times the input.
    // Strided along the last axis, the copy is phase-split (see
    // `pad_phased`): every tap of a row of output columns is then a
    // contiguous run the fill reads with vector loads instead of a gather
    // (ResNet's 7x7 stride-2 stem builds 7.4 MB of columns an image).
    let last = sp.saturating_sub(1);
    // (Rows are whole output rows of the first axis, so 1-D convs, whose
    // rows are single columns, keep the plain copy.) A strided 1x1 conv
    // reads one column in `stride` of every row in `stride`: split into
    // phases it would copy its whole input to use a quarter of it, so it
    // gathers straight from the input (with no padding, no copy at all;
    // ResNet-50's stride-2 downsampling convs copied 0.8M floats each).
    let phases = if sp >= 2 && kk > 1 {
        st[last].max(1)
    } else {
        1
    };
    let source = Source {
        buf: x,
        dims: xd.clone(),
    };
    let end = win.end_pads(&xd[2..], osp);
    let zero = Expr::constant(dt, 0.0);
    // The padded copy, kept apart from the blocks (see `direct_call`).
    let mut pad = std::mem::take(&mut body);
    let src = if phases > 1 {
        pad_phased(pb, &mut pad, source, dt, &pads[..sp], &end, zero, phases)
    } else {
        pad_source(pb, &mut pad, source, dt, &pads[..sp], &end, zero)
    };
    // Length of one phase of a padded row.
    let plen = src.dims.last().copied().unwrap_or(1) as i64 / phases as i64;
    let ss = src.spatial_strides();
    let plane = src.plane();
    let rows = osp.first().copied().unwrap_or(1).max(1);
    let row_len = ospn / rows;
    let row_bytes = cg * kk * row_len * dt.size();
    // A small image in one block: the transposed product (see `Transposed`).
    let one_block = transposes(g, ocg, ospn, cg * kk);
    let k_rows = if one_block {
        rows
    } else {
        im2col_rows(rows, row_len, row_bytes)
    };
    let runs = block_runs(rows, k_rows);
    // Every lane of every run has its own column buffer: lanes share
    // nothing, so a renderer may run them on different threads (one buffer
    // would serialise every block).
    let col_len = runs
        .iter()
        .map(|r| cg * kk * r.k_rows * row_len)
        .max()
        .unwrap_or(0);
    let max_lanes = runs.iter().map(|r| r.lanes).max().unwrap_or(1);
    let col = pb.scratch("col", dt, max_lanes * col_len);
    let base = pb.var();
    let in_row_step = st.first().copied().unwrap_or(1) as i64 * ss.first().copied().unwrap_or(0);
    let ct = one_block.then(|| pb.scratch("ct", dt, ospn * ct_stride(ocg)));
    for run in &runs {
        let blen = run.k_rows * row_len;
        let mut blk_sp = osp.to_vec();
        if let Some(r) = blk_sp.first_mut() {
            *r = run.k_rows;
        }
        body.extend(pb.nest(&[n, g, run.lanes, run.per_lane], |pb, i| {
            let (ni, gi) = (i[0].clone(), i[1].clone());
            // The block's first output row.
            let r0 = (i[2].clone() * run.per_lane as i64 + i[3].clone()) * run.k_rows as i64
                + run.first_row as i64;
            let col_at = i[2].clone() * col_len as i64;
            let mut dims = vec![cg];
            dims.extend_from_slice(kernel);
            let fill = pb.nest(&dims, |pb, ct| {
                let (ci, taps) = (&ct[0], &ct[1..]);
                let chan = ni.clone() * c as i64 + gi.clone() * cg as i64 + ci.clone();
                let toff = (0..sp).fold(chan * plane + r0.clone() * in_row_step, |acc, d| {
                    let q = taps[d].clone() * dilations[d] as i64;
                    if d == last && phases > 1 {
                        // Tap column q of output column o: phase q % s, o + q / s in it.
                        let s = phases as i64;
                        acc + q.clone().bin(BinOp::Rem, Expr::i(s)) * plen
                            + q.bin(BinOp::Div, Expr::i(s))
                    } else {
                        acc + q * ss[d]
                    }
                });
                let row =
                    (ci.clone() * kk as i64 + linear_index(taps, &strides(kernel))) * blen as i64;
                let mut s = vec![Stmt::Let {
                    var: base,
                    value: toff,
                }];
                s.extend(row_nest(pb, &[], &blk_sp, |_, _, coords, flat| {
                    let at = (0..sp).fold(Expr::var(base), |acc, d| {
                        let step = if d == last && phases > 1 {
                            1
                        } else {
                            st[d] as i64 * ss[d]
                        };
                        acc + coords[d].clone() * step
                    });
                    let store = Stmt::Store {
                        buf: col,
                        index: col_at.clone() + row.clone() + flat,
                        value: Expr::load(src.buf, at),
                    };
                    (vec![], vec![store])
                }));
                s
            });
            let mut s = fill;
            if one_block {
                let t = Transposed {
                    ct: ct.unwrap_or(col),
                    w,
                    bias,
                    src: (col, col_at.clone(), blen as i64),
                    y: (y, ni * (oc * ospn) as i64),
                    ocg,
                    cols: ospn,
                    k: cg * kk,
                };
                s.extend(t.block(pb));
                return s;
            }
            let bias_at = bias.map(|b| (b, gi.clone() * ocg as i64));
            let a = (w, gi.clone() * (ocg * cg * kk) as i64);
            let yo = (
                y,
                ni * (oc * ospn) as i64 + gi * (ocg * ospn) as i64 + r0 * row_len as i64,
            );
            let mut mm = with_acc(gemm(ocg, blen, cg * kk, a, (col, col_at.clone()), yo), acc);
            if let Stmt::Matmul(m) = &mut mm {
                // The block is a column range of y[n, g], whose rows are ospn apart.
                m.c.row_stride = ospn as i64;
            }
            s.extend(bias_fill(pb, &mm, bias_at));
            s.push(mm);
            s
        }));
    }
    // The same computation as a direct-conv call reading the padded copy,
    // for renderers that have one (see `direct_call`): the copy becomes a
    // kernel of its own, which the call does not replace.
    match direct_call(
        &src,
        phases,
        one_block,
        (g, oc, cg, kk),
        dt,
        (w, bias, y),
        &win,
        osp,
    ) {
        Some(call) => kernels_with_call(pb, cx.node, pad, body, call),
        None => {
            pad.extend(body);
            pb.kernel(cx.node, pad);
        }
    }
    Ok(())
}

/// Channel multipliers (output channels per input channel of a one-channel
/// group) from which a conv goes through im2col and a GEMM instead: that many
/// output rows per input plane give the GEMM enough reuse to win.
const DIRECT_MAX_MULT: usize = 8;

/// Geometry of a conv with one input channel per group.
struct Direct<'a> {
    n: usize,
    c: usize,
    oc: usize,
    xd: &'a [usize],
    osp: &'a [usize],
    win: &'a Window<'a>,
}

/// Depthwise (and channel-multiplier) conv, one output row at a time: the
/// output's last axis is the innermost loop, each tap's address is a row base
/// (bound before the loop) plus a constant, and the weights and bias of the
/// channel are bound before the loop too, so a small window becomes
/// straight-line multiply-adds over contiguous (stride 1) input.
fn direct_depthwise(
    pb: &mut ProgramBuilder,
    body: &mut Vec<Stmt>,
    geo: &Direct,
    dt: kiln_ir::DType,
    (x, w, bias, y): (BufId, BufId, Option<BufId>, BufId),
) -> Option<LibraryCall> {
    let (win, osp) = (geo.win, geo.osp);
    let sp = osp.len();
    let (st, dil, kernel) = (win.strides, win.dilations, win.kernel);
    let kk: usize = kernel.iter().product();
    // A strided, unrolled window reads a phase-split copy (see `pad_phased`),
    // so every tap is a contiguous run of the output row instead of a gather.
    let phases = match sp {
        0 => 1,
        _ if kk <= MAX_UNROLLED_TAPS => st[sp - 1],
        _ => 1,
    };
    let input = Source {
        buf: x,
        dims: geo.xd.to_vec(),
    };
    let (begin, end) = (&win.pads[..sp], win.end_pads(&geo.xd[2..], osp));
    let zero = Expr::constant(dt, 0.0);
    let src = if phases > 1 {
        pad_phased(pb, body, input, dt, begin, &end, zero, phases)
    } else {
        pad_source(pb, body, input, dt, begin, &end, zero)
    };
    let ss = src.spatial_strides();
    let plane = src.plane();
    let plen = match sp {
        0 => 1,
        _ => src.dims[1 + sp] / phases,
    };
    let (c, oc) = (geo.c, geo.oc);
    let mult = (oc / c) as i64;
    let ospn: usize = osp.iter().product();
    let toff = |t: &[Expr]| {
        (0..sp).fold(Expr::i(0), |acc, d| {
            acc + t[d].clone() * (dil[d] as i64 * ss[d])
        })
    };
    body.extend(row_nest(pb, &[geo.n, oc], osp, |pb, o, coords, flat| {
        let chan = o[0].clone() * c as i64 + o[1].clone() / mult;
        let rows = (0..sp.saturating_sub(1)).fold(chan * plane, |acc, d| {
            acc + coords[d].clone() * (st[d] as i64 * ss[d])
        });
        let rb = pb.var();
        let mut pre = vec![Stmt::Let {
            var: rb,
            value: rows,
        }];
        let col = match sp {
            0 => Expr::i(0),
            _ if phases > 1 => coords[sp - 1].clone(),
            _ => coords[sp - 1].clone() * (st[sp - 1] as i64 * ss[sp - 1]),
        };
        let at = |off: Expr| Expr::var(rb) + col.clone() + off;
        let sum = if kk <= MAX_UNROLLED_TAPS {
            // Taps in window order, each weight bound once per row.
            let mut sum = None;
            for (ti, t) in tap_list(kernel).iter().enumerate() {
                let v = pb.var();
                pre.push(Stmt::Let {
                    var: v,
                    value: Expr::load(w, o[1].clone() * kk as i64 + ti as i64),
                });
                let mut off = 0;
                for (d, &k) in t.iter().enumerate() {
                    let q = (k * dil[d]) as i64;
                    off += match d + 1 == sp && phases > 1 {
                        true => (q % phases as i64) * plen as i64 + q / phases as i64,
                        false => q * ss[d],
                    };
                }
                let term = Expr::load(src.buf, at(Expr::i(off))) * Expr::var(v);
                sum = Some(match sum {
                    Some(acc) => acc + term,
                    None => term,
                });
            }
            sum.unwrap_or(Expr::constant(dt, 0.0))
        } else {
            let ks = strides(kernel);
            over_taps(pb, kernel, RedOp::Sum, |t| {
                let widx = o[1].clone() * kk as i64 + linear_index(t, &ks);
                Expr::load(src.buf, at(toff(t))) * Expr::load(w, widx)
            })
        };
        let value = match bias {
            Some(b) => {
                let bv = pb.var();
                pre.push(Stmt::Let {
                    var: bv,
                    value: Expr::load(b, o[1].clone()),
                });
                sum + Expr::var(bv)
            }
            None => sum,
        };
        let out = (o[0].clone() * oc as i64 + o[1].clone()) * ospn as i64 + flat;
        let store = Stmt::Store {
            buf: y,
            index: out,
            value,
        };
        (pre, vec![store])
    }));
    // The same computation as a library call, for renderers that have one:
    // 2-D, f32, one output channel per input channel.
    let u = |v: usize| v as u64;
    (sp == 2 && mult == 1 && dt == kiln_ir::DType::F32).then(|| {
        LibraryCall::Depthwise2d(Depthwise2d {
            x,
            w,
            bias,
            y,
            batch: u(geo.n),
            channels: u(c),
            in_h: u(geo.xd[2]),
            in_w: u(geo.xd[3]),
            out_h: u(osp[0]),
            out_w: u(osp[1]),
            k_h: u(kernel[0]),
            k_w: u(kernel[1]),
            stride_h: u(st[0]),
            stride_w: u(st[1]),
            pad_top: u(win.pads[0]),
            pad_left: u(win.pads[1]),
            dil_h: u(dil[0]),
            dil_w: u(dil[1]),
            act: (f32::NEG_INFINITY, f32::INFINITY),
            func: None,
        })
    })
}

/// Rows per pointwise GEMM block (a divisor of `rows`): the most whose
/// bytes fit in `limit`, but at least enough for [`MIN_BLOCK_COLS`] columns.
fn rows_per_block(rows: usize, row_len: usize, row_bytes: usize, limit: usize) -> usize {
    let fit = (1..=rows)
        .filter(|&d| rows.is_multiple_of(d) && d * row_bytes <= limit)
        .max()
        .unwrap_or(1);
    let wide = (1..=rows)
        .find(|&d| rows.is_multiple_of(d) && d * row_len >= MIN_BLOCK_COLS)
        .unwrap_or(rows);
    fit.max(wide)
}

/// Rows per im2col block: of the block heights whose column matrix fits in
/// [`COL_BLOCK_BYTES`] (and at least the one reaching [`IM2COL_MIN_COLS`]),
/// the one whose blocks, as [`block_runs`] cuts the image, leave the fewest
/// tile columns empty, counted in half tiles (a GEMM runs a last panel of
/// up to half the widest tile at half cost) plus one per block for its call
/// and packing; the taller wins a tie. A 28-wide image in blocks of 7 rows
/// (196 columns) ends every block in a 4-column panel; blocks of 4 rows
/// (112 columns) leave none (128->128 3x3 at 28x28: 2.54 -> 2.38 ms on one
/// thread, 1.43 -> 1.37 on two).
fn im2col_rows(rows: usize, row_len: usize, row_bytes: usize) -> usize {
    let half = WIDEST_TILE / 2;
    let wide = (1..=rows)
        .find(|&d| d * row_len >= IM2COL_MIN_COLS)
        .unwrap_or(rows);
    let cost = |d: usize| -> usize {
        block_runs(rows, d)
            .iter()
            .map(|r| (r.lanes * r.per_lane) * (1 + (r.k_rows * row_len).div_ceil(half)))
            .sum()
    };
    (wide..=rows)
        .filter(|&d| d == wide || d * row_bytes <= COL_BLOCK_BYTES)
        .min_by_key(|&d| (cost(d), std::cmp::Reverse(d)))
        .unwrap_or(wide)
}

/// A run of equal im2col blocks: `lanes * per_lane` blocks of `k_rows`
/// output rows from `first_row` on, lane `l` taking blocks
/// `l * per_lane ..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockRun {
    first_row: usize,
    k_rows: usize,
    lanes: usize,
    per_lane: usize,
}

/// Cuts `rows` output rows into runs whose blocks split evenly over lanes:
/// blocks of `k_rows` rows go to [`COL_LANES`] lanes, then to 2, as far as
/// they divide, and the rows left over (fewer than `k_rows`) make one last
/// block. A single run of a prime number of blocks would leave every block
/// to one thread; guarding a lane's last block instead would hide its GEMM
/// from fusion. Blocks keep their full width (narrower blocks measured
/// slower on one thread than the serial im2col they save on two), and a
/// run of one block still splits its GEMM over threads.
fn block_runs(rows: usize, k_rows: usize) -> Vec<BlockRun> {
    let mut runs = vec![];
    let k = k_rows.clamp(1, rows.max(1));
    let mut first_row = 0;
    while first_row < rows {
        let left = rows - first_row;
        let (k, blocks) = if left >= k { (k, left / k) } else { (left, 1) };
        // A power of two: a static split of 3 lanes over 2 threads leaves
        // one thread a third idle.
        let lanes = [COL_LANES, 2, 1]
            .into_iter()
            .find(|&l| l <= blocks)
            .unwrap_or(1);
        let per_lane = blocks / lanes;
        runs.push(BlockRun {
            first_row,
            k_rows: k,
            lanes,
            per_lane,
        });
        first_row += lanes * per_lane * k;
    }
    runs
}

/// The largest block of a pointwise conv's output written by one GEMM: half
/// of a core's L2, so a fused epilogue rereads it from cache.
const OUT_BLOCK_BYTES: usize = 128 << 10;

/// The largest input of a pointwise conv taken in one GEMM: a core's L2,
/// the `B` the runtime's GEMM then sweeps rows outer (see its
/// `B_IN_L2_BYTES`).
const SHALLOW_INPUT_BYTES: usize = 1 << 20;

/// The fewest columns a GEMM block gets, whatever its size: a GEMM over
/// few columns spends its time on partial tiles and per-call packing
/// (measured: a 512-channel 7x7 3x3 conv ran 1.7x faster in blocks of 49
/// columns than of 7; ResNet-50 5-10% faster with 128 than with 16, its
/// 14x14 layers then being one block of 196 instead of seven of 28).
const MIN_BLOCK_COLS: usize = 128;

/// Column buffers of an im2col convolution: up to this many threads build
/// and multiply their blocks at the same time.
const COL_LANES: usize = 4;

/// The largest block of the im2col matrix built at once: half a core's L2
/// (measured on 3x3 convs at 28x28 and 56x56: blocks of ~0.5 MiB ran 3-6%
/// faster than of 0.9-1 MiB, on one thread and on two).
const COL_BLOCK_BYTES: usize = 512 << 10;

/// The fewest columns an im2col block gets (three of the widest tiles):
/// fewer and per-call packing and partial tiles dominate.
const IM2COL_MIN_COLS: usize = 96;

/// `C[i, j] = bias[offset + i]` over the block a GEMM then accumulates
/// onto: one bias per output channel, a row of `C`. Filled block by block,
/// right before its GEMM, so the block is in cache when the GEMM reads it,
/// and in the shape the CPU backend folds into the GEMM kernel's epilogue.
fn bias_fill(pb: &mut ProgramBuilder, mm: &Stmt, bias: Option<(BufId, Expr)>) -> Vec<Stmt> {
    let (Stmt::Matmul(m), Some((b, off))) = (mm, bias) else {
        return vec![];
    };
    pb.nest(&[m.m as usize, m.n as usize], |_, i| {
        vec![Stmt::Store {
            buf: m.c.buf,
            index: m.c.offset.clone()
                + i[0].clone() * m.c.row_stride
                + i[1].clone() * m.c.col_stride,
            value: Expr::load(b, off.clone() + i[0].clone()),
        }]
    })
}

fn with_acc(s: Stmt, acc: bool) -> Stmt {
    match s {
        Stmt::Matmul(mut m) => {
            m.accumulate = acc;
            Stmt::Matmul(m)
        }
        s => s,
    }
}

fn check_dtypes(cx: &LowerCtx, dt: kiln_ir::DType) -> Result<()> {
    for i in 0..cx.inputs.len() {
        if cx.has_input(i) && cx.in_type(i)?.dtype != dt {
            return Err(cx.err(format!(
                "input {i} has dtype {}, output {dt}",
                cx.in_type(i)?.dtype
            )));
        }
    }
    Ok(())
}

pub(super) fn lower_conv_transpose(cx: &LowerCtx, pb: &mut ProgramBuilder) -> Result<()> {
    let Op::ConvTranspose {
        kernel,
        strides: st,
        pads,
        dilations,
        group,
        ..
    } = cx.op
    else {
        return Err(cx.err("not a ConvTranspose"));
    };
    let io = cx.io(pb)?;
    let (xd, wd, od) = (cx.in_dims(0)?, cx.in_dims(1)?, cx.out_dims(0)?);
    let dt = cx.outputs[0].dtype;
    check_dtypes(cx, dt)?;
    let sp = xd.len() - 2;
    let g = *group;
    let (n, c, ocg) = (xd[0], xd[1], wd[1]);
    if g == 0
        || wd[0] != c
        || c % g != 0
        || wd[2..] != kernel[..]
        || od.len() != xd.len()
        || od[1] != ocg * g
    {
        return Err(cx.err(format!(
            "inconsistent shapes: x {xd:?}, w {wd:?}, group {g}, kernel {kernel:?}"
        )));
    }
    let (cg, oc) = (c / g, od[1]);
    let (x, w, y) = (io.input(0), io.input(1), io.outputs[0]);
    let bias = io.inputs.get(2).copied().flatten();
    let isp = &xd[2..];
    let ispn: usize = isp.iter().product();
    let osp = &od[2..];
    let kk: usize = kernel.iter().product();
    let col = pb.scratch("col", dt, ocg * kk * ispn);
    let is = strides(isp);
    let ks = strides(kernel);
    let os = strides(osp);
    let body = pb.nest(&[n, g], |pb, i| {
        let (ni, gi) = (i[0].clone(), i[1].clone());
        // col[(oc, taps), i] = sum_ci w[g*cg + ci, oc, taps] * x[n, g*cg + ci, i]
        let a = MatT {
            buf: w,
            offset: gi.clone() * (cg * ocg * kk) as i64,
            rows: ocg * kk,
        };
        let xb = (
            x,
            (ni.clone() * c as i64 + gi.clone() * cg as i64) * ispn as i64,
        );
        let mut s = vec![gemm_at(a, cg, ispn, xb, col)];
        // y[n, g*ocg + oc, o] = bias + sum over taps with o + pad - tap*dil = i*stride, 0 <= i < in.
        let mut dims = vec![ocg];
        dims.extend_from_slice(osp);
        s.extend(pb.nest(&dims, |pb, oi| {
            let (o, coords) = (&oi[0], &oi[1..]);
            let sum = over_taps(pb, kernel, RedOp::Sum, |t| {
                let mut valid = Expr::B(true);
                let mut iidx = Vec::with_capacity(sp);
                for d in 0..sp {
                    let tpos =
                        coords[d].clone() + pads[d] as i64 - t[d].clone() * dilations[d] as i64;
                    let q = tpos.clone() / st[d] as i64;
                    valid = valid
                        .and(tpos.clone().ge(Expr::i(0)))
                        .and(
                            tpos.clone()
                                .bin(kiln_ir::kernel::BinOp::Rem, Expr::i(st[d] as i64))
                                .eq_(Expr::i(0)),
                        )
                        .and(q.clone().lt(Expr::i(isp[d] as i64)));
                    iidx.push(q.max(Expr::i(0)).min(Expr::i(isp[d] as i64 - 1)));
                }
                let at = (o.clone() * kk as i64 + linear_index(t, &ks)) * ispn as i64
                    + linear_index(&iidx, &is);
                Expr::select(valid, Expr::load(col, at), Expr::constant(dt, 0.0))
            });
            let ch = gi.clone() * ocg as i64 + o.clone();
            let value = match bias {
                Some(b) => sum + Expr::load(b, ch.clone()),
                None => sum,
            };
            let out = (ni.clone() * oc as i64 + ch) * osp.iter().product::<usize>() as i64
                + linear_index(coords, &os);
            vec![Stmt::Store {
                buf: y,
                index: out,
                value,
            }]
        }));
        s
    });
    pb.kernel(cx.node, body);
    Ok(())
}

/// A weight block read transposed: element `(r, p)` is at `offset + p*rows + r`.
struct MatT {
    buf: BufId,
    offset: Expr,
    rows: usize,
}

/// `C (rows x n) = Aᵀ . B` where A is stored `k x rows` and B is row-major `k x n`.
fn gemm_at(a: MatT, k: usize, n: usize, b: (BufId, Expr), c: BufId) -> Stmt {
    let mut s = gemm(a.rows, n, k, (a.buf, a.offset), b, (c, Expr::i(0)));
    if let Stmt::Matmul(m) = &mut s {
        m.a.row_stride = 1;
        m.a.col_stride = a.rows as i64;
    }
    s
}

#[path = "conv_direct.rs"]
mod direct;
use direct::direct_call;

#[path = "conv_transposed.rs"]
mod transposed;
use transposed::{ct_stride, transposes, Transposed, WIDEST_TILE};

#[cfg(test)]
#[path = "conv_tests.rs"]
mod tests;
