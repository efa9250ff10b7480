//! Lowering of a fused group (`Op::Fused`): one kernel program for a root
//! node and the elementwise nodes applied to its output.
//!
//! Nothing here restates an op. Every member is lowered by its own lowering,
//! and the programs are composed at kernel-IR level:
//!
//! - each elementwise member's program is one loop nest storing one
//!   expression per output element; that expression, with its loop variables
//!   rewritten in terms of the flat output index and its load of the group
//!   value replaced by the value itself, is the member's per-element function;
//! - where the root stores its output with [`Stmt::Store`], the members'
//!   functions are applied to the stored value before the store (the
//!   intermediate tensors are never written);
//! - where the root writes its output with one [`Stmt::Matmul`], the functions
//!   run in an epilogue loop over the tile the GEMM has just written, inside
//!   the same loop iteration, while the tile is still in cache.
//!
//! A root whose program reads its own output back, or writes it in a pattern
//! neither case covers, is refused with an error: the fusion pass then leaves
//! the group unfused.

pub(crate) mod expr;
mod prologue;
#[cfg(test)]
mod tests;

use super::{lower, LowerCtx, LowerError, Result};
use expr::{as_dtype, loads_of, loop_ranges, max_var, remap_bufs, split_affine};
use kiln_ir::infer::specialize::specialize;
use kiln_ir::kernel::build::{linear_index, strides};
use kiln_ir::kernel::call::{
    final_store, peel_activation, peel_clamp, Activation, Conv2d, Depthwise2d, ExpRows,
    LibraryCall, MaxPool2d,
};
use kiln_ir::kernel::{
    BufId, BufferDecl, BufferRole, Expr, Kernel, KernelProgram, Matmul, Stmt, VarId,
};
use kiln_ir::{DType, Model, Node, Op, Tensor, TensorType, ValueId};
use std::collections::HashMap;

/// Where a member's input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The group's input `i`.
    Param(usize),
    /// The (single) output of an earlier member.
    Member(usize),
}

/// One node of a group with concrete types, as its lowering sees it.
pub struct Member<'a> {
    pub name: String,
    /// Specialised: parameter inputs that were constant are folded into the op.
    pub op: Op,
    pub inputs: Vec<Option<Operand>>,
    pub in_types: Vec<Option<TensorType>>,
    pub consts: Vec<Option<&'a Tensor>>,
    pub out_type: TensorType,
}

/// A fused group: its inputs' types and its members, root first. The last
/// member's output is the group's output.
pub struct Group<'a> {
    pub name: String,
    pub params: Vec<TensorType>,
    pub members: Vec<Member<'a>>,
}

fn gerr(node: &str, msg: impl Into<String>) -> LowerError {
    LowerError {
        node: node.to_string(),
        op: "fused".into(),
        msg: msg.into(),
    }
}

/// Builds the group of a `fused` node: its body's nodes, with region
/// parameters standing for the node's inputs.
pub fn group_of_node<'a>(model: &'a Model, n: &'a Node) -> Result<Group<'a>> {
    let body = match (&n.op, n.regions.as_slice()) {
        (Op::Fused, [body]) => body,
        _ => return Err(gerr(&n.name, "not a fused node with one body region")),
    };
    let ext: Vec<ValueId> = n
        .inputs
        .iter()
        .map(|v| v.ok_or_else(|| gerr(&n.name, "fused nodes have no omitted inputs")))
        .collect::<Result<_>>()?;
    if ext.len() != body.params.len() {
        return Err(gerr(
            &n.name,
            format!(
                "{} inputs for {} body parameters",
                ext.len(),
                body.params.len()
            ),
        ));
    }
    let members: Vec<&Node> = body.nodes.iter().collect();
    if body.results.len() != 1
        || members.last().map(|m| m.outputs.as_slice()) != Some(&body.results[..])
    {
        return Err(gerr(&n.name, "the body must return its last node's output"));
    }
    group_from_nodes(model, &n.name, &ext, &body.params, &members)
}

