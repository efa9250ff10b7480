//! Helpers for kiln's end-to-end tests (`tests/*.rs`): where the repository
//! and the shared reference models are, running a model the way `kiln run`
//! does, comparing tensors with a tolerance, and running the `kiln` binary.

pub mod build;

use kiln_ir::{DType, Model, Storage, Tensor};
use kiln_targets::cpu::JitModel;
use kiln_targets::plan::AotProgram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The workspace root (this crate lives in `<repo>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `$KILN_SHARED`, or `<repo>/../shared`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"))
}

/// The reference models. Panics if missing: a silently skipped suite looks like a passing one.
pub fn models_dir() -> PathBuf {
    let d = shared_dir().join("models");
    assert!(
        d.is_dir(),
        "reference models not found at '{}' (set KILN_SHARED to the folder holding models/)",
        d.display()
    );
    d
}

/// A model file of the shared set, e.g. `model_path("mnist_mlp")`.
pub fn model_path(name: &str) -> PathBuf {
    models_dir().join(format!("{name}.onnx"))
}

/// The names of every model of the shared set (`*.onnx` in [`models_dir`]), sorted.
pub fn model_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(models_dir())
        .expect("read the models dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            Some(name.to_str()?.strip_suffix(".onnx")?.to_string())
        })
        .collect();
    names.sort();
    names
}

/// Fails unless `listed` names exactly the models of the shared set, so a
/// suite with one test per model cannot silently miss a new model.
pub fn assert_lists_every_model(listed: &[&str]) {
    let mut listed: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        model_names(),
        listed,
        "the shared models (left) and the tests (right) differ"
    );
}

/// `in_0, in_1, …` and `out_0, …` of a model's `.io.npz`, each sorted by index.
pub fn load_io(name: &str) -> (Vec<Tensor>, Vec<Tensor>) {
    let path = models_dir().join(format!("{name}.io.npz"));
    let arrays = kiln_compiler::io::read_npz(&path).unwrap_or_else(|e| panic!("{e}"));
    let pick = |prefix: &str| {
        let mut v: Vec<(usize, Tensor)> = arrays
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.parse().ok()?, t.clone())))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, t)| t).collect::<Vec<_>>()
    };
    (pick("in_"), pick("out_"))
}

/// Loads a model and simplifies it, as every `kiln` command does.
pub fn load(path: &Path) -> Result<Model, String> {
    let mut m = kiln_compiler::frontend::load_model(path).map_err(|e| format!("load: {e}"))?;
    kiln_compiler::passes::simplify(&mut m).map_err(|e| format!("simplify: {e}"))?;
    Ok(m)
}

/// Load, simplify and execute: the code path of `kiln run`.
pub fn run_file(path: &Path, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    let m = load(path)?;
    kiln_compiler::exec::run_model(&m, inputs).map_err(|e| format!("run: {e}"))
}

/// Load, simplify, bind to the inputs' shapes, compile for the host with the
/// native backend and run the generated code in-process (`kiln run --backend native`).
pub fn run_file_native(path: &Path, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let m = load(path)?;
    kiln_compiler::native::run_native(&m, inputs).map_err(|e| format!("native: {e}"))
}

/// The allowed error for an expected value: `1e-4 + 1e-3·|want|` for f32/f64,
/// looser for the 16-bit floats, whose rounding step is larger.
fn tolerance(dt: DType, want: f64) -> f64 {
    match dt {
        DType::F16 => 1e-3 + 4e-3 * want.abs(),
        DType::BF16 => 1e-2 + 1.6e-2 * want.abs(),
        _ => 1e-4 + 1e-3 * want.abs(),
    }
}

/// Compares dtype-aware: exact for integers and bools, NaN equals NaN,
/// infinities must match, finite floats within [`tolerance`] (and, for f32
/// and f64, within the outputs' own scale). The error names the worst element.
pub fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    compare_by(got, want, tolerance, true)
}

/// As [`compare`], with finite floats of any dtype within `abs + rel·|want|`
/// and no scale check: for comparisons tighter than the models' tolerance,
/// such as generated code against the interpreter on the same kernel.
pub fn compare_within(got: &Tensor, want: &Tensor, abs: f64, rel: f64) -> Result<(), String> {
    compare_by(got, want, |_, w| abs + rel * w.abs(), false)
}

fn compare_by(
    got: &Tensor,
    want: &Tensor,
    tolerance: impl Fn(DType, f64) -> f64,
    scale: bool,
) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype: got {}, want {}", got.dtype(), want.dtype()));
    }
    if got.shape != want.shape {
        return Err(format!("shape: got {:?}, want {:?}", got.shape, want.shape));
    }
    let dt = want.dtype();
    if !dt.is_float() {
        let (g, w) = (got.to_i64_vec(), want.to_i64_vec());
        // u64 above i64::MAX wraps identically on both sides, so equality is still exact.
        let bad = g.iter().zip(&w).position(|(a, b)| a != b);
        return match bad {
            None => Ok(()),
            Some(i) => {
                let n = g.iter().zip(&w).filter(|(a, b)| a != b).count();
                Err(format!(
                    "{n} of {} elements differ; first at {}: got {}, want {}",
                    g.len(),
                    index(&want.shape, i),
                    g[i],
                    w[i]
                ))
            }
        };
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst: Option<(usize, f64)> = None;
    let mut n_bad = 0;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let excess = if a.is_nan() || b.is_nan() {
            if a.is_nan() && b.is_nan() {
                continue;
            }
            f64::INFINITY
        } else if a.is_infinite() || b.is_infinite() {
            if a == b {
                continue;
            }
            f64::INFINITY
        } else {
            let d = (a - b).abs();
            if d <= tolerance(dt, b) {
                continue;
            }
            d / tolerance(dt, b)
        };
        n_bad += 1;
        if worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if scale && worst.is_none() && matches!(dt, DType::F32 | DType::F64) {
        scale_check(&g, &w)?;
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "{n_bad} of {} elements out of tolerance; worst at {}: got {}, want {} (|diff| {:.3e})",
            g.len(),
            index(&want.shape, i),
            g[i],
            w[i],
            (g[i] - w[i]).abs()
        )),
    }
}

/// For outputs whose values are all small (random-weight CNNs give logits
/// around 1e-9), the absolute part of the tolerance would accept anything,
/// zeros included; so the error must also stay within 1e-3 of the output's
/// own scale (its largest finite magnitude).
fn scale_check(g: &[f64], w: &[f64]) -> Result<(), String> {
    let finite = |x: &&f64| x.is_finite();
    let scale = w.iter().filter(finite).fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 || scale >= 0.1 {
        return Ok(());
    }
    let diff = g
        .iter()
        .zip(w)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    if diff > 1e-3 * scale {
        return Err(format!(
            "outputs are small (largest |want| {scale:.3e}) and the largest |diff| {diff:.3e} exceeds 1e-3 of that scale"
        ));
    }
    Ok(())
}

/// Flat index → `[i, j, k]`.
fn index(shape: &[usize], mut flat: usize) -> String {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = flat % d;
            flat /= d;
        }
    }
    format!("{idx:?}")
}

/// Compares lists of outputs, naming the first that differs.
pub fn compare_all(got: &[Tensor], want: &[Tensor]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("got {} outputs, want {}", got.len(), want.len()));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        compare(g, w).map_err(|e| format!("output {k}: {e}"))?;
    }
    Ok(())
}

/// A fresh, empty directory under the system temp dir, unique per process and call.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "kiln-tests-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// The running test executable's `<target>/<profile>` directory, where cargo
/// puts the workspace's binaries and static libraries for the same profile.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test-exe>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps")
        .to_path_buf()
}

/// Cargo's name for the profile the running test executable was built with
/// (`debug`, `release`, or a custom one).
pub fn profile() -> String {
    profile_dir()
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("debug")
        .to_string()
}

/// `cargo ARGS…` from the repository root with the running test's profile
/// (`--release`, `--profile P` or none), so that what it builds matches the
/// test executable. Add `--target-dir` and more arguments as needed.
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(repo_root());
    match profile().as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        p => {
            cmd.args(["--profile", p]);
        }
    }
    cmd
}

/// The `kiln` binary. `CARGO_BIN_EXE_kiln` only exists inside kiln-compiler's
/// own tests, so this builds it (a no-op when fresh) into the same target dir
/// and profile as the running test executable. `KILN_BIN` overrides.
pub fn kiln_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("KILN_BIN") {
            return PathBuf::from(p);
        }
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cmd = cargo(&["build", "--quiet", "-p", "kiln-compiler", "--bin", "kiln"]);
        cmd.arg("--target-dir").arg(target_dir);
        let status = cmd.status().expect("run cargo build for the kiln binary");
        assert!(status.success(), "building the kiln binary failed");
        let bin = profile_dir.join(format!("kiln{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "kiln binary not found at '{}'",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Runs a program built from the C test driver (`kiln_targets::c::test_main`):
/// writes each input's raw bytes to `dir/in{i}.bin`, passes those paths and
/// then `n_outputs` paths `dir/out{k}.bin`, checks that it exits with 0, and
/// returns what it wrote to each output.
pub fn run_driver(
    mut cmd: Command,
    dir: &Path,
    inputs: &[Tensor],
    n_outputs: usize,
) -> Result<Vec<Vec<u8>>, String> {
    for (i, t) in inputs.iter().enumerate() {
        let p = dir.join(format!("in{i}.bin"));
        std::fs::write(&p, t.data.to_le_bytes())
            .map_err(|e| format!("write '{}': {e}", p.display()))?;
        cmd.arg(p);
    }
    let outs: Vec<PathBuf> = (0..n_outputs)
        .map(|k| dir.join(format!("out{k}.bin")))
        .collect();
    cmd.args(&outs);
    let r = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !r.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            r.status,
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    outs.iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("read '{}': {e}", p.display())))
        .collect()
}

/// Runs `kiln ARGS…` and returns its output.
pub fn kiln<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(kiln_bin())
        .args(args)
        .env_remove("KILN_LOG")
        .output()
        .expect("spawn kiln")
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs JIT-compiled code of `prog` on `inputs` (one tensor per input of
/// `prog`, in order) and returns its outputs with `prog`'s shapes.
pub fn run_jit(
    jit: &JitModel,
    prog: &AotProgram,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, String> {
    let in_bytes: Vec<Vec<u8>> = inputs.iter().map(|t| t.data.to_le_bytes()).collect();
    let in_refs: Vec<&[u8]> = in_bytes.iter().map(|b| b.as_slice()).collect();
    let mut out_bytes: Vec<Vec<u8>> = prog
        .outputs
        .iter()
        .map(|o| vec![0u8; o.byte_size()])
        .collect();
    let mut out_refs: Vec<&mut [u8]> = out_bytes.iter_mut().map(|b| b.as_mut_slice()).collect();
    jit.run(&in_refs, &mut out_refs)
        .map_err(|e| e.to_string())?;
    prog.outputs
        .iter()
        .zip(out_bytes)
        .map(|(o, b)| {
            tensor_from_bytes(&o.shape, o.dtype, &b)
                .map_err(|e| format!("output '{}': {e}", o.name))
        })
        .collect()
}

/// A tensor from raw little-endian bytes, as generated code writes its outputs.
pub fn tensor_from_bytes(shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor, String> {
    let data = Storage::from_le_bytes(dtype, bytes)
        .ok_or_else(|| format!("{} bytes do not make {dtype} elements", bytes.len()))?;
    Tensor::new(shape.to_vec(), data).ok_or_else(|| {
        format!(
            "{} elements do not make shape {shape:?}",
            bytes.len() / dtype.size().max(1)
        )
    })
}
