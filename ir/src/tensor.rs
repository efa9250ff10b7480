//! Tensors with concrete data: weights in the graph IR, inputs and outputs of the
//! interpreter. Data is stored typed (one `Vec` per element type) so that the
//! interpreter reads it without decoding bytes on every access.

use crate::dtype::DType;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// Typed element storage. f16 and bf16 keep their bit patterns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Storage {
    F32(Vec<f32>),
    F16(Vec<u16>),
    BF16(Vec<u16>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

#[allow(unused_macros)]
macro_rules! for_each_storage {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            Storage::F32($v) => $body,
            Storage::F16($v) => $body,
            Storage::BF16($v) => $body,
            Storage::F64($v) => $body,
            Storage::I8($v) => $body,
            Storage::U8($v) => $body,
            Storage::I16($v) => $body,
            Storage::U16($v) => $body,
            Storage::I32($v) => $body,
            Storage::U32($v) => $body,
            Storage::I64($v) => $body,
            Storage::U64($v) => $body,
            Storage::Bool($v) => $body,
        }
    };
}

impl Storage {
    /// Zero-filled storage of `len` elements.
    pub fn zeros(dtype: DType, len: usize) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(vec![0.0; len]),
            DType::F16 => Storage::F16(vec![0; len]),
            DType::BF16 => Storage::BF16(vec![0; len]),
            DType::F64 => Storage::F64(vec![0.0; len]),
            DType::I8 => Storage::I8(vec![0; len]),
            DType::U8 => Storage::U8(vec![0; len]),
            DType::I16 => Storage::I16(vec![0; len]),
            DType::U16 => Storage::U16(vec![0; len]),
            DType::I32 => Storage::I32(vec![0; len]),
            DType::U32 => Storage::U32(vec![0; len]),
            DType::I64 => Storage::I64(vec![0; len]),
            DType::U64 => Storage::U64(vec![0; len]),
            DType::Bool => Storage::Bool(vec![false; len]),
        }
    }

    /// Values no correct program reads: NaN for floats, a large odd pattern
    /// for integers, `true` for bools. Filled into buffers whose lowering
    /// promised to write before reading, so a broken promise shows in the
    /// results instead of hiding behind zeros.
    pub fn poison(dtype: DType, len: usize) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(vec![f32::NAN; len]),
            DType::F16 => Storage::F16(vec![0x7e00; len]),
            DType::BF16 => Storage::BF16(vec![0x7fc0; len]),
            DType::F64 => Storage::F64(vec![f64::NAN; len]),
            DType::I8 => Storage::I8(vec![0x5b; len]),
            DType::U8 => Storage::U8(vec![0xa5; len]),
            DType::I16 => Storage::I16(vec![0x5a5b; len]),
            DType::U16 => Storage::U16(vec![0xa5a5; len]),
            DType::I32 => Storage::I32(vec![0x5a5a_5a5b; len]),
            DType::U32 => Storage::U32(vec![0xa5a5_a5a5; len]),
            DType::I64 => Storage::I64(vec![0x5a5a_5a5a_5a5a_5a5b; len]),
            DType::U64 => Storage::U64(vec![0xa5a5_a5a5_a5a5_a5a5; len]),
            DType::Bool => Storage::Bool(vec![true; len]),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
            Storage::F64(_) => DType::F64,
            Storage::I8(_) => DType::I8,
            Storage::U8(_) => DType::U8,
            Storage::I16(_) => DType::I16,
            Storage::U16(_) => DType::U16,
            Storage::I32(_) => DType::I32,
            Storage::U32(_) => DType::U32,
            Storage::I64(_) => DType::I64,
            Storage::U64(_) => DType::U64,
            Storage::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        for_each_storage!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f64 (integers converted, bools as 0/1).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Storage::F32(v) => v[i] as f64,
            Storage::F16(v) => f16::from_bits(v[i]).to_f64(),
            Storage::BF16(v) => bf16::from_bits(v[i]).to_f64(),
            Storage::F64(v) => v[i],
            Storage::I8(v) => v[i] as f64,
            Storage::U8(v) => v[i] as f64,
            Storage::I16(v) => v[i] as f64,
            Storage::U16(v) => v[i] as f64,
            Storage::I32(v) => v[i] as f64,
            Storage::U32(v) => v[i] as f64,
            Storage::I64(v) => v[i] as f64,
            Storage::U64(v) => v[i] as f64,
            Storage::Bool(v) => v[i] as u8 as f64,
        }
    }

    /// Element `i` as i64 (floats truncated toward zero, saturating).
    pub fn get_i64(&self, i: usize) -> i64 {
        match self {
            Storage::F32(v) => v[i] as i64,
            Storage::F16(v) => f16::from_bits(v[i]).to_f32() as i64,
            Storage::BF16(v) => bf16::from_bits(v[i]).to_f32() as i64,
            Storage::F64(v) => v[i] as i64,
            Storage::I8(v) => v[i] as i64,
            Storage::U8(v) => v[i] as i64,
            Storage::I16(v) => v[i] as i64,
            Storage::U16(v) => v[i] as i64,
            Storage::I32(v) => v[i] as i64,
            Storage::U32(v) => v[i] as i64,
            Storage::I64(v) => v[i],
            Storage::U64(v) => v[i] as i64,
            Storage::Bool(v) => v[i] as i64,
        }
    }

    /// Raw little-endian bytes, the layout of ONNX `raw_data`, `.npy` and kiln's binary form.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size());
        match self {
            Storage::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
            Storage::I8(v) => out.extend(v.iter().map(|&b| b as u8)),
            Storage::U8(v) => out.extend_from_slice(v),
            Storage::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::F16(v) | Storage::BF16(v) | Storage::U16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::I16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::U32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::U64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
        out
    }

    /// Decodes little-endian bytes; `None` when the length is not a multiple of the element size.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Option<Storage> {
        let n = dtype.size();
        if !bytes.len().is_multiple_of(n) {
            return None;
        }
        fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        Some(match dtype {
            DType::Bool => Storage::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DType::I8 => Storage::I8(bytes.iter().map(|&b| b as i8).collect()),
            DType::U8 => Storage::U8(bytes.to_vec()),
            DType::F32 => Storage::F32(chunks(bytes, f32::from_le_bytes)),
            DType::F16 => Storage::F16(chunks(bytes, u16::from_le_bytes)),
            DType::BF16 => Storage::BF16(chunks(bytes, u16::from_le_bytes)),
            DType::U16 => Storage::U16(chunks(bytes, u16::from_le_bytes)),
            DType::I16 => Storage::I16(chunks(bytes, i16::from_le_bytes)),
            DType::F64 => Storage::F64(chunks(bytes, f64::from_le_bytes)),
            DType::I32 => Storage::I32(chunks(bytes, i32::from_le_bytes)),
            DType::U32 => Storage::U32(chunks(bytes, u32::from_le_bytes)),
            DType::I64 => Storage::I64(chunks(bytes, i64::from_le_bytes)),
            DType::U64 => Storage::U64(chunks(bytes, u64::from_le_bytes)),
        })
    }

    /// Builds storage of `dtype` from f64 values (rounded/truncated as a cast would).
    pub fn from_f64s(dtype: DType, vals: impl IntoIterator<Item = f64>) -> Storage {
        let it = vals.into_iter();
        match dtype {
            DType::F32 => Storage::F32(it.map(|x| x as f32).collect()),
            // Through f32, as the interpreter stores f16: the same on every host.
            DType::F16 => Storage::F16(it.map(|x| f16::from_f32(x as f32).to_bits()).collect()),
            DType::BF16 => Storage::BF16(it.map(|x| bf16::from_f64(x).to_bits()).collect()),
            DType::F64 => Storage::F64(it.collect()),
            DType::I8 => Storage::I8(it.map(|x| x as i8).collect()),
            DType::U8 => Storage::U8(it.map(|x| x as u8).collect()),
            DType::I16 => Storage::I16(it.map(|x| x as i16).collect()),
            DType::U16 => Storage::U16(it.map(|x| x as u16).collect()),
            DType::I32 => Storage::I32(it.map(|x| x as i32).collect()),
            DType::U32 => Storage::U32(it.map(|x| x as u32).collect()),
            DType::I64 => Storage::I64(it.map(|x| x as i64).collect()),
            DType::U64 => Storage::U64(it.map(|x| x as u64).collect()),
            DType::Bool => Storage::Bool(it.map(|x| x != 0.0).collect()),
        }
    }

    /// Builds storage of `dtype` from i64 values (wrapping as a cast would).
    pub fn from_i64s(dtype: DType, vals: impl IntoIterator<Item = i64>) -> Storage {
        let it = vals.into_iter();
        match dtype {
            DType::I8 => Storage::I8(it.map(|x| x as i8).collect()),
            DType::U8 => Storage::U8(it.map(|x| x as u8).collect()),
            DType::I16 => Storage::I16(it.map(|x| x as i16).collect()),
            DType::U16 => Storage::U16(it.map(|x| x as u16).collect()),
            DType::I32 => Storage::I32(it.map(|x| x as i32).collect()),
            DType::U32 => Storage::U32(it.map(|x| x as u32).collect()),
            DType::I64 => Storage::I64(it.collect()),
            DType::U64 => Storage::U64(it.map(|x| x as u64).collect()),
            DType::Bool => Storage::Bool(it.map(|x| x != 0).collect()),
            other => Storage::from_f64s(other, it.map(|x| x as f64)),
        }
    }
}

