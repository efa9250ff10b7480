//! Small ONNX models built in code, so error tests need no Python.

use onnx_protobuf::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::path::Path;

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

/// A graph value declaration with a fixed shape.
pub fn value(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|&d| {
            let mut x = Dimension::new();
            x.value = Some(dimension::Value::DimValue(d));
            x
        })
        .collect();
    let mut t = type_proto::Tensor::new();
    t.elem_type = elem_type;
    t.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(t));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(ty).into();
    v
}

pub fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = name.into();
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}

/// A float initializer whose data lives in an external file.
pub fn external_initializer(name: &str, dims: &[i64], location: &str) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = FLOAT;
    t.data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
    let mut e = onnx_protobuf::StringStringEntryProto::new();
    e.key = "location".into();
    e.value = location.into();
    t.external_data.push(e);
    t
}

/// An opset-17 model around the given graph parts.
pub fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
) -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "test".into();
    g.node = nodes;
    g.input = inputs;
    g.output = outputs;
    g.initializer = initializers;
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut opset = OperatorSetIdProto::new();
    opset.version = 17;
    m.opset_import.push(opset);
    m.graph = Some(g).into();
    m
}

pub fn save(m: &ModelProto, path: &Path) {
    let bytes = m.write_to_bytes().expect("serialize model");
    std::fs::write(path, bytes).expect("write model");
}

/// `y = Relu(x)` with x, y: f32[2,3].
pub fn relu_model() -> ModelProto {
    model(
        vec![node("relu", "Relu", &["x"], &["y"])],
        vec![value("x", FLOAT, &[2, 3])],
        vec![value("y", FLOAT, &[2, 3])],
        vec![],
    )
}

/// `c = Add(a, b)` with a, b, c: f32[2,3].
pub fn add_model() -> ModelProto {
    model(
        vec![node("add", "Add", &["a", "b"], &["c"])],
        vec![value("a", FLOAT, &[2, 3]), value("b", FLOAT, &[2, 3])],
        vec![value("c", FLOAT, &[2, 3])],
        vec![],
    )
}
