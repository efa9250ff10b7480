//! The graph executor behind `kiln run` and constant folding: walks a model's
//! nodes in order, specialises each on the values it is given (so shape inputs
//! become constants), lowers it to kernel IR and runs it on the reference
//! interpreter. Control flow (If, Loop, Scan) is driven here, running the
//! nested regions' nodes the same way.

use crate::lower::{lower, LowerCtx};
use kiln_ir::graph::{Model, Node, Op, Region, ValueId};
use kiln_ir::infer::{infer_types, specialize::specialize};
use kiln_ir::kernel::interp::run_program;
use kiln_ir::{DType, Storage, Tensor, TensorType};
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExecError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Input(String),
}

fn node_err(n: &Node, msg: impl Into<String>) -> ExecError {
    ExecError::Node {
        node: n.name.clone(),
        op: n.op.name(),
        msg: msg.into(),
    }
}

/// The largest tensor the executor allocates: beyond it, a malformed model
/// gets an error instead of exhausting memory.
const MAX_TENSOR_BYTES: usize = 16 << 30;

/// Values known so far, by id.
pub type Env = HashMap<ValueId, Tensor>;

/// Runs `model` on `inputs` (graph-input order) and returns the graph outputs.
/// Inputs are checked against the declared dtypes and known dims.
pub fn run_model(model: &Model, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ExecError> {
    let params = model.inputs();
    if inputs.len() != params.len() {
        return Err(ExecError::Input(format!(
            "model has {} inputs, {} given",
            params.len(),
            inputs.len()
        )));
    }
    let mut env: Env = HashMap::new();
    for (&p, t) in params.iter().zip(inputs) {
        check_input(model, p, &t)?;
        env.insert(p, t);
    }
    let results = run_region(model, &model.body, &mut env, &[])?;
    Ok(results)
}

/// Checks one input tensor against its declared type.
pub fn check_input(model: &Model, p: ValueId, t: &Tensor) -> Result<(), ExecError> {
    let info = model.value(p);
    if t.dtype() != info.ty.dtype {
        return Err(ExecError::Input(format!(
            "input '{}' must be {}, got {}",
            info.name,
            info.ty.dtype,
            t.dtype()
        )));
    }
    let dims_ok = info.ty.rank() == t.shape.len()
        && info
            .ty
            .shape
            .iter()
            .zip(&t.shape)
            .all(|(d, &n)| d.known().is_none_or(|k| k == n));
    if !dims_ok {
        return Err(ExecError::Input(format!(
            "input '{}' must have shape {}, got {:?}",
            info.name, info.ty, t.shape
        )));
    }
    Ok(())
}

fn get<'e>(model: &'e Model, env: &'e Env, v: ValueId) -> Option<&'e Tensor> {
    env.get(&v).or_else(|| model.consts.get(&v))
}

/// Runs a region with `args` bound to its params; returns its results.
pub fn run_region(
    model: &Model,
    r: &Region,
    env: &mut Env,
    args: &[Tensor],
) -> Result<Vec<Tensor>, ExecError> {
    for (&p, a) in r.params.iter().zip(args) {
        env.insert(p, a.clone());
    }
    for n in &r.nodes {
        let outs = run_node(model, n, env)?;
        for (&o, t) in n.outputs.iter().zip(outs) {
            env.insert(o, t);
        }
    }
    r.results
        .iter()
        .map(|&v| {
            get(model, env, v).cloned().ok_or_else(|| {
                ExecError::Input(format!(
                    "result '{}' was never computed",
                    model.value(v).name
                ))
            })
        })
        .collect()
}

/// A fused group means exactly what its body means: run the members in turn.
fn run_fused(
    model: &Model,
    n: &Node,
    env: &mut Env,
    vals: Vec<Option<Tensor>>,
) -> Result<Vec<Tensor>, ExecError> {
    let [body] = n.regions.as_slice() else {
        return Err(node_err(n, "a fused node needs one body region"));
    };
    let args = vals
        .into_iter()
        .map(|v| v.ok_or_else(|| node_err(n, "a fused node has no omitted inputs")))
        .collect::<Result<Vec<_>, _>>()?;
    if args.len() != body.params.len() {
        return Err(node_err(n, "inputs and body parameters differ in number"));
    }
    run_region(model, body, env, &args)
}

/// Runs one node on the values in `env`.
pub fn run_node(model: &Model, n: &Node, env: &mut Env) -> Result<Vec<Tensor>, ExecError> {
    let mut vals: Vec<Option<Tensor>> = Vec::with_capacity(n.inputs.len());
    for i in &n.inputs {
        vals.push(match i {
            Some(v) => Some(get(model, env, *v).cloned().ok_or_else(|| {
                node_err(n, format!("input '{}' has no value", model.value(*v).name))
            })?),
            None => None,
        });
    }
    match &n.op {
        Op::If => run_if(model, n, env, &vals),
        Op::Loop => run_loop(model, n, env, &vals),
        Op::Scan { .. } => run_scan(model, n, env, &vals),
        Op::Fused => run_fused(model, n, env, vals),
        _ => {
            let refs: Vec<Option<&Tensor>> = vals.iter().map(|v| v.as_ref()).collect();
            eval_op(&n.name, &n.op, &refs, n.outputs.len()).map_err(|m| node_err(n, m))
        }
    }
}

/// Evaluates a non-control-flow op on concrete values: specialise, infer, lower, interpret.
pub fn eval_op(
    name: &str,
    op: &Op,
    vals: &[Option<&Tensor>],
    num_outputs: usize,
) -> Result<Vec<Tensor>, String> {
    let types: Vec<Option<TensorType>> = vals
        .iter()
        .map(|v| v.map(|t| TensorType::known(t.dtype(), &t.shape)))
        .collect();
    let (op, keep) = match specialize(op, &types, vals).map_err(|e| e.msg)? {
        Some((op, keep)) => (op, Some(keep)),
        None => (op.clone(), None),
    };
    let (types, vals): (Vec<Option<TensorType>>, Vec<Option<&Tensor>>) = match &keep {
        Some(k) => (
            k.iter().map(|&i| types.get(i).cloned().flatten()).collect(),
            k.iter().map(|&i| vals.get(i).copied().flatten()).collect(),
        ),
        None => (types, vals.to_vec()),
    };
    let outs = infer_types(&op, &types, &vals, num_outputs, &[]).map_err(|e| e.msg)?;
    let outs: Vec<TensorType> = outs.into_iter().take(num_outputs).collect();
    for t in &outs {
        if t.dims().is_none() {
            return Err(format!(
                "output shape {t} could not be determined from the given values"
            ));
        }
        if t.byte_size().is_none_or(|b| b > MAX_TENSOR_BYTES) {
            return Err(format!(
                "output {t} is larger than the {} GiB kiln allocates for one tensor",
                MAX_TENSOR_BYTES >> 30
            ));
        }
    }
    let cx = LowerCtx {
        node: name,
        op: &op,
        inputs: &types,
        outputs: &outs,
        consts: &vals,
    };
    let prog = lower(&cx).map_err(|e| e.msg)?;
    let storages: Vec<Option<&Storage>> = vals.iter().map(|v| v.map(|t| &t.data)).collect();
    let data = run_program(&prog, &storages).map_err(|e| e.to_string())?;
    if data.len() != outs.len() {
        return Err(format!(
            "lowering produced {} outputs, expected {}",
            data.len(),
            outs.len()
        ));
    }
    Ok(outs
        .iter()
        .zip(data)
        .map(|(t, d)| Tensor {
            shape: t.dims().unwrap_or_default(),
            data: d,
        })
        .collect())
}

/// Evaluates an op whose result depends only on its inputs' types (Shape,
/// Size): lowered and interpreted like any op, with no input data.
pub fn eval_from_types(
    name: &str,
    op: &Op,
    types: &[Option<TensorType>],
) -> Result<Vec<Tensor>, String> {
    let outs = infer_types(op, types, &[], 1, &[]).map_err(|e| e.msg)?;
    let outs: Vec<TensorType> = outs.into_iter().take(1).collect();
    let dims = outs[0].dims().ok_or("output shape is not static")?;
    let cx = LowerCtx {
        node: name,
        op,
        inputs: types,
        outputs: &outs,
        consts: &[],
    };
    let prog = lower(&cx).map_err(|e| e.msg)?;
    let data = run_program(&prog, &[]).map_err(|e| e.to_string())?;
    let data = data.into_iter().next().ok_or("no output")?;
    Ok(vec![Tensor { shape: dims, data }])
}

fn scalar_bool(t: &Tensor) -> Result<bool, String> {
    if t.is_empty() {
        return Err("condition is empty".into());
    }
    Ok(t.data.get_f64(0) != 0.0)
}

fn run_if(
    model: &Model,
    n: &Node,
    env: &mut Env,
    vals: &[Option<Tensor>],
) -> Result<Vec<Tensor>, ExecError> {
    let c = vals
        .first()
        .cloned()
        .flatten()
        .ok_or_else(|| node_err(n, "missing condition"))?;
    let branch = if scalar_bool(&c).map_err(|m| node_err(n, m))? {
        0
    } else {
        1
    };
    let r = n
        .regions
        .get(branch)
        .ok_or_else(|| node_err(n, "missing branch region"))?;
    run_region(model, r, env, &[])
}

fn run_loop(
    model: &Model,
    n: &Node,
    env: &mut Env,
    vals: &[Option<Tensor>],
) -> Result<Vec<Tensor>, ExecError> {
    let body = n
        .regions
        .first()
        .ok_or_else(|| node_err(n, "missing body"))?;
    let max_trip = match vals.first().cloned().flatten() {
        Some(t) if !t.is_empty() => Some(t.data.get_i64(0)),
        _ => None,
    };
    let mut cond = match vals.get(1).cloned().flatten() {
        Some(t) => scalar_bool(&t).map_err(|m| node_err(n, m))?,
        None => true,
    };
    let mut carried: Vec<Tensor> = vals[2..]
        .iter()
        .map(|v| {
            v.clone()
                .ok_or_else(|| node_err(n, "missing carried value"))
        })
        .collect::<Result<_, _>>()?;
    let n_carried = carried.len();
    let mut scans: Vec<Vec<Tensor>> = vec![];
    let mut i: i64 = 0;
    const LIMIT: i64 = 10_000_000;
    while cond && max_trip.is_none_or(|m| i < m) {
        if i >= LIMIT {
            return Err(node_err(
                n,
                format!("loop ran {LIMIT} iterations without terminating"),
            ));
        }
        let mut args = vec![
            Tensor::from_i64(vec![], vec![i]),
            Tensor {
                shape: vec![],
                data: Storage::Bool(vec![cond]),
            },
        ];
        args.extend(carried.iter().cloned());
        let outs = run_region(model, body, env, &args)?;
        if outs.len() < 1 + n_carried {
            return Err(node_err(n, "loop body returned too few values"));
        }
        cond = scalar_bool(&outs[0]).map_err(|m| node_err(n, m))?;
        carried = outs[1..1 + n_carried].to_vec();
        let s = &outs[1 + n_carried..];
        if scans.is_empty() {
            scans = vec![vec![]; s.len()];
        }
        for (acc, t) in scans.iter_mut().zip(s) {
            acc.push(t.clone());
        }
        i += 1;
    }
    let n_scan = n.outputs.len().saturating_sub(n_carried);
    let mut out = carried;
    for k in 0..n_scan {
        let parts = scans.get(k).cloned().unwrap_or_default();
        let ty = model.ty(n.outputs[n_carried + k]);
        out.push(stack(&parts, ty).map_err(|m| node_err(n, m))?);
    }
    Ok(out)
}

/// Stacks equal-shaped tensors along a new leading axis.
pub fn stack(parts: &[Tensor], ty: &TensorType) -> Result<Tensor, String> {
    let Some(first) = parts.first() else {
        let mut shape = vec![0];
        shape.extend(ty.shape.iter().skip(1).map(|d| d.known().unwrap_or(0)));
        return Ok(Tensor::zeros(ty.dtype, shape));
    };
    let mut bytes = Vec::new();
    for p in parts {
        if p.shape != first.shape {
            return Err(format!(
                "scan outputs change shape across iterations: {:?} vs {:?}",
                p.shape, first.shape
            ));
        }
        bytes.extend(p.data.to_le_bytes());
    }
    let mut shape = vec![parts.len()];
    shape.extend(&first.shape);
    let data = Storage::from_le_bytes(first.dtype(), &bytes).ok_or("stack: bad bytes")?;
    Ok(Tensor { shape, data })
}

/// Slice `i` of `t` along `axis`, removing the axis.
pub fn take_axis(t: &Tensor, axis: usize, i: usize) -> Tensor {
    let outer: usize = t.shape[..axis].iter().product();
    let n = t.shape[axis];
    let inner: usize = t.shape[axis + 1..].iter().product();
    let es = t.dtype().size();
    let bytes = t.data.to_le_bytes();
    let mut out = Vec::with_capacity(outer * inner * es);
    for o in 0..outer {
        let start = ((o * n + i) * inner) * es;
        out.extend_from_slice(&bytes[start..start + inner * es]);
    }
    let mut shape = t.shape.clone();
    shape.remove(axis);
    Tensor {
        shape,
        data: Storage::from_le_bytes(t.dtype(), &out).unwrap_or(Storage::zeros(t.dtype(), 0)),
    }
}

/// Moves axis 0 of `t` to position `axis`.
fn move_leading_axis(t: Tensor, axis: usize) -> Tensor {
    if axis == 0 {
        return t;
    }
    let parts: Vec<Tensor> = (0..t.shape[0]).map(|i| take_axis(&t, 0, i)).collect();
    let mut shape = t.shape[1..].to_vec();
    shape.insert(axis, t.shape[0]);
    let inner_shape = &parts[0].shape;
    let outer: usize = inner_shape[..axis].iter().product();
    let inner: usize = inner_shape[axis..].iter().product();
    let es = t.dtype().size();
    let bytes: Vec<Vec<u8>> = parts.iter().map(|p| p.data.to_le_bytes()).collect();
    let mut out = Vec::new();
    for o in 0..outer {
        for b in &bytes {
            out.extend_from_slice(&b[o * inner * es..(o + 1) * inner * es]);
        }
    }
    Tensor {
        shape,
        data: Storage::from_le_bytes(t.dtype(), &out).unwrap_or(Storage::zeros(t.dtype(), 0)),
    }
}

fn run_scan(
    model: &Model,
    n: &Node,
    env: &mut Env,
    vals: &[Option<Tensor>],
) -> Result<Vec<Tensor>, ExecError> {
    let Op::Scan {
        num_scan_inputs,
        input_directions,
        output_directions,
        input_axes,
        output_axes,
    } = &n.op
    else {
        unreachable!()
    };
    let body = n
        .regions
        .first()
        .ok_or_else(|| node_err(n, "missing body"))?;
    let vals: Vec<Tensor> = vals
        .iter()
        .map(|v| v.clone().ok_or_else(|| node_err(n, "missing input")))
        .collect::<Result<_, _>>()?;
    let n_states = vals.len() - num_scan_inputs;
    let mut states: Vec<Tensor> = vals[..n_states].to_vec();
    let scan_in = &vals[n_states..];
    let norm = |a: i64, r: usize| {
        if a < 0 {
            (a + r as i64) as usize
        } else {
            a as usize
        }
    };
    let axes: Vec<usize> = (0..scan_in.len())
        .map(|j| {
            norm(
                input_axes.get(j).copied().unwrap_or(0),
                scan_in[j].shape.len(),
            )
        })
        .collect();
    let len = scan_in.first().map(|t| t.shape[axes[0]]).unwrap_or(0);
    let mut scans: Vec<Vec<Tensor>> = vec![];
    for it in 0..len {
        let mut args = states.clone();
        for (j, t) in scan_in.iter().enumerate() {
            let rev = input_directions.get(j).copied().unwrap_or(false);
            args.push(take_axis(t, axes[j], if rev { len - 1 - it } else { it }));
        }
        let outs = run_region(model, body, env, &args)?;
        states = outs[..n_states].to_vec();
        if scans.is_empty() {
            scans = vec![vec![]; outs.len() - n_states];
        }
        for (acc, t) in scans.iter_mut().zip(&outs[n_states..]) {
            acc.push(t.clone());
        }
    }
    let mut out = states;
    for (k, mut parts) in scans.into_iter().enumerate() {
        if output_directions.get(k).copied().unwrap_or(false) {
            parts.reverse();
        }
        let ty = model.ty(n.outputs[n_states + k]);
        let stacked =
            stack(&parts, &TensorType::new(ty.dtype, vec![])).map_err(|m| node_err(n, m))?;
        let r = stacked.shape.len();
        out.push(move_leading_axis(
            stacked,
            norm(output_axes.get(k).copied().unwrap_or(0), r),
        ));
    }
    Ok(out)
}

/// A bool scalar tensor.
pub fn bool_scalar(b: bool) -> Tensor {
    Tensor {
        shape: vec![],
        data: Storage::Bool(vec![b]),
    }
}

#[allow(dead_code)]
fn _dtype_used(_: DType) {}
