//! The ONNX frontend: a `ModelProto` becomes a typed kiln graph.
//!
//! Opset differences are resolved here (attribute vs. input, changed defaults,
//! legacy semantics) so that the rest of kiln sees one normalised op set.
//! Every node is added through the graph builder, which infers its output
//! types; shape-determining inputs that are constants are specialised into
//! the op's attributes as nodes are added.

mod composite;
mod control;
mod data;
mod decomp;
mod emit;
mod nn;
mod ops;
mod quant;
mod rnn;
mod signal;
mod tensor;
#[cfg(test)]
mod tests;

use super::{FrontendError, UnsupportedOp};
use crate::exec::eval_op;
use kiln_ir::graph::builder::Builder;
use kiln_ir::infer::specialize::specialize;
use kiln_ir::{DType, Dim, Model, Op, Region, Tensor, TensorType, ValueId};
use onnx_protobuf::{AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto};
use protobuf::Message;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use tensor::tensor_from_proto;

/// Reads an ONNX file; external data is resolved relative to its directory.
pub fn load_onnx(path: &Path) -> Result<Model, FrontendError> {
    let bytes = std::fs::read(path).map_err(|e| FrontendError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let dir = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    let mut m = load_onnx_bytes(&bytes, dir)?;
    if m.name.is_empty() {
        m.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    Ok(m)
}

/// Imports a serialized `ModelProto`. Without `base_dir`, external data cannot be resolved.
pub fn load_onnx_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model, FrontendError> {
    let proto = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| FrontendError::InvalidFile(e.to_string()))?;
    let Some(graph) = proto.graph.as_ref() else {
        return Err(FrontendError::InvalidFile("the file holds no graph".into()));
    };
    if graph.node.is_empty() && graph.output.is_empty() {
        return Err(FrontendError::InvalidFile(
            "the graph has no nodes and no outputs".into(),
        ));
    }
    let mut opset = None;
    for o in &proto.opset_import {
        if o.domain.is_empty() || o.domain == "ai.onnx" {
            opset = Some(o.version);
        }
    }
    // Models older than IR version 3 carry no opset import and mean opset 1; kiln starts at 7.
    let opset = opset.unwrap_or(7);
    if !(1..=99).contains(&opset) {
        return Err(FrontendError::InvalidFile(format!(
            "ai.onnx opset {opset} is not valid"
        )));
    }

    let mut unsupported = vec![];
    collect_unsupported(graph, &mut unsupported);
    if !unsupported.is_empty() {
        return Err(FrontendError::Unsupported(unsupported));
    }

    let mut used = HashSet::new();
    collect_used(graph, &mut used);
    let mut imp = Importer {
        model: Model {
            name: graph.name.clone(),
            ..Model::default()
        },
        opset,
        base_dir: base_dir.map(Path::to_path_buf),
        scopes: vec![],
        used,
        counter: 0,
    };
    let body = imp.import_graph(graph, GraphKind::Main)?;
    imp.model.body = body;
    Ok(imp.model)
}

/// Every node the op mapping cannot express, subgraphs included.
fn collect_unsupported(g: &GraphProto, out: &mut Vec<UnsupportedOp>) {
    for (i, n) in g.node.iter().enumerate() {
        if !ops::is_supported(&n.domain, &n.op_type) {
            out.push(UnsupportedOp {
                node: node_name(n, i),
                op_type: n.op_type.clone(),
                domain: n.domain.clone(),
            });
        }
        for a in &n.attribute {
            for sub in a.g.as_ref().into_iter().chain(a.graphs.iter()) {
                collect_unsupported(sub, out);
            }
        }
    }
}

/// Names some node or graph output consumes, subgraphs included.
fn collect_used(g: &GraphProto, used: &mut HashSet<String>) {
    for n in &g.node {
        used.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        for a in &n.attribute {
            for sub in a.g.as_ref().into_iter().chain(a.graphs.iter()) {
                collect_used(sub, used);
            }
        }
    }
    used.extend(g.output.iter().map(|o| o.name.clone()));
}

pub(crate) fn node_name(n: &NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{index}", n.op_type)
    } else {
        n.name.clone()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum GraphKind {
    Main,
    Sub,
}

pub(crate) struct Importer {
    pub model: Model,
    pub opset: i64,
    base_dir: Option<PathBuf>,
    /// Name → value, innermost graph last; subgraphs see outer names.
    scopes: Vec<HashMap<String, ValueId>>,
    /// Names consumed anywhere (to tell whether an optional output matters).
    used: HashSet<String>,
    counter: usize,
}

/// One ONNX node being converted, with attribute accessors.
pub(crate) struct N<'a> {
    pub p: &'a NodeProto,
    pub name: String,
}

impl<'a> N<'a> {
    pub fn attr(&self, k: &str) -> Option<&'a AttributeProto> {
        self.p.attribute.iter().find(|a| a.name == k)
    }
    pub fn i(&self, k: &str, default: i64) -> i64 {
        self.attr(k).map(|a| a.i).unwrap_or(default)
    }
    pub fn f(&self, k: &str, default: f32) -> f32 {
        self.attr(k).map(|a| a.f).unwrap_or(default)
    }
    pub fn s(&self, k: &str, default: &str) -> String {
        self.attr(k)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| default.to_string())
    }
    pub fn ints(&self, k: &str) -> Option<Vec<i64>> {
        self.attr(k).map(|a| a.ints.clone())
    }
    pub fn floats(&self, k: &str) -> Option<Vec<f32>> {
        self.attr(k).map(|a| a.floats.clone())
    }
    pub fn strings(&self, k: &str) -> Option<Vec<String>> {
        self.attr(k).map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }
    pub fn bad(&self, msg: impl Into<String>) -> FrontendError {
        FrontendError::BadAttribute {
            node: self.name.clone(),
            op: self.p.op_type.clone(),
            msg: msg.into(),
        }
    }
    pub fn shape_err(&self, msg: impl Into<String>) -> FrontendError {
        FrontendError::Shape {
            node: self.name.clone(),
            op: self.p.op_type.clone(),
            msg: msg.into(),
        }
    }
    pub fn n_in(&self) -> usize {
        self.p.input.len()
    }
    pub fn n_out(&self) -> usize {
        self.p.output.len()
    }
}