/// Builds a group from member nodes. `ext[i]` is the value bound to group input
/// `i` (its type and constant value are used); members refer to it as `refs[i]`.
pub fn group_from_nodes<'a>(
    model: &'a Model,
    name: &str,
    ext: &[ValueId],
    refs: &[ValueId],
    members: &[&Node],
) -> Result<Group<'a>> {
    let static_ty = |v: ValueId| -> Result<TensorType> {
        let t = model.ty(v);
        let d = t.dims().ok_or_else(|| {
            gerr(
                name,
                format!("value '{}' has symbolic shape {t}", model.value(v).name),
            )
        })?;
        Ok(TensorType::known(t.dtype, &d))
    };
    let params: Vec<TensorType> = ext.iter().map(|&v| static_ty(v)).collect::<Result<_>>()?;
    let mut out_of: HashMap<ValueId, usize> = HashMap::new();
    let mut out = Vec::with_capacity(members.len());
    for (j, m) in members.iter().enumerate() {
        let [o] = m.outputs[..] else {
            return Err(gerr(
                name,
                format!("member '{}' must have one output", m.name),
            ));
        };
        let mut inputs = vec![];
        let mut types = vec![];
        let mut consts: Vec<Option<&Tensor>> = vec![];
        for v in &m.inputs {
            let Some(v) = *v else {
                inputs.push(None);
                types.push(None);
                consts.push(None);
                continue;
            };
            if let Some(i) = refs.iter().position(|&r| r == v) {
                inputs.push(Some(Operand::Param(i)));
                types.push(Some(params[i].clone()));
                consts.push(model.consts.get(&ext[i]));
            } else if let Some(&k) = out_of.get(&v) {
                inputs.push(Some(Operand::Member(k)));
                types.push(Some(static_ty(v)?));
                consts.push(None);
            } else {
                return Err(gerr(
                    name,
                    format!(
                        "member '{}' reads '{}', which is neither a group input nor a member's output",
                        m.name,
                        model.value(v).name
                    ),
                ));
            }
        }
        let (op, keep) = match specialize(&m.op, &types, &consts)
            .map_err(|e| gerr(name, format!("member '{}': {}", m.name, e.msg)))?
        {
            Some((op, keep)) => (op, keep),
            None => (m.op.clone(), (0..inputs.len()).collect()),
        };
        let pick = |i: &usize| {
            (
                inputs.get(*i).copied().flatten(),
                types.get(*i).cloned().flatten(),
                consts.get(*i).copied().flatten(),
            )
        };
        let kept: Vec<_> = keep.iter().map(pick).collect();
        out.push(Member {
            name: m.name.clone(),
            op,
            inputs: kept.iter().map(|k| k.0).collect(),
            in_types: kept.iter().map(|k| k.1.clone()).collect(),
            consts: kept.iter().map(|k| k.2).collect(),
            out_type: static_ty(o)?,
        });
        out_of.insert(o, j);
    }
    Ok(Group {
        name: name.to_string(),
        params,
        members: out,
    })
}

/// Lowers a `fused` node of `model`.
pub fn lower_fused_node(model: &Model, n: &Node) -> Result<KernelProgram> {
    lower_group(&group_of_node(model, n)?)
}

/// One elementwise member's per-element function, taken from its lowering.
struct Elementwise {
    /// Loop variables of its nest and their extents (the collapsed output dims).
    vars: Vec<(VarId, u64)>,
    /// The stored expression, loads still naming the member program's buffers.
    value: Expr,
    /// The member program's buffer roles.
    roles: Vec<BufferRole>,
    /// The store index: loads of a group value must use exactly this index.
    index: Expr,
}

/// Reads a lowered elementwise program: one kernel, a perfect loop nest, one
/// contiguous store per iteration.
fn elementwise_of(name: &str, prog: &KernelProgram) -> Result<Elementwise> {
    let refuse = |why: &str| gerr(name, format!("member cannot be fused: {why}"));
    let [k] = prog.kernels.as_slice() else {
        return Err(refuse("its program is not one kernel"));
    };
    let mut vars = vec![];
    let mut body = k.body.as_slice();
    loop {
        match body {
            [Stmt::For {
                var,
                extent,
                body: b,
            }] => {
                vars.push((*var, *extent));
                body = b;
            }
            [Stmt::Store { buf, index, value }] => {
                if !matches!(
                    prog.buffers.get(*buf as usize).map(|b| b.role),
                    Some(BufferRole::Output(0))
                ) {
                    return Err(refuse("it stores to a buffer other than its output"));
                }
                let ext: Vec<usize> = vars.iter().map(|&(_, e)| e as usize).collect();
                let idx: Vec<Expr> = vars.iter().map(|&(v, _)| Expr::Var(v)).collect();
                if *index != linear_index(&idx, &strides(&ext)) {
                    return Err(refuse(
                        "its store is not at the row-major index of its loops",
                    ));
                }
                return Ok(Elementwise {
                    vars,
                    value: value.clone(),
                    roles: prog.buffers.iter().map(|b| b.role).collect(),
                    index: index.clone(),
                });
            }
            _ => return Err(refuse("its kernel is not a loop nest around one store")),
        }
    }
}

