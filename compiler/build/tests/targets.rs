//! `kiln_build::Build` for the host, a cross Linux target and a Cortex-M
//! target: each gives an archive whose symbol index GNU `nm` reads and names
//! the model's entry points, an object for the right machine, and bindings.
//! Needs binutils for each target (`nm`, `aarch64-linux-gnu-nm`,
//! `arm-none-eabi-nm`, `arm-none-eabi-readelf`); a missing one fails the test.

use kiln_build::{defined_symbols, Build, Compiled};
use object::{Architecture, Object};
use std::path::{Path, PathBuf};
use std::process::Command;

fn mnist_mlp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mnist_mlp/mnist_mlp.onnx")
}

fn build(target: &str) -> Compiled {
    let out = std::env::temp_dir().join(format!("kiln-build-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("temp dir");
    Build::new(mnist_mlp())
        .name("mlp")
        .target(target)
        .out_dir(&out)
        .cargo_metadata(false)
        .compile()
        .unwrap_or_else(|e| panic!("{target}: {e}"))
}

/// The archive index as GNU nm prints it (`nm --print-armap`).
fn armap(nm: &str, archive: &Path) -> String {
    let o = Command::new(nm)
        .arg("--print-armap")
        .arg(archive)
        .output()
        .unwrap_or_else(|e| panic!("run {nm} (are binutils for this target installed?): {e}"));
    assert!(
        o.status.success(),
        "{nm}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check(target: &str, nm: &str, arch: Architecture) -> Compiled {
    let c = build(target);
    let obj = std::fs::read(&c.object).expect("read object");
    let file = object::File::parse(&*obj).expect("parse object");
    assert_eq!(file.architecture(), arch, "{target}: object architecture");
    let syms = defined_symbols(&obj).expect("symbols");
    for s in ["mlp_run", "mlp_input_sizes", "mlp_output_sizes"] {
        assert!(
            syms.iter().any(|x| x == s),
            "{target}: object lacks {s}: {syms:?}"
        );
    }
    let map = armap(nm, &c.archive);
    assert!(
        map.contains("mlp_run in model.o"),
        "{target}: archive index lacks mlp_run:\n{map}"
    );
    let rs = std::fs::read_to_string(&c.bindings).expect("read bindings");
    assert!(rs.contains("pub struct Mlp;") && rs.contains("dims: &[1, 1, 28, 28], size: 3136"));
    assert!(rs.contains("pub fn run(image: &[f32], logits: &mut [f32], arena: &mut [u8])"));
    println!(
        "{target}: backend {}, arena {} bytes",
        c.backend, c.arena_size
    );
    c
}

#[test]
fn host_object_archive_and_bindings() {
    let triple = match std::env::consts::ARCH {
        "x86_64" => "x86_64-unknown-linux-gnu",
        "aarch64" => "aarch64-unknown-linux-gnu",
        a => panic!("no test triple for host arch {a}"),
    };
    let arch = if triple.starts_with("x86_64") {
        Architecture::X86_64
    } else {
        Architecture::Aarch64
    };
    check(triple, "nm", arch);
}

#[test]
fn aarch64_linux_cross() {
    check(
        "aarch64-unknown-linux-gnu",
        "aarch64-linux-gnu-nm",
        Architecture::Aarch64,
    );
}

#[test]
fn cortex_m4f_hard_float() {
    let c = check(
        "thumbv7em-none-eabihf",
        "arm-none-eabi-nm",
        Architecture::Arm,
    );
    // A soft-float object in hard-float firmware links silently and computes
    // garbage: the object must say it passes floats in VFP registers.
    let o = Command::new("arm-none-eabi-readelf")
        .arg("-A")
        .arg(&c.object)
        .output()
        .expect("run arm-none-eabi-readelf (is binutils-arm-none-eabi installed?)");
    let attrs = String::from_utf8_lossy(&o.stdout);
    assert!(
        attrs.contains("Tag_ABI_VFP_args: VFP registers"),
        "object lacks the hard-float ABI tag:\n{attrs}"
    );
}

#[test]
fn missing_model_is_an_error_naming_the_file() {
    let e = Build::new("/nonexistent/model.onnx")
        .target("x86_64-unknown-linux-gnu")
        .out_dir(std::env::temp_dir())
        .cargo_metadata(false)
        .compile()
        .expect_err("a missing model must fail");
    assert!(e.to_string().contains("/nonexistent/model.onnx"), "{e}");
}
