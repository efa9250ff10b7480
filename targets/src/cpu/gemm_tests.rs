//! Matmuls that call the runtime's GEMM kernels, checked against the
//! kernel-IR interpreter (the reference backend) and, for the object path,
//! by the kernels each target's object imports.

use super::test_util::{single, view};
use super::*;
use crate::plan::{AotWeight, BufferLoc};
use kiln_ir::kernel::build::ProgramBuilder;
use kiln_ir::kernel::interp::run_program;
use kiln_ir::kernel::{BinOp, BufferRole, Expr, KernelProgram, Matmul, Stmt, UnOp};
use kiln_ir::{DType, Storage};

/// Deterministic values in [-1, 1) that are not exact in few bits, so the
/// kernels' fused multiply-adds round differently from the interpreter.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A matmul case: shapes, B's layout, C's row padding, accumulation, and
/// whether B is a weight (else an input).
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    b_transposed: bool,
    c_pad: usize,
    acc: bool,
    weight: bool,
    /// Images: with 2 the batch loop takes the threads and each matmul
    /// runs whole; with 1 a large matmul is split itself.
    batch: usize,
}

/// `c = c0; for v in 0..batch { c[v] (+)= a[v] · b }` with offsets everywhere.
/// Buffers: a (input 0), c0 (input 1), b (input 2), c (output 0).
fn program(cs: Case) -> (KernelProgram, Vec<Storage>) {
    let Case { m, n, k, batch, .. } = cs;
    let ldc = n + cs.c_pad;
    let (a_len, b_len, c_len) = (batch * m * k + 3, k * n + 5, batch * m * ldc + 4);
    let mut pb = ProgramBuilder::new();
    let ba = pb.buffer("a", DType::F32, a_len, BufferRole::Input(0));
    let bc0 = pb.buffer("c0", DType::F32, c_len, BufferRole::Input(1));
    let bb = pb.buffer("b", DType::F32, b_len, BufferRole::Input(2));
    let bc = pb.buffer("c", DType::F32, c_len, BufferRole::Output(0));
    let copy = pb.nest(&[c_len], |_, i| {
        vec![Stmt::Store {
            buf: bc,
            index: i[0].clone(),
            value: Expr::load(bc0, i[0].clone()),
        }]
    });
    pb.kernel("init", copy);
    let v = pb.var();
    let (brs, bcs) = if cs.b_transposed {
        (1, k as i64)
    } else {
        (n as i64, 1)
    };
    pb.kernel(
        "mm",
        vec![Stmt::For {
            var: v,
            extent: batch as u64,
            body: vec![Stmt::Matmul(Matmul {
                m: m as u64,
                n: n as u64,
                k: k as u64,
                a: view(ba, Expr::var(v) * (m * k) as i64 + Expr::i(3), k as i64, 1),
                b: view(bb, Expr::i(5), brs, bcs),
                c: view(
                    bc,
                    Expr::var(v) * (m * ldc) as i64 + Expr::i(4),
                    ldc as i64,
                    1,
                ),
                accumulate: cs.acc,
            })],
        }],
    );
    let data = vec![
        Storage::F32(values(a_len, 1)),
        Storage::F32(values(c_len, 2)),
        Storage::F32(values(b_len, 3)),
    ];
    (pb.finish(), data)
}

/// The program as a model, with B bound to a weight when the case says so.
fn model(p: &KernelProgram, data: &[Storage], weight: bool) -> AotProgram {
    let mut prog = single(p);
    if weight {
        prog.steps[0].bindings[2] = BufferLoc::Weight(0);
        prog.inputs.truncate(2);
        prog.weights.push(AotWeight {
            name: "b".into(),
            data: data[2].clone(),
        });
    }
    prog
}

