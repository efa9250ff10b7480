//! kiln's intermediate representations.
//!
//! - [`graph`]: the graph IR that frontends produce and passes transform.
//! - [`kernel`]: the kernel IR every op lowers to, with the reference interpreter.
//! - [`text`] and [`binary`]: kiln's own model format, readable and compact.
//!
//! This crate knows nothing of ONNX or of any target.

pub mod binary;
pub mod dtype;
pub mod graph;
pub mod infer;
pub mod kernel;
pub mod shape;
pub mod tensor;
pub mod text;

pub use dtype::DType;
pub use graph::{Model, Node, Op, Region, ValueId, ValueInfo};
pub use shape::{Dim, TensorType};
pub use tensor::{Storage, Tensor};
