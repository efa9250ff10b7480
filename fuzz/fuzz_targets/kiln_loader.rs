//! kiln's own text and binary readers on arbitrary input: a model or an error, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_ir::binary::decode(data);
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = kiln_ir::text::parse(src);
    }
});