impl Importer {
    fn lookup(&self, name: &str) -> Option<ValueId> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn bind(&mut self, name: &str, v: ValueId) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_string(), v);
        }
    }

    pub fn is_used(&self, name: &str) -> bool {
        !name.is_empty() && self.used.contains(name)
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.model.ty(v)
    }

    pub fn konst(&self, v: ValueId) -> Option<&Tensor> {
        self.model.consts.get(&v)
    }

    /// Input `i` of the node, `None` when omitted (absent or empty name).
    pub fn inp(&self, n: &N, i: usize) -> Result<Option<ValueId>, FrontendError> {
        match n.p.input.get(i) {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => self
                .lookup(s)
                .map(Some)
                .ok_or_else(|| FrontendError::UnknownValue {
                    node: n.name.clone(),
                    op: n.p.op_type.clone(),
                    name: s.clone(),
                }),
        }
    }

    /// A required input.
    pub fn req(&self, n: &N, i: usize) -> Result<ValueId, FrontendError> {
        self.inp(n, i)?
            .ok_or_else(|| n.bad(format!("required input {i} is missing")))
    }

    /// The constant value of input `i`, if it has one.
    pub fn const_input(&self, n: &N, i: usize) -> Result<Option<Tensor>, FrontendError> {
        Ok(self.inp(n, i)?.and_then(|v| self.konst(v).cloned()))
    }

    pub fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}/{}", self.counter)
    }

    pub fn add_const(&mut self, name: &str, t: Tensor) -> ValueId {
        let name = self.fresh(name);
        self.model.add_const(name, t)
    }

    pub fn scalar(&mut self, dtype: DType, v: f64) -> ValueId {
        self.add_const("const", Tensor::scalar_f64(dtype, v))
    }

    /// Adds one node: specialises constant shape inputs into the op, folds small
    /// all-constant nodes through the reference executor, and infers types.
    pub fn add(
        &mut self,
        region: &mut Region,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        num_outputs: usize,
    ) -> Result<Vec<ValueId>, FrontendError> {
        let types: Vec<Option<TensorType>> = inputs
            .iter()
            .map(|i| i.map(|v| self.ty(v).clone()))
            .collect();
        let consts: Vec<Option<&Tensor>> = inputs
            .iter()
            .map(|i| i.and_then(|v| self.model.consts.get(&v)))
            .collect();
        let spec = specialize(&op, &types, &consts).map_err(|e| shape_err(name, &op, e.msg))?;
        let (op, inputs) = match spec {
            Some((op, keep)) => (
                op,
                keep.iter()
                    .map(|&k| inputs.get(k).copied().flatten())
                    .collect(),
            ),
            None => (op, inputs),
        };
        if let Some(outs) = self.try_fold(name, &op, &inputs, num_outputs) {
            return Ok(outs);
        }
        let mut b = Builder::new(&mut self.model);
        b.region = std::mem::take(region);
        let r = b.add(name, op.clone(), inputs, num_outputs);
        *region = b.finish();
        r.map_err(|e| shape_err(name, &op, e.msg))
    }

    /// One output node.
    pub fn add1(
        &mut self,
        region: &mut Region,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
    ) -> Result<ValueId, FrontendError> {
        Ok(self.add(region, name, op, inputs, 1)?[0])
    }

    /// Shape and Size need only types; other small all-constant nodes run on the
    /// reference executor (the op's one definition). Failure just keeps the node.
    fn try_fold(
        &mut self,
        name: &str,
        op: &Op,
        inputs: &[Option<ValueId>],
        num_outputs: usize,
    ) -> Option<Vec<ValueId>> {
        const MAX_FOLD: usize = 4096;
        match op {
            Op::Shape { .. } | Op::Size => {
                let x = (*inputs.first()?)?;
                self.ty(x).dims()?;
                let types = vec![Some(self.ty(x).clone())];
                let t = crate::exec::eval_from_types(name, op, &types).ok()?;
                return Some(vec![self.add_const(name, t.into_iter().next()?)]);
            }
            _ if op.has_regions()
                || inputs.is_empty() && !matches!(op, Op::ConstantOfShape { .. }) =>
            {
                return None
            }
            _ => {}
        }
        let mut vals = Vec::with_capacity(inputs.len());
        for i in inputs {
            match i {
                Some(v) => {
                    let t = self.model.consts.get(v)?;
                    if t.len() > MAX_FOLD {
                        return None;
                    }
                    vals.push(Some(t));
                }
                None => vals.push(None),
            }
        }
        let types: Vec<Option<TensorType>> = inputs
            .iter()
            .map(|i| i.map(|v| self.ty(v).clone()))
            .collect();
        let outs = kiln_ir::infer::infer_types(op, &types, &vals, num_outputs, &[]).ok()?;
        if outs
            .iter()
            .take(num_outputs)
            .any(|t| t.num_elements().is_none_or(|n| n > MAX_FOLD))
        {
            return None;
        }
        let res = eval_op(name, op, &vals, num_outputs).ok()?;
        if res.len() < num_outputs {
            return None;
        }
        Some(
            res.into_iter()
                .take(num_outputs)
                .map(|t| self.add_const(name, t))
                .collect(),
        )
    }

    /// Adds a node whose output types come from its regions (control flow).
    pub fn add_control(
        &mut self,
        region: &mut Region,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        num_outputs: usize,
        regions: Vec<Region>,
    ) -> Result<Vec<ValueId>, FrontendError> {
        let types: Vec<Option<TensorType>> = inputs
            .iter()
            .map(|i| i.map(|v| self.ty(v).clone()))
            .collect();
        let consts: Vec<Option<&Tensor>> = inputs
            .iter()
            .map(|i| i.and_then(|v| self.model.consts.get(&v)))
            .collect();
        let rr: Vec<Vec<TensorType>> = regions
            .iter()
            .map(|r| r.results.iter().map(|&v| self.ty(v).clone()).collect())
            .collect();
        let mut outs = kiln_ir::infer::infer_types(&op, &types, &consts, num_outputs, &rr)
            .map_err(|e| shape_err(name, &op, e.msg))?;
        outs.truncate(num_outputs);
        let mut b = Builder::new(&mut self.model);
        b.region = std::mem::take(region);
        let ids = b.add_typed(name, op, inputs, outs, regions);
        *region = b.finish();
        Ok(ids)
    }

    /// Imports a graph's initializers, inputs and nodes as a region. For a
    /// subgraph, its inputs become the region's params in order.
    pub fn import_graph(
        &mut self,
        g: &GraphProto,
        kind: GraphKind,
    ) -> Result<Region, FrontendError> {
        self.import_graph_with(g, kind, &[])
    }

    /// `outer_types[i]` stands in for a subgraph input's missing type (Loop carried values).
    pub fn import_graph_with(
        &mut self,
        g: &GraphProto,
        kind: GraphKind,
        outer_types: &[Option<TensorType>],
    ) -> Result<Region, FrontendError> {
        self.scopes.push(HashMap::new());
        let r = self.import_graph_inner(g, kind, outer_types);
        self.scopes.pop();
        r
    }

    fn import_graph_inner(
        &mut self,
        g: &GraphProto,
        kind: GraphKind,
        outer_types: &[Option<TensorType>],
    ) -> Result<Region, FrontendError> {
        let base = self.base_dir.clone();
        let mut inits = HashSet::new();
        for t in &g.initializer {
            let tensor = tensor_from_proto(t, base.as_deref())?;
            let id = self.model.add_const(t.name.clone(), tensor);
            self.bind(&t.name, id);
            inits.insert(t.name.clone());
        }
        if !g.sparse_initializer.is_empty() {
            return Err(FrontendError::Graph(
                "sparse initializers are not supported".into(),
            ));
        }
        let mut region = Region::default();
        for (i, vi) in g.input.iter().enumerate() {
            if kind == GraphKind::Main && inits.contains(&vi.name) {
                continue;
            }
            let fallback = outer_types.get(i).cloned().flatten();
            let ty = value_type(vi, fallback, kind)?;
            let id = self.model.add_value(vi.name.clone(), ty);
            self.bind(&vi.name, id);
            region.params.push(id);
        }
        let outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        for (i, np) in g.node.iter().enumerate() {
            let n = N {
                p: np,
                name: node_name(np, i),
            };
            let before = self.model.values.len();
            let outs = ops::convert(self, &mut region, &n)?;
            for (k, out_name) in np.output.iter().enumerate() {
                if out_name.is_empty() {
                    continue;
                }
                let id = match outs.get(k).copied().flatten() {
                    Some(id) => id,
                    None if self.is_used(out_name) => {
                        return Err(n.bad(format!(
                            "output {k} ('{out_name}') is used but kiln does not compute it"
                        )))
                    }
                    None => continue,
                };
                // An alias that is a graph output gets its own value, so outputs keep their names.
                let id = if id.index() < before && outputs.contains(out_name) {
                    self.add1(&mut region, &n.name, Op::Identity, vec![Some(id)])?
                } else {
                    id
                };
                if id.index() >= before {
                    self.model.values[id.index()].name = out_name.clone();
                }
                self.bind(out_name, id);
            }
        }
        for o in &g.output {
            let id = self.lookup(&o.name).ok_or_else(|| {
                FrontendError::Graph(format!("graph output '{}' is never defined", o.name))
            })?;
            region.results.push(id);
        }
        Ok(region)
    }
}

