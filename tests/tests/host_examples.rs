//! The host examples end to end: `examples/c-host` (build.sh + main.c) on the
//! shared models, compared with onnxruntime's outputs (the `.io.npz` files);
//! `examples/rust-host` (kiln-build in build.rs) on mnist_mlp; and the
//! runtime's thread pool through its C ABI, against a serial computation.
//!
//! Needs `cc` and `bash`; a missing tool fails the test.

use kiln_ir::Tensor;
use kiln_tests::{compare_all, kiln_bin, load_io, model_path, repo_root, temp_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `<target>/<profile>` of the running test executable, and the profile name.
fn profile_dir() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps")
        .to_path_buf();
    let profile = dir
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("debug")
        .to_string();
    (dir, profile)
}

/// `cargo ARGS` in the repository with the test's target dir and profile.
fn cargo(args: &[&str], target_dir: &Path) -> Output {
    cargo_env(args, target_dir, &[])
}

/// [`cargo`] with extra environment variables.
fn cargo_env(args: &[&str], target_dir: &Path, env: &[(&str, &str)]) -> Output {
    let (_, profile) = profile_dir();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).arg("--target-dir").arg(target_dir);
    cmd.envs(env.iter().copied());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        p => {
            cmd.args(["--profile", p]);
        }
    }
    cmd.current_dir(repo_root())
        .output()
        .expect("run cargo (is it on PATH?)")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Where a C host program is built for and run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Platform {
    Host,
    /// aarch64 Linux: linked with `aarch64-linux-gnu-gcc`, run under `qemu-aarch64`.
    Aarch64,
}

impl Platform {
    const AARCH64: &'static str = "aarch64-unknown-linux-gnu";
}

/// A folder holding `libkiln_runtime.a` built with `std` (the thread pool)
/// for `platform`. It gets a target dir of its own: the shared one's
/// `libkiln_runtime.a` is overwritten by whichever feature set was built last.
fn runtime_lib_dir_for(platform: Platform) -> PathBuf {
    static HOST: OnceLock<PathBuf> = OnceLock::new();
    static AARCH64: OnceLock<PathBuf> = OnceLock::new();
    let cell = match platform {
        Platform::Host => &HOST,
        Platform::Aarch64 => &AARCH64,
    };
    cell.get_or_init(|| {
        let (profile_dir, profile) = profile_dir();
        let target = profile_dir
            .parent()
            .expect("target dir")
            .join("kiln-runtime-c");
        let mut args = vec![
            "build",
            "--quiet",
            "-p",
            "kiln-runtime",
            "--features",
            "std",
        ];
        if platform == Platform::Aarch64 {
            args.extend(["--target", Platform::AARCH64]);
        }
        let o = cargo(&args, &target);
        assert!(
            o.status.success(),
            "building kiln-runtime failed (for aarch64 it needs `rustup target add {}`):\n{}",
            Platform::AARCH64,
            text(&o)
        );
        let lib = match platform {
            Platform::Host => target.join(&profile),
            Platform::Aarch64 => target.join(Platform::AARCH64).join(&profile),
        }
        .join("libkiln_runtime.a");
        assert!(lib.is_file(), "no runtime library at '{}'", lib.display());
        lib.parent().expect("lib dir").to_path_buf()
    })
    .clone()
}

fn runtime_lib_dir() -> PathBuf {
    runtime_lib_dir_for(Platform::Host)
}

/// Runs `examples/c-host/build.sh` on `model` into `out`; returns the host program.
fn build_c_host(
    model: &Path,
    out: &Path,
    extra: &[&str],
    platform: Platform,
) -> Result<PathBuf, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("examples/c-host/build.sh"))
        .arg(model)
        .arg(out)
        .args(extra)
        .env("KILN", kiln_bin())
        .env("KILN_RUNTIME_DIR", runtime_lib_dir_for(platform));
    if platform == Platform::Aarch64 {
        cmd.args(["--target", Platform::AARCH64])
            .env("CC", "aarch64-linux-gnu-gcc");
    }
    let o = cmd.output().expect("run bash (is it installed?)");
    if !o.status.success() {
        return Err(format!("build.sh failed ({}):\n{}", o.status, text(&o)));
    }
    let stem = model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    let exe = out.join(format!("{stem}_host"));
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!("build.sh did not produce '{}'", exe.display()))
    }
}

