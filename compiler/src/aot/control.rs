//! Control flow compiled ahead of time: an ONNX `If` or `Loop` node becomes
//! one kernel program. Each node of its regions is lowered as usual and its
//! kernels are inlined under a [`Stmt::If`] or a [`Stmt::While`], with every
//! region value in a scratch buffer of the composed program. So renderers see
//! nothing new beyond the `While` statement, and no op is restated here.
//!
//! `Scan` has a static trip count (its scan axis), so it becomes a counted
//! loop that copies each iteration's slices in and out.
//!
//! Limits (errors, not wrong answers): every region value must have a static
//! shape, `If` branches must give results of identical types, and a `Loop` may
//! not have scan outputs (their length depends on the trip count).

use super::{lower_node, AotError, Lowered};
use kiln_ir::kernel::{BufId, BufferDecl, BufferRole, Expr, KernelProgram, MatView, Stmt, VarId};
use kiln_ir::{DType, Model, Node, Op, Region, ValueId};
use std::collections::HashMap;

/// A composed program under construction: its buffers, the value each buffer
/// holds, and the next free loop variable.
struct Composer<'m> {
    m: &'m Model,
    node: &'m Node,
    buffers: Vec<BufferDecl>,
    /// Program input `i` takes this value.
    inputs: Vec<Option<ValueId>>,
    /// Which buffer holds each value seen so far.
    holds: HashMap<ValueId, BufId>,
    next_var: VarId,
}

impl<'m> Composer<'m> {
    fn err(&self, msg: impl Into<String>) -> AotError {
        AotError::Node {
            node: self.node.name.clone(),
            op: self.node.op.name(),
            msg: msg.into(),
        }
    }

    fn len_of(&self, v: ValueId) -> Result<(DType, usize), AotError> {
        let info = self.m.value(v);
        let dims = info.ty.dims().ok_or_else(|| {
            self.err(format!(
                "value '{}' has symbolic shape {} inside a region",
                info.name, info.ty
            ))
        })?;
        Ok((info.ty.dtype, dims.iter().product()))
    }

    fn push(&mut self, name: &str, dtype: DType, len: usize, role: BufferRole) -> BufId {
        self.buffers.push(BufferDecl {
            name: name.into(),
            dtype,
            len,
            role,
            written_first: false,
        });
        (self.buffers.len() - 1) as BufId
    }

    fn scratch(&mut self, name: &str, dtype: DType, len: usize) -> BufId {
        self.push(name, dtype, len, BufferRole::Scratch)
    }

    /// The buffer holding `v`; a value defined outside the node (a capture or
    /// a weight) becomes a new program input the first time it is read.
    fn buffer_of(&mut self, v: ValueId) -> Result<BufId, AotError> {
        if let Some(&b) = self.holds.get(&v) {
            return Ok(b);
        }
        let (dt, len) = self.len_of(v)?;
        let name = self.m.value(v).name.clone();
        let b = self.push(&name, dt, len, BufferRole::Input(self.inputs.len()));
        self.inputs.push(Some(v));
        self.holds.insert(v, b);
        Ok(b)
    }

    fn var(&mut self) -> VarId {
        self.next_var += 1;
        self.next_var - 1
    }

    /// `dst[i] = src[i]` for every element.
    fn copy(&mut self, dst: BufId, src: BufId) -> Stmt {
        let v = self.var();
        let len = self.buffers[dst as usize].len as u64;
        Stmt::For {
            var: v,
            extent: len,
            body: vec![Stmt::Store {
                buf: dst,
                index: Expr::Var(v),
                value: Expr::load(src, Expr::Var(v)),
            }],
        }
    }

    /// Zeroes `b`, as a renderer does before a step runs.
    fn zero(&mut self, b: BufId) -> Stmt {
        let v = self.var();
        let d = &self.buffers[b as usize];
        Stmt::For {
            var: v,
            extent: d.len as u64,
            body: vec![Stmt::Store {
                buf: b,
                index: Expr::Var(v),
                value: Expr::constant(d.dtype, 0.0),
            }],
        }
    }

