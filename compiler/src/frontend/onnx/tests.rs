//! Frontend tests: every reference model loads and verifies; small ones run on
//! the graph executor and match onnxruntime's outputs; bad files give errors.

use super::*;
use kiln_ir::graph::verify::verify;
use kiln_ir::Storage;
use std::io::Read;

const MODELS: &str = "/work/shared/models";

fn model_paths() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(MODELS)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Minimal .npy reader for the reference data (little-endian, C order).
fn parse_npy(b: &[u8]) -> Tensor {
    assert_eq!(&b[..6], b"\x93NUMPY", "not an npy file");
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    let descr = header
        .split("'descr':")
        .nth(1)
        .unwrap()
        .split('\'')
        .nth(1)
        .unwrap();
    assert!(!header.contains("'fortran_order': True"));
    let shape_s = header.split("'shape':").nth(1).unwrap();
    let shape_s = &shape_s[shape_s.find('(').unwrap() + 1..shape_s.find(')').unwrap()];
    let shape: Vec<usize> = shape_s
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let dtype = match &descr[1..] {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        d => panic!("npy dtype {d}"),
    };
    let data = Storage::from_le_bytes(dtype, &b[start + hlen..]).unwrap();
    Tensor::new(shape, data).unwrap()
}

fn read_npz(path: &Path) -> (Vec<Tensor>, Vec<Tensor>) {
    let f = std::fs::File::open(path).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut get = |prefix: &str| {
        let mut v = vec![];
        for i in 0.. {
            let Ok(mut e) = z.by_name(&format!("{prefix}_{i}.npy")) else {
                break;
            };
            let mut buf = vec![];
            e.read_to_end(&mut buf).unwrap();
            v.push(parse_npy(&buf));
        }
        v
    };
    let ins = get("in");
    let outs = get("out");
    (ins, outs)
}

