//! ONNX `TensorProto` → kiln `Tensor`: raw bytes, typed fields and external data files.

use super::super::FrontendError;
use kiln_ir::{DType, Storage, Tensor};
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::TensorProto;
use std::path::Path;

fn bad(t: &TensorProto, msg: impl Into<String>) -> FrontendError {
    FrontendError::BadTensor {
        tensor: t.name.clone(),
        msg: msg.into(),
    }
}

/// The kiln dtype of an ONNX element-type code, or an error naming the tensor/value.
pub fn dtype_of(code: i32, what: &str) -> Result<DType, FrontendError> {
    DType::from_onnx_code(code).ok_or_else(|| FrontendError::BadTensor {
        tensor: what.to_string(),
        msg: format!(
            "element type {code} ({}) is not supported",
            onnx_type_name(code)
        ),
    })
}

fn onnx_type_name(code: i32) -> &'static str {
    match code {
        0 => "undefined",
        8 => "string",
        14 => "complex64",
        15 => "complex128",
        17..=20 => "float8",
        21 | 22 => "int4",
        _ => "unknown",
    }
}

/// Decodes a tensor; `base_dir` resolves external data locations.
pub fn tensor_from_proto(
    t: &TensorProto,
    base_dir: Option<&Path>,
) -> Result<Tensor, FrontendError> {
    let dtype = dtype_of(t.data_type, &t.name)?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(bad(t, format!("negative dim {d}")));
        }
        shape.push(d as usize);
    }
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(t, "element count overflows"))?;
    let data = if t.data_location.enum_value() == Ok(DataLocation::EXTERNAL) {
        let bytes = read_external(t, base_dir)?;
        Storage::from_le_bytes(dtype, &bytes)
            .ok_or_else(|| bad(t, "external data length is not a whole number of elements"))?
    } else if !t.raw_data.is_empty() {
        Storage::from_le_bytes(dtype, &t.raw_data)
            .ok_or_else(|| bad(t, "raw_data length is not a whole number of elements"))?
    } else {
        typed_storage(t, dtype)
    };
    if data.len() != n {
        return Err(bad(
            t,
            format!("has {} elements, shape {:?} needs {n}", data.len(), shape),
        ));
    }
    Tensor::new(shape, data).ok_or_else(|| bad(t, "shape and data disagree"))
}

fn typed_storage(t: &TensorProto, dtype: DType) -> Storage {
    let i32s = &t.int32_data;
    match dtype {
        DType::F32 => Storage::F32(t.float_data.clone()),
        DType::F64 => Storage::F64(t.double_data.clone()),
        DType::I64 => Storage::I64(t.int64_data.clone()),
        DType::U64 => Storage::U64(t.uint64_data.clone()),
        DType::U32 => Storage::U32(t.uint64_data.iter().map(|&v| v as u32).collect()),
        DType::I32 => Storage::I32(i32s.clone()),
        DType::I16 => Storage::I16(i32s.iter().map(|&v| v as i16).collect()),
        DType::U16 => Storage::U16(i32s.iter().map(|&v| v as u16).collect()),
        DType::I8 => Storage::I8(i32s.iter().map(|&v| v as i8).collect()),
        DType::U8 => Storage::U8(i32s.iter().map(|&v| v as u8).collect()),
        DType::Bool => Storage::Bool(i32s.iter().map(|&v| v != 0).collect()),
        // Half floats are stored as their bit patterns in int32_data.
        DType::F16 => Storage::F16(i32s.iter().map(|&v| v as u16).collect()),
        DType::BF16 => Storage::BF16(i32s.iter().map(|&v| v as u16).collect()),
    }
}

fn read_external(t: &TensorProto, base_dir: Option<&Path>) -> Result<Vec<u8>, FrontendError> {
    let key = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    let location = key("location").ok_or_else(|| bad(t, "external data without a location"))?;
    let num = |k: &str| -> Result<Option<u64>, FrontendError> {
        match key(k) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| bad(t, format!("external data {k} '{v}' is not a number"))),
        }
    };
    let (offset, length) = (num("offset")?.unwrap_or(0), num("length")?);
    let ext_err = |path: String, msg: String| FrontendError::ExternalData {
        tensor: t.name.clone(),
        path,
        msg,
    };
    let Some(dir) = base_dir else {
        return Err(ext_err(
            location,
            "cannot be located: the model was loaded from bytes without a base directory".into(),
        ));
    };
    // The location is relative to the model's directory and must stay inside it.
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ext_err(
            location,
            "must be a relative path inside the model's directory".into(),
        ));
    }
    let path = dir.join(rel);
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(&path).map_err(|e| ext_err(shown.clone(), format!("cannot be read: {e}")))?;
    let start = offset as usize;
    let end = match length {
        Some(l) => start.saturating_add(l as usize),
        None => bytes.len(),
    };
    if start > bytes.len() || end > bytes.len() {
        return Err(ext_err(
            shown,
            format!(
                "is {} bytes; offset {offset} + length {:?} is out of range",
                bytes.len(),
                length
            ),
        ));
    }
    Ok(bytes[start..end].to_vec())
}