    /// Inlines every node of `r` (params already bound in `holds`).
    fn region(&mut self, r: &Region) -> Result<Vec<Stmt>, AotError> {
        let mut out = vec![];
        for n in &r.nodes {
            let Lowered { program, inputs } = lower_node(self.m, n)?;
            let mut map: Vec<BufId> = Vec::with_capacity(program.buffers.len());
            for d in &program.buffers {
                let b = match d.role {
                    BufferRole::Input(i) => {
                        let v = inputs.get(i).copied().flatten().ok_or_else(|| {
                            self.err(format!("node '{}': program input {i} has no value", n.name))
                        })?;
                        self.buffer_of(v)?
                    }
                    BufferRole::Output(k) => {
                        let v = *n.outputs.get(k).ok_or_else(|| {
                            self.err(format!(
                                "node '{}': program output {k} has no value",
                                n.name
                            ))
                        })?;
                        let b = self.scratch(&self.m.value(v).name.clone(), d.dtype, d.len);
                        self.holds.insert(v, b);
                        b
                    }
                    BufferRole::Scratch => self.scratch(&d.name, d.dtype, d.len),
                };
                map.push(b);
            }
            for (d, &b) in program.buffers.iter().zip(&map) {
                if !matches!(d.role, BufferRole::Input(_)) {
                    let z = self.zero(b);
                    out.push(z);
                }
            }
            for k in &program.kernels {
                let base = self.next_var;
                let mut top = 0;
                for s in &k.body {
                    out.push(remap_stmt(s, &map, base, &mut top));
                }
                self.next_var = base + top + 1;
            }
        }
        Ok(out)
    }
}

/// Renumbers buffers through `map` and variables by `+base`; `top` tracks the largest variable seen.
fn remap_stmt(s: &Stmt, map: &[BufId], base: VarId, top: &mut VarId) -> Stmt {
    let e = |x: &Expr, top: &mut VarId| remap_expr(x, map, base, top);
    let blk = |b: &[Stmt], top: &mut VarId| -> Vec<Stmt> {
        b.iter().map(|s| remap_stmt(s, map, base, top)).collect()
    };
    let v = |x: VarId, top: &mut VarId| {
        *top = (*top).max(x);
        x + base
    };
    match s {
        Stmt::For { var, extent, body } => Stmt::For {
            var: v(*var, top),
            extent: *extent,
            body: blk(body, top),
        },
        Stmt::Let { var, value } => Stmt::Let {
            var: v(*var, top),
            value: e(value, top),
        },
        Stmt::Store { buf, index, value } => Stmt::Store {
            buf: map[*buf as usize],
            index: e(index, top),
            value: e(value, top),
        },
        Stmt::If {
            cond,
            then_body,
            else_body,
        } => Stmt::If {
            cond: e(cond, top),
            then_body: blk(then_body, top),
            else_body: blk(else_body, top),
        },
        Stmt::While { cond, body } => Stmt::While {
            cond: e(cond, top),
            body: blk(body, top),
        },
        Stmt::Matmul(mm) => {
            let view = |w: &MatView, top: &mut VarId| MatView {
                buf: map[w.buf as usize],
                offset: remap_expr(&w.offset, map, base, top),
                row_stride: w.row_stride,
                col_stride: w.col_stride,
            };
            let mut mm2 = mm.clone();
            mm2.a = view(&mm.a, top);
            mm2.b = view(&mm.b, top);
            mm2.c = view(&mm.c, top);
            Stmt::Matmul(mm2)
        }
    }
}

fn remap_expr(x: &Expr, map: &[BufId], base: VarId, top: &mut VarId) -> Expr {
    let mut r = |y: &Expr| Box::new(remap_expr(y, map, base, top));
    match x {
        Expr::Var(v) => {
            *top = (*top).max(*v);
            Expr::Var(v + base)
        }
        Expr::Load { buf, index } => Expr::Load {
            buf: map[*buf as usize],
            index: r(index),
        },
        Expr::Unary(op, a) => Expr::Unary(*op, r(a)),
        Expr::Binary(op, a, b) => {
            let a = r(a);
            Expr::Binary(*op, a, r(b))
        }
        Expr::Select(c, a, b) => {
            let c = r(c);
            let a = r(a);
            Expr::Select(c, a, r(b))
        }
        Expr::Cast(t, a) => Expr::Cast(*t, r(a)),
        Expr::Reduce {
            op,
            var,
            extent,
            body,
        } => {
            let body = r(body);
            *top = (*top).max(*var);
            Expr::Reduce {
                op: *op,
                var: var + base,
                extent: *extent,
                body,
            }
        }
        c => c.clone(),
    }
}