fn check(cs: Case) {
    let (p, data) = program(cs);
    let refs: Vec<Option<&Storage>> = data.iter().map(Some).collect();
    let want = run_program(&p, &refs).expect("interpreter");
    let prog = model(&p, &data, cs.weight);
    let jit = JitModel::compile(&prog).expect("compile");
    let ins: Vec<Vec<u8>> = data[..prog.inputs.len()]
        .iter()
        .map(|s| s.to_le_bytes())
        .collect();
    let ins: Vec<&[u8]> = ins.iter().map(|b| b.as_slice()).collect();
    let mut out = vec![0xA5u8; prog.outputs[0].byte_size()];
    jit.run(&ins, &mut [&mut out]).expect("run");
    let got = Storage::from_le_bytes(DType::F32, &out).expect("size");
    // Each element sums k products of magnitude < 1 (plus C): allow the
    // rounding of k additions in either order.
    let tol = 1e-6 * (cs.k as f64 + 2.0) * 4.0;
    for i in 0..want[0].len() {
        let (g, w) = (got.get_f64(i), want[0].get_f64(i));
        assert!(
            (g - w).abs() <= tol,
            "{cs:?}: c[{i}] = {g}, interpreter {w} (tolerance {tol})"
        );
    }
}

/// B packed at compile time; the JIT's code is multi-threaded, so the
/// larger cases run split by rows or by columns.
#[test]
fn weight_b_matches_interpreter() {
    for (m, n, k) in [
        (1, 1, 1),
        (1, 40, 300),
        (3, 7, 5),
        (7, 33, 17),
        (13, 64, 256),
        (25, 65, 257),
        (30, 100, 600),
        (50, 40, 600),
        // Few row blocks, many column panels: split by columns over
        // threads, depth past one block (each thread's B at j0·k).
        (49, 512, 700),
        (20, 90, 300),
    ] {
        for (b_transposed, c_pad, acc, batch) in [
            (false, 0, false, 1),
            (true, 3, true, 2),
            (false, 5, true, 1),
        ] {
            check(Case {
                m,
                n,
                k,
                b_transposed,
                c_pad,
                acc,
                weight: true,
                batch,
            });
        }
    }
}

/// Activation B packed at run time: column and row chunks with remainders
/// (a chunk holds at most 512 rows and 256 KiB). The JIT's code is
/// multi-threaded, so the larger cases also run split by rows.
#[test]
fn runtime_packed_b_matches_interpreter() {
    for (m, n, k) in [
        (16, 1, 1),
        (16, 17, 5),
        (20, 300, 600),
        (33, 1000, 70),
        (17, 130, 1100),
        (64, 200, 300),
    ] {
        for (c_pad, acc) in [(0, false), (3, true)] {
            check(Case {
                m,
                n,
                k,
                b_transposed: false,
                c_pad,
                acc,
                weight: false,
                batch: 2,
            });
        }
    }
}

/// The kernels an object imports follow the target's ISA and the shape.
#[test]
fn objects_import_the_kernel_for_the_isa() {
    use object::{Object, ObjectSymbol};
    let imports = |triple: &str, cpu: Option<&str>, n: usize| -> Vec<String> {
        let cs = Case {
            m: 8,
            n,
            k: 9,
            b_transposed: true,
            c_pad: 0,
            acc: false,
            weight: true,
            batch: 2,
        };
        let (p, data) = program(cs);
        let prog = model(&p, &data, true);
        let t = CpuTarget::parse(triple, cpu).expect("target");
        let art = compile_object(&prog, "mm", &t).expect("compile");
        let f = object::File::parse(&*art.object).expect("parse");
        let mut v: Vec<String> = f
            .symbols()
            .filter(|s| s.is_undefined())
            .filter_map(|s| s.name().ok().map(str::to_string))
            .filter(|s| s.contains("sgemm"))
            .collect();
        v.sort();
        v
    };
    let x86 = "x86_64-unknown-linux-gnu";
    assert_eq!(imports(x86, Some("x86-64-v2"), 100), Vec::<String>::new());
    assert_eq!(imports(x86, Some("x86-64-v3"), 100), ["kiln_sgemm_avx2"]);
    assert_eq!(imports(x86, Some("x86-64-v4"), 100), ["kiln_sgemm_avx512"]);
    assert_eq!(imports(x86, Some("x86-64-v4"), 64), ["kiln_sgemm_avx2"]);
    assert_eq!(
        imports("aarch64-unknown-linux-gnu", None, 100),
        ["kiln_sgemm_neon"]
    );
    assert_eq!(
        imports("aarch64-apple-darwin", None, 100),
        ["_kiln_sgemm_neon"]
    );
}