/// A dense row-major tensor with a concrete shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Storage,
}

impl Tensor {
    /// Fails (returns `None`) when the element count does not match the shape.
    pub fn new(shape: Vec<usize>, data: Storage) -> Option<Tensor> {
        (shape.iter().product::<usize>() == data.len()).then_some(Tensor { shape, data })
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: Storage::zeros(dtype, n),
        }
    }

    pub fn from_f32(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            v.len(),
            "shape/data mismatch"
        );
        Tensor {
            shape,
            data: Storage::F32(v),
        }
    }

    pub fn from_i64(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            v.len(),
            "shape/data mismatch"
        );
        Tensor {
            shape,
            data: Storage::I64(v),
        }
    }

    /// A rank-0 tensor holding one value of `dtype`.
    pub fn scalar_f64(dtype: DType, v: f64) -> Tensor {
        Tensor {
            shape: vec![],
            data: Storage::from_f64s(dtype, [v]),
        }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// All elements as i64: how shape-determining tensors (Reshape's shape, Slice's starts…) are read.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        (0..self.len()).map(|i| self.data.get_i64(i)).collect()
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.data.get_f64(i)).collect()
    }

    /// Converts to another element type with cast semantics.
    pub fn cast(&self, to: DType) -> Tensor {
        let data = if to.is_float() || self.dtype().is_float() {
            Storage::from_f64s(to, self.to_f64_vec())
        } else {
            Storage::from_i64s(to, self.to_i64_vec())
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }
}
