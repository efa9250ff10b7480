//! Frontends: ONNX import.
