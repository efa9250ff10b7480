//! Frontends: ONNX import, and kiln's own text and binary model forms.

pub mod onnx;

use kiln_ir::Model;
use std::path::Path;
use thiserror::Error;

/// Why a model could not be imported. Node-level variants name the node and its op.
#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("cannot read '{path}': {msg}")]
    Io { path: String, msg: String },
    #[error("not a valid ONNX model: {0}")]
    InvalidFile(String),
    #[error("unsupported model format: {0}")]
    UnsupportedFormat(String),
    #[error("{} unsupported op(s): {}", .0.len(), .0.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", "))]
    Unsupported(Vec<UnsupportedOp>),
    #[error("node '{node}' ({op}): {msg}")]
    BadAttribute {
        node: String,
        op: String,
        msg: String,
    },
    #[error("tensor '{tensor}': external data file '{path}' {msg}")]
    ExternalData {
        tensor: String,
        path: String,
        msg: String,
    },
    #[error("tensor '{tensor}': {msg}")]
    BadTensor { tensor: String, msg: String },
    #[error("node '{node}' ({op}): {msg}")]
    Shape {
        node: String,
        op: String,
        msg: String,
    },
    #[error("node '{node}' ({op}) references unknown value '{name}'")]
    UnknownValue {
        node: String,
        op: String,
        name: String,
    },
    #[error("invalid kiln model {0}")]
    Kiln(String),
    #[error("graph: {0}")]
    Graph(String),
}

/// One node the Op set cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub node: String,
    pub op_type: String,
    pub domain: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = if self.domain.is_empty() {
            "ai.onnx"
        } else {
            &self.domain
        };
        write!(f, "'{}' ({d}::{})", self.node, self.op_type)
    }
}

/// Loads a model, choosing the frontend by file extension.
pub fn load_model(path: &Path) -> Result<Model, FrontendError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "onnx" => onnx::load_onnx(path),
        "kiln" => {
            let src = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
            kiln_ir::text::parse(&src)
                .map_err(|e| FrontendError::Kiln(format!("{}: {e}", path.display())))
        }
        "kilnb" => {
            let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
            kiln_ir::binary::decode(&bytes)
                .map_err(|e| FrontendError::Kiln(format!("{}: {e}", path.display())))
        }
        _ => Err(FrontendError::UnsupportedFormat(format!(
            "'{}': expected a .onnx, .kiln or .kilnb file",
            path.display()
        ))),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> FrontendError {
    FrontendError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}