/// With threads, a large matmul is split by rows over `kiln_parallel_for`;
/// a small one stays on the calling thread.
#[test]
fn large_matmuls_are_split_over_threads() {
    use object::{Object, ObjectSymbol};
    let uses_pool = |m: usize, weight: bool| -> bool {
        let cs = Case {
            m,
            n: 200,
            k: 300,
            b_transposed: false,
            c_pad: 0,
            acc: false,
            weight,
            batch: 2,
        };
        let (p, data) = program(cs);
        let prog = model(&p, &data, weight);
        let t = CpuTarget::parse("x86_64-unknown-linux-gnu", Some("x86-64-v3"))
            .expect("target")
            .with_threads(true);
        let art = compile_object(&prog, "mm", &t).expect("compile");
        let f = object::File::parse(&*art.object).expect("parse");
        let names: Vec<String> = f
            .symbols()
            .filter(|s| s.is_undefined())
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect();
        let want = if weight {
            "kiln_sgemm_avx2"
        } else {
            "kiln_sgemm_raw_avx2"
        };
        assert!(names.iter().any(|n| n == want), "{names:?}");
        // The row-block task function (the batch loop around the matmul is
        // parallel on its own, so `kiln_parallel_for` alone proves nothing).
        f.symbols()
            .any(|s| s.name().is_ok_and(|n| n.starts_with("mm_gemm_t")))
    };
    assert!(uses_pool(64, false));
    assert!(uses_pool(64, true));
    assert!(!uses_pool(4, true));
}

/// A weight read only through its packed copy is not stored twice; without
/// GEMM kernels (x86-64-v2) it is stored as it is.
#[test]
fn packed_only_weights_are_not_duplicated() {
    use object::{Object, ObjectSymbol};
    let cs = Case {
        m: 8,
        n: 40,
        k: 30,
        b_transposed: false,
        c_pad: 0,
        acc: false,
        weight: true,
        batch: 2,
    };
    let (p, data) = program(cs);
    let prog = model(&p, &data, true);
    let weight_size = |cpu: &str| -> u64 {
        let t = CpuTarget::parse("x86_64-unknown-linux-gnu", Some(cpu)).expect("target");
        let art = compile_object(&prog, "mm", &t).expect("compile");
        let f = object::File::parse(&*art.object).expect("parse");
        let s = f.symbol_by_name("mm_w0").expect("weight symbol");
        s.size()
    };
    assert_eq!(weight_size("x86-64-v2"), (cs.k * cs.n + 5) as u64 * 4);
    assert_eq!(weight_size("x86-64-v3"), 1);
}

/// `c = a · b` followed by the epilogue loop fusion leaves for an activation.
fn with_epilogue(m: usize, n: usize, k: usize, act: &dyn Fn(Expr) -> Expr) -> KernelProgram {
    let mut pb = ProgramBuilder::new();
    let a = pb.buffer("a", DType::F32, m * k, BufferRole::Input(0));
    let b = pb.buffer("b", DType::F32, k * n, BufferRole::Input(1));
    let c = pb.buffer("c", DType::F32, m * n, BufferRole::Output(0));
    let (i, j) = (pb.var(), pb.var());
    let flat = Expr::i(0) + Expr::var(i) * n as i64 + Expr::var(j) * 1;
    pb.kernel(
        "mm",
        vec![
            Stmt::Matmul(Matmul {
                m: m as u64,
                n: n as u64,
                k: k as u64,
                a: view(a, Expr::i(0), k as i64, 1),
                b: view(b, Expr::i(0), n as i64, 1),
                c: view(c, Expr::i(0), n as i64, 1),
                accumulate: false,
            }),
            Stmt::For {
                var: i,
                extent: m as u64,
                body: vec![Stmt::For {
                    var: j,
                    extent: n as u64,
                    body: vec![Stmt::Store {
                        buf: c,
                        index: flat.clone(),
                        value: act(Expr::load(c, flat)),
                    }],
                }],
            },
        ],
    );
    pb.finish()
}

