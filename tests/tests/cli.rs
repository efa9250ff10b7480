//! The `kiln` commands end to end: run, inspect --json, convert round trips,
//! and the exit status of command-line mistakes.

use kiln_ir::Tensor;
use kiln_tests::{build, compare, kiln, model_path, repo_root, stderr, temp_dir};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

fn ok(args: &[&OsStr]) -> std::process::Output {
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed ({:?}):\n{}",
        out.status,
        stderr(&out)
    );
    out
}

fn read(p: &Path) -> Tensor {
    kiln_compiler::io::read_npy(p).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn run_example_writes_expected_output() {
    let ex = repo_root().join("examples/mnist_mlp");
    let out = temp_dir("example");
    let o = ok(&[
        "run".as_ref(),
        ex.join("mnist_mlp.onnx").as_os_str(),
        "-i".as_ref(),
        ex.join("input.npy").as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(
        stderr(&o).contains(" ms"),
        "no timing summary:\n{}",
        stderr(&o)
    );
    let got = read(&out.join("logits.npy"));
    let want = read(&ex.join("expected.npy"));
    compare(&got, &want).unwrap_or_else(|e| panic!("logits: {e}"));
}

#[test]
fn inspect_json_has_documented_fields() {
    let ex = repo_root().join("examples/mnist_mlp/mnist_mlp.onnx");
    let o = ok(&["inspect".as_ref(), "--json".as_ref(), ex.as_os_str()]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON");
    for f in [
        "model",
        "path",
        "inputs",
        "outputs",
        "ops_before",
        "ops_after",
        "parameters",
        "parameter_bytes",
        "macs",
    ] {
        assert!(v.get(f).is_some(), "missing field '{f}' in {v}");
    }
    assert_eq!(v["inputs"][0]["name"], "image");
    assert_eq!(v["inputs"][0]["dtype"], "f32");
    assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 1, 28, 28]));
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([1, 10]));
    let params = v["parameters"].as_u64().expect("parameters is a number");
    assert!(params > 100_000, "parameters {params}");
    assert_eq!(v["parameter_bytes"].as_u64(), Some(params * 4));
    // A 784-128-10-style MLP: at least 784·128 MACs.
    assert!(v["macs"].as_u64().expect("macs is known") >= 784 * 128);
    let plain = ok(&["inspect".as_ref(), ex.as_os_str()]);
    assert!(String::from_utf8_lossy(&plain.stdout).contains("MACs"));
}

/// Runs `model` on `inputs` (bare, in order) and returns every output file's tensor by file name.
fn run_outputs(model: &Path, inputs: &[PathBuf], tag: &str) -> Vec<(String, Tensor)> {
    let out = temp_dir(tag);
    let mut args: Vec<&OsStr> = vec!["run".as_ref(), model.as_os_str()];
    for i in inputs {
        args.push("-i".as_ref());
        args.push(i.as_os_str());
    }
    args.push("-o".as_ref());
    args.push(out.as_os_str());
    ok(&args);
    let mut files: Vec<(String, Tensor)> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read(&p),
            )
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

fn convert_round_trip(name: &str) {
    let src = model_path(name);
    let (inputs, _) = kiln_tests::load_io(name);
    let d = temp_dir(&format!("convert-{name}"));
    let input_files: Vec<PathBuf> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = d.join(format!("in_{i}.npy"));
            kiln_compiler::io::write_npy(&p, t).unwrap();
            p
        })
        .collect();
    let reference = run_outputs(&src, &input_files, "ref");
    assert!(!reference.is_empty());
    let text = d.join(format!("{name}.kiln"));
    let bin = d.join(format!("{name}.kilnb"));
    ok(&[
        "convert".as_ref(),
        src.as_os_str(),
        "-o".as_ref(),
        text.as_os_str(),
    ]);
    ok(&[
        "convert".as_ref(),
        src.as_os_str(),
        "-o".as_ref(),
        bin.as_os_str(),
    ]);
    // And text ↔ binary directly.
    let bin2 = d.join(format!("{name}.2.kilnb"));
    let text2 = d.join(format!("{name}.2.kiln"));
    ok(&[
        "convert".as_ref(),
        text.as_os_str(),
        "-o".as_ref(),
        bin2.as_os_str(),
    ]);
    ok(&[
        "convert".as_ref(),
        bin.as_os_str(),
        "-o".as_ref(),
        text2.as_os_str(),
    ]);
    for m in [&text, &bin, &bin2, &text2] {
        let got = run_outputs(m, &input_files, "conv");
        assert_eq!(
            got,
            reference,
            "{}: outputs differ from the .onnx run",
            m.display()
        );
    }
}

#[test]
fn convert_round_trip_mnist_mlp() {
    convert_round_trip("mnist_mlp");
}

#[test]
fn convert_round_trip_tf_cond() {
    convert_round_trip("tf_cond");
}

fn usage_error(args: &[&OsStr], key: &str) {
    let out = kiln(args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected usage error (2), got {:?}:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(key), "stderr lacks '{key}':\n{err}");
}

#[test]
fn command_line_mistakes_exit_2() {
    let d = temp_dir("usage");
    let m = d.join("add.onnx");
    build::save(&build::add_model(), &m);
    let a = d.join("a.npy");
    kiln_compiler::io::write_npy(&a, &Tensor::from_f32(vec![2, 3], vec![0.0; 6])).unwrap();
    let out = d.join("out");
    let named = format!("nope={}", a.display());
    usage_error(
        &[
            "run".as_ref(),
            m.as_os_str(),
            "-i".as_ref(),
            named.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
        "nope",
    );
    let mut three: Vec<&OsStr> = vec!["run".as_ref(), m.as_os_str()];
    for _ in 0..3 {
        three.extend(["-i".as_ref(), a.as_os_str()]);
    }
    three.extend(["-o".as_ref(), out.as_os_str()]);
    usage_error(&three, "too many inputs");
    usage_error(&["run".as_ref(), m.as_os_str()], "--out-dir");
    usage_error(&["frobnicate".as_ref()], "frobnicate");
}

#[test]
fn named_and_bare_inputs_bind() {
    let d = temp_dir("bind");
    let m = d.join("add.onnx");
    build::save(&build::add_model(), &m);
    let a = d.join("a.npy");
    let b = d.join("b.npy");
    kiln_compiler::io::write_npy(&a, &Tensor::from_f32(vec![2, 3], vec![1.0; 6])).unwrap();
    kiln_compiler::io::write_npy(&b, &Tensor::from_f32(vec![2, 3], vec![2.0; 6])).unwrap();
    let out = d.join("out");
    let named = format!("b={}", b.display());
    // b by name, a bare: bare files fill the inputs not named.
    ok(&[
        "run".as_ref(),
        m.as_os_str(),
        "-i".as_ref(),
        named.as_ref(),
        "-i".as_ref(),
        a.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(
        read(&out.join("c.npy")),
        Tensor::from_f32(vec![2, 3], vec![3.0; 6])
    );
}