/// Everything the composition needs about the members after the root.
struct Tail {
    members: Vec<(Elementwise, Vec<Option<Operand>>, DType)>,
    /// Fused buffer id of each group input.
    param_buf: Vec<BufId>,
    out: BufId,
    name: String,
    /// The root's index among the group's members (tail member `i` is `root + 1 + i`).
    root: usize,
    /// Trip counts of the root program's loop variables.
    ranges: HashMap<VarId, u64>,
}

impl Tail {
    /// A member's expression in the fused program: loop variables become
    /// coordinates of the flat index, loads of group inputs are renumbered,
    /// and loads of group values become the variables holding them.
    fn subst(
        &self,
        e: &Elementwise,
        inputs: &[Option<Operand>],
        coord: &HashMap<VarId, Expr>,
        vals: &[VarId],
        x: &Expr,
    ) -> std::result::Result<Expr, String> {
        let go = |y: &Expr| self.subst(e, inputs, coord, vals, y);
        Ok(match x {
            Expr::Var(v) => coord
                .get(v)
                .cloned()
                .ok_or_else(|| format!("v{v} is not a loop variable of the member"))?,
            Expr::Load { buf, index } => {
                let Some(BufferRole::Input(k)) = e.roles.get(*buf as usize).copied() else {
                    return Err("a member loads a buffer that is not its input".into());
                };
                match inputs.get(k).copied().flatten() {
                    Some(Operand::Param(p)) => Expr::Load {
                        buf: self.param_buf[p],
                        index: Box::new(go(index)?),
                    },
                    Some(Operand::Member(j)) if **index == e.index => {
                        match j.checked_sub(self.root).and_then(|i| vals.get(i)) {
                            Some(v) => Expr::Var(*v),
                            None => return Err("a member reads a value folded away".into()),
                        }
                    }
                    Some(Operand::Member(_)) => {
                        return Err("a member reads a group value at another element".into())
                    }
                    None => return Err(format!("member input {k} is absent")),
                }
            }
            Expr::Unary(op, a) => Expr::Unary(*op, Box::new(go(a)?)),
            Expr::Cast(t, a) => Expr::Cast(*t, Box::new(go(a)?)),
            Expr::Binary(op, a, b) => Expr::Binary(*op, Box::new(go(a)?), Box::new(go(b)?)),
            Expr::Select(c, a, b) => {
                Expr::Select(Box::new(go(c)?), Box::new(go(a)?), Box::new(go(b)?))
            }
            Expr::Reduce { .. } => return Err("a member reduces".into()),
            other => other.clone(),
        })
    }

