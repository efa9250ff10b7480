//! Transposes folded into the GEMM that reads them: a member that only
//! permutes elements (its program stores `out[row-major(c)] = in[affine(c)]`)
//! and feeds the root's [`Stmt::Matmul`] is never materialised; the GEMM's
//! strided view is rewritten to read the member's input directly.

use super::expr::affine;
use super::{gerr, Result};
use kiln_ir::kernel::build::strides;
use kiln_ir::kernel::{BufId, BufferRole, Expr, KernelProgram, MatView, Stmt, VarId};
use std::collections::HashMap;

/// Where each element of a permuted tensor comes from: the element at
/// coordinates `c` (of the member's loop nest, extents `ext`, row-major
/// strides `st`) is the input's element `base + sum c_d * a_d`.
pub(super) struct IndexMap {
    ext: Vec<i64>,
    st: Vec<i64>,
    a: Vec<i64>,
    base: i64,
}

/// Reads a permutation from a member's lowered program.
pub(super) fn index_map_of(name: &str, prog: &KernelProgram) -> Result<IndexMap> {
    let refuse = |why: &str| gerr(name, format!("cannot fold into the GEMM: {why}"));
    let [k] = prog.kernels.as_slice() else {
        return Err(refuse("not one kernel"));
    };
    let mut vars: Vec<(VarId, u64)> = vec![];
    let mut body = k.body.as_slice();
    while let [Stmt::For {
        var,
        extent,
        body: b,
    }] = body
    {
        vars.push((*var, *extent));
        body = b;
    }
    let [Stmt::Store { buf, index, value }] = body else {
        return Err(refuse("not a loop nest around one store"));
    };
    let Expr::Load {
        buf: src,
        index: from,
    } = value
    else {
        return Err(refuse("the stored value is not a load"));
    };
    let role = |b: BufId| prog.buffers.get(b as usize).map(|d| d.role);
    if role(*buf) != Some(BufferRole::Output(0)) || role(*src) != Some(BufferRole::Input(0)) {
        return Err(refuse("it does not copy input 0 to output 0"));
    }
    let ext: Vec<i64> = vars.iter().map(|&(_, e)| e as i64).collect();
    let st = strides(&vars.iter().map(|&(_, e)| e as usize).collect::<Vec<_>>());
    let (Some((0, out_c)), Some((base, in_c))) = (affine(index), affine(from)) else {
        return Err(refuse("its indices are not affine"));
    };
    let coef = |m: &HashMap<VarId, i64>, v: VarId| m.get(&v).copied().unwrap_or(0);
    if vars
        .iter()
        .enumerate()
        .any(|(d, &(v, _))| coef(&out_c, v) != st[d])
        || out_c.len() > vars.len()
        || in_c.keys().any(|v| !vars.iter().any(|(w, _)| w == v))
    {
        return Err(refuse(
            "its store is not at the row-major index of its loops",
        ));
    }
    let a = vars.iter().map(|&(v, _)| coef(&in_c, v)).collect();
    Ok(IndexMap { ext, st, a, base })
}

/// The same elements as `view` (over the permuted tensor) as a view over
/// the permutation's input, when every term of the view's address moves
/// along one coordinate without carrying into the next. `ranges` gives the
/// trip counts of the loop variables the offset uses.
pub(super) fn remap_view(
    view: &MatView,
    rows: u64,
    cols: u64,
    ranges: &HashMap<VarId, u64>,
    map: &IndexMap,
) -> Option<MatView> {
    let (c0, coefs) = affine(&view.offset)?;
    // Coordinates of the constant part.
    let mut used: Vec<i64> = Vec::with_capacity(map.st.len());
    let mut rest = c0;
    for &s in &map.st {
        if s <= 0 {
            return None; // an empty tensor: nothing to fold
        }
        used.push(rest / s);
        rest %= s;
    }
    if rest != 0 || used.iter().zip(&map.ext).any(|(u, e)| u >= e || *u < 0) {
        return None;
    }
    let new_off = used
        .iter()
        .zip(&map.a)
        .fold(map.base, |acc, (u, a)| acc + u * a);
    // One term: `coef * x` for x in 0..range; returns its coefficient over the input.
    let place = |coef: i64, range: u64, used: &mut Vec<i64>| -> Option<i64> {
        if range <= 1 || coef == 0 {
            return Some(0);
        }
        let d = (0..map.ext.len())
            .find(|&d| coef > 0 && coef % map.st[d] == 0 && coef / map.st[d] < map.ext[d])?;
        let q = coef / map.st[d];
        used[d] += q * (range as i64 - 1);
        (used[d] < map.ext[d]).then_some(q * map.a[d])
    };
    let mut terms: Vec<(VarId, i64)> = vec![];
    for (v, c) in coefs {
        let r = *ranges.get(&v)?;
        terms.push((v, place(c, r, &mut used)?));
    }
    let rs = place(view.row_stride, rows, &mut used)?;
    let cs = place(view.col_stride, cols, &mut used)?;
    terms.sort_unstable();
    let mut off = Expr::i(0);
    for (v, c) in terms {
        off = off + Expr::var(v) * c;
    }
    Some(MatView {
        buf: view.buf,
        offset: off + new_off,
        row_stride: rs,
        col_stride: cs,
    })
}

/// Rewrites every GEMM view of buffer `buf` through `map`; fails if `buf` is
/// read any other way.
pub(super) fn fold_into_views(
    name: &str,
    b: &[Stmt],
    buf: BufId,
    map: &IndexMap,
    ranges: &mut HashMap<VarId, u64>,
) -> Result<Vec<Stmt>> {
    let refuse = |why: &str| gerr(name, format!("cannot fold a transpose: {why}"));
    let mut out = Vec::with_capacity(b.len());
    for s in b {
        out.push(match s {
            Stmt::For { var, extent, body } => {
                ranges.insert(*var, *extent);
                Stmt::For {
                    var: *var,
                    extent: *extent,
                    body: fold_into_views(name, body, buf, map, ranges)?,
                }
            }
            Stmt::Matmul(m) => {
                let mut m = m.clone();
                if m.c.buf == buf {
                    return Err(refuse("the GEMM writes it"));
                }
                if m.a.buf == buf {
                    m.a = remap_view(&m.a, m.m, m.k, ranges, map)
                        .ok_or_else(|| refuse("the GEMM's view of it does not map"))?;
                }
                if m.b.buf == buf {
                    m.b = remap_view(&m.b, m.k, m.n, ranges, map)
                        .ok_or_else(|| refuse("the GEMM's view of it does not map"))?;
                }
                Stmt::Matmul(m)
            }
            other => {
                let mut l = vec![];
                super::expr::loads_in_stmt(other, &mut l);
                if l.contains(&buf) {
                    return Err(refuse("it is loaded outside a GEMM"));
                }
                other.clone()
            }
        });
    }
    Ok(out)
}
