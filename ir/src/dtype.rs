//! Element types shared by the graph IR, the kernel IR and tensors.
//!
//! The set is ONNX's numeric types minus strings and complex numbers, which no
//! target kiln renders for can compute with.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of a tensor or of a kernel-IR scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Bool,
}

/// How the interpreter and renderers compute with a type: narrow floats are
/// computed in f32 and rounded when stored, integers in 64 bits and wrapped
/// when stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeClass {
    F32,
    F64,
    Int,
    Bool,
}

impl DType {
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
    ];

    /// Bytes per element in memory.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    pub fn is_int(self) -> bool {
        !self.is_float() && self != DType::Bool
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
    }

    pub fn compute_class(self) -> ComputeClass {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => ComputeClass::F32,
            DType::F64 => ComputeClass::F64,
            DType::Bool => ComputeClass::Bool,
            _ => ComputeClass::Int,
        }
    }

    /// The name used in kiln's text format and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// ONNX `TensorProto.DataType` code, for the frontend and `.pb` tensors.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U32 => 12,
            DType::U64 => 13,
            DType::BF16 => 16,
        }
    }

    pub fn from_onnx_code(code: i32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.onnx_code() == code)
    }

    /// The smallest and largest finite value, as f64 (used for reduction identities and clamps).
    pub fn min_max(self) -> (f64, f64) {
        match self {
            DType::F32 => (f32::MIN as f64, f32::MAX as f64),
            DType::F16 => (-65504.0, 65504.0),
            DType::BF16 => (f32::MIN as f64, f32::MAX as f64),
            DType::F64 => (f64::MIN, f64::MAX),
            DType::I8 => (i8::MIN as f64, i8::MAX as f64),
            DType::U8 => (0.0, u8::MAX as f64),
            DType::I16 => (i16::MIN as f64, i16::MAX as f64),
            DType::U16 => (0.0, u16::MAX as f64),
            DType::I32 => (i32::MIN as f64, i32::MAX as f64),
            DType::U32 => (0.0, u32::MAX as f64),
            DType::I64 => (i64::MIN as f64, i64::MAX as f64),
            DType::U64 => (0.0, u64::MAX as f64),
            DType::Bool => (0.0, 1.0),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