    /// The statements that turn the root's value `root` for the output
    /// element at flat index `flat` into the group's output and store it.
    fn apply(
        &self,
        flat: &Expr,
        extra: &[(VarId, u64)],
        root: Expr,
        root_t: DType,
        next: &mut VarId,
        bufs: &[BufferDecl],
    ) -> Result<Vec<Stmt>> {
        let mut fresh = || {
            *next += 1;
            *next - 1
        };
        let mut stmts = vec![];
        let r = fresh();
        stmts.push(Stmt::Let {
            var: r,
            value: as_dtype(root, root_t, bufs),
        });
        // The variable holding each member's value (index 0: the root).
        let mut vals: Vec<VarId> = vec![r];
        for (e, inputs, out_t) in &self.members {
            // Loop variable d of the member's nest, from the flat index: read off
            // its affine terms where they do not carry, else by division.
            let exts: Vec<u64> = e.vars.iter().map(|&(_, x)| x).collect();
            let st = strides(&exts.iter().map(|&x| x as usize).collect::<Vec<_>>());
            let split = split_affine(flat, &exts, &|v| {
                extra
                    .iter()
                    .find(|(w, _)| *w == v)
                    .map(|&(_, r)| r)
                    .or_else(|| self.ranges.get(&v).copied())
            });
            let coord: HashMap<VarId, Expr> = e
                .vars
                .iter()
                .enumerate()
                .map(|(d, &(v, ext))| {
                    if let Some(c) = split.as_ref().and_then(|c| c.get(d)) {
                        return (v, c.clone());
                    }
                    let mut c = flat.clone();
                    if st[d] != 1 {
                        c = c / st[d];
                    }
                    if d > 0 {
                        c = c % ext as i64;
                    }
                    (v, c)
                })
                .collect();
            let value = self
                .subst(e, inputs, &coord, &vals, &e.value)
                .map_err(|m| gerr(&self.name, m))?;
            let t = fresh();
            stmts.push(Stmt::Let {
                var: t,
                value: as_dtype(value, *out_t, bufs),
            });
            vals.push(t);
        }
        stmts.push(Stmt::Store {
            buf: self.out,
            index: flat.clone(),
            value: Expr::Var(*vals.last().unwrap_or(&r)),
        });
        Ok(stmts)
    }
}

/// How the root's program writes its output.
#[derive(Default)]
struct Writes {
    stores: usize,
    matmuls: usize,
    reads: bool,
}

fn scan_writes(b: &[Stmt], out: BufId, w: &mut Writes) {
    let reads = |x: &Expr| {
        let mut l = vec![];
        loads_of(x, &mut l);
        l.contains(&out)
    };
    for s in b {
        match s {
            Stmt::For { body, .. } => scan_writes(body, out, w),
            Stmt::Let { value, .. } => w.reads |= reads(value),
            Stmt::Store { buf, index, value } => {
                w.reads |= reads(index) || reads(value);
                w.stores += usize::from(*buf == out);
            }
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => {
                w.reads |= reads(cond);
                scan_writes(then_body, out, w);
                scan_writes(else_body, out, w);
            }
            Stmt::Matmul(m) => {
                w.reads |= [&m.a, &m.b, &m.c].iter().any(|v| reads(&v.offset))
                    || m.a.buf == out
                    || m.b.buf == out;
                w.matmuls += usize::from(m.c.buf == out);
            }
            Stmt::While { cond, body } => {
                w.reads |= reads(cond);
                scan_writes(body, out, w);
            }
        }
    }
}

/// Mode "store": every store to the output gets the tail applied to its value.
fn rewrite_stores(
    b: &[Stmt],
    tail: &Tail,
    root_t: DType,
    next: &mut VarId,
    bufs: &[BufferDecl],
) -> Result<Vec<Stmt>> {
    let mut out = Vec::with_capacity(b.len());
    for s in b {
        match s {
            Stmt::Store { buf, index, value } if *buf == tail.out => {
                out.extend(tail.apply(index, &[], value.clone(), root_t, next, bufs)?)
            }
            Stmt::For { var, extent, body } => out.push(Stmt::For {
                var: *var,
                extent: *extent,
                body: rewrite_stores(body, tail, root_t, next, bufs)?,
            }),
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => out.push(Stmt::If {
                cond: cond.clone(),
                then_body: rewrite_stores(then_body, tail, root_t, next, bufs)?,
                else_body: rewrite_stores(else_body, tail, root_t, next, bufs)?,
            }),
            Stmt::While { cond, body } => out.push(Stmt::While {
                cond: cond.clone(),
                body: rewrite_stores(body, tail, root_t, next, bufs)?,
            }),
            s => out.push(s.clone()),
        }
    }
    Ok(out)
}

