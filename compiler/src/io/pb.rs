//! ONNX `TensorProto` files and messages. Data is in `raw_data` (little-endian)
//! or in the typed repeated fields, where ONNX packs narrow types into `int32_data`.

use kiln_ir::{DType, Storage, Tensor};
use onnx_protobuf::{tensor_proto::DataType, Message, TensorProto};
use protobuf::Enum;

/// Decodes a serialized `TensorProto`.
pub fn decode_tensor_proto(bytes: &[u8]) -> Result<Tensor, String> {
    let p = TensorProto::parse_from_bytes(bytes)
        .map_err(|e| format!("not an ONNX TensorProto: {e}"))?;
    tensor_from_proto(&p)
}

fn onnx_dtype(code: i32) -> Result<DType, String> {
    let dt = DataType::from_i32(code).ok_or_else(|| format!("unknown ONNX data type {code}"))?;
    Ok(match dt {
        DataType::FLOAT => DType::F32,
        DataType::UINT8 => DType::U8,
        DataType::INT8 => DType::I8,
        DataType::UINT16 => DType::U16,
        DataType::INT16 => DType::I16,
        DataType::INT32 => DType::I32,
        DataType::INT64 => DType::I64,
        DataType::BOOL => DType::Bool,
        DataType::FLOAT16 => DType::F16,
        DataType::DOUBLE => DType::F64,
        DataType::UINT32 => DType::U32,
        DataType::UINT64 => DType::U64,
        DataType::BFLOAT16 => DType::BF16,
        other => return Err(format!("ONNX data type {other:?} is not supported")),
    })
}

/// Converts an in-memory `TensorProto` (external data must already be resolved into `raw_data`).
pub fn tensor_from_proto(p: &TensorProto) -> Result<Tensor, String> {
    let dtype = onnx_dtype(p.data_type)?;
    let shape = p
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    if !p.external_data.is_empty() {
        return Err(format!(
            "tensor '{}' has external data, which a standalone .pb cannot carry",
            p.name
        ));
    }
    let data = if !p.raw_data.is_empty() || count == 0 {
        Storage::from_le_bytes(dtype, &p.raw_data).ok_or_else(|| {
            format!(
                "raw_data of {} bytes is not a whole number of {dtype} elements",
                p.raw_data.len()
            )
        })?
    } else {
        typed(dtype, p)
    };
    let len = data.len();
    Tensor::new(shape.clone(), data).ok_or_else(|| {
        format!(
            "tensor '{}': shape {shape:?} needs {count} elements, data has {len}",
            p.name
        )
    })
}

fn typed(dtype: DType, p: &TensorProto) -> Storage {
    let i32s = || p.int32_data.iter().map(|&x| x as i64);
    match dtype {
        DType::F32 => Storage::F32(p.float_data.clone()),
        DType::F64 => Storage::F64(p.double_data.clone()),
        DType::I64 => Storage::I64(p.int64_data.clone()),
        DType::U32 => Storage::U32(p.uint64_data.iter().map(|&x| x as u32).collect()),
        DType::U64 => Storage::U64(p.uint64_data.clone()),
        // Bit patterns of the 16-bit floats travel in int32_data.
        DType::F16 => Storage::F16(p.int32_data.iter().map(|&x| x as u16).collect()),
        DType::BF16 => Storage::BF16(p.int32_data.iter().map(|&x| x as u16).collect()),
        other => Storage::from_i64s(other, i32s()),
    }
}