/// Lowers an `If` or `Loop` node to one program whose inputs are the node's
/// present inputs followed by the outer values its regions read.
pub(super) fn lower_control(m: &Model, n: &Node) -> Result<Lowered, AotError> {
    let mut c = Composer {
        m,
        node: n,
        buffers: vec![],
        inputs: vec![],
        holds: HashMap::new(),
        next_var: 0,
    };
    for v in n.inputs.iter().flatten() {
        c.buffer_of(*v)?;
    }
    let mut outs = vec![];
    for (k, &v) in n.outputs.iter().enumerate() {
        let (dt, len) = c.len_of(v)?;
        outs.push(c.push(&m.value(v).name.clone(), dt, len, BufferRole::Output(k)));
    }
    let body = match &n.op {
        Op::If => lower_if(&mut c, n, &outs)?,
        Op::Loop => lower_loop(&mut c, n, &outs)?,
        Op::Scan { .. } => lower_scan(&mut c, n, &outs)?,
        op => return Err(c.err(format!("{} cannot be compiled ahead of time", op.name()))),
    };
    Ok(Lowered {
        program: KernelProgram {
            buffers: c.buffers,
            kernels: vec![kiln_ir::kernel::Kernel {
                name: n.op.name(),
                body,
                call: None,
            }],
        },
        inputs: c.inputs,
    })
}

/// Copies region results into `dst` buffers.
fn results_into(
    c: &mut Composer,
    results: &[ValueId],
    dst: &[BufId],
) -> Result<Vec<Stmt>, AotError> {
    let mut out = vec![];
    for (&v, &d) in results.iter().zip(dst) {
        let src = c.buffer_of(v)?;
        let (sd, dd) = (&c.buffers[src as usize], &c.buffers[d as usize]);
        if sd.dtype != dd.dtype || sd.len != dd.len {
            return Err(c.err(format!(
                "region result '{}' is {} x{}, the node's output slot is {} x{}",
                m_name(c.m, v),
                sd.dtype,
                sd.len,
                dd.dtype,
                dd.len
            )));
        }
        out.push(c.copy(d, src));
    }
    Ok(out)
}

fn m_name(m: &Model, v: ValueId) -> String {
    m.value(v).name.clone()
}

fn lower_if(c: &mut Composer, n: &Node, outs: &[BufId]) -> Result<Vec<Stmt>, AotError> {
    let [then_r, else_r] = n.regions.as_slice() else {
        return Err(c.err("If needs a then and an else region"));
    };
    let cond = n
        .inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| c.err("If without a condition"))?;
    let cb = c.buffer_of(cond)?;
    let mut then_body = c.region(then_r)?;
    then_body.extend(results_into(c, &then_r.results, outs)?);
    let mut else_body = c.region(else_r)?;
    else_body.extend(results_into(c, &else_r.results, outs)?);
    let cond_expr = Expr::load(cb, Expr::i(0)).cast(DType::Bool);
    Ok(vec![Stmt::If {
        cond: cond_expr,
        then_body,
        else_body,
    }])
}