/// Mode "epilogue": after the one GEMM that writes the output, a loop over
/// its tile applies the tail. Returns how many output elements the GEMM
/// writes over all enclosing loop iterations (`outer` is their trip count).
fn add_epilogue(
    b: &[Stmt],
    tail: &Tail,
    root_t: DType,
    next: &mut VarId,
    bufs: &[BufferDecl],
    outer: u64,
    written: &mut u64,
) -> Result<Vec<Stmt>> {
    let mut out = Vec::with_capacity(b.len() + 1);
    for s in b {
        match s {
            Stmt::Matmul(m) if m.c.buf == tail.out => {
                out.push(s.clone());
                out.push(epilogue(m, tail, root_t, next, bufs)?);
                *written += outer * m.m * m.n;
            }
            Stmt::For { var, extent, body } => out.push(Stmt::For {
                var: *var,
                extent: *extent,
                body: add_epilogue(body, tail, root_t, next, bufs, outer * extent, written)?,
            }),
            Stmt::If { .. } | Stmt::While { .. } => {
                let mut w = Writes::default();
                scan_writes(std::slice::from_ref(s), tail.out, &mut w);
                if w.matmuls > 0 {
                    return Err(gerr(&tail.name, "the output GEMM is conditional"));
                }
                out.push(s.clone());
            }
            s => out.push(s.clone()),
        }
    }
    Ok(out)
}

fn epilogue(
    m: &Matmul,
    tail: &Tail,
    root_t: DType,
    next: &mut VarId,
    bufs: &[BufferDecl],
) -> Result<Stmt> {
    let (i, j) = (*next, *next + 1);
    *next += 2;
    let flat = m.c.offset.clone() + Expr::var(i) * m.c.row_stride + Expr::var(j) * m.c.col_stride;
    let body = tail.apply(
        &flat,
        &[(i, m.m), (j, m.n)],
        Expr::load(tail.out, flat.clone()),
        root_t,
        next,
        bufs,
    )?;
    Ok(Stmt::For {
        var: i,
        extent: m.m,
        body: vec![Stmt::For {
            var: j,
            extent: m.n,
            body,
        }],
    })
}

