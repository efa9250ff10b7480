//! The Cranelift CPU backend end to end: plan every reference model, JIT it,
//! run it and compare with onnxruntime's outputs (the `.io.npz` files); write
//! x86_64 and aarch64 ELF objects, link them with the system C compilers and
//! run them (aarch64 under qemu-aarch64).

use kiln_compiler::aot::plan_model;
use kiln_compiler::aot::run::run_plan;
use kiln_compiler::exec::check_input;
use kiln_compiler::passes;
use kiln_ir::infer::specialize::specialize;
use kiln_ir::{Dim, Model, Storage, Tensor, TensorType, ValueId};
use kiln_targets::c::test_main;
use kiln_targets::cpu::{compile_object, CpuTarget, JitModel};
use kiln_targets::plan::AotProgram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn models_dir() -> PathBuf {
    let shared = std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let d = shared.join("models");
    assert!(
        d.is_dir(),
        "reference models not found at '{}' (set KILN_SHARED)",
        d.display()
    );
    d
}

/// Whether graph input `p` decides a shape (an op specialises on its value).
fn decides_shape(model: &Model, p: ValueId, value: &Tensor) -> bool {
    let mut found = false;
    model.visit_nodes(&mut |n| {
        if found {
            return;
        }
        for (i, inp) in n.inputs.iter().enumerate() {
            if *inp != Some(p) {
                continue;
            }
            let types = model.input_types(&n.inputs);
            let mut consts = model.input_consts(&n.inputs);
            consts[i] = Some(value);
            if let Ok(Some((_, keep))) = specialize(&n.op, &types, &consts) {
                if !keep.contains(&i) {
                    found = true;
                }
            }
        }
    });
    found
}

/// A static copy of `model` for these inputs (shapes fixed, shape-deciding
/// integer inputs made constants) and the inputs it still takes.
fn bind_static(model: &Model, inputs: &[Tensor]) -> (Model, Vec<Tensor>) {
    let params = model.inputs().to_vec();
    assert_eq!(params.len(), inputs.len(), "input count");
    let mut m = model.clone();
    for (&p, t) in params.iter().zip(inputs) {
        check_input(&m, p, t).expect("input matches the model");
        let dtype = m.ty(p).dtype;
        m.values[p.index()].ty = TensorType {
            dtype,
            shape: t.shape.iter().map(|&d| Dim::Known(d)).collect(),
        };
    }
    let mut kept = vec![];
    let mut new_params = vec![];
    for (&p, t) in params.iter().zip(inputs) {
        if !t.dtype().is_float() && decides_shape(&m, p, t) {
            m.consts.insert(p, t.clone());
        } else {
            new_params.push(p);
            kept.push(t.clone());
        }
    }
    m.body.params = new_params;
    passes::reinfer_types(&mut m).expect("reinfer");
    passes::simplify(&mut m).expect("simplify");
    (m, kept)
}

/// The model planned for its reference inputs, those inputs, and the reference outputs.
fn load(name: &str) -> (AotProgram, Vec<Tensor>, Vec<Tensor>) {
    let dir = models_dir();
    let mut model =
        kiln_compiler::frontend::load_model(&dir.join(format!("{name}.onnx"))).expect("load model");
    passes::simplify(&mut model).expect("simplify");
    let arrays =
        kiln_compiler::io::read_npz(&dir.join(format!("{name}.io.npz"))).expect("read npz");
    let pick = |prefix: &str| {
        let mut v: Vec<(usize, Tensor)> = arrays
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.parse().ok()?, t.clone())))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, t)| t).collect::<Vec<_>>()
    };
    let (ins, wants) = (pick("in_"), pick("out_"));
    let (m, ins) = bind_static(&model, &ins);
    let prog = plan_model(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(wants.len(), prog.outputs.len());
    (prog, ins, wants)
}

