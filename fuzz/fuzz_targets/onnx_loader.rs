//! Any byte string given to the ONNX frontend must give a model or an error, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_compiler::frontend::onnx::load_onnx_bytes(data, None);
});
