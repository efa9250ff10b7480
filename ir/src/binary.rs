//! kiln's binary form of a model (`.kilnb`): compact and fast to load, weights
//! stored as raw little-endian bytes.
//!
//! Layout: the magic `KILN`, the format [`VERSION`] (u32 LE), the length of the
//! rest (u64 LE: protobuf alone would read a file cut at a field boundary as a
//! smaller valid model), then one protobuf message ([`ModelMsg`]). The messages
//! are written by hand with `prost::Message` (no protoc, no build script).
//!
//! Each op is stored as its text form, `name {attrs}` ([`crate::text::print_op`]),
//! not as a protobuf schema of its own: op parameters are defined once, by the
//! `Op` enum and its serde form, so a new op or field needs no change here. The
//! text form rather than JSON because JSON cannot hold `inf` or `NaN` (a
//! `ConstantOfShape` of `-inf` is common in attention masks); op strings are
//! tiny next to the weights.
//!
//! Decoding validates every id, dtype and length: garbage is an error, never a panic.

use crate::dtype::DType;
use crate::graph::{Model, Node, Region, ValueId, ValueInfo};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Storage, Tensor};
use prost::Message;
use std::collections::BTreeMap;

pub const MAGIC: &[u8; 4] = b"KILN";
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 4 + 4 + 8;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("not a kiln binary model (bad magic)")]
    Magic,
    #[error("truncated kiln binary model: {0} bytes expected after the header, {1} found")]
    Truncated(u64, usize),
    #[error("unsupported kiln binary version {0} (this reader knows {VERSION})")]
    Version(u32),
    #[error("corrupt kiln binary model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("invalid kiln binary model: {0}")]
    Invalid(String),
}

#[derive(Clone, PartialEq, Message)]
pub struct ModelMsg {
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "3")]
    pub values: Vec<ValueMsg>,
    #[prost(message, repeated, tag = "4")]
    pub consts: Vec<ConstMsg>,
    #[prost(message, optional, tag = "5")]
    pub body: Option<RegionMsg>,
}