/// ReLU and Clip epilogues are folded into the kernel's clamp (also when B
/// is packed in row chunks, where only the last chunk may clamp), sigmoid,
/// SiLU, GELU and tanh into its function, and give the interpreter's
/// results; another activation is left as a loop.
#[test]
fn activation_epilogues_are_folded() {
    let relu = |x: Expr| x.max(Expr::f32(0.0));
    let clip = |x: Expr| x.max(Expr::f32(-0.25)).min(Expr::f32(0.5));
    let neg = |x: Expr| -x;
    let sigmoid = |x: Expr| Expr::f32(1.0).bin(BinOp::Div, Expr::f32(1.0) + (-x).un(UnOp::Exp));
    let silu = |x: Expr| x.clone() * sigmoid(x);
    let gelu = |x: Expr| {
        let erf = x
            .clone()
            .bin(BinOp::Div, Expr::f32(std::f32::consts::SQRT_2))
            .un(UnOp::Erf);
        x * (erf + Expr::f32(1.0)) * Expr::f32(0.5)
    };
    let tanh = |x: Expr| x.un(UnOp::Tanh);
    let clipped_silu = |x: Expr| silu(x).min(Expr::f32(0.3));
    for (what, act, folds) in [
        ("relu", &relu as &dyn Fn(Expr) -> Expr, true),
        ("clip", &clip, true),
        ("neg", &neg, false),
        ("sigmoid", &sigmoid, true),
        ("silu", &silu, true),
        ("gelu", &gelu, true),
        ("tanh", &tanh, true),
        ("clipped silu", &clipped_silu, true),
    ] {
        for (m, n, k) in [(20, 33, 40), (24, 70, 1100)] {
            let p = with_epilogue(m, n, k, act);
            let prog = single(&p);
            let t = CpuTarget::parse("x86_64-unknown-linux-gnu", Some("x86-64-v3")).expect("t");
            let builder = cranelift_object::ObjectBuilder::new(
                t.isa.as_ref().clone(),
                "mm",
                cranelift_module::default_libcall_names(),
            )
            .expect("builder");
            let mut module = cranelift_object::ObjectModule::new(builder);
            let g = super::gemm::Gemms::plan(
                &mut module,
                &prog,
                "mm",
                false,
                &super::conv_call::ConvCalls::none(),
            )
            .expect("plan");
            let epi = &prog.steps[0].program.kernels[0].body[1];
            assert_eq!(g.folds(epi), folds, "{what}");
            let data = [
                Storage::F32(values(m * k, 7)),
                Storage::F32(values(k * n, 8)),
            ];
            let refs: Vec<Option<&Storage>> = data.iter().map(Some).collect();
            let want = run_program(&p, &refs).expect("interpreter");
            let jit = JitModel::compile(&prog).expect("compile");
            let ins: Vec<Vec<u8>> = data.iter().map(|s| s.to_le_bytes()).collect();
            let ins: Vec<&[u8]> = ins.iter().map(|b| b.as_slice()).collect();
            let mut out = vec![0u8; m * n * 4];
            jit.run(&ins, &mut [&mut out]).expect("run");
            let got = Storage::from_le_bytes(DType::F32, &out).expect("size");
            let tol = 1e-6 * (k as f64 + 2.0) * 4.0;
            for e in 0..m * n {
                let (g, w) = (got.get_f64(e), want[0].get_f64(e));
                assert!((g - w).abs() <= tol, "{what} {m}x{n}x{k}: [{e}] {g} vs {w}");
            }
        }
    }
}
