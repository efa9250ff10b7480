//! If, Loop and Scan: subgraphs become nested regions that may use outer values by id.

use super::{GraphKind, Importer, N};
use crate::frontend::FrontendError;
use kiln_ir::{DType, Op, Region, TensorType, ValueId};
use onnx_protobuf::GraphProto;

type Outs = Result<Vec<Option<ValueId>>, FrontendError>;

fn graph<'a>(n: &N<'a>, k: &str) -> Result<&'a GraphProto, FrontendError> {
    n.attr(k)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| n.bad(format!("missing graph attribute {k}")))
}

pub(crate) fn convert(imp: &mut Importer, r: &mut Region, n: &N) -> Outs {
    let ins = super::ops::all_inputs(imp, n)?;
    let n_out = n.n_out();
    let (op, regions) = match n.p.op_type.as_str() {
        "If" => {
            // A constant condition (e.g. a function body testing a known rank)
            // inlines the taken branch, so the other need not be well-typed.
            let cond = ins.first().copied().flatten().and_then(|v| imp.konst(v));
            if let Some(c) = cond.filter(|c| c.data.len() == 1) {
                let k = if c.data.get_f64(0) != 0.0 {
                    "then_branch"
                } else {
                    "else_branch"
                };
                let mut reg = imp.import_graph(graph(n, k)?, GraphKind::Sub)?;
                if reg.results.len() != n_out {
                    return Err(n.shape_err(format!(
                        "{k} returns {} values for {n_out} outputs",
                        reg.results.len()
                    )));
                }
                r.nodes.append(&mut reg.nodes);
                return Ok(reg.results.into_iter().map(Some).collect());
            }
            let then_r = imp.import_graph(graph(n, "then_branch")?, GraphKind::Sub)?;
            let else_r = imp.import_graph(graph(n, "else_branch")?, GraphKind::Sub)?;
            for (b, reg) in [("then", &then_r), ("else", &else_r)] {
                if reg.results.len() != n_out {
                    return Err(n.shape_err(format!(
                        "{b} branch returns {} values for {n_out} outputs",
                        reg.results.len()
                    )));
                }
            }
            (Op::If, vec![then_r, else_r])
        }
        "Loop" => {
            let body = graph(n, "body")?;
            let mut outer = vec![
                Some(TensorType::known(DType::I64, &[])),
                Some(TensorType::known(DType::Bool, &[])),
            ];
            outer.extend(ins.iter().skip(2).map(|v| v.map(|v| imp.ty(v).clone())));
            let reg = imp.import_graph_with(body, GraphKind::Sub, &outer)?;
            let n_carried = ins.len().saturating_sub(2);
            if reg.params.len() != 2 + n_carried || reg.results.len() != 1 + n_out {
                return Err(n.shape_err(format!(
                    "body takes {} and returns {} values; the node has {n_carried} carried values and {n_out} outputs",
                    reg.params.len(),
                    reg.results.len()
                )));
            }
            (Op::Loop, vec![reg])
        }
        _ => {
            if imp.opset < 9 {
                return Err(n.bad("Scan before opset 9 (with sequence_lens) is not supported"));
            }
            let k = n.i("num_scan_inputs", -1);
            if k < 0 || k as usize > ins.len() {
                return Err(n.bad("num_scan_inputs is missing or out of range"));
            }
            let k = k as usize;
            let n_states = ins.len() - k;
            let n_scan_out = n_out.saturating_sub(n_states);
            let flags = |key: &str, len: usize| -> Vec<bool> {
                let v = n.ints(key).unwrap_or_default();
                (0..len)
                    .map(|i| v.get(i).copied().unwrap_or(0) != 0)
                    .collect()
            };
            let axes = |key: &str, len: usize| -> Vec<i64> {
                let v = n.ints(key).unwrap_or_default();
                (0..len).map(|i| v.get(i).copied().unwrap_or(0)).collect()
            };
            let input_axes = axes("scan_input_axes", k);
            let mut outer: Vec<Option<TensorType>> = vec![];
            for (i, v) in ins.iter().enumerate() {
                let Some(v) = v else {
                    return Err(n.bad(format!("input {i} is missing")));
                };
                let mut t = imp.ty(*v).clone();
                if i >= n_states {
                    let a = kiln_ir::infer::norm_axis(input_axes[i - n_states], t.rank())
                        .map_err(|e| n.bad(e.msg))?;
                    t.shape.remove(a);
                }
                outer.push(Some(t));
            }
            let reg = imp.import_graph_with(graph(n, "body")?, GraphKind::Sub, &outer)?;
            let op = Op::Scan {
                num_scan_inputs: k,
                input_directions: flags("scan_input_directions", k),
                output_directions: flags("scan_output_directions", n_scan_out),
                input_axes,
                output_axes: axes("scan_output_axes", n_scan_out),
            };
            (op, vec![reg])
        }
    };
    let outs = imp.add_control(r, &n.name, op, ins, n_out, regions)?;
    Ok(outs.into_iter().map(Some).collect())
}
