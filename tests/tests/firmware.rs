//! Models in real Cortex-M firmware under QEMU: `scripts/run-firmware.sh`
//! compiles each reference model for the core, builds the no_std Rust firmware
//! (or the plain C one) around it with the onnxruntime reference data, runs it
//! on QEMU's mps2-an386 (Cortex-M4F) and mps2-an500 (Cortex-M7) (and one on the
//! soft-float Cortex-M3 of mps2-an385), and the
//! firmware itself compares the outputs. Needs `qemu-system-arm`,
//! `arm-none-eabi-gcc` with newlib and the Rust thumbv7em target
//! (`scripts/test.sh` installs them); a missing tool fails the test.
//!
//! Also checks the float-ABI guard: an object built for the wrong ABI is
//! refused by the attribute check.

use kiln_tests::{kiln_bin, model_path, repo_root, temp_dir};
use std::process::Command;
use std::sync::Mutex;

/// Runs share per-core firmware build folders, so they go one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_firmware(model: &str, machine: &str, example: &str) {
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let onnx = model_path(model);
    let npz = onnx.with_extension("io.npz");
    let work = temp_dir(&format!("fw-{model}-{machine}-{example}"));
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/run-firmware.sh"))
        .arg(&onnx)
        .arg(&npz)
        .args(["--machine", machine, "--example", example, "--work"])
        .arg(&work)
        .env("KILN", kiln_bin())
        .output()
        .expect("spawn bash scripts/run-firmware.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{model} on {machine} ({example} firmware) failed ({:?}):\n{text}",
        out.status
    );
    assert!(text.contains("kiln-fw: PASS"), "no PASS line:\n{text}");
    assert!(text.contains("mismatches 0"), "{text}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn kws_dscnn_on_cortex_m4f() {
    run_firmware("kws_dscnn", "mps2-an386", "rust");
}

#[test]
fn kws_dscnn_on_cortex_m7() {
    run_firmware("kws_dscnn", "mps2-an500", "rust");
}

#[test]
fn mnist_cnn_on_cortex_m4f() {
    run_firmware("mnist_cnn", "mps2-an386", "rust");
}

#[test]
fn mnist_cnn_on_cortex_m7() {
    run_firmware("mnist_cnn", "mps2-an500", "rust");
}

#[test]
fn mnist_mlp_on_cortex_m4f() {
    run_firmware("mnist_mlp", "mps2-an386", "rust");
}

#[test]
fn mnist_mlp_on_cortex_m7() {
    run_firmware("mnist_mlp", "mps2-an500", "rust");
}

/// The soft-float path (thumbv7m-none-eabi): float arithmetic through library calls.
#[test]
fn mnist_mlp_on_soft_float_cortex_m3() {
    run_firmware("mnist_mlp", "mps2-an385", "rust");
}

#[test]
fn c_only_firmware_runs_kws_dscnn() {
    run_firmware("kws_dscnn", "mps2-an386", "c");
}

/// `kiln compile` builds and checks objects for every firmware triple; a
/// soft-float object is refused for a hard-float target (and the reverse).
#[test]
fn float_abi_attributes_are_checked() {
    use kiln_targets_check::*;
    let dir = temp_dir("fw-abi");
    let model = model_path("mnist_mlp");
    for (triple, cpu) in [
        ("thumbv7em-none-eabihf", "cortex-m4"),
        ("thumbv7em-none-eabihf", "cortex-m7"),
        ("thumbv7m-none-eabi", "cortex-m3"),
        ("thumbv8m.main-none-eabihf", "cortex-m33"),
    ] {
        let out = dir.join(format!("{triple}-{cpu}"));
        let o = Command::new(kiln_bin())
            .arg("compile")
            .arg(&model)
            .args(["--target", triple, "--cpu", cpu, "-o"])
            .arg(&out)
            .output()
            .expect("spawn kiln");
        assert!(
            o.status.success(),
            "kiln compile --target {triple} --cpu {cpu}:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let obj = out.join("mnist_mlp.o");
        let attrs = readelf_float_attrs(&obj);
        let hard = triple.ends_with("eabihf");
        assert_eq!(
            attrs.contains("Tag_ABI_VFP_args: VFP registers"),
            hard,
            "{triple}: {attrs}"
        );
    }
    // A soft-float object presented as hard-float is refused.
    let soft = std::fs::read(dir.join("thumbv7m-none-eabi-cortex-m3/mnist_mlp.o")).expect("read");
    let hard_target = FirmwareTarget::parse("thumbv7em-none-eabihf", None).expect("triple");
    let err = check_object(&soft, &hard_target).expect_err("soft object accepted as hard-float");
    assert!(err.to_string().contains("Tag_ABI_VFP_args"), "{err}");
    let hard =
        std::fs::read(dir.join("thumbv7em-none-eabihf-cortex-m4/mnist_mlp.o")).expect("read");
    let soft_target = FirmwareTarget::parse("thumbv7m-none-eabi", None).expect("triple");
    assert!(check_object(&hard, &soft_target).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The object checks above are compared with binutils' own reading of the attributes.
mod kiln_targets_check {
    pub use kiln_targets::c::{check_object, FirmwareTarget};
    use std::path::Path;
    use std::process::Command;

    pub fn readelf_float_attrs(obj: &Path) -> String {
        let o = Command::new("arm-none-eabi-readelf")
            .arg("-A")
            .arg(obj)
            .output()
            .expect("arm-none-eabi-readelf not found (install binutils-arm-none-eabi)");
        assert!(o.status.success(), "readelf -A {}", obj.display());
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}
