//! Tensor files: `.npy` and `.npz` (NumPy's formats, what most users have at
//! hand) and ONNX `TensorProto` `.pb` files (what ONNX's conformance data and
//! backend test runners use). `kiln run` reads its inputs and writes its
//! outputs through here.

mod npy;
mod pb;

pub use npy::{decode_npy, encode_npy};
pub use pb::{decode_tensor_proto, tensor_from_proto};

use kiln_ir::Tensor;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Every error names the file, so a user running with many `-i` flags sees which one is bad.
#[derive(Debug, Error)]
pub enum IoError {
    #[error("cannot read '{}'", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write '{}'", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{}': {msg}", path.display())]
    Format { path: PathBuf, msg: String },
}

impl IoError {
    fn format(path: &Path, msg: impl Into<String>) -> IoError {
        IoError::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, IoError> {
    std::fs::read(path).map_err(|source| IoError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, IoError> {
    decode_npy(&read_bytes(path)?).map_err(|m| IoError::format(path, m))
}

/// Writes a `.npy` file (version 1.0 header unless the header needs more room).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), IoError> {
    std::fs::write(path, encode_npy(t)).map_err(|source| IoError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every array of a `.npz` archive, in archive order, named without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, IoError> {
    let bytes = read_bytes(path)?;
    decode_npz(&bytes).map_err(|m| IoError::format(path, m))
}

/// Decodes a `.npz` archive held in memory.
pub fn decode_npz(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a zip archive: {e}"))?;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = f.name().to_string();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| format!("zip entry '{name}': {e}"))?;
        let t = decode_npy(&buf).map_err(|m| format!("array '{name}': {m}"))?;
        out.push((name.strip_suffix(".npy").unwrap_or(&name).to_string(), t));
    }
    Ok(out)
}

/// Reads an ONNX `TensorProto` file (`input_0.pb` in ONNX's test data layout).
pub fn read_pb(path: &Path) -> Result<Tensor, IoError> {
    decode_tensor_proto(&read_bytes(path)?).map_err(|m| IoError::format(path, m))
}

/// Reads a tensor file, choosing the format by extension: `.npy` or `.pb`.
pub fn read_tensor(path: &Path) -> Result<Tensor, IoError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("pb") => read_pb(path),
        _ => Err(IoError::format(
            path,
            "unknown tensor file type (expected .npy or .pb)",
        )),
    }
}

#[cfg(test)]
mod tests;