/// Lowers a group to one program: inputs in group-input order, one output, the root's scratch.
pub fn lower_group(g: &Group) -> Result<KernelProgram> {
    let name = g.name.as_str();
    let at = |e: LowerError| gerr(name, format!("{}: {}", e.node, e.msg));
    // The root is the last member that is not elementwise; members before it
    // are permutations folded into its GEMMs, members after it its tail.
    let ri = g
        .members
        .iter()
        .rposition(|m| !m.op.is_elementwise())
        .unwrap_or(0);
    let (prologue, rest) = g.members.split_at(ri);
    let (root, rest) = rest
        .split_first()
        .ok_or_else(|| gerr(name, "empty group"))?;
    let lower_member = |m: &Member| -> Result<KernelProgram> {
        lower(&LowerCtx {
            node: &m.name,
            op: &m.op,
            inputs: &m.in_types,
            outputs: std::slice::from_ref(&m.out_type),
            consts: &m.consts,
        })
    };
    let rp = lower_member(root)?;
    let final_t = g
        .members
        .last()
        .map(|m| &m.out_type)
        .unwrap_or(&root.out_type);
    let numel = |t: &TensorType| -> Result<usize> {
        t.num_elements()
            .ok_or_else(|| gerr(name, format!("symbolic type {t}")))
    };

    // The fused program's buffers: group inputs, the output, then the root's scratch.
    let mut buffers: Vec<BufferDecl> = vec![];
    for (i, t) in g.params.iter().enumerate() {
        buffers.push(BufferDecl {
            name: format!("in{i}"),
            dtype: t.dtype,
            len: numel(t)?,
            role: BufferRole::Input(i),
            written_first: false,
        });
    }
    let out = buffers.len() as BufId;
    buffers.push(BufferDecl {
        name: "out0".into(),
        dtype: final_t.dtype,
        len: numel(final_t)?,
        role: BufferRole::Output(0),
        // The tail rewrites the root's output in place, element by element.
        written_first: rp
            .buffers
            .iter()
            .any(|b| b.role == BufferRole::Output(0) && b.written_first),
    });
    let mut map = Vec::with_capacity(rp.buffers.len());
    let mut root_kernels = rp.kernels.clone();
    for (bi, b) in rp.buffers.iter().enumerate() {
        map.push(match b.role {
            BufferRole::Input(k) => match root.inputs.get(k).copied().flatten() {
                Some(Operand::Param(p)) => p as BufId,
                Some(Operand::Member(j)) if j < ri => {
                    let pm = &prologue[j];
                    let Some(Some(Operand::Param(src))) = pm.inputs.first() else {
                        return Err(gerr(name, "a folded transpose must read a group input"));
                    };
                    let imap = prologue::index_map_of(&pm.name, &lower_member(pm).map_err(at)?)?;
                    let mut ranges = HashMap::new();
                    for k in &mut root_kernels {
                        k.body = prologue::fold_into_views(
                            name,
                            &k.body,
                            bi as BufId,
                            &imap,
                            &mut ranges,
                        )?;
                    }
                    *src as BufId
                }
                _ => return Err(gerr(name, format!("root input {k} is not a group input"))),
            },
            BufferRole::Output(0) => out,
            BufferRole::Output(k) => {
                return Err(gerr(name, format!("the root has a second output ({k})")))
            }
            BufferRole::Scratch => {
                buffers.push(b.clone());
                (buffers.len() - 1) as BufId
            }
        });
    }
    if prologue.len() != rp.buffers.iter().filter(|b| matches!(b.role, BufferRole::Input(k) if matches!(root.inputs.get(k), Some(Some(Operand::Member(_)))))).count() {
        return Err(gerr(name, "every member before the root must feed it"));
    }
    let kernels: Vec<Kernel> = root_kernels
        .iter()
        .map(|k| Kernel {
            name: k.name.clone(),
            body: remap_bufs(&k.body, &map),
            // Folded transposes change what the body reads: the call would not.
            call: k
                .call
                .as_ref()
                .filter(|_| prologue.is_empty())
                .map(|c| remap_call(c, &map)),
        })
        .collect();
    if rest.is_empty() {
        return Ok(KernelProgram { buffers, kernels });
    }

    let mut members = vec![];
    for m in rest {
        let p = lower_member(m).map_err(at)?;
        members.push((
            elementwise_of(&m.name, &p).map_err(at)?,
            m.inputs.clone(),
            m.out_type.dtype,
        ));
    }
    let tail = Tail {
        ranges: loop_ranges(&kernels),
        root: ri,
        members,
        param_buf: (0..g.params.len() as BufId).collect(),
        out,
        name: name.to_string(),
    };
    let root_t = root.out_type.dtype;
    let mut w = Writes::default();
    for k in &kernels {
        scan_writes(&k.body, out, &mut w);
    }
    if w.reads {
        return Err(gerr(name, "the root reads its own output back"));
    }
    let mut next = max_var(&rp).map_or(0, |v| v + 1);
    let act = tail_act(g, &tail, root_t, &buffers);
    // A root with a library call that cannot take the tail (no clamp, nor
    // a function and clamp) keeps its call: it stores its own values, and
    // a second kernel applies the tail in place (one more pass over the
    // output, paid only where the routine is faster than the rendered body
    // by far more).
    let split_tail = kernels
        .iter()
        .any(|k| k.call.clone().is_some_and(|c| with_act(c, act).is_none()))
        && g.members.iter().all(|m| m.out_type.dtype == root_t);
    let kernels = match (w.stores, w.matmuls) {
        (_, 0) if split_tail => {
            let mut ks = kernels.clone();
            ks.push(tail_kernel(
                &tail,
                root_t,
                &mut next,
                &buffers,
                numel(final_t)?,
            )?);
            ks
        }
        (_, 0) => kernels
            .iter()
            .map(|k| {
                Ok(Kernel {
                    name: k.name.clone(),
                    body: rewrite_stores(&k.body, &tail, root_t, &mut next, &buffers)?,
                    call: k.call.clone().and_then(|c| with_act(c, act)),
                })
            })
            .collect::<Result<Vec<_>>>()?,
        (stores, gemms) if gemms == 1 || stores == 0 || stores_precede_each_gemm(&kernels, out) => {
            if g.members.iter().any(|m| m.out_type.dtype != root_t) {
                return Err(gerr(name, "a GEMM epilogue cannot change the dtype"));
            }
            epilogue_kernels(
                &kernels,
                act,
                &tail,
                root_t,
                &mut next,
                &buffers,
                numel(final_t)?,
            )?
        }
        _ => {
            return Err(gerr(
                name,
                "the root writes its output with several GEMMs and stores of its own",
            ))
        }
    };
    Ok(KernelProgram { buffers, kernels })
}

