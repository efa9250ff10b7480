//! Bad models and bad inputs through the real `kiln` binary: each must exit 1
//! with an `error:` naming what is wrong, and never panic.

use kiln_ir::Tensor;
use kiln_tests::build::{self, node, value, FLOAT};
use kiln_tests::{kiln, repo_root, stderr, temp_dir};
use std::path::{Path, PathBuf};

/// Runs kiln, expects exit 1 without a panic, and every key word (case-insensitive) in stderr.
fn expect_error(args: &[&std::ffi::OsStr], keys: &[&str]) -> String {
    let out = kiln(args);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "kiln panicked:\n{err}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit status 1, got {:?}; stderr:\n{err}",
        out.status
    );
    assert!(
        err.starts_with("error: ") || err.contains("\nerror: "),
        "no 'error:' line in stderr:\n{err}"
    );
    let lower = err.to_lowercase();
    for k in keys {
        assert!(
            lower.contains(&k.to_lowercase()),
            "stderr lacks '{k}':\n{err}"
        );
    }
    err
}

fn run_args<'a>(model: &'a Path, inputs: &'a [String], out: &'a Path) -> Vec<&'a std::ffi::OsStr> {
    let mut v: Vec<&std::ffi::OsStr> = vec!["run".as_ref(), model.as_os_str()];
    for i in inputs {
        v.push("-i".as_ref());
        v.push(i.as_ref());
    }
    v.push("-o".as_ref());
    v.push(out.as_os_str());
    v
}

fn mnist_bytes() -> Vec<u8> {
    std::fs::read(repo_root().join("examples/mnist_mlp/mnist_mlp.onnx"))
        .expect("examples/mnist_mlp/mnist_mlp.onnx")
}

fn npy(dir: &Path, name: &str, t: &Tensor) -> PathBuf {
    let p = dir.join(name);
    kiln_compiler::io::write_npy(&p, t).expect("write npy");
    p
}

#[test]
fn truncated_onnx_file() {
    let d = temp_dir("truncated");
    let bytes = mnist_bytes();
    let p = d.join("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&["inspect".as_ref(), p.as_os_str()], &["truncated.onnx"]);
    expect_error(&run_args(&p, &[], &d.join("out")), &["truncated.onnx"]);
}

#[test]
fn not_an_onnx_file() {
    let d = temp_dir("notonnx");
    let p = d.join("picture.onnx");
    // A PNG signature and header: bytes no ONNX writer produces.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0".to_vec();
    png.extend(std::iter::repeat_n(0xffu8, 64));
    std::fs::write(&p, png).unwrap();
    expect_error(&["inspect".as_ref(), p.as_os_str()], &["picture.onnx"]);
}

#[test]
fn unknown_ops_are_all_listed() {
    let d = temp_dir("unknownop");
    let m = build::model(
        vec![
            node("first_weird", "FrobnicateX", &["x"], &["t"]),
            node("second_weird", "TwiddleY", &["t"], &["y"]),
        ],
        vec![value("x", FLOAT, &[2, 3])],
        vec![value("y", FLOAT, &[2, 3])],
        vec![],
    );
    let p = d.join("unknown.onnx");
    build::save(&m, &p);
    expect_error(
        &["inspect".as_ref(), p.as_os_str()],
        &["first_weird", "FrobnicateX", "second_weird", "TwiddleY"],
    );
}

#[test]
fn inconsistent_shapes() {
    let d = temp_dir("shapes");
    let m = build::model(
        vec![node("bad_add", "Add", &["a", "b"], &["c"])],
        vec![value("a", FLOAT, &[2, 3]), value("b", FLOAT, &[4, 5])],
        vec![value("c", FLOAT, &[2, 3])],
        vec![],
    );
    let p = d.join("shapes.onnx");
    build::save(&m, &p);
    expect_error(&["inspect".as_ref(), p.as_os_str()], &["bad_add", "Add"]);
}

#[test]
fn wrong_input_dtype() {
    let d = temp_dir("dtype");
    let p = d.join("relu.onnx");
    build::save(&build::relu_model(), &p);
    let x = npy(&d, "x.npy", &Tensor::from_i64(vec![2, 3], vec![0; 6]));
    let inputs = [format!("x={}", x.display())];
    expect_error(
        &run_args(&p, &inputs, &d.join("out")),
        &["'x'", "f32", "i64"],
    );
}

#[test]
fn wrong_input_shape() {
    let d = temp_dir("shape");
    let p = d.join("relu.onnx");
    build::save(&build::relu_model(), &p);
    let x = npy(&d, "x.npy", &Tensor::from_f32(vec![3, 3], vec![0.0; 9]));
    let inputs = [x.display().to_string()];
    expect_error(&run_args(&p, &inputs, &d.join("out")), &["'x'", "shape"]);
}

#[test]
fn missing_input() {
    let d = temp_dir("missing");
    let p = d.join("add.onnx");
    build::save(&build::add_model(), &p);
    let a = npy(&d, "a.npy", &Tensor::from_f32(vec![2, 3], vec![0.0; 6]));
    let inputs = [format!("a={}", a.display())];
    expect_error(
        &run_args(&p, &inputs, &d.join("out")),
        &["missing input", "'b'"],
    );
}

#[test]
fn unreadable_input_file() {
    let d = temp_dir("unreadable");
    let p = d.join("relu.onnx");
    build::save(&build::relu_model(), &p);
    let inputs = [d.join("no_such_input.npy").display().to_string()];
    expect_error(
        &run_args(&p, &inputs, &d.join("out")),
        &["no_such_input.npy"],
    );
}

#[test]
fn missing_external_data_file() {
    let d = temp_dir("external");
    let m = build::model(
        vec![node("add_w", "Add", &["x", "w"], &["y"])],
        vec![value("x", FLOAT, &[2, 3])],
        vec![value("y", FLOAT, &[2, 3])],
        vec![build::external_initializer(
            "w",
            &[2, 3],
            "weights_missing.bin",
        )],
    );
    let p = d.join("external.onnx");
    build::save(&m, &p);
    expect_error(
        &["inspect".as_ref(), p.as_os_str()],
        &["weights_missing.bin"],
    );
}