#[test]
fn all_reference_models_load_and_verify() {
    let paths = model_paths();
    assert!(!paths.is_empty(), "no models in {MODELS}");
    let mut failures = vec![];
    for p in &paths {
        match load_onnx(p) {
            Ok(m) => {
                if let Err(e) = verify(&m) {
                    failures.push(format!("{}: verify: {e}", p.display()));
                }
                eprintln!(
                    "{}: {} nodes, inputs {:?}",
                    p.display(),
                    m.body.nodes.len(),
                    m.inputs()
                        .iter()
                        .map(|&v| m.ty(v).to_string())
                        .collect::<Vec<_>>()
                );
            }
            Err(e) => failures.push(format!("{}: {e}", p.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn close(got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?} vs {:?}", got.shape, want.shape));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst = 0.0f64;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let err = (a - b).abs();
        if err > atol + rtol * b.abs() || a.is_nan() != b.is_nan() {
            return Err(format!("element {i}: got {a}, want {b}"));
        }
        worst = worst.max(err);
    }
    if std::env::var("KILN_CASE").is_err() {
        eprintln!("  max abs err {worst:e}");
    }
    Ok(())
}

/// Runs each small model on the executor. Models whose lowerings are not
/// written yet are reported, not failed; wrong numbers fail.
#[test]
fn small_models_match_onnxruntime() {
    let mut wrong = vec![];
    for p in model_paths() {
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(u64::MAX);
        if size > 3_000_000 && std::env::var("KILN_BIG").is_err() {
            continue;
        }
        let npz = p.with_extension("io.npz");
        let (ins, outs) = read_npz(&npz);
        let m = load_onnx(&p).unwrap();
        let t0 = std::time::Instant::now();
        match crate::exec::run_model(&m, ins) {
            Ok(got) => {
                eprintln!("{}: ran in {:?}", p.display(), t0.elapsed());
                assert_eq!(got.len(), outs.len(), "{}: output count", p.display());
                for (k, (g, w)) in got.iter().zip(&outs).enumerate() {
                    let tol = if w.dtype().is_float() {
                        (1e-4, 1e-3)
                    } else {
                        (0.0, 0.0)
                    };
                    if let Err(e) = close(g, w, tol.0, tol.1) {
                        wrong.push(format!("{} out {k}: {e}", p.display()));
                    }
                }
            }
            Err(e) => eprintln!("{}: SKIPPED (cannot run yet): {e}", p.display()),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn garbage_bytes_are_an_error() {
    for bytes in [
        &b"this is not an onnx model at all"[..],
        &[0xff; 64][..],
        &[][..],
    ] {
        assert!(load_onnx_bytes(bytes, None).is_err());
    }
    // A truncated real model.
    let p = model_paths()
        .into_iter()
        .find(|p| p.ends_with("mnist_mlp.onnx"))
        .unwrap();
    let b = std::fs::read(&p).unwrap();
    let e = load_onnx_bytes(&b[..b.len() / 2], None).unwrap_err();
    assert!(matches!(e, FrontendError::InvalidFile(_)), "{e}");
}

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = name.into();
    n.input = ins.iter().map(|s| s.to_string()).collect();
    n.output = outs.iter().map(|s| s.to_string()).collect();
    n
}

fn vinfo(name: &str, dims: &[i64]) -> ValueInfoProto {
    use onnx_protobuf::tensor_shape_proto::{dimension::Value as DV, Dimension};
    use onnx_protobuf::type_proto::{Tensor as TT, Value as TV};
    let mut shape = onnx_protobuf::TensorShapeProto::new();
    for &d in dims {
        let mut dim = Dimension::new();
        dim.value = Some(if d < 0 {
            DV::DimParam("N".into())
        } else {
            DV::DimValue(d)
        });
        shape.dim.push(dim);
    }
    let mut tt = TT::new();
    tt.elem_type = 1;
    tt.shape = protobuf::MessageField::some(shape);
    let mut ty = onnx_protobuf::TypeProto::new();
    ty.value = Some(TV::TensorType(tt));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = protobuf::MessageField::some(ty);
    v
}

fn model_bytes(nodes: Vec<NodeProto>, inits: Vec<onnx_protobuf::TensorProto>) -> Vec<u8> {
    let mut g = GraphProto::new();
    g.node = nodes;
    g.initializer = inits;
    g.input.push(vinfo("x", &[-1, 3]));
    g.output.push(vinfo("y", &[]));
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut o = onnx_protobuf::OperatorSetIdProto::new();
    o.version = 17;
    m.opset_import.push(o);
    m.graph = protobuf::MessageField::some(g);
    m.write_to_bytes().unwrap()
}

#[test]
fn unsupported_ops_are_all_listed() {
    let mut ml = node("LinearClassifier", "clf", &["x"], &["a"]);
    ml.domain = "ai.onnx.ml".into();
    let nodes = vec![
        node("Relu", "r", &["x"], &["b"]),
        node("NonMaxSuppression", "", &["b"], &["c"]),
        ml,
        node("Unique", "u", &["c"], &["y"]),
    ];
    let e = load_onnx_bytes(&model_bytes(nodes, vec![]), None).unwrap_err();
    let FrontendError::Unsupported(list) = &e else {
        panic!("{e}")
    };
    assert_eq!(list.len(), 3, "{e}");
    let s = e.to_string();
    assert!(
        s.contains("NonMaxSuppression_1")
            && s.contains("ai.onnx.ml::LinearClassifier")
            && s.contains("'u'"),
        "{s}"
    );
}

#[test]
fn symbolic_batch_and_missing_external_data() {
    let m = load_onnx_bytes(
        &model_bytes(vec![node("Relu", "r", &["x"], &["y"])], vec![]),
        None,
    )
    .unwrap();
    assert_eq!(m.ty(m.inputs()[0]).shape[0], Dim::Sym("N".into()));
    verify(&m).unwrap();

    let mut t = onnx_protobuf::TensorProto::new();
    t.name = "w".into();
    t.data_type = 1;
    t.dims = vec![3];
    t.data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
    let mut kv = onnx_protobuf::StringStringEntryProto::new();
    kv.key = "location".into();
    kv.value = "weights.bin".into();
    t.external_data.push(kv);
    let bytes = model_bytes(vec![node("Add", "a", &["x", "w"], &["y"])], vec![t]);
    let dir = std::env::temp_dir().join(format!("kiln_fe_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = load_onnx_bytes(&bytes, Some(&dir)).unwrap_err();
    let s = e.to_string();
    assert!(
        matches!(e, FrontendError::ExternalData { .. })
            && s.contains("'w'")
            && s.contains("weights.bin"),
        "{s}"
    );
    let data: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("weights.bin"), data).unwrap();
    let m = load_onnx_bytes(&bytes, Some(&dir)).unwrap();
    let w = m.consts.values().find(|t| t.shape == vec![3]).unwrap();
    assert_eq!(w.to_f64_vec(), vec![1.0, 2.0, 3.0]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_value_is_named() {
    let e = load_onnx_bytes(
        &model_bytes(vec![node("Relu", "r", &["nope"], &["y"])], vec![]),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("'nope'") && e.to_string().contains("'r'"),
        "{e}"
    );
}

/// ONNX's node conformance cases: loads and runs each, printing a summary.
/// Slow and dependent on every lowering; run with `--ignored --nocapture`.
#[test]
#[ignore]
fn onnx_node_conformance() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/onnx-node-tests");
    let filter = std::env::var("KILN_CASE").unwrap_or_default();
    let skip: Vec<String> = std::env::var("KILN_SKIP")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    let (mut ok, mut load_err, mut run_err, mut wrong) = (0, vec![], vec![], vec![]);
    for d in dirs {
        let case = d.file_name().unwrap().to_string_lossy().into_owned();
        if !case.contains(&filter) || skip.iter().any(|s| case.contains(s.as_str())) {
            continue;
        }
        eprintln!("case {case}");
        let m = match load_onnx(&d.join("model.onnx")) {
            Ok(m) => m,
            Err(e) => {
                load_err.push(format!("{case}: {e}"));
                continue;
            }
        };
        if let Err(e) = verify(&m) {
            load_err.push(format!("{case}: verify: {e}"));
            continue;
        }
        let ds = d.join("test_data_set_0");
        let read = |p: PathBuf| -> Option<Tensor> {
            let b = std::fs::read(p).ok()?;
            let t = onnx_protobuf::TensorProto::parse_from_bytes(&b).ok()?;
            tensor_from_proto(&t, None).ok()
        };
        let ins: Option<Vec<Tensor>> = (0..m.inputs().len())
            .map(|i| read(ds.join(format!("input_{i}.pb"))))
            .collect();
        let outs: Vec<Tensor> = (0..)
            .map_while(|i| read(ds.join(format!("output_{i}.pb"))))
            .collect();
        let Some(ins) = ins else {
            run_err.push(format!("{case}: unreadable inputs"));
            continue;
        };
        match crate::exec::run_model(&m, ins) {
            Ok(got) => {
                let mut bad = None;
                if got.len() < outs.len() {
                    bad = Some(format!("{} outputs, want {}", got.len(), outs.len()));
                }
                for (k, (g, w)) in got.iter().zip(&outs).enumerate() {
                    let tol = if w.dtype().is_float() {
                        (1e-4, 1e-3)
                    } else {
                        (0.0, 0.0)
                    };
                    if g.dtype() != w.dtype() {
                        bad = Some(format!("out {k}: dtype {} want {}", g.dtype(), w.dtype()));
                    } else if let Err(e) = close(g, w, tol.0, tol.1) {
                        bad = Some(format!("out {k}: {e}"));
                    }
                }
                match bad {
                    Some(b) => wrong.push(format!("{case}: {b}")),
                    None => ok += 1,
                }
            }
            Err(e) => run_err.push(format!("{case}: {e}")),
        }
    }
    eprintln!(
        "== LOAD ERRORS ({})\n{}",
        load_err.len(),
        load_err.join("\n")
    );
    eprintln!("== RUN ERRORS ({})\n{}", run_err.len(), run_err.join("\n"));
    eprintln!("== WRONG ({})\n{}", wrong.len(), wrong.join("\n"));
    eprintln!("== OK {ok}");
}