/// `for i in 0..len { out[i] = tail(out[i]) }`: the tail applied in place
/// to what the root stored.
fn tail_kernel(
    tail: &Tail,
    root_t: DType,
    next: &mut VarId,
    bufs: &[BufferDecl],
    len: usize,
) -> Result<Kernel> {
    let i = *next;
    *next += 1;
    let at = Expr::var(i);
    let body = tail.apply(
        &at,
        &[(i, len as u64)],
        Expr::load(tail.out, at.clone()),
        root_t,
        next,
        bufs,
    )?;
    Ok(Kernel {
        name: format!("{}_tail", tail.name),
        body: vec![Stmt::For {
            var: i,
            extent: len as u64,
            body,
        }],
        call: None,
    })
}

/// `call` with its buffers renumbered as `map` renumbers the body's.
fn remap_call(call: &LibraryCall, map: &[BufId]) -> LibraryCall {
    let m = |b: BufId| map.get(b as usize).copied().unwrap_or(b);
    match call {
        LibraryCall::Depthwise2d(d) => LibraryCall::Depthwise2d(Depthwise2d {
            x: m(d.x),
            w: m(d.w),
            bias: d.bias.map(m),
            y: m(d.y),
            ..d.clone()
        }),
        LibraryCall::Conv2d(c) => LibraryCall::Conv2d(Conv2d {
            x: m(c.x),
            w: m(c.w),
            bias: c.bias.map(m),
            y: m(c.y),
            ..c.clone()
        }),
        LibraryCall::MaxPool2d(p) => LibraryCall::MaxPool2d(MaxPool2d {
            x: m(p.x),
            y: m(p.y),
            ..p.clone()
        }),
        LibraryCall::ExpRows(e) => LibraryCall::ExpRows(ExpRows {
            x: m(e.x),
            m: m(e.m),
            y: m(e.y),
            ..e.clone()
        }),
    }
}

/// The tail as a clamp of the root's value, if it is one (ReLU, Clip with
/// constant bounds), possibly around a sigmoid, SiLU, GELU or tanh of it:
/// applied to a placeholder value, the tail's statements must store
/// `min(max(f(placeholder), lo), hi)` or one side of it.
type TailAct = (Option<Activation>, f32, f32);

fn tail_act(g: &Group, tail: &Tail, root_t: DType, bufs: &[BufferDecl]) -> Option<TailAct> {
    let mut consts: HashMap<BufId, &Tensor> = HashMap::new();
    for m in &g.members {
        for (k, i) in m.inputs.iter().enumerate() {
            if let (Some(Operand::Param(p)), Some(Some(t))) = (i, m.consts.get(k)) {
                consts.insert(tail.param_buf[*p], *t);
            }
        }
    }
    let lookup = |b: BufId, i: i64| -> Option<f32> {
        let t = consts.get(&b)?;
        let i = usize::try_from(i).ok().filter(|&i| i < t.data.len())?;
        Some(t.data.get_f64(i) as f32)
    };
    let placeholder = VarId::MAX;
    let mut next = placeholder - 1_000_000;
    let stmts = tail
        .apply(
            &Expr::i(0),
            &[],
            Expr::Var(placeholder),
            root_t,
            &mut next,
            bufs,
        )
        .ok()?;
    let (_, _, value) = final_store(&stmts)?;
    let (inner, lo, hi) = peel_clamp(&value, &lookup);
    if lo > hi {
        return None;
    }
    if *inner == Expr::Var(placeholder) {
        return Some((None, lo, hi));
    }
    let (x, f) = peel_activation(inner, &lookup)?;
    (*x == Expr::Var(placeholder)).then_some((Some(f), lo, hi))
}

/// `call` applying `act` last, or `None` when the tail is none of those
/// `tail_act` finds, or a function would follow the call's own clamp.
fn with_act(call: LibraryCall, act: Option<TailAct>) -> Option<LibraryCall> {
    let (func, lo, hi) = act?;
    match call {
        LibraryCall::Depthwise2d(mut d) => {
            then_act(&mut d.act, &mut d.func, (func, lo, hi))?;
            Some(LibraryCall::Depthwise2d(d))
        }
        LibraryCall::Conv2d(mut c) => {
            then_act(&mut c.act, &mut c.func, (func, lo, hi))?;
            Some(LibraryCall::Conv2d(c))
        }
        LibraryCall::MaxPool2d(_) | LibraryCall::ExpRows(_) => None,
    }
}