/// A value of the arena; its id is its index.
#[derive(Clone, PartialEq, Message)]
pub struct ValueMsg {
    #[prost(string, tag = "1")]
    pub name: String,
    /// ONNX `TensorProto.DataType` code: a stable numbering that needs no table of its own.
    #[prost(int32, tag = "2")]
    pub dtype: i32,
    #[prost(message, repeated, tag = "3")]
    pub dims: Vec<DimMsg>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DimMsg {
    #[prost(oneof = "DimKind", tags = "1, 2")]
    pub kind: Option<DimKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimKind {
    #[prost(uint64, tag = "1")]
    Known(u64),
    #[prost(string, tag = "2")]
    Sym(String),
}

/// A constant's data: its own dtype and shape (normally equal to the value's type), raw LE bytes.
#[derive(Clone, PartialEq, Message)]
pub struct ConstMsg {
    #[prost(uint32, tag = "1")]
    pub value: u32,
    #[prost(int32, tag = "2")]
    pub dtype: i32,
    #[prost(uint64, repeated, tag = "3")]
    pub shape: Vec<u64>,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RegionMsg {
    #[prost(uint32, repeated, tag = "1")]
    pub params: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub nodes: Vec<NodeMsg>,
    #[prost(uint32, repeated, tag = "3")]
    pub results: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeMsg {
    #[prost(string, tag = "1")]
    pub name: String,
    /// `name {attrs}`, the op's text form.
    #[prost(string, tag = "2")]
    pub op: String,
    /// Value id + 1; 0 is an absent optional input.
    #[prost(uint64, repeated, tag = "3")]
    pub inputs: Vec<u64>,
    #[prost(uint32, repeated, tag = "4")]
    pub outputs: Vec<u32>,
    #[prost(message, repeated, tag = "5")]
    pub regions: Vec<RegionMsg>,
}

/// The binary form of `model`.
pub fn encode(model: &Model) -> Vec<u8> {
    let msg = ModelMsg {
        name: model.name.clone(),
        values: model
            .values
            .iter()
            .map(|v| ValueMsg {
                name: v.name.clone(),
                dtype: v.ty.dtype.onnx_code(),
                dims: v
                    .ty
                    .shape
                    .iter()
                    .map(|d| DimMsg {
                        kind: Some(match d {
                            Dim::Known(n) => DimKind::Known(*n as u64),
                            Dim::Sym(s) => DimKind::Sym(s.clone()),
                        }),
                    })
                    .collect(),
            })
            .collect(),
        consts: model
            .consts
            .iter()
            .map(|(id, t)| ConstMsg {
                value: id.0,
                dtype: t.dtype().onnx_code(),
                shape: t.shape.iter().map(|&d| d as u64).collect(),
                data: t.data.to_le_bytes(),
            })
            .collect(),
        body: Some(encode_region(&model.body)),
    };
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    msg.encode(&mut out).expect("a Vec grows as needed");
    out
}

fn encode_region(r: &Region) -> RegionMsg {
    RegionMsg {
        params: r.params.iter().map(|v| v.0).collect(),
        nodes: r
            .nodes
            .iter()
            .map(|n| NodeMsg {
                name: n.name.clone(),
                op: crate::text::print_op(&n.op),
                inputs: n
                    .inputs
                    .iter()
                    .map(|i| i.map_or(0, |v| v.0 as u64 + 1))
                    .collect(),
                outputs: n.outputs.iter().map(|v| v.0).collect(),
                regions: n.regions.iter().map(encode_region).collect(),
            })
            .collect(),
        results: r.results.iter().map(|v| v.0).collect(),
    }
}

/// Reads a model written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Model, BinaryError> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(BinaryError::Magic)?;
    let (version, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(BinaryError::Truncated(0, 0))?;
    let version = u32::from_le_bytes(*version);
    if version != VERSION {
        return Err(BinaryError::Version(version));
    }
    let (len, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(BinaryError::Truncated(0, 0))?;
    let len = u64::from_le_bytes(*len);
    if len != rest.len() as u64 {
        return Err(BinaryError::Truncated(len, rest.len()));
    }
    let msg = ModelMsg::decode(rest)?;
    let invalid = |s: String| BinaryError::Invalid(s);
    let mut values = Vec::with_capacity(msg.values.len());
    for (i, v) in msg.values.into_iter().enumerate() {
        let dtype = dtype(v.dtype).map_err(|e| invalid(format!("value {i} '{}': {e}", v.name)))?;
        let mut shape = Vec::with_capacity(v.dims.len());
        for d in v.dims {
            shape.push(match d.kind {
                Some(DimKind::Known(n)) => Dim::Known(
                    usize::try_from(n)
                        .map_err(|_| invalid(format!("value '{}': dim {n} too large", v.name)))?,
                ),
                Some(DimKind::Sym(s)) => Dim::Sym(s),
                None => {
                    return Err(invalid(format!(
                        "value '{}': a dim with no size or symbol",
                        v.name
                    )))
                }
            });
        }
        values.push(ValueInfo {
            name: v.name,
            ty: TensorType { dtype, shape },
        });
    }
    let n = values.len();
    let mut consts = BTreeMap::new();
    for c in msg.consts {
        let id = check_id(c.value as u64, n).map_err(|e| invalid(format!("constant: {e}")))?;
        let name = &values[id.index()].name;
        let dtype = dtype(c.dtype).map_err(|e| invalid(format!("constant '{name}': {e}")))?;
        let shape: Vec<usize> = c
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| invalid(format!("constant '{name}': dim too large")))?;
        let bytes = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d));
        if bytes != Some(c.data.len()) {
            return Err(invalid(format!(
                "constant '{name}': {} bytes of data for {dtype} {shape:?}",
                c.data.len()
            )));
        }
        let data = Storage::from_le_bytes(dtype, &c.data)
            .ok_or_else(|| invalid(format!("constant '{name}': bad data length")))?;
        if consts.insert(id, Tensor { shape, data }).is_some() {
            return Err(invalid(format!("constant '{name}' is given twice")));
        }
    }
    let body = decode_region(msg.body.unwrap_or_default(), n)?;
    Ok(Model {
        name: msg.name,
        values,
        consts,
        body,
    })
}

fn dtype(code: i32) -> Result<DType, String> {
    DType::from_onnx_code(code).ok_or_else(|| format!("unknown dtype code {code}"))
}

fn check_id(id: u64, n: usize) -> Result<ValueId, String> {
    if id < n as u64 {
        Ok(ValueId(id as u32))
    } else {
        Err(format!(
            "value id {id} out of range (the model has {n} values)"
        ))
    }
}

fn decode_region(r: RegionMsg, n: usize) -> Result<Region, BinaryError> {
    let ids = |v: &[u32], what: &str| -> Result<Vec<ValueId>, BinaryError> {
        v.iter()
            .map(|&i| {
                check_id(i as u64, n).map_err(|e| BinaryError::Invalid(format!("{what}: {e}")))
            })
            .collect()
    };
    let mut nodes = Vec::with_capacity(r.nodes.len());
    for m in r.nodes {
        let at = |e: String| BinaryError::Invalid(format!("node '{}': {e}", m.name));
        let op = crate::text::parse_op(&m.op).map_err(|e| at(format!("op `{}`: {e}", m.op)))?;
        let inputs = m
            .inputs
            .iter()
            .map(|&i| {
                if i == 0 {
                    Ok(None)
                } else {
                    check_id(i - 1, n).map(Some)
                }
            })
            .collect::<Result<_, _>>()
            .map_err(at)?;
        let outputs = ids(&m.outputs, &format!("node '{}'", m.name))?;
        let regions = m
            .regions
            .into_iter()
            .map(|sub| decode_region(sub, n))
            .collect::<Result<_, _>>()?;
        nodes.push(Node {
            name: m.name,
            op,
            inputs,
            outputs,
            regions,
        });
    }
    Ok(Region {
        params: ids(&r.params, "region params")?,
        nodes,
        results: ids(&r.results, "region results")?,
    })
}
