//! Einsum: a loop over the output labels with the contracted labels reduced in
//! one nested `Expr::reduce`. Ellipsis dims broadcast numpy-style (aligned
//! right); a label repeated within one operand reads its diagonal.

use super::super::{LowerCtx, Result};
use kiln_ir::kernel::build::{linear_index, strides, ProgramBuilder};
use kiln_ir::kernel::{Expr, RedOp, Stmt, VarId};
use std::collections::BTreeMap;

/// Labels standing for ellipsis dims, from a private-use range so they cannot clash with letters.
fn ell_label(j: usize) -> char {
    char::from_u32(0xE000 + j as u32).unwrap_or('\u{E000}')
}

pub(super) fn lower(cx: &LowerCtx, pb: &mut ProgramBuilder, equation: &str) -> Result<()> {
    let io = cx.io(pb)?;
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != cx.inputs.len() || terms.is_empty() {
        return Err(cx.err(format!(
            "equation '{equation}' has {} operands, node has {} inputs",
            terms.len(),
            cx.inputs.len()
        )));
    }
    let dt = cx.outputs[0].dtype;
    let mut dims = Vec::with_capacity(terms.len());
    for i in 0..terms.len() {
        dims.push(cx.in_dims(i)?);
    }
    // Per operand: the label of each axis.
    let mut n_ell_max = 0;
    let mut parsed: Vec<(Vec<char>, Option<usize>)> = vec![]; // named labels, ellipsis position
    for (i, term) in terms.iter().enumerate() {
        let (named, ell) = split_term(term).map_err(|m| cx.err(format!("operand {i}: {m}")))?;
        let n_ell = dims[i]
            .len()
            .checked_sub(named.len())
            .filter(|&k| ell.is_some() || k == 0);
        let Some(n_ell) = n_ell else {
            return Err(cx.err(format!(
                "operand {i} has rank {}, term '{term}' names {} dims",
                dims[i].len(),
                named.len()
            )));
        };
        n_ell_max = n_ell_max.max(n_ell);
        parsed.push((named, ell));
    }
    let mut axes: Vec<Vec<char>> = vec![];
    for (i, (named, ell)) in parsed.iter().enumerate() {
        let n_ell = dims[i].len() - named.len();
        let mut labels = named.clone();
        if let Some(p) = ell {
            let e: Vec<char> = (n_ell_max - n_ell..n_ell_max).map(ell_label).collect();
            labels.splice(*p..*p, e);
        }
        axes.push(labels);
    }
    let mut sizes: BTreeMap<char, usize> = BTreeMap::new();
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    let mut order: Vec<char> = vec![];
    for (i, labels) in axes.iter().enumerate() {
        for (a, &l) in labels.iter().enumerate() {
            let d = dims[i][a];
            let s = sizes.entry(l).or_insert(d);
            if *s == 1 {
                *s = d;
            } else if d != 1 && d != *s {
                return Err(cx.err(format!("label '{l}' has sizes {s} and {d}")));
            }
            *counts.entry(l).or_insert(0) += 1;
            if !order.contains(&l) {
                order.push(l);
            }
        }
    }
    let out_labels: Vec<char> = match rhs {
        Some(r) => {
            let (named, ell) = split_term(&r).map_err(|m| cx.err(format!("output: {m}")))?;
            let mut labels = named;
            if let Some(p) = ell {
                labels.splice(p..p, (0..n_ell_max).map(ell_label));
            }
            labels
        }
        None => {
            let mut v: Vec<char> = (0..n_ell_max).map(ell_label).collect();
            v.extend(
                counts
                    .iter()
                    .filter(|(l, &n)| n == 1 && !is_ell(**l))
                    .map(|(&l, _)| l),
            );
            v
        }
    };
    let od = cx.out_dims(0)?;
    if od.len() != out_labels.len() {
        return Err(cx.err(format!(
            "output has rank {}, equation gives {}",
            od.len(),
            out_labels.len()
        )));
    }
    for (k, l) in out_labels.iter().enumerate() {
        if !sizes.contains_key(l) {
            return Err(cx.err(format!("output label '{l}' does not appear in the inputs")));
        }
        if out_labels[..k].contains(l) {
            return Err(cx.err(format!("output label '{l}' repeats")));
        }
    }
    let contracted: Vec<char> = order
        .iter()
        .copied()
        .filter(|l| !out_labels.contains(l))
        .collect();
    let red_vars: Vec<VarId> = contracted.iter().map(|_| pb.var()).collect();
    let ins: Vec<_> = (0..terms.len()).map(|i| io.input(i)).collect();
    let in_types: Vec<_> = (0..terms.len())
        .map(|i| cx.in_type(i).map(|t| t.dtype))
        .collect::<Result<_>>()?;
    let y = io.outputs[0];
    let body = pb.nest(&od, |_, idx| {
        let mut var_of: BTreeMap<char, Expr> = BTreeMap::new();
        for (l, e) in out_labels.iter().zip(idx) {
            var_of.insert(*l, e.clone());
        }
        for (l, &v) in contracted.iter().zip(&red_vars) {
            var_of.insert(*l, Expr::var(v));
        }
        let mut prod: Option<Expr> = None;
        for (i, labels) in axes.iter().enumerate() {
            let st = strides(&dims[i]);
            let index = labels
                .iter()
                .enumerate()
                .filter(|(a, l)| !(dims[i][*a] == 1 && sizes[*l] != 1))
                .fold(Expr::i(0), |acc, (a, l)| acc + var_of[l].clone() * st[a]);
            let mut v = Expr::load(ins[i], index);
            if in_types[i] != dt {
                v = v.cast(dt);
            }
            prod = Some(match prod {
                None => v,
                Some(p) => p * v,
            });
        }
        let mut value = prod.unwrap_or_else(|| Expr::constant(dt, 1.0));
        for (l, &v) in contracted.iter().zip(&red_vars).rev() {
            value = Expr::reduce(RedOp::Sum, v, sizes[l] as u64, value);
        }
        vec![Stmt::Store {
            buf: y,
            index: linear_index(idx, &strides(&od)),
            value,
        }]
    });
    pb.kernel(cx.node, body);
    Ok(())
}

fn is_ell(l: char) -> bool {
    ('\u{E000}'..='\u{F8FF}').contains(&l)
}

/// The named labels of a term and where its ellipsis stands among them.
fn split_term(term: &str) -> std::result::Result<(Vec<char>, Option<usize>), String> {
    let mut named = vec![];
    let mut ell = None;
    let mut rest = term;
    while let Some(ch) = rest.chars().next() {
        if rest.starts_with("...") {
            if ell.is_some() {
                return Err(format!("term '{term}' has two ellipses"));
            }
            ell = Some(named.len());
            rest = &rest[3..];
        } else if ch.is_ascii_alphabetic() {
            named.push(ch);
            rest = &rest[1..];
        } else {
            return Err(format!("unexpected '{ch}' in term '{term}'"));
        }
    }
    Ok((named, ell))
}