/// Builds the C host for a shared model, runs it on the model's reference
/// inputs and compares every output with onnxruntime's.
fn check_c_host(name: &str, extra: &[&str], threads: &str) -> Result<(), String> {
    check_c_host_on(name, extra, threads, Platform::Host)
}

fn check_c_host_on(
    name: &str,
    extra: &[&str],
    threads: &str,
    platform: Platform,
) -> Result<(), String> {
    let dir = temp_dir(&format!("chost-{name}"));
    let exe = build_c_host(&model_path(name), &dir, extra, platform)?;
    let (ins, wants) = load_io(name);
    let mut cmd = match platform {
        Platform::Host => Command::new(&exe),
        Platform::Aarch64 => {
            let mut c = Command::new("qemu-aarch64");
            c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(&exe);
            c
        }
    };
    cmd.arg("-o").arg(&dir).env("KILN_NUM_THREADS", threads);
    for (i, t) in ins.iter().enumerate() {
        let p = dir.join(format!("in_{i}.npy"));
        kiln_compiler::io::write_npy(&p, t).map_err(|e| e.to_string())?;
        cmd.arg(p);
    }
    let o = cmd
        .output()
        .map_err(|e| format!("run host (for aarch64: is qemu-user installed?): {e}"))?;
    if !o.status.success() {
        return Err(format!("host failed ({}):\n{}", o.status, text(&o)));
    }
    let got: Vec<Tensor> = (0..wants.len())
        .map(|k| kiln_compiler::io::read_npy(&dir.join(format!("out_{k}.npy"))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("read outputs: {e}"))?;
    compare_all(&got, &wants)?;
    println!("{name}: {}", String::from_utf8_lossy(&o.stdout).trim());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn c_host_mnist_mlp_through_portable_c() {
    check_c_host("mnist_mlp", &["--emit", "c"], "2").unwrap_or_else(|e| panic!("{e}"));
}

/// Small models through `--emit c` (the weights become C text, so the big
/// CNNs are left to the native backend's test below).
#[test]
fn c_host_small_models_through_portable_c() {
    let fails: Vec<String> = ["mnist_cnn", "kws_dscnn", "keras_kws_dscnn"]
        .iter()
        .filter_map(|m| {
            check_c_host(m, &["--emit", "c"], "1")
                .err()
                .map(|e| format!("{m}: {e}"))
        })
        .collect();
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
}

/// Every shared model through `kiln compile`'s native object for the host.
#[test]
fn c_host_every_model_native() {
    let names = shared_model_names();
    let fails: Vec<String> = names
        .iter()
        .filter_map(|m| check_c_host(m, &[], "2").err().map(|e| format!("{m}: {e}")))
        .collect();
    assert!(
        fails.is_empty(),
        "{} of {} models failed:\n{}",
        fails.len(),
        names.len(),
        fails.join("\n\n")
    );
}

/// Every shared model compiled by `kiln compile --target aarch64-unknown-linux-gnu`,
/// linked with `aarch64-linux-gnu-gcc` and the aarch64 runtime, run under
/// `qemu-aarch64` and compared with onnxruntime's outputs.
#[test]
fn c_host_every_model_aarch64_under_qemu() {
    let names = shared_model_names();
    let fails: Vec<String> = names
        .iter()
        .filter_map(|m| {
            check_c_host_on(m, &[], "2", Platform::Aarch64)
                .err()
                .map(|e| format!("{m}: {e}"))
        })
        .collect();
    assert!(
        fails.is_empty(),
        "{} of {} models failed on aarch64:\n{}",
        fails.len(),
        names.len(),
        fails.join("\n\n")
    );
}

fn shared_model_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(kiln_tests::models_dir())
        .expect("list models")
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".io.npz").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "expected the shared model set, found {names:?}"
    );
    names
}

