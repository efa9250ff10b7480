//! The Cranelift CPU backend end to end: plan every reference model, JIT it,
//! run it and compare with onnxruntime's outputs (the `.io.npz` files); write
//! x86_64 and aarch64 ELF objects, link them with the system C compilers and
//! run them (aarch64 under qemu-aarch64); and each step of some models on its
//! own against the interpreter.

use kiln_compiler::aot::plan_model;
use kiln_compiler::aot::run::run_plan;
use kiln_compiler::native::{bind_static, NativeModel};
use kiln_ir::kernel::interp::run_program;
use kiln_ir::kernel::BufferRole;
use kiln_ir::{DType, Storage, Tensor};
use kiln_targets::c::test_main;
use kiln_targets::cpu::{compile_object, CpuTarget, JitModel};
use kiln_targets::plan::AotProgram;
use kiln_tests::{
    assert_lists_every_model, cargo, compare, compare_all, compare_within, load, load_io,
    model_path, profile, profile_dir, run_driver, run_jit, temp_dir, tensor_from_bytes,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// The model planned for its reference inputs (bound to their shapes, see
/// [`bind_static`]), the inputs the plan still takes, and the reference outputs.
fn planned(name: &str) -> (AotProgram, Vec<Tensor>, Vec<Tensor>) {
    let model = load(&model_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (ins, wants) = load_io(name);
    let (m, kept) = bind_static(&model, &ins).unwrap_or_else(|e| panic!("{name}: bind: {e}"));
    let prog = plan_model(&m).unwrap_or_else(|e| panic!("{name}: plan: {e}"));
    assert_eq!(wants.len(), prog.outputs.len(), "{name}: number of outputs");
    let ins = kept.iter().map(|&k| ins[k].clone()).collect();
    (prog, ins, wants)
}

fn check_model(name: &str) {
    let model = load(&model_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (ins, wants) = load_io(name);
    let t0 = Instant::now();
    let native = NativeModel::compile(&model, &ins).unwrap_or_else(|e| panic!("{name}: {e}"));
    let compile = t0.elapsed();
    let t1 = Instant::now();
    let got = native
        .run(&ins)
        .unwrap_or_else(|e| panic!("{name}: run: {e}"));
    let first = t1.elapsed();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t2 = Instant::now();
        native
            .run(&ins)
            .unwrap_or_else(|e| panic!("{name}: run: {e}"));
        best = best.min(t2.elapsed());
    }
    if let Err(e) = compare_all(&got, &wants) {
        panic!("{name}: generated code: {e}");
    }
    let interp = if std::env::var_os("KILN_CPU_BENCH").is_some() {
        let (prog, bound, _) = planned(name);
        let t3 = Instant::now();
        run_plan(&prog, &bound).unwrap_or_else(|e| panic!("{name}: interpreter: {e}"));
        format!("{:.1} ms", t3.elapsed().as_secs_f64() * 1e3)
    } else {
        "-".into()
    };
    let stats = native.jit().stats();
    println!(
        "{name}: jit compile {:.1} ms ({:.1} ms with binding and planning; {} functions, {} code bytes), run {:.2} ms (best of 3; first {:.2} ms), interpreter {interp}",
        stats.compile_time.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3,
        stats.functions,
        stats.code_bytes,
        best.as_secs_f64() * 1e3,
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

        /// The list above is every model of the shared set: a new model must be added.
        #[test]
        fn jit_every_reference_model_is_listed() {
            assert_lists_every_model(&[$($m),*]);
        }
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

/// How an object is built and run: the target, the C compiler that links it,
/// the command that runs it (empty: directly), and whether the code is
/// multi-threaded (calls the runtime's `kiln_parallel_for`). Every object is
/// linked with the runtime: f32 matmuls call its GEMM kernels.
struct Link<'a> {
    triple: &'a str,
    cpu: Option<&'a str>,
    linker: &'a str,
    runner: &'a [&'a str],
    threads: bool,
}

/// Linker arguments for `libkiln_runtime.a` (feature `std`) built for
/// `triple` in a target dir of its own (the shared one's library is
/// overwritten by whichever feature set was built last).
fn runtime_libs(triple: &str) -> Vec<String> {
    let target = profile_dir()
        .parent()
        .expect("target dir")
        .join("kiln-runtime-c");
    let mut cmd = cargo(&[
        "build",
        "--quiet",
        "-p",
        "kiln-runtime",
        "--features",
        "std",
    ]);
    cmd.args(["--target", triple, "--target-dir"]).arg(&target);
    let o = cmd.output().expect("run cargo (is it on PATH?)");
    assert!(
        o.status.success(),
        "building kiln-runtime for {triple} failed (needs `rustup target add {triple}`):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lib = target.join(triple).join(profile());
    assert!(
        lib.join("libkiln_runtime.a").is_file(),
        "no runtime library in '{}'",
        lib.display()
    );
    vec![
        format!("-L{}", lib.display()),
        "-lkiln_runtime".into(),
        "-lpthread".into(),
        "-ldl".into(),
        "-lm".into(),
    ]
}

const CC: &str = "cc";
const X86_64: &str = "x86_64-unknown-linux-gnu";

/// Writes an object for `l.triple`, links it with the C test driver, runs it
/// and compares its outputs with the reference.
fn object_roundtrip(model: &str, l: &Link) {
    let (prog, ins, wants) = planned(model);
    let target = CpuTarget::parse(l.triple, l.cpu)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_threads(l.threads);
    let art = compile_object(&prog, model, &target).unwrap_or_else(|e| panic!("{model}: {e}"));
    let dir = temp_dir(&format!("cpu-{model}-{}", l.triple));
    let name = &art.name;
    std::fs::write(dir.join(format!("{name}.o")), &art.object).expect("write .o");
    std::fs::write(dir.join(format!("{name}.h")), &art.header).expect("write .h");
    std::fs::write(dir.join("main.c"), test_main(model)).expect("write main.c");
    let exe = dir.join("prog");
    let out = Command::new(l.linker)
        .args(["-std=c99", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(dir.join(format!("{name}.o")))
        .args(runtime_libs(l.triple))
        .output()
        .unwrap_or_else(|e| panic!("cannot run '{}' (is it installed?): {e}", l.linker));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        l.linker,
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = match l.runner.split_first() {
        Some((r, args)) => {
            let mut c = Command::new(r);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let outs = run_driver(cmd, &dir, &ins, prog.outputs.len())
        .unwrap_or_else(|e| panic!("{model} on {} ({:?}): {e}", l.triple, l.runner));
    for (k, ((bytes, o), w)) in outs.iter().zip(&prog.outputs).zip(&wants).enumerate() {
        let got = tensor_from_bytes(&w.shape, o.dtype, bytes)
            .unwrap_or_else(|e| panic!("{model} on {}: output {k}: {e}", l.triple));
        if let Err(e) = compare(&got, w) {
            panic!("{model} on {}: output {k}: {e}", l.triple);
        }
    }
    println!(
        "{model} {}: {} code bytes, {} weight bytes, {} functions, compiled in {:.1} ms",
        l.triple,
        art.stats.code_bytes,
        art.stats.weight_bytes,
        art.stats.functions,
        art.stats.compile_time.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Linked with the system C compiler, single-threaded code.
fn host(cpu: Option<&'static str>) -> Link<'static> {
    Link {
        triple: X86_64,
        cpu,
        linker: CC,
        runner: &[],
        threads: false,
    }
}

#[test]
fn object_x86_64_links_and_runs() {
    object_roundtrip("mnist_cnn", &host(None));
    object_roundtrip("kws_dscnn", &host(Some("x86-64-v3")));
}

/// Multi-threaded code linked with the runtime's static library.
#[test]
fn object_x86_64_threads_links_with_runtime_and_runs() {
    object_roundtrip(
        "squeezenet1_1",
        &Link {
            threads: true,
            ..host(None)
        },
    );
}

#[test]
fn object_x86_64_baseline_links_and_runs() {
    // No SSE4.1: rounding is done without roundss/roundps, still no libm.
    object_roundtrip("bert_tiny", &host(Some("x86-64")));
}

#[test]
fn object_aarch64_links_and_runs_under_qemu() {
    object_roundtrip(
        "kws_dscnn",
        &Link {
            triple: "aarch64-unknown-linux-gnu",
            cpu: None,
            linker: "aarch64-linux-gnu-gcc",
            runner: &["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
            threads: false,
        },
    );
}

/// Pseudo-random values in [-1, 1) (xorshift64), as f64 or f32 storage.
fn random(seed: &mut u64, dtype: DType, len: usize) -> Storage {
    let v: Vec<f64> = (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed % 2000) as f64 / 1000.0 - 1.0
        })
        .collect();
    if dtype == DType::F64 {
        Storage::F64(v)
    } else {
        Storage::F32(v.iter().map(|x| *x as f32).collect())
    }
}

/// Each step of a model on its own, on pseudo-random inputs, against the
/// interpreter (steps whose inputs are indices, which random data would put
/// out of bounds, are skipped). Returns the number of steps that differ.
fn has_matmul(body: &[kiln_ir::kernel::Stmt]) -> bool {
    use kiln_ir::kernel::Stmt;
    body.iter().any(|s| match s {
        Stmt::Matmul(_) => true,
        Stmt::For { body, .. } | Stmt::While { body, .. } => has_matmul(body),
        Stmt::If {
            then_body,
            else_body,
            ..
        } => has_matmul(then_body) || has_matmul(else_body),
        Stmt::Let { .. } | Stmt::Store { .. } => false,
    })
}

fn check_steps(name: &str, profile: bool) -> usize {
    let (prog, _, _) = planned(name);
    let mut bad = 0;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for step in &prog.steps {
        let p = &step.program;
        let mut inputs: Vec<_> = p
            .buffers
            .iter()
            .filter_map(|b| match b.role {
                BufferRole::Input(i) => Some((i, b)),
                _ => None,
            })
            .collect();
        if inputs.iter().any(|(_, b)| !b.dtype.is_float()) {
            continue;
        }
        inputs.sort_by_key(|(i, _)| *i);
        let data: Vec<Storage> = inputs
            .iter()
            .map(|(_, b)| random(&mut seed, b.dtype, b.len))
            .collect();
        let refs: Vec<Option<&Storage>> = data.iter().map(Some).collect();
        // GEMM kernels sum with fused multiply-adds in blocked order, not one
        // product after another as the interpreter: long f32 sums differ by
        // a few ulps of their largest partial sums.
        let tol = if p.kernels.iter().any(|k| has_matmul(&k.body)) {
            1e-4
        } else {
            1e-5
        };
        let Ok(want) = run_program(p, &refs) else {
            continue;
        };
        let single = AotProgram::single_step(&step.node, p.clone());
        let jit = JitModel::compile(&single).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ts: Vec<Tensor> = data
            .iter()
            .map(|d| Tensor::new(vec![d.len()], d.clone()).expect("flat tensor"))
            .collect();
        let t0 = Instant::now();
        let got = run_jit(&jit, &single, &ts).unwrap_or_else(|e| panic!("{name}: {e}"));
        if profile {
            let t = Instant::now();
            run_jit(&jit, &single, &ts).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let first = t.duration_since(t0).as_secs_f64() * 1e3;
            if ms > 5.0 {
                println!("{ms:8.2} ms ({first:.2} first) step '{}':\n{p}", step.node);
            }
        }
        for (g, w) in got.iter().zip(want) {
            let w = Tensor::new(g.shape.clone(), w).expect("interpreter output size");
            if let Err(e) = compare_within(g, &w, tol, tol) {
                eprintln!("step '{}' differs: {e}\n{p}", step.node);
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

/// (batch, channels, h, w, kh, kw, stride, dilation, pads [t, l, b, r], bias)
type DwCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 4],
    bool,
);

/// Depthwise convolutions lower with a library call; the CPU backend calls
/// the runtime routine instead of rendering the body. Over geometries the
/// shared models do not all reach (5×5 and 7×1 windows, strides 2 and 3,
/// dilation 2, asymmetric pads, batch 2, no bias), the routine must give
/// what the interpreter computes from the body.
#[test]
fn depthwise_library_call_matches_the_body() {
    use kiln_compiler::lower::{lower, LowerCtx};
    use kiln_ir::TensorType;
    let cases: [DwCase; 10] = [
        // Enough work to split over threads, in groups of 16 channels (the
        // last one short), over wide and over 5-pixel rows.
        (1, 40, 40, 40, 3, 3, 1, 1, [1, 1, 1, 1], true),
        (1, 41, 200, 5, 3, 3, 1, 1, [1, 1, 1, 1], true),
        (1, 8, 12, 12, 3, 3, 1, 1, [1, 1, 1, 1], true),
        (1, 5, 13, 17, 3, 3, 2, 1, [1, 1, 1, 1], true),
        (2, 3, 9, 11, 5, 5, 1, 1, [2, 2, 2, 2], false),
        (1, 4, 20, 9, 5, 5, 2, 1, [1, 2, 2, 1], true),
        (1, 6, 15, 15, 3, 3, 1, 2, [2, 2, 2, 2], true),
        (1, 2, 10, 31, 7, 1, 3, 1, [3, 0, 3, 0], true),
        (1, 3, 40, 40, 3, 3, 2, 1, [0, 0, 1, 1], false),
        (2, 16, 7, 7, 3, 3, 1, 1, [1, 1, 1, 1], true),
    ];
    let mut seed = 0x1234_5678_9abc_def1u64;
    for (n, c, h, w, kh, kw, s, d, pads, with_bias) in cases {
        let oh = (h + pads[0] + pads[2] - ((kh - 1) * d + 1)) / s + 1;
        let ow = (w + pads[1] + pads[3] - ((kw - 1) * d + 1)) / s + 1;
        let op = kiln_ir::Op::Conv {
            kernel: vec![kh, kw],
            strides: vec![s, s],
            pads: vec![pads[0], pads[1], pads[2], pads[3]],
            dilations: vec![d, d],
            group: c,
        };
        let mut inputs = vec![
            Some(TensorType::known(DType::F32, &[n, c, h, w])),
            Some(TensorType::known(DType::F32, &[c, 1, kh, kw])),
        ];
        if with_bias {
            inputs.push(Some(TensorType::known(DType::F32, &[c])));
        }
        let consts = vec![None; inputs.len()];
        let outputs = [TensorType::known(DType::F32, &[n, c, oh, ow])];
        let p = lower(&LowerCtx {
            node: "dw",
            op: &op,
            inputs: &inputs,
            outputs: &outputs,
            consts: &consts,
        })
        .unwrap_or_else(|e| panic!("lowering: {}", e.msg));
        assert!(
            p.kernels.iter().any(|k| k.call.is_some()),
            "no library call for {n}x{c}x{h}x{w} k{kh}x{kw}"
        );
        let mut ins: Vec<_> = p
            .buffers
            .iter()
            .filter_map(|b| match b.role {
                BufferRole::Input(i) => Some((i, b.len)),
                _ => None,
            })
            .collect();
        ins.sort_by_key(|(i, _)| *i);
        let data: Vec<Storage> = ins
            .iter()
            .map(|(_, len)| random(&mut seed, DType::F32, *len))
            .collect();
        let refs: Vec<Option<&Storage>> = data.iter().map(Some).collect();
        let want = run_program(&p, &refs).expect("interpreter");
        let single = AotProgram::single_step("dw", p.clone());
        let jit = JitModel::compile(&single).expect("jit");
        let ts: Vec<Tensor> = data
            .iter()
            .map(|x| Tensor::new(vec![x.len()], x.clone()).expect("flat tensor"))
            .collect();
        let got = run_jit(&jit, &single, &ts).expect("run");
        let w0 = Tensor::new(got[0].shape.clone(), want[0].clone()).expect("size");
        compare_within(&got[0], &w0, 1e-5, 1e-5)
            .unwrap_or_else(|e| panic!("{n}x{c}x{h}x{w} k{kh}x{kw} s{s} d{d} pads {pads:?}: {e}"));
    }
}

/// (batch, cin, cout, h, w, kernel, stride, dilation, pads [t, l, b, r],
/// bias, tail): one conv a `.kiln` model runs, with its activation tail.
type ConvCase<'a> = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    usize,
    [usize; 4],
    bool,
    &'a str,
);

/// Dense convolutions whose lowering attaches a direct-conv call: on
/// AVX-512 hosts the CPU backend calls the runtime's routine (weights packed
/// at compile time) in place of the im2col GEMM. Over geometries and fused
/// tails the shared models do not all reach (batch 2, no bias, 5x5, row
/// stride 2, dilation 2, sigmoid, SiLU, clip), the generated code must give
/// what the interpreter computes, and the planned kernels must carry the
/// call (with the tail folded in when it is an activation).
#[test]
fn conv_library_call_matches_the_interpreter() {
    use kiln_ir::kernel::call::LibraryCall;
    let cases: [ConvCase; 14] = [
        (1, 8, 32, 9, 13, 3, [1, 1], 1, [1, 1, 1, 1], true, "relu"),
        (
            2,
            16,
            64,
            7,
            20,
            3,
            [1, 1],
            1,
            [1, 1, 1, 1],
            false,
            "sigmoid",
        ),
        (1, 4, 60, 11, 9, 5, [2, 1], 1, [2, 2, 2, 2], true, "silu"),
        (1, 8, 32, 10, 10, 3, [1, 1], 2, [2, 2, 2, 2], true, "clip"),
        (1, 12, 96, 6, 29, 3, [1, 1], 1, [0, 1, 2, 1], true, ""),
        (1, 64, 32, 14, 14, 1, [1, 1], 1, [1, 1, 1, 1], true, "relu"),
        // Strided along the row: the call reads the phase-split copy.
        (1, 3, 32, 23, 23, 7, [2, 2], 1, [3, 3, 3, 3], true, "relu"),
        (1, 8, 64, 15, 25, 3, [2, 2], 1, [1, 1, 1, 1], false, "clip"),
        (1, 16, 32, 12, 19, 3, [1, 3], 2, [2, 2, 2, 2], true, ""),
        // Shallow windows (depth under 64): pixels in the lanes, over a
        // phase-split RGB stem and at stride 1 with masked row ends.
        (1, 3, 32, 20, 63, 3, [2, 2], 1, [1, 1, 1, 1], true, "relu"),
        (2, 4, 40, 9, 16, 3, [1, 1], 1, [1, 1, 1, 1], false, "clip"),
        // Strided 1x1: read in place with no padding, from a plain padded
        // copy with it (no phase split).
        (1, 64, 64, 14, 14, 1, [2, 2], 1, [0, 0, 0, 0], true, "relu"),
        (1, 96, 32, 9, 10, 1, [2, 2], 1, [1, 1, 1, 1], false, ""),
        // A tail that is no activation: the call is dropped, the GEMM runs.
        (1, 8, 32, 9, 13, 3, [1, 1], 1, [1, 1, 1, 1], true, "neg"),
    ];
    let mut seed = 0x0dd_c0de_u64;
    let mut list = |n: usize, scale: f32| -> String {
        let v: Vec<String> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                format!(
                    "{:.6}",
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                )
            })
            .collect();
        format!("[{}]", v.join(", "))
    };
    let dir = temp_dir("conv-call");
    for (ci, (n, cin, cout, h, w, k, s, d, pads, bias, tail)) in cases.into_iter().enumerate() {
        let oh = (h + pads[0] + pads[2] - ((k - 1) * d + 1)) / s[0] + 1;
        let ow = (w + pads[1] + pads[3] - ((k - 1) * d + 1)) / s[1] + 1;
        let depth = cin * k * k;
        let mut text = String::from("kiln 1\nmodel \"conv\"\n");
        text += &format!(
            "const %w: f32[{cout},{cin},{k},{k}] = dense<{}>\n",
            list(cout * depth, 2.0 / (depth as f32).sqrt())
        );
        if bias {
            text += &format!("const %b: f32[{cout}] = dense<{}>\n", list(cout, 1.0));
        }
        text += "const %zero: f32[] = dense<[0.0]>\nconst %six: f32[] = dense<[0.5]>\n";
        text += &format!("func(%x: f32[{n},{cin},{h},{w}]) {{\n");
        let t = format!("f32[{n},{cout},{oh},{ow}]");
        text += &format!(
            "  %c = conv(%x, %w{}) {{kernel: [{k}, {k}], strides: [{}, {}], pads: [{}, {}, {}, {}], \
             dilations: [{d}, {d}], group: 1}} : {t}\n",
            if bias { ", %b" } else { "" },
            s[0],
            s[1],
            pads[0],
            pads[1],
            pads[2],
            pads[3]
        );
        text += &match tail {
            "relu" => format!("  %y = unary(%c) {{op: relu}} : {t}\n"),
            "sigmoid" => format!("  %y = unary(%c) {{op: sigmoid}} : {t}\n"),
            "silu" => format!(
                "  %s = unary(%c) {{op: sigmoid}} : {t}\n  %y = binary(%c, %s) {{op: mul}} : {t}\n"
            ),
            "clip" => format!(
                "  %l = binary(%c, %zero) {{op: max}} : {t}\n  %y = binary(%l, %six) {{op: min}} : {t}\n"
            ),
            "neg" => format!("  %y = unary(%c) {{op: neg}} : {t}\n"),
            _ => String::new(),
        };
        text += &format!(
            "  return {}\n}}\n",
            if tail.is_empty() { "%c" } else { "%y" }
        );
        let path = dir.join(format!("conv{ci}.kiln"));
        std::fs::write(&path, &text).expect("write model");
        let model = load(&path).unwrap_or_else(|e| panic!("case {ci}: {e}"));
        let x = Tensor::new(
            vec![n, cin, h, w],
            Storage::F32(
                (0..n * cin * h * w)
                    .map(|i| ((i * 7919) % 211) as f32 / 105.0 - 1.0)
                    .collect(),
            ),
        )
        .expect("input");
        let (m, _) = bind_static(&model, std::slice::from_ref(&x)).expect("bind");
        let prog = plan_model(&m).unwrap_or_else(|e| panic!("case {ci}: plan: {e}"));
        let calls: Vec<_> = prog
            .steps
            .iter()
            .flat_map(|s| &s.program.kernels)
            .filter_map(|k| match &k.call {
                Some(LibraryCall::Conv2d(c)) => Some(c.clone()),
                _ => None,
            })
            .collect();
        match (tail, calls.first()) {
            ("neg", c) => assert!(c.is_none(), "case {ci}: a negation kept the call"),
            (_, None) => panic!("case {ci}: no conv2d call"),
            ("relu", Some(c)) => assert_eq!(c.act, (0.0, f32::INFINITY), "case {ci}"),
            ("clip", Some(c)) => assert_eq!(c.act, (0.0, 0.5), "case {ci}"),
            ("sigmoid" | "silu", Some(c)) => assert!(c.func.is_some(), "case {ci}: {c:?}"),
            _ => {}
        }
        let want = run_plan(&prog, std::slice::from_ref(&x)).expect("interpreter");
        let native = NativeModel::compile(&model, std::slice::from_ref(&x)).expect("compile");
        let got = native.run(std::slice::from_ref(&x)).expect("run");
        compare_within(&got[0], &want[0], 1e-4, 1e-4).unwrap_or_else(|e| {
            panic!("case {ci} ({n}x{cin}x{h}x{w} -> {cout}, k{k} s{s:?} d{d} {tail}): {e}")
        });
    }
}

/// (channels, h, w, kernel, stride, dilation, pads [t, l, b, r], ceil mode)
type PoolCase = (usize, usize, usize, usize, usize, usize, [usize; 4], bool);

/// Max pooling lowers with a library call: on AVX-512 hosts, rows of at
/// least 16 outputs run the runtime's routine over the padded copy. Over
/// strides 1, 2 and 3, pads, dilation and ceil mode, the generated code
/// must give what the interpreter computes.
#[test]
fn maxpool_library_call_matches_the_interpreter() {
    use kiln_ir::kernel::call::LibraryCall;
    let cases: [PoolCase; 6] = [
        (4, 37, 40, 3, 2, 1, [0, 0, 0, 0], true),
        (3, 20, 33, 3, 1, 1, [1, 1, 1, 1], false),
        (2, 18, 70, 2, 2, 1, [0, 0, 0, 0], false),
        (2, 15, 61, 3, 3, 1, [1, 0, 1, 2], true),
        (3, 16, 45, 3, 2, 2, [2, 2, 2, 2], false),
        (5, 111, 111, 3, 2, 1, [0, 0, 0, 0], true),
    ];
    let dir = temp_dir("pool-call");
    for (ci, (c, h, w, k, s, d, pads, ceil)) in cases.into_iter().enumerate() {
        let span = |len: usize, a: usize, b: usize| {
            let full = len + a + b - ((k - 1) * d + 1);
            let o = if ceil { full.div_ceil(s) } else { full / s } + 1;
            // ONNX: the last window must start inside the input or left pad.
            if ceil && (o - 1) * s >= len + a {
                o - 1
            } else {
                o
            }
        };
        let (oh, ow) = (span(h, pads[0], pads[2]), span(w, pads[1], pads[3]));
        let text = format!(
            "kiln 1\nmodel \"pool\"\nfunc(%x: f32[1,{c},{h},{w}]) {{\n  %y = pool(%x) {{kind: max, \
             kernel: [{k}, {k}], strides: [{s}, {s}], pads: [{}, {}, {}, {}], dilations: [{d}, {d}], \
             ceil_mode: {ceil}}} : f32[1,{c},{oh},{ow}]\n  return %y\n}}\n",
            pads[0], pads[1], pads[2], pads[3]
        );
        let path = dir.join(format!("pool{ci}.kiln"));
        std::fs::write(&path, &text).expect("write model");
        let model = load(&path).unwrap_or_else(|e| panic!("case {ci}: {e}\n{text}"));
        let x = Tensor::new(
            vec![1, c, h, w],
            Storage::F32(
                (0..c * h * w)
                    .map(|i| ((i * 7919) % 1009) as f32 / 500.0 - 1.0)
                    .collect(),
            ),
        )
        .expect("input");
        let (m, _) = bind_static(&model, std::slice::from_ref(&x)).expect("bind");
        let prog = plan_model(&m).unwrap_or_else(|e| panic!("case {ci}: plan: {e}"));
        let has_call = prog
            .steps
            .iter()
            .flat_map(|s| &s.program.kernels)
            .any(|k| matches!(k.call, Some(LibraryCall::MaxPool2d(_))));
        assert!(has_call, "case {ci}: no maxpool2d call");
        let want = run_plan(&prog, std::slice::from_ref(&x)).expect("interpreter");
        let native = NativeModel::compile(&model, std::slice::from_ref(&x)).expect("compile");
        let got = native.run(std::slice::from_ref(&x)).expect("run");
        compare_within(&got[0], &want[0], 0.0, 0.0)
            .unwrap_or_else(|e| panic!("case {ci} ({c}x{h}x{w} k{k} s{s} d{d} {pads:?}): {e}"));
    }
}