fn lower_loop(c: &mut Composer, n: &Node, outs: &[BufId]) -> Result<Vec<Stmt>, AotError> {
    let [body_r] = n.regions.as_slice() else {
        return Err(c.err("Loop needs one body region"));
    };
    let carried = n.inputs.len().saturating_sub(2);
    if n.outputs.len() != carried || body_r.results.len() != carried + 1 {
        return Err(c.err(
            "Loop scan outputs cannot be compiled ahead of time (their length depends on the trip count)",
        ));
    }
    if body_r.params.len() != carried + 2 {
        return Err(c.err("Loop body must take (iteration, condition, carried..)"));
    }
    let max_trip = n.inputs.first().copied().flatten();
    let cond_in = n.inputs.get(1).copied().flatten();
    let it = c.scratch("loop_iteration", DType::I64, 1);
    let cv = c.scratch("loop_condition", DType::Bool, 1);
    let mut pre = vec![Stmt::Store {
        buf: it,
        index: Expr::i(0),
        value: Expr::i(0),
    }];
    pre.push(Stmt::Store {
        buf: cv,
        index: Expr::i(0),
        value: match cond_in {
            Some(v) => {
                let b = c.buffer_of(v)?;
                Expr::load(b, Expr::i(0)).cast(DType::Bool)
            }
            None => Expr::B(true),
        },
    });
    let mut state = vec![];
    let mut temps = vec![];
    for j in 0..carried {
        let v =
            n.inputs[2 + j].ok_or_else(|| c.err(format!("Loop carried input {j} is absent")))?;
        let (dt, len) = c.len_of(v)?;
        let s = c.scratch(&format!("loop_state_{j}"), dt, len);
        let src = c.buffer_of(v)?;
        pre.push(c.copy(s, src));
        state.push(s);
        temps.push(c.scratch(&format!("loop_next_{j}"), dt, len));
    }
    c.holds.insert(body_r.params[0], it);
    c.holds.insert(body_r.params[1], cv);
    for (&p, &s) in body_r.params[2..].iter().zip(&state) {
        c.holds.insert(p, s);
    }
    let mut body = c.region(body_r)?;
    // Results go to temporaries first: a result may be another carried value's param.
    let cond_next = c.scratch("loop_next_condition", DType::Bool, 1);
    let mut dst = vec![cond_next];
    dst.extend(&temps);
    body.extend(results_into(c, &body_r.results, &dst)?);
    body.push(c.copy(cv, cond_next));
    for j in 0..carried {
        let s = c.copy(state[j], temps[j]);
        body.push(s);
    }
    body.push(Stmt::Store {
        buf: it,
        index: Expr::i(0),
        value: Expr::load(it, Expr::i(0)) + Expr::i(1),
    });
    let mut cond = Expr::load(cv, Expr::i(0));
    if let Some(mt) = max_trip {
        let b = c.buffer_of(mt)?;
        let below = Expr::load(it, Expr::i(0)).lt(Expr::load(b, Expr::i(0)).cast(DType::I64));
        cond = below.and(cond);
    }
    pre.push(Stmt::While { cond, body });
    for j in 0..carried {
        let s = c.copy(outs[j], state[j]);
        pre.push(s);
    }
    Ok(pre)
}

/// `dst[o, i] = src[o, pos, i]` (`take`) or `dst[o, pos, i] = src[o, i]` (`put`)
/// over `outer × inner` elements, with `len` the size of the sliced axis.
fn slice_copy(
    c: &mut Composer,
    dst: BufId,
    src: BufId,
    (outer, len, inner): (usize, usize, usize),
    pos: Expr,
    take: bool,
) -> Stmt {
    let (o, i) = (c.var(), c.var());
    let flat = Expr::Var(o) * Expr::i(inner as i64) + Expr::Var(i);
    let sliced = (Expr::Var(o) * Expr::i(len as i64) + pos) * Expr::i(inner as i64) + Expr::Var(i);
    let (di, si) = if take { (flat, sliced) } else { (sliced, flat) };
    Stmt::For {
        var: o,
        extent: outer as u64,
        body: vec![Stmt::For {
            var: i,
            extent: inner as u64,
            body: vec![Stmt::Store {
                buf: dst,
                index: di,
                value: Expr::load(src, si),
            }],
        }],
    }
}

fn norm_axis(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64).max(0) as usize
    } else {
        a as usize
    }
}