#[test]
fn rust_host_example_builds_and_matches_onnxruntime() {
    let (profile_dir, _) = profile_dir();
    let target = profile_dir.parent().expect("target dir");
    let o = cargo(&["run", "--quiet", "-p", "kiln-example-rust-host"], target);
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("PASS"),
        "rust-host failed:\n{t}"
    );
    assert!(t.contains("short input rejected: input 0 'image'"), "{t}");
}

/// The same example cross-compiled for aarch64 Linux (Cranelift's aarch64
/// object, archived by kiln-build, linked by the cross gcc) and run under
/// `qemu-aarch64`.
#[test]
fn rust_host_example_cross_aarch64_under_qemu() {
    let (profile_dir, profile) = profile_dir();
    let target = profile_dir.parent().expect("target dir");
    let triple = "aarch64-unknown-linux-gnu";
    let o = cargo_env(
        &[
            "build",
            "--quiet",
            "-p",
            "kiln-example-rust-host",
            "--target",
            triple,
        ],
        target,
        &[(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )],
    );
    assert!(
        o.status.success(),
        "cross build failed (needs `rustup target add {triple}` and aarch64-linux-gnu-gcc):\n{}",
        text(&o)
    );
    let exe = target
        .join(triple)
        .join(&profile)
        .join("kiln-example-rust-host");
    let o = Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(&exe)
        .output()
        .expect("run qemu-aarch64 (is qemu-user installed?)");
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("PASS"),
        "aarch64 rust-host failed:\n{t}"
    );
}

/// A C program that drives `kiln_parallel_for` directly: fills an array with
/// a value computed per index (integer mixing plus an exactly rounded
/// `sqrt`), with and without nested calls, records which thread ran each
/// part, and prints a 64-bit hash of the array plus the thread counts.
const POOL_CHECK: &str = r#"
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "kiln_runtime.h"

#define N 100003
static double out[N];
static pthread_t who[64];
static int parts, nested_bad;

static double value(size_t i) {
  uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  return (double)(x & 0xFFFFF) + sqrt((double)i);
}
struct sub { pthread_t me; size_t base; };
static void inner(void *ctx, size_t b, size_t e) {
  struct sub *s = (struct sub *)ctx;
  size_t i;
  if (!pthread_equal(s->me, pthread_self())) nested_bad = 1;
  for (i = b; i < e; i++) out[s->base + i] = value(s->base + i);
}
static void fill(void *ctx, size_t b, size_t e) {
  int nested = *(int *)ctx;
  int k = __atomic_fetch_add(&parts, 1, __ATOMIC_SEQ_CST);
  if (k < 64) who[k] = pthread_self();
  if (nested) {
    /* A call from inside a task runs inline, on this thread. */
    struct sub s;
    s.me = pthread_self();
    s.base = b;
    kiln_parallel_for(e - b, inner, &s);
  } else {
    size_t i;
    for (i = b; i < e; i++) out[i] = value(i);
  }
}
static void nothing(void *ctx, size_t b, size_t e) { (void)ctx; (void)b; (void)e; }

