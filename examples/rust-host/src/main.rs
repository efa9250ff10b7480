//! Runs the MLP that build.rs compiled on `input.npy` and checks the result
//! against onnxruntime's `expected.npy` (both in `examples/mnist_mlp/`).
//!
//! Usage: `kiln-example-rust-host [INPUT.npy EXPECTED.npy]`; exit status 0 when
//! every logit is within 1e-4 + 1e-3·|expected|, 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

include!(concat!(env!("OUT_DIR"), "/mnist_mlp.rs"));

/// Reads a little-endian f32 `.npy` file (format 1.x/2.x/3.x, C order).
fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |why: &str| format!("{}: {why}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        let b: [u8; 4] = bytes
            .get(8..12)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("truncated"))?;
        (u32::from_le_bytes(b) as usize, 12)
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("expected little-endian f32 in C order"));
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
        .collect::<Result<Vec<_>, _>>()?;
    let data = &bytes[start + hlen..];
    let n: usize = shape.iter().product();
    if data.len() != 4 * n {
        return Err(bad("data length does not match the shape"));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

fn run(input: &Path, expected: &Path) -> Result<bool, String> {
    let (shape, x) = read_npy_f32(input)?;
    let (_, want) = read_npy_f32(expected)?;
    println!(
        "model {} (runtime {}): input {shape:?}, arena {} bytes, {} thread(s)",
        MNIST_MLP_INFO.name,
        kiln_runtime::version(),
        MnistMlp::ARENA_SIZE,
        kiln_runtime::kiln_runtime_num_threads()
    );
    // The typed entry point, with an arena on the heap (it may be large).
    let mut arena = Box::new(MnistMlpArena::new());
    let mut logits = vec![0f32; MnistMlp::OUTPUT_0_ELEMS];
    MnistMlp::run(&x, &mut logits, &mut arena[..]).map_err(|e| e.to_string())?;
    // The same model through a session that owns its arena gives the same bits.
    let mut session = kiln_runtime::Session::<MnistMlp>::new();
    let mut again = vec![0f32; logits.len()];
    session
        .run(&[x[..].into()], &mut [again[..].as_mut().into()])
        .map_err(|e| e.to_string())?;
    if again != logits {
        return Err("two runs on the same input differ".into());
    }
    // A wrong buffer is an error value, not a crash.
    let short = MnistMlp::run(&x[1..], &mut logits, &mut arena[..]);
    println!(
        "short input rejected: {}",
        short.map_or_else(|e| e.to_string(), |_| "NOT REJECTED".into())
    );
    let mut ok = want.len() == logits.len() && short.is_err();
    for (i, (g, w)) in logits.iter().zip(&want).enumerate() {
        let d = (g - w).abs();
        let pass = d <= 1e-4 + 1e-3 * w.abs();
        ok &= pass;
        println!(
            "logit {i}: got {g:>12.6} want {w:>12.6} {}",
            if pass { "ok" } else { "MISMATCH" }
        );
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mnist_mlp");
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (input, expected) = match args.as_slice() {
        [] => (here.join("input.npy"), here.join("expected.npy")),
        [i, e] => (i.clone(), e.clone()),
        _ => {
            eprintln!("usage: kiln-example-rust-host [INPUT.npy EXPECTED.npy]");
            return ExitCode::from(2);
        }
    };
    match run(&input, &expected) {
        Ok(true) => {
            println!("PASS");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("FAIL");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
