//! A cheap, deterministic stand-in for `scripts/fuzz.sh`: truncate and corrupt
//! real models and check that every loader answers Ok or Err, never panics.

use kiln_compiler::frontend::onnx::load_onnx_bytes;
use kiln_tests::{build, models_dir};
use onnx_protobuf::Message;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// xorshift64*: fixed seed, so a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The mutants of `seed`: `truncs` truncations spread over the file, then `flips` copies with 1–4 bytes changed.
fn mutants(seed: &[u8], rng: &mut Rng, truncs: usize, flips: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(truncs + flips);
    for k in 0..truncs {
        out.push(seed[..seed.len() * k / truncs].to_vec());
    }
    for _ in 0..flips {
        let mut b = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = match rng.below(4) {
                0 => b[i] ^ (1 << rng.below(8)),
                1 => 0xff,
                2 => 0,
                _ => rng.next() as u8,
            };
        }
        out.push(b);
    }
    out
}

/// Runs `load` on every mutant; returns the panics as (mutant index, message).
fn check(
    what: &str,
    seed: &[u8],
    truncs: usize,
    flips: usize,
    load: impl Fn(&[u8]) -> bool,
) -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.len() as u64);
    let mut panics = Vec::new();
    let mut ok = 0;
    let ms = mutants(seed, &mut rng, truncs, flips);
    for (i, m) in ms.iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| load(m))) {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                panics.push(format!("{what} mutant {i} (len {}): {msg}", m.len()));
            }
        }
    }
    eprintln!(
        "{what}: {} mutants, {ok} loaded, {} errors, {} panics",
        ms.len(),
        ms.len() - ok - panics.len(),
        panics.len()
    );
    panics
}

fn onnx_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> =
        ["tf_cond", "tf_while_loop", "onnxzoo_light_squeezenet"]
            .iter()
            .map(|n| {
                let p = models_dir().join(format!("{n}.onnx"));
                (
                    n.to_string(),
                    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
                )
            })
            .collect();
    seeds.push((
        "add".into(),
        build::add_model().write_to_bytes().expect("serialize"),
    ));
    seeds
}

fn assert_no_panics(panics: Vec<String>) {
    assert!(
        panics.is_empty(),
        "{} loader panic(s):\n{}",
        panics.len(),
        panics.join("\n")
    );
}

#[test]
fn onnx_loader_survives_corruption() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut panics = Vec::new();
    for (name, bytes) in onnx_seeds() {
        assert!(
            load_onnx_bytes(&bytes, None).is_ok() || name != "add",
            "the built add model must load"
        );
        panics.extend(check(&format!("onnx {name}"), &bytes, 100, 150, |b| {
            load_onnx_bytes(b, None).is_ok()
        }));
    }
    std::panic::set_hook(prev);
    assert_no_panics(panics);
}

#[test]
fn kiln_loaders_survive_corruption() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut panics = Vec::new();
    for (name, bytes) in onnx_seeds() {
        // Seeds in kiln's own forms come from the ONNX frontend; skip models it cannot load yet.
        let Ok(model) = load_onnx_bytes(&bytes, None) else {
            continue;
        };
        let text = kiln_ir::text::print(&model).into_bytes();
        let bin = kiln_ir::binary::encode(&model);
        // Unmutated seeds must load, or the mutants test nothing.
        assert!(
            kiln_ir::text::parse(&String::from_utf8_lossy(&text)).is_ok(),
            "{name}: text form does not parse"
        );
        assert!(
            kiln_ir::binary::decode(&bin).is_ok(),
            "{name}: binary form does not decode"
        );
        panics.extend(check(&format!("kiln text {name}"), &text, 60, 90, |b| {
            kiln_ir::text::parse(&String::from_utf8_lossy(b)).is_ok()
        }));
        panics.extend(check(&format!("kiln binary {name}"), &bin, 60, 90, |b| {
            kiln_ir::binary::decode(b).is_ok()
        }));
    }
    std::panic::set_hook(prev);
    assert_no_panics(panics);
}

/// Inputs the coverage-guided fuzzer (`scripts/fuzz.sh`) found crashing a
/// loader, kept so they stay fixed: each must load or fail with an error.
#[test]
fn fuzzer_findings_stay_fixed() {
    let dir = kiln_tests::repo_root().join("tests/data");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/data exists") {
        let path = entry.expect("readable entry").path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("fuzz-"))
        {
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable file");
        let r = catch_unwind(AssertUnwindSafe(|| {
            load_onnx_bytes(&bytes, None).map(|_| ())
        }));
        assert!(r.is_ok(), "{} panicked the ONNX loader", path.display());
        seen += 1;
    }
    assert!(seen > 0, "no fuzzer findings in {}", dir.display());
}