/// Largest violation of `|got-want| <= abs + rel·|want|` (NaN must match NaN); `<= 0` passes.
fn worst(got: &Storage, want: &Storage, abs: f64, rel: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let mut w = f64::NEG_INFINITY;
    let mut shown = 0;
    for i in 0..want.len() {
        let (g, e) = (got.get_f64(i), want.get_f64(i));
        let v = if e.is_nan() || g.is_nan() {
            if e.is_nan() == g.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if e.is_infinite() || g.is_infinite() {
            if e == g {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (g - e).abs() - (abs + rel * e.abs())
        };
        if v > 0.0 && shown < 10 {
            eprintln!("  mismatch at {i}: got {g}, want {e}");
            shown += 1;
        }
        w = w.max(v);
    }
    w
}

fn run_jit(jit: &JitModel, prog: &AotProgram, ins: &[Tensor]) -> Vec<Storage> {
    let in_bytes: Vec<Vec<u8>> = ins.iter().map(|t| t.data.to_le_bytes()).collect();
    let in_refs: Vec<&[u8]> = in_bytes.iter().map(|b| b.as_slice()).collect();
    let mut out_bytes: Vec<Vec<u8>> = prog
        .outputs
        .iter()
        .map(|o| vec![0u8; o.byte_size()])
        .collect();
    let mut out_refs: Vec<&mut [u8]> = out_bytes.iter_mut().map(|b| b.as_mut_slice()).collect();
    jit.run(&in_refs, &mut out_refs).expect("jit run");
    prog.outputs
        .iter()
        .zip(out_bytes)
        .map(|(o, b)| Storage::from_le_bytes(o.dtype, &b).expect("output size"))
        .collect()
}

fn check_model(name: &str) {
    let (prog, ins, wants) = load(name);
    let t0 = Instant::now();
    let jit = JitModel::compile(&prog).unwrap_or_else(|e| panic!("{name}: {e}"));
    let compile = t0.elapsed();
    let t1 = Instant::now();
    let got = run_jit(&jit, &prog, &ins);
    let first = t1.elapsed();
    let mut second = std::time::Duration::MAX;
    for _ in 0..3 {
        let t2 = Instant::now();
        run_jit(&jit, &prog, &ins);
        second = second.min(t2.elapsed());
    }
    for (k, (g, w)) in got.iter().zip(&wants).enumerate() {
        let v = worst(g, &w.data, 1e-4, 1e-3);
        assert!(v <= 0.0, "{name}: output {k} differs from the reference");
    }
    let interp = if std::env::var_os("KILN_CPU_BENCH").is_some() {
        let t3 = Instant::now();
        run_plan(&prog, &ins).expect("interpreter");
        format!("{:.1} ms", t3.elapsed().as_secs_f64() * 1e3)
    } else {
        "-".into()
    };
    println!(
        "{name}: jit compile {:.1} ms ({} functions, {} code bytes), run {:.2} ms (best of 3; first {:.2} ms), interpreter {interp}",
        compile.as_secs_f64() * 1e3,
        jit.stats().functions,
        jit.stats().code_bytes,
        second.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
    );
}

macro_rules! model_tests {
    ($($t:ident => $m:literal),* $(,)?) => {
        $(
            #[test]
            fn $t() {
                check_model($m);
            }
        )*
    };
}

model_tests! {
    jit_mnist_mlp => "mnist_mlp",
    jit_mnist_cnn => "mnist_cnn",
    jit_kws_dscnn => "kws_dscnn",
    jit_keras_kws_dscnn => "keras_kws_dscnn",
    jit_squeezenet1_1 => "squeezenet1_1",
    jit_mobilenet_v2 => "mobilenet_v2",
    jit_lstm_speech => "lstm_speech",
    jit_bert_tiny => "bert_tiny",
    jit_tiny_transformer => "tiny_transformer",
    jit_tf_while_loop => "tf_while_loop",
    jit_tf_cond => "tf_cond",
    jit_onnxzoo_light_squeezenet => "onnxzoo_light_squeezenet",
    jit_onnxzoo_light_resnet50 => "onnxzoo_light_resnet50",
    jit_onnxzoo_light_inception_v1 => "onnxzoo_light_inception_v1",
}

/// Writes an object for `triple`, links it with `linker` and the C test
/// driver, runs it (through `runner` if given) and compares with the reference.
fn object_roundtrip(model: &str, triple: &str, cpu: Option<&str>, linker: &str, runner: &[&str]) {
    object_roundtrip_with(model, triple, cpu, linker, runner, &[]);
}

/// As [`object_roundtrip`]; a non-empty `libs` (extra linker arguments) also
/// turns on multi-threaded code, which calls the runtime's `kiln_parallel_for`.
fn object_roundtrip_with(
    model: &str,
    triple: &str,
    cpu: Option<&str>,
    linker: &str,
    runner: &[&str],
    libs: &[String],
) {
    let (prog, ins, wants) = load(model);
    let target = CpuTarget::parse(triple, cpu)
        .expect("target")
        .with_threads(!libs.is_empty());
    let art = compile_object(&prog, model, &target).expect("compile object");
    let dir =
        std::env::temp_dir().join(format!("kiln_cpu_{model}_{triple}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let name = &art.name;
    std::fs::write(dir.join(format!("{name}.o")), &art.object).expect("write .o");
    std::fs::write(dir.join(format!("{name}.h")), &art.header).expect("write .h");
    std::fs::write(dir.join("main.c"), test_main(model)).expect("write main.c");
    let exe = dir.join("prog");
    let out = Command::new(linker)
        .args(["-std=c99", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(dir.join(format!("{name}.o")))
        .args(libs)
        .output()
        .unwrap_or_else(|e| panic!("cannot run '{linker}' (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{linker} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = match runner.split_first() {
        Some((r, args)) => {
            let mut c = Command::new(r);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    for (i, t) in ins.iter().enumerate() {
        let p = dir.join(format!("in{i}.bin"));
        std::fs::write(&p, t.data.to_le_bytes()).expect("write input");
        cmd.arg(p);
    }
    let outs: Vec<PathBuf> = (0..prog.outputs.len())
        .map(|k| dir.join(format!("out{k}.bin")))
        .collect();
    cmd.args(&outs);
    let r = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the program ({runner:?}): {e}"));
    assert!(
        r.status.success(),
        "program failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    for (k, (p, w)) in outs.iter().zip(&wants).enumerate() {
        let bytes = std::fs::read(p).expect("read output");
        let g = Storage::from_le_bytes(prog.outputs[k].dtype, &bytes).expect("output size");
        let v = worst(&g, &w.data, 1e-4, 1e-3);
        assert!(
            v <= 0.0,
            "{model} on {triple}: output {k} differs from the reference"
        );
    }
    println!(
        "{model} {triple}: {} code bytes, {} weight bytes, {} functions, compiled in {:.1} ms",
        art.stats.code_bytes,
        art.stats.weight_bytes,
        art.stats.functions,
        art.stats.compile_time.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn object_x86_64_links_and_runs() {
    object_roundtrip("mnist_cnn", "x86_64-unknown-linux-gnu", None, "cc", &[]);
    object_roundtrip(
        "kws_dscnn",
        "x86_64-unknown-linux-gnu",
        Some("x86-64-v3"),
        "cc",
        &[],
    );
}

/// Multi-threaded code linked with the runtime's static library.
#[test]
fn object_x86_64_threads_links_with_runtime_and_runs() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    assert!(
        lib.join("libkiln_runtime.a").is_file(),
        "'{}' is missing: build it with `cargo build --release -p kiln-runtime`",
        lib.join("libkiln_runtime.a").display()
    );
    let libs: Vec<String> = vec![
        format!("-L{}", lib.display()),
        "-lkiln_runtime".into(),
        "-lpthread".into(),
        "-ldl".into(),
        "-lm".into(),
    ];
    object_roundtrip_with(
        "squeezenet1_1",
        "x86_64-unknown-linux-gnu",
        None,
        "cc",
        &[],
        &libs,
    );
}

#[test]
fn object_x86_64_baseline_links_and_runs() {
    // No SSE4.1: rounding is done without roundss/roundps, still no libm.
    object_roundtrip(
        "bert_tiny",
        "x86_64-unknown-linux-gnu",
        Some("x86-64"),
        "cc",
        &[],
    );
}

#[test]
fn object_aarch64_links_and_runs_under_qemu() {
    object_roundtrip(
        "kws_dscnn",
        "aarch64-unknown-linux-gnu",
        None,
        "aarch64-linux-gnu-gcc",
        &["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
    );
}

/// Each step of a model on its own, on pseudo-random inputs, against the
/// interpreter (steps whose inputs are indices, which random data would put
/// out of bounds, are skipped). Returns the number of steps that differ.
fn check_steps(name: &str, profile: bool) -> usize {
    use kiln_ir::kernel::interp::run_program;
    use kiln_ir::kernel::BufferRole;
    use kiln_targets::plan::{AotIo, AotStep, BufferLoc};
    let (prog, _, _) = load(name);
    let mut bad = 0;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for step in &prog.steps {
        let p = &step.program;
        let mut inputs = vec![];
        let mut outputs = vec![];
        let mut arena = 0;
        let mut bindings = vec![];
        let mut skip = false;
        for b in &p.buffers {
            bindings.push(match b.role {
                BufferRole::Input(i) => {
                    if !b.dtype.is_float() {
                        skip = true;
                    }
                    inputs.push((i, b.clone()));
                    BufferLoc::Input(i)
                }
                BufferRole::Output(k) => {
                    outputs.push((k, b.clone()));
                    BufferLoc::Output(k)
                }
                BufferRole::Scratch => {
                    let at = arena;
                    arena += (b.len * b.dtype.size()).div_ceil(64) * 64;
                    BufferLoc::Arena(at)
                }
            });
        }
        if skip {
            continue;
        }
        inputs.sort_by_key(|(i, _)| *i);
        outputs.sort_by_key(|(k, _)| *k);
        let data: Vec<Storage> = inputs
            .iter()
            .map(|(_, b)| {
                let v: Vec<f64> = (0..b.len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed % 2000) as f64 / 1000.0 - 1.0
                    })
                    .collect();
                let t = Tensor::from_f32(vec![b.len], v.iter().map(|x| *x as f32).collect());
                if b.dtype == kiln_ir::DType::F64 {
                    Storage::F64(v)
                } else {
                    t.data
                }
            })
            .collect();
        let refs: Vec<Option<&Storage>> = data.iter().map(Some).collect();
        let Ok(want) = run_program(p, &refs) else {
            continue;
        };
        let io = |(i, b): &(usize, kiln_ir::kernel::BufferDecl)| AotIo {
            name: format!("v{i}"),
            dtype: b.dtype,
            shape: vec![b.len],
        };
        let single = AotProgram {
            name: "step".into(),
            steps: vec![AotStep {
                node: step.node.clone(),
                program: p.clone(),
                bindings,
            }],
            weights: vec![],
            inputs: inputs.iter().map(io).collect(),
            outputs: outputs.iter().map(io).collect(),
            output_copies: vec![],
            arena_size: arena,
            arena_lower_bound: arena,
        };
        let jit = JitModel::compile(&single).unwrap_or_else(|e| panic!("{e}"));
        let ts: Vec<Tensor> = data
            .iter()
            .map(|d| Tensor::new(vec![d.len()], d.clone()).expect("tensor"))
            .collect();
        let t0 = Instant::now();
        let got = run_jit(&jit, &single, &ts);
        if profile {
            let t = Instant::now();
            run_jit(&jit, &single, &ts);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let first = t.duration_since(t0).as_secs_f64() * 1e3;
            if ms > 5.0 {
                println!("{ms:8.2} ms ({first:.2} first) step '{}':\n{p}", step.node);
            }
        }
        for (g, w) in got.iter().zip(&want) {
            if worst(g, w, 1e-5, 1e-5) > 0.0 {
                eprintln!("step '{}' differs:\n{}", step.node, p);
                bad += 1;
                break;
            }
        }
    }
    bad
}

#[test]
fn steps_match_interpreter() {
    for m in [
        "mnist_cnn",
        "kws_dscnn",
        "tiny_transformer",
        "squeezenet1_1",
    ] {
        assert_eq!(
            check_steps(m, false),
            0,
            "{m}: steps differ from the interpreter"
        );
    }
}

/// Times every step of the model named by `KILN_CPU_PROFILE` (a tool for
/// performance work; prints the slow steps' kernel IR).
#[test]
#[ignore]
fn profile_steps() {
    let m = std::env::var("KILN_CPU_PROFILE").expect("set KILN_CPU_PROFILE to a model name");
    check_steps(&m, true);
}