fn lower_scan(c: &mut Composer, n: &Node, outs: &[BufId]) -> Result<Vec<Stmt>, AotError> {
    let Op::Scan {
        num_scan_inputs,
        input_directions,
        output_directions,
        input_axes,
        output_axes,
    } = &n.op
    else {
        return Err(c.err("not a Scan"));
    };
    let [body_r] = n.regions.as_slice() else {
        return Err(c.err("Scan needs one body region"));
    };
    let ins: Vec<ValueId> = n.inputs.iter().flatten().copied().collect();
    if ins.len() != n.inputs.len() || *num_scan_inputs > ins.len() {
        return Err(c.err("Scan inputs cannot be absent"));
    }
    let n_states = ins.len() - num_scan_inputs;
    if body_r.params.len() != ins.len() || body_r.results.len() != n.outputs.len() {
        return Err(c.err("Scan body does not match the node's inputs and outputs"));
    }
    let mut pre = vec![];
    let mut state = vec![];
    let mut temps = vec![];
    for (j, &v) in ins[..n_states].iter().enumerate() {
        let (dt, len) = c.len_of(v)?;
        let s = c.scratch(&format!("scan_state_{j}"), dt, len);
        let src = c.buffer_of(v)?;
        pre.push(c.copy(s, src));
        state.push(s);
        temps.push(c.scratch(&format!("scan_next_{j}"), dt, len));
        c.holds.insert(body_r.params[j], s);
    }
    // Trip count: the scan axis of the first scan input.
    let mut trip = None;
    let mut takes = vec![];
    for (j, &v) in ins[n_states..].iter().enumerate() {
        let dims =
            c.m.ty(v)
                .dims()
                .ok_or_else(|| c.err("Scan input with a symbolic shape"))?;
        let a = norm_axis(input_axes.get(j).copied().unwrap_or(0), dims.len());
        let len = *dims
            .get(a)
            .ok_or_else(|| c.err("Scan input axis out of range"))?;
        if *trip.get_or_insert(len) != len {
            return Err(c.err("Scan inputs disagree on the number of iterations"));
        }
        let outer: usize = dims[..a].iter().product();
        let inner: usize = dims[a + 1..].iter().product();
        let (dt, _) = c.len_of(v)?;
        let e = c.scratch(&format!("scan_in_{j}"), dt, outer * inner);
        c.holds.insert(body_r.params[n_states + j], e);
        let src = c.buffer_of(v)?;
        let rev = input_directions.get(j).copied().unwrap_or(false);
        takes.push((e, src, (outer, len, inner), rev));
    }
    let trip = trip.ok_or_else(|| c.err("Scan without scan inputs"))?;
    let it = c.var();
    let pos = |rev: bool| {
        if rev {
            Expr::i(trip as i64 - 1) - Expr::Var(it)
        } else {
            Expr::Var(it)
        }
    };
    let mut body = vec![];
    for (e, src, shape, rev) in takes {
        let s = slice_copy(c, e, src, shape, pos(rev), true);
        body.push(s);
    }
    body.extend(c.region(body_r)?);
    body.extend(results_into(c, &body_r.results[..n_states], &temps)?);
    for (k, &r) in body_r.results[n_states..].iter().enumerate() {
        let rb = c.buffer_of(r)?;
        let dims =
            c.m.ty(r)
                .dims()
                .ok_or_else(|| c.err("Scan output with a symbolic shape"))?;
        let b = norm_axis(output_axes.get(k).copied().unwrap_or(0), dims.len() + 1);
        if b > dims.len() {
            return Err(c.err("Scan output axis out of range"));
        }
        let outer: usize = dims[..b].iter().product();
        let inner: usize = dims[b..].iter().product();
        let out = outs[n_states + k];
        if c.buffers[out as usize].len != outer * trip * inner {
            return Err(c.err(format!("Scan output {k} does not hold {trip} iterations")));
        }
        let rev = output_directions.get(k).copied().unwrap_or(false);
        let s = slice_copy(c, out, rb, (outer, trip, inner), pos(rev), false);
        body.push(s);
    }
    for j in 0..n_states {
        let s = c.copy(state[j], temps[j]);
        body.push(s);
    }
    pre.push(Stmt::For {
        var: it,
        extent: trip as u64,
        body,
    });
    for j in 0..n_states {
        let s = c.copy(outs[j], state[j]);
        pre.push(s);
    }
    Ok(pre)
}