/// A routine's clamp `act` and function `f` followed by `then`: the
/// function only onto an unclamped, function-free routine (a function
/// after a clamp is no epilogue a routine applies), clamps intersected.
fn then_act(act: &mut (f32, f32), f: &mut Option<Activation>, then: TailAct) -> Option<()> {
    let (func, lo, hi) = then;
    if func.is_some() {
        if *act != (f32::NEG_INFINITY, f32::INFINITY) || f.is_some() {
            return None;
        }
        *f = func;
    }
    *act = (act.0.max(lo), act.1.min(hi));
    Some(())
}

/// Whether, in every block on the way to the output GEMM, stores to `out`
/// come only in statements before the one holding the GEMM (a bias fill of
/// the tile the GEMM then accumulates onto): the epilogue after the GEMM
/// then sees every element's final value.
fn stores_precede_gemm(b: &[Stmt], out: BufId) -> bool {
    let mut seen = false;
    for s in b {
        let mut w = Writes::default();
        scan_writes(std::slice::from_ref(s), out, &mut w);
        if w.matmuls > 0 {
            if seen {
                return false;
            }
            seen = true;
            let ok = match s {
                Stmt::Matmul(_) => true,
                Stmt::For { body, .. } => stores_precede_gemm(body, out),
                _ => false,
            };
            if !ok {
                return false;
            }
        } else if seen && w.stores > 0 {
            return false;
        }
    }
    true
}

/// Adds the epilogue after the output GEMM, which must be the last write to
/// the output: stores to it may only come in earlier top-level statements
/// (bias initialisation that the GEMM accumulates onto).
fn epilogue_kernels(
    kernels: &[Kernel],
    act: Option<TailAct>,
    tail: &Tail,
    root_t: DType,
    next: &mut VarId,
    bufs: &[BufferDecl],
    len: usize,
) -> Result<Vec<Kernel>> {
    let mut seen_gemm = false;
    // Summed over every GEMM: with the output stored by nothing else, each
    // element then gets the epilogue exactly once.
    let mut written = 0;
    let mut res = vec![];
    for k in kernels {
        let mut body = vec![];
        for s in &k.body {
            let mut w = Writes::default();
            scan_writes(std::slice::from_ref(s), tail.out, &mut w);
            if w.matmuls > 0 {
                if w.stores > 0 && !stores_precede_gemm(std::slice::from_ref(s), tail.out) {
                    return Err(gerr(
                        &tail.name,
                        "the output GEMM shares a loop with later stores to the output",
                    ));
                }
                body.extend(add_epilogue(
                    std::slice::from_ref(s),
                    tail,
                    root_t,
                    next,
                    bufs,
                    1,
                    &mut written,
                )?);
                seen_gemm = true;
            } else {
                if seen_gemm && w.stores > 0 {
                    return Err(gerr(&tail.name, "the output is written after its GEMM"));
                }
                body.push(s.clone());
            }
        }
        res.push(Kernel {
            name: k.name.clone(),
            body,
            // The body still stores what the call computes when the tail
            // is an activation the call takes over.
            call: k.call.clone().and_then(|c| with_act(c, act)),
        });
    }
    if written != len as u64 {
        return Err(gerr(
            "",
            format!("the output GEMMs write {written} elements of {len}"),
        ));
    }
    Ok(res)
}

/// Whether every store to `out` sits in a top-level statement that also
/// holds a GEMM, before it (the bias fill of each block): with several GEMMs
/// (runs of blocks of different sizes), a store anywhere else could be an
/// element no GEMM writes, or one written twice.
fn stores_precede_each_gemm(kernels: &[Kernel], out: BufId) -> bool {
    kernels.iter().flat_map(|k| &k.body).all(|s| {
        let mut w = Writes::default();
        scan_writes(std::slice::from_ref(s), out, &mut w);
        w.stores == 0 || (w.matmuls > 0 && stores_precede_gemm(std::slice::from_ref(s), out))
    })
}