static uint64_t hash(void) {
  uint64_t h = 1469598103934665603ull;
  size_t i;
  for (i = 0; i < N; i++) {
    uint64_t bits;
    memcpy(&bits, &out[i], 8);
    h = (h ^ bits) * 1099511628211ull;
  }
  return h;
}
static int distinct(void) {
  int i, j, d = 0;
  for (i = 0; i < parts && i < 64; i++) {
    for (j = 0; j < i; j++) if (pthread_equal(who[i], who[j])) break;
    if (j == i) d++;
  }
  return d;
}
int main(void) {
  int nested = 0, r;
  uint64_t h1, h2;
  int d1, d2, p1;
  struct timespec t0, t1;
  kiln_parallel_for(N, fill, &nested);
  h1 = hash(); d1 = distinct(); p1 = parts;
  memset(out, 0, sizeof out); parts = 0;
  nested = 1;
  kiln_parallel_for(N, fill, &nested);
  h2 = hash(); d2 = distinct();
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (r = 0; r < 20000; r++) kiln_parallel_for(64, nothing, NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("threads=%d parts=%d distinct=%d hash=%016llx nested_hash=%016llx nested_distinct=%d nested_bad=%d call_ns=%.0f version=%s\n",
         kiln_runtime_num_threads(), p1, d1, (unsigned long long)h1, (unsigned long long)h2, d2,
         nested_bad, ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 20000.0,
         kiln_runtime_version());
  return 0;
}
"#;

/// The hash `POOL_CHECK` prints for a serial fill, computed here.
fn expected_hash() -> u64 {
    let mut h: u64 = 1469598103934665603;
    for i in 0..100003u64 {
        let mut x = i.wrapping_mul(0x9E3779B97F4A7C15);
        x ^= x >> 29;
        let v = (x & 0xFFFFF) as f64 + (i as f64).sqrt();
        h = (h ^ v.to_bits()).wrapping_mul(1099511628211);
    }
    h
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in '{line}'"))
}

#[test]
fn thread_pool_same_results_for_1_2_4_threads_and_nested_calls() {
    let dir = temp_dir("pool");
    std::fs::write(dir.join("pool_check.c"), POOL_CHECK).expect("write pool_check.c");
    let exe = dir.join("pool_check");
    let o = Command::new("cc")
        .args(["-std=c99", "-O2", "-Wall", "-Werror", "-I"])
        .arg(repo_root().join("runtime/include"))
        .arg(dir.join("pool_check.c"))
        .arg("-L")
        .arg(runtime_lib_dir())
        .args(["-lkiln_runtime", "-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("run cc (is a C compiler installed?)");
    assert!(o.status.success(), "cc failed:\n{}", text(&o));
    let want = format!("{:016x}", expected_hash());
    for threads in ["1", "2", "4"] {
        let o = Command::new(&exe)
            .env("KILN_NUM_THREADS", threads)
            .output()
            .expect("run pool_check");
        let line = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "pool_check failed:\n{}", text(&o));
        println!("KILN_NUM_THREADS={threads}: {}", line.trim());
        assert_eq!(field(&line, "threads"), threads);
        assert_eq!(
            field(&line, "hash"),
            want,
            "results differ from a serial fill"
        );
        assert_eq!(field(&line, "nested_hash"), want, "nested results differ");
        assert_eq!(
            field(&line, "nested_bad"),
            "0",
            "a nested call left its thread"
        );
        // A fixed cut: four chunks per thread (one call with one thread),
        // run by at most that many threads (which ones depends on which
        // got there first).
        let n: usize = threads.parse().expect("thread count");
        let parts = if n == 1 { 1 } else { 4 * n };
        assert_eq!(field(&line, "parts"), parts.to_string());
        for key in ["distinct", "nested_distinct"] {
            let d: usize = field(&line, key).parse().expect("a count");
            assert!((1..=n).contains(&d), "{key}={d} with {n} threads");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prints, for each routine's argument block of `kiln_runtime.h`, its size
/// and the offset of every field, as `name=value` words.
const LAYOUT_CHECK: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include "kiln_runtime.h"
#define F(T, f) printf(#T "." #f "=%zu ", offsetof(T, f))
int main(void) {
  printf("KilnDwArgs=%zu KilnConvArgs=%zu KilnMaxPoolArgs=%zu ", sizeof(KilnDwArgs),
         sizeof(KilnConvArgs), sizeof(KilnMaxPoolArgs));
  F(KilnDwArgs, x); F(KilnDwArgs, y); F(KilnDwArgs, channels); F(KilnDwArgs, dil_w);
  F(KilnDwArgs, act_min); F(KilnDwArgs, act_max); F(KilnDwArgs, func);
  F(KilnConvArgs, x); F(KilnConvArgs, w); F(KilnConvArgs, bias); F(KilnConvArgs, y);
  F(KilnConvArgs, cin); F(KilnConvArgs, dw); F(KilnConvArgs, phases); F(KilnConvArgs, begin);
  F(KilnConvArgs, end); F(KilnConvArgs, act_min); F(KilnConvArgs, act_max); F(KilnConvArgs, func);
  F(KilnMaxPoolArgs, x); F(KilnMaxPoolArgs, y); F(KilnMaxPoolArgs, hp); F(KilnMaxPoolArgs, dw);
  F(KilnMaxPoolArgs, planes); F(KilnMaxPoolArgs, begin); F(KilnMaxPoolArgs, end);
  printf("\n");
  return 0;
}
"#;

/// The header's argument blocks are the runtime's structs, field by field
/// (a C caller of a routine, and the header's documentation, rely on it).
#[test]
fn header_argument_blocks_match_the_runtime() {
    use core::mem::{offset_of, size_of};
    use kiln_runtime::conv::KilnConvArgs as C;
    use kiln_runtime::dwconv::KilnDwArgs as D;
    use kiln_runtime::maxpool::KilnMaxPoolArgs as P;
    let dir = temp_dir("layout");
    std::fs::write(dir.join("layout.c"), LAYOUT_CHECK).expect("write layout.c");
    let exe = dir.join("layout");
    let o = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(repo_root().join("runtime/include"))
        .arg(dir.join("layout.c"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc (is a C compiler installed?)");
    assert!(o.status.success(), "cc failed:\n{}", text(&o));
    let o = Command::new(&exe).output().expect("run layout");
    let line = String::from_utf8_lossy(&o.stdout).to_string();
    let want = [
        ("KilnDwArgs", size_of::<D>()),
        ("KilnConvArgs", size_of::<C>()),
        ("KilnMaxPoolArgs", size_of::<P>()),
        ("KilnDwArgs.x", offset_of!(D, x)),
        ("KilnDwArgs.y", offset_of!(D, y)),
        ("KilnDwArgs.channels", offset_of!(D, channels)),
        ("KilnDwArgs.dil_w", offset_of!(D, dil_w)),
        ("KilnDwArgs.act_min", offset_of!(D, act_min)),
        ("KilnDwArgs.act_max", offset_of!(D, act_max)),
        ("KilnDwArgs.func", offset_of!(D, func)),
        ("KilnConvArgs.x", offset_of!(C, x)),
        ("KilnConvArgs.w", offset_of!(C, w)),
        ("KilnConvArgs.bias", offset_of!(C, bias)),
        ("KilnConvArgs.y", offset_of!(C, y)),
        ("KilnConvArgs.cin", offset_of!(C, cin)),
        ("KilnConvArgs.dw", offset_of!(C, dw)),
        ("KilnConvArgs.phases", offset_of!(C, phases)),
        ("KilnConvArgs.begin", offset_of!(C, begin)),
        ("KilnConvArgs.end", offset_of!(C, end)),
        ("KilnConvArgs.act_min", offset_of!(C, act_min)),
        ("KilnConvArgs.act_max", offset_of!(C, act_max)),
        ("KilnConvArgs.func", offset_of!(C, func)),
        ("KilnMaxPoolArgs.x", offset_of!(P, x)),
        ("KilnMaxPoolArgs.y", offset_of!(P, y)),
        ("KilnMaxPoolArgs.hp", offset_of!(P, hp)),
        ("KilnMaxPoolArgs.dw", offset_of!(P, dw)),
        ("KilnMaxPoolArgs.planes", offset_of!(P, planes)),
        ("KilnMaxPoolArgs.begin", offset_of!(P, begin)),
        ("KilnMaxPoolArgs.end", offset_of!(P, end)),
    ];
    for (key, v) in want {
        assert_eq!(field(&line, key), v.to_string(), "{key} in '{line}'");
    }
}