fn shape_err(name: &str, op: &Op, msg: String) -> FrontendError {
    FrontendError::Shape {
        node: name.to_string(),
        op: op.name(),
        msg,
    }
}

/// A graph input's declared type. Missing dims become fresh symbols; a subgraph
/// input with no type at all takes `fallback`.
fn value_type(
    vi: &ValueInfoProto,
    fallback: Option<TensorType>,
    kind: GraphKind,
) -> Result<TensorType, FrontendError> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as DV;
    use onnx_protobuf::type_proto::Value as TV;
    let tt = match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TV::TensorType(tt)) => tt,
        Some(_) => {
            return Err(FrontendError::Graph(format!(
                "input '{}' is not a tensor (sequences, maps and optionals are not supported)",
                vi.name
            )))
        }
        None => {
            return fallback
                .ok_or_else(|| FrontendError::Graph(format!("input '{}' has no type", vi.name)));
        }
    };
    let dtype = match (tt.elem_type, &fallback) {
        (0, Some(f)) => f.dtype,
        (c, _) => tensor::dtype_of(c, &vi.name)?,
    };
    let Some(shape) = tt.shape.as_ref() else {
        return match (fallback, kind) {
            (Some(f), _) => Ok(TensorType::new(dtype, f.shape)),
            (None, GraphKind::Main) => Err(FrontendError::Graph(format!(
                "input '{}' has no shape",
                vi.name
            ))),
            (None, GraphKind::Sub) => Err(FrontendError::Graph(format!(
                "subgraph input '{}' has no shape",
                vi.name
            ))),
        };
    };
    let dims = shape
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(DV::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
            Some(DV::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
            _ => match fallback.as_ref().and_then(|f| f.shape.get(i)) {
                Some(d) => d.clone(),
                None => Dim::Sym(format!("{}_d{i}", vi.name)),
            },
        })
        .collect();
    Ok(TensorType::new(dtype, dims))
}
