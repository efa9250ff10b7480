//! The CPU backend against the reference interpreter on hand-built kernel
//! programs (every op, cast and reduction across dtypes, matmuls over strided
//! views, control flow), and the objects it writes for each target format,
//! read back with the `object` crate.

use super::test_util::{all_unary, matmul_f32, EXACT_UNARY};
/// Re-exported for the other modules' tests, which reach them through here.
pub(super) use super::test_util::{single, view};
use super::*;
use kiln_ir::kernel::build::ProgramBuilder;
use kiln_ir::kernel::interp::run_program;
use kiln_ir::kernel::{BinOp, BufferRole, Expr, KernelProgram, Matmul, RedOp, Stmt, UnOp};
use kiln_ir::{DType, Storage};

pub(super) fn jit(p: &KernelProgram, inputs: &[Storage]) -> Vec<Storage> {
    let prog = single(p);
    let m = JitModel::compile(&prog).unwrap_or_else(|e| panic!("{e}\n{p}"));
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|s| s.to_le_bytes()).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let mut out: Vec<Vec<u8>> = prog
        .outputs
        .iter()
        .map(|o| vec![0xA5; o.byte_size()])
        .collect();
    let mut orefs: Vec<&mut [u8]> = out.iter_mut().map(|b| b.as_mut_slice()).collect();
    m.run(&refs, &mut orefs).expect("run");
    prog.outputs
        .iter()
        .zip(out)
        .map(|(o, b)| Storage::from_le_bytes(o.dtype, &b).expect("size"))
        .collect()
}

/// Runs `p` both ways; `tol` = None demands identical bits (NaN matches any NaN).
pub(super) fn check(p: &KernelProgram, inputs: &[Storage], tol: Option<(f64, f64)>, what: &str) {
    let refs: Vec<Option<&Storage>> = inputs.iter().map(Some).collect();
    let want = run_program(p, &refs).unwrap_or_else(|e| panic!("{what}: interpreter: {e}"));
    let got = jit(p, inputs);
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.dtype(), w.dtype(), "{what}");
        for i in 0..w.len() {
            let (a, b) = (g.get_f64(i), w.get_f64(i));
            let ok = match tol {
                _ if a.is_nan() || b.is_nan() => a.is_nan() && b.is_nan(),
                None if w.dtype().is_float() => a.to_bits() == b.to_bits(),
                None => g.get_i64(i) == w.get_i64(i),
                Some((abs, rel)) => a == b || (a - b).abs() <= abs + rel * b.abs(),
            };
            assert!(ok, "{what}: output {k}[{i}]: got {a}, want {b}\n{p}");
        }
    }
}

fn float_samples() -> Vec<f64> {
    let mut v: Vec<f64> = (-300..=300).map(|i| i as f64 * 0.0417).collect();
    v.extend([
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        1e-7,
        -1e-30,
        88.0,
        -100.0,
        1e6,
        3e9,
        -7e18,
        1e19,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    v
}

fn int_samples() -> Vec<i64> {
    let mut v: Vec<i64> = (-40..=40).collect();
    v.extend([
        63,
        64,
        65,
        127,
        128,
        255,
        -129,
        32767,
        -32768,
        65535,
        i32::MAX as i64,
        i32::MIN as i64,
        u32::MAX as i64,
        i64::MAX,
        i64::MIN,
    ]);
    v
}

/// Every dtype but the 16-bit floats, which `half.rs` tests on their own.
pub(super) const DTYPES: [DType; 11] = {
    let mut out = [DType::F32; 11];
    let (mut i, mut n) = (0, 0);
    while i < DType::ALL.len() {
        if !matches!(DType::ALL[i], DType::F16 | DType::BF16) {
            out[n] = DType::ALL[i];
            n += 1;
        }
        i += 1;
    }
    assert!(n == out.len(), "DTYPES must list every non-16-bit dtype");
    out
};

pub(super) fn samples(d: DType) -> Storage {
    if d.is_float() {
        Storage::from_f64s(d, float_samples())
    } else {
        Storage::from_i64s(d, int_samples())
    }
}

/// `out[i] = f(x[i])` over `n` elements (a loop the backend may vectorise).
pub(super) fn map1(dt: DType, out_dt: DType, n: usize, f: impl Fn(Expr) -> Expr) -> KernelProgram {
    let mut pb = ProgramBuilder::new();
    let x = pb.buffer("x", dt, n, BufferRole::Input(0));
    let o = pb.buffer("o", out_dt, n, BufferRole::Output(0));
    let body = pb.nest(&[n], |_, idx| {
        vec![Stmt::Store {
            buf: o,
            index: idx[0].clone(),
            value: f(Expr::load(x, idx[0].clone())),
        }]
    });
    pb.kernel("map", body);
    pb.finish()
}

#[test]
fn unary_ops_match_interpreter() {
    for dt in DTYPES {
        for op in all_unary() {
            let mut x = samples(dt);
            if dt == DType::F64 && matches!(op, UnOp::Sin | UnOp::Cos | UnOp::Tan) {
                // f64 argument reduction is exact only below 2^20 (documented).
                x = Storage::from_f64s(
                    dt,
                    float_samples()
                        .into_iter()
                        .filter(|v| v.abs() < 1e6 || !v.is_finite()),
                );
            }
            let out_dt = if matches!(op, UnOp::IsNan | UnOp::IsInf) {
                DType::Bool
            } else {
                dt
            };
            let p = map1(dt, out_dt, x.len(), |e| e.un(op));
            let refs = [Some(&x)];
            if run_program(&p, &refs).is_err() {
                continue; // not defined for this dtype (e.g. Exp on integers)
            }
            let tol = match dt {
                _ if EXACT_UNARY.contains(&op) => None,
                DType::F32 => Some((1e-6, 4e-7)),
                _ => Some((1e-13, 1e-13)),
            };
            check(
                &p,
                std::slice::from_ref(&x),
                tol,
                &format!("{op:?} on {dt}"),
            );
        }
    }
}

const BINARY: [BinOp; 19] = [
    BinOp::Add,
    BinOp::Sub,
    BinOp::Mul,
    BinOp::Div,
    BinOp::Rem,
    BinOp::Pow,
    BinOp::Max,
    BinOp::Min,
    BinOp::Eq,
    BinOp::Ne,
    BinOp::Lt,
    BinOp::Le,
    BinOp::Gt,
    BinOp::Ge,
    BinOp::And,
    BinOp::Or,
    BinOp::Xor,
    BinOp::Shl,
    BinOp::Shr,
];

#[test]
fn binary_ops_match_interpreter() {
    for dt in DTYPES {
        // Every pair of samples: x[i] op y[i] over the cross product.
        let s = samples(dt);
        let n = s.len();
        let take = |i: usize| (0..n).map(move |j| (i * 7 + j * 13) % n);
        let xs: Vec<usize> = (0..n)
            .flat_map(|i| std::iter::repeat_n(i, n.min(40)))
            .collect();
        let ys: Vec<usize> = (0..n).flat_map(|i| take(i).take(n.min(40))).collect();
        let pick = |ix: &[usize]| {
            if dt.is_float() {
                Storage::from_f64s(dt, ix.iter().map(|&i| s.get_f64(i)))
            } else {
                Storage::from_i64s(dt, ix.iter().map(|&i| s.get_i64(i)))
            }
        };
        let (x, y) = (pick(&xs), pick(&ys));
        for op in BINARY {
            let out_dt = if op.is_comparison() { DType::Bool } else { dt };
            let mut pb = ProgramBuilder::new();
            let bx = pb.buffer("x", dt, x.len(), BufferRole::Input(0));
            let by = pb.buffer("y", dt, y.len(), BufferRole::Input(1));
            let o = pb.buffer("o", out_dt, x.len(), BufferRole::Output(0));
            let body = pb.nest(&[x.len()], |_, idx| {
                vec![Stmt::Store {
                    buf: o,
                    index: idx[0].clone(),
                    value: Expr::load(bx, idx[0].clone()).bin(op, Expr::load(by, idx[0].clone())),
                }]
            });
            pb.kernel("bin", body);
            let p = pb.finish();
            let inputs = [x.clone(), y.clone()];
            if run_program(&p, &[Some(&x), Some(&y)]).is_err() {
                continue;
            }
            let tol = match (op, dt) {
                (BinOp::Pow, DType::F32) => Some((1e-30, 4e-7)),
                (BinOp::Pow, DType::F64) => Some((1e-300, 1e-12)),
                _ => None,
            };
            check(&p, &inputs, tol, &format!("{op:?} on {dt}"));
        }
    }
}

#[test]
fn casts_match_interpreter() {
    for from in DTYPES {
        let x = samples(from);
        for to in DTYPES {
            let p = map1(from, to, x.len(), |e| e.cast(to));
            check(
                &p,
                std::slice::from_ref(&x),
                None,
                &format!("cast {from} -> {to}"),
            );
        }
    }
}

#[test]
fn reductions_match_interpreter() {
    // Extents below, at and above the interpreter's 512-element chunk.
    for extent in [1usize, 5, 9, 512, 1300] {
        for dt in [DType::F32, DType::F64, DType::I32, DType::Bool] {
            for op in [RedOp::Sum, RedOp::Prod, RedOp::Max, RedOp::Min] {
                let rows = 6;
                let n = rows * extent;
                let x = if dt.is_float() {
                    Storage::from_f64s(dt, (0..n).map(|i| ((i * 37) % 101) as f64 * 0.013 - 0.6))
                } else {
                    Storage::from_i64s(dt, (0..n).map(|i| ((i * 37) % 11) as i64 - 5))
                };
                let mut pb = ProgramBuilder::new();
                let bx = pb.buffer("x", dt, n, BufferRole::Input(0));
                let o = pb.buffer("o", dt, rows, BufferRole::Output(0));
                let r = pb.var();
                let body = pb.nest(&[rows], |_, idx| {
                    let v = Expr::load(bx, idx[0].clone() * extent as i64 + Expr::var(r));
                    vec![Stmt::Store {
                        buf: o,
                        index: idx[0].clone(),
                        value: Expr::reduce(op, r, extent as u64, v),
                    }]
                });
                pb.kernel("red", body);
                let p = pb.finish();
                // The interpreter's bool Sum/Prod are not folds (Add on bools is false).
                if run_program(&p, &[Some(&x)]).is_err()
                    || (dt == DType::Bool && matches!(op, RedOp::Sum | RedOp::Prod))
                {
                    continue;
                }
                check(&p, &[x], None, &format!("{op:?} over {extent} {dt}"));
            }
        }
    }
}

/// A reduction inside a loop that runs as lanes: each lane folds in order.
#[test]
fn reduction_in_vector_loop_matches_interpreter() {
    let (rows, cols, k) = (3usize, 37usize, 29usize);
    let x: Vec<f32> = (0..rows * k * cols)
        .map(|i| ((i * 7919) % 211) as f32 * 0.01 - 1.0)
        .collect();
    let mut pb = ProgramBuilder::new();
    let bx = pb.buffer("x", DType::F32, x.len(), BufferRole::Input(0));
    let o = pb.buffer("o", DType::F32, rows * cols, BufferRole::Output(0));
    let r = pb.var();
    let body = pb.nest(&[rows, cols], |_, idx| {
        let v = Expr::load(
            bx,
            (idx[0].clone() * k as i64 + Expr::var(r)) * cols as i64 + idx[1].clone(),
        );
        let s = Expr::reduce(RedOp::Sum, r, k as u64, v.clone().max(Expr::f32(-0.5)));
        let m = Expr::reduce(RedOp::Max, r, k as u64, v);
        vec![Stmt::Store {
            buf: o,
            index: idx[0].clone() * cols as i64 + idx[1].clone(),
            value: Expr::select(s.clone().gt(Expr::f32(0.0)), s, m),
        }]
    });
    pb.kernel("red", body);
    check(&pb.finish(), &[Storage::F32(x)], None, "vector reduce");
}

/// Matmuls over strided views: transposed operands, strided C, offsets
/// taken from an enclosing loop, accumulation, every tile remainder.
#[test]
fn matmuls_match_interpreter() {
    for &(m, n, k) in &[
        (1usize, 1usize, 1usize),
        (4, 8, 3),
        (7, 13, 5),
        (9, 30, 17),
        (5, 4, 0),
        (3, 10, 256),
        (6, 9, 600),
        (5, 17, 512),
        (9, 7, 300),
    ] {
        for dt in [DType::F32, DType::F64, DType::I32, DType::F16, DType::BF16] {
            for (bt, ccs, acc) in [
                (false, 1, false),
                (true, 1, true),
                (false, 2, true),
                (true, 3, false),
            ] {
                let batch = 2usize;
                let a_len = batch * m * k + 3;
                let b_len = k * n + 1;
                let c_len = batch * m * n * ccs + 5;
                let fill = |len: usize, s: usize| {
                    Storage::from_f64s(dt, (0..len).map(|i| ((i * s + 3) % 17) as f64 * 0.5 - 4.0))
                };
                let (a, b, c0) = (fill(a_len, 7), fill(b_len, 5), fill(c_len, 3));
                let mut pb = ProgramBuilder::new();
                let ba = pb.buffer("a", dt, a_len, BufferRole::Input(0));
                let bb = pb.buffer("b", dt, b_len, BufferRole::Input(1));
                let bc0 = pb.buffer("c0", dt, c_len, BufferRole::Input(2));
                let bc = pb.buffer("c", dt, c_len, BufferRole::Output(0));
                let copy = pb.nest(&[c_len], |_, idx| {
                    vec![Stmt::Store {
                        buf: bc,
                        index: idx[0].clone(),
                        value: Expr::load(bc0, idx[0].clone()),
                    }]
                });
                pb.kernel("init", copy);
                let v = pb.var();
                let (brs, bcs) = if bt { (1, k as i64) } else { (n as i64, 1) };
                pb.kernel(
                    "mm",
                    vec![Stmt::For {
                        var: v,
                        extent: batch as u64,
                        body: vec![Stmt::Matmul(Matmul {
                            m: m as u64,
                            n: n as u64,
                            k: k as u64,
                            a: view(ba, Expr::var(v) * (m * k) as i64 + Expr::i(2), k as i64, 1),
                            b: view(bb, Expr::i(1), brs, bcs),
                            c: view(
                                bc,
                                Expr::var(v) * (m * n * ccs) as i64 + Expr::i(4),
                                (n * ccs) as i64,
                                ccs as i64,
                            ),
                            accumulate: acc,
                        })],
                    }],
                );
                let p = pb.finish();
                check(
                    &p,
                    &[a, b, c0],
                    None,
                    &format!("matmul {m}x{n}x{k} {dt} bt={bt} ccs={ccs} acc={acc}"),
                );
            }
        }
    }
}

/// If, Select with lane-varying conditions, While, and a gather index.
#[test]
fn control_flow_matches_interpreter() {
    let n = 23usize;
    let x = Storage::F32((0..n).map(|i| i as f32 * 0.37 - 3.0).collect());
    let idx = Storage::I64((0..n).map(|i| ((i * 5) % n) as i64).collect());
    let mut pb = ProgramBuilder::new();
    let bx = pb.buffer("x", DType::F32, n, BufferRole::Input(0));
    let bi = pb.buffer("i", DType::I64, n, BufferRole::Input(1));
    let o = pb.buffer("o", DType::F32, n, BufferRole::Output(0));
    let cnt = pb.buffer("cnt", DType::I64, 1, BufferRole::Output(1));
    let body = pb.nest(&[n], |_, ix| {
        let g = Expr::load(bx, Expr::load(bi, ix[0].clone()));
        vec![Stmt::If {
            cond: ix[0].clone().lt(Expr::i(10)),
            then_body: vec![Stmt::Store {
                buf: o,
                index: ix[0].clone(),
                value: Expr::select(g.clone().gt(Expr::f32(0.0)), g.clone(), g * Expr::f32(0.1)),
            }],
            else_body: vec![Stmt::Store {
                buf: o,
                index: ix[0].clone(),
                value: Expr::load(bx, ix[0].clone()).un(UnOp::Exp),
            }],
        }]
    });
    pb.kernel("branches", body);
    let inc = Expr::load(cnt, Expr::i(0)) + Expr::i(3);
    pb.kernel(
        "while",
        vec![Stmt::While {
            cond: Expr::load(cnt, Expr::i(0)).lt(Expr::i(100)),
            body: vec![Stmt::Store {
                buf: cnt,
                index: Expr::i(0),
                value: inc,
            }],
        }],
    );
    check(&pb.finish(), &[x, idx], Some((1e-6, 4e-7)), "control flow");
}

#[test]
fn run_checks_buffer_sizes() {
    let p = map1(DType::F32, DType::F32, 8, |e| e);
    let m = JitModel::compile(&single(&p)).expect("compile");
    let x = [0u8; 31];
    let mut o = [0u8; 32];
    let Err(e) = m.run(&[&x], &mut [&mut o]) else {
        panic!("a 31-byte input must be refused");
    };
    assert!(e.to_string().contains("input 0"), "{e}");
}

/// Outer loops run in parallel only when iterations touch disjoint windows.
#[test]
fn parallel_loops_need_disjoint_iterations() {
    use super::parallel::parallel_loop;
    let (rows, cols) = (64i64, 1024i64);
    let nest = |store: Expr, load: Expr| Stmt::For {
        var: 0,
        extent: rows as u64,
        body: vec![Stmt::For {
            var: 1,
            extent: cols as u64,
            body: vec![Stmt::Store {
                buf: 1,
                index: store,
                value: Expr::load(1, load) + Expr::load(0, Expr::var(1)),
            }],
        }],
    };
    let own = Expr::var(0) * cols + Expr::var(1);
    assert!(parallel_loop(&nest(own.clone(), own.clone())));
    // Every iteration writes the same row.
    assert!(!parallel_loop(&nest(Expr::var(1), Expr::var(1))));
    // Iteration v reads row v-1, which iteration v-1 writes.
    let prev = (Expr::var(0) - Expr::i(1)) * cols + Expr::var(1);
    assert!(!parallel_loop(&nest(own.clone(), prev)));
    // Too little work to be worth threads.
    let small = Stmt::For {
        var: 0,
        extent: 2,
        body: vec![Stmt::For {
            var: 1,
            extent: 4,
            body: vec![Stmt::Store {
                buf: 1,
                index: Expr::var(0) * 4 + Expr::var(1),
                value: Expr::f32(1.0),
            }],
        }],
    };
    assert!(!parallel_loop(&small));
}

/// GFLOP/s of the generated f32 matmul at n = 512 (single thread; a tool for
/// performance work).
#[test]
#[ignore]
fn bench_matmul() {
    let n = 512usize;
    let prog = single(&matmul_f32(n, n, n));
    let m = JitModel::compile(&prog).expect("compile");
    let x = vec![0u8; n * n * 4];
    let mut o = vec![0u8; n * n * 4];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        m.run(&[&x, &x], &mut [&mut o]).expect("run");
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "matmul {n}: {:.1} GFLOP/s",
        2.0 * (n * n * n) as f64 / best / 1e9
    );
}

/// Softmax's exponential rows carry a library call that the CPU backend
/// renders as the runtime's 16-lane routine (on AVX-512 hosts; elsewhere
/// the body): the same values as the interpreter's body, within 2 ulp.
#[test]
fn exp_rows_call_matches_the_interpreter() {
    use kiln_ir::kernel::call::{ExpRows, LibraryCall};
    let (rows, len) = (37usize, 45usize);
    let mut pb = ProgramBuilder::new();
    let x = pb.buffer("x", DType::F32, rows * len, BufferRole::Input(0));
    let m = pb.buffer("m", DType::F32, rows, BufferRole::Input(1));
    let y = pb.buffer("y", DType::F32, rows * len, BufferRole::Output(0));
    let body = pb.nest(&[rows, len], |_, i| {
        let at = i[0].clone() * len as i64 + i[1].clone();
        vec![Stmt::Store {
            buf: y,
            index: at.clone(),
            value: (Expr::load(x, at) - Expr::load(m, i[0].clone())).un(UnOp::Exp),
        }]
    });
    let call = ExpRows {
        x,
        m,
        y,
        rows: rows as u64,
        len: len as u64,
    };
    pb.kernel_with_call("exp", body, LibraryCall::ExpRows(call));
    let p = pb.finish();
    let xs: Vec<f32> = (0..rows * len)
        .map(|i| ((i * 7919) % 101) as f32 * 0.2 - 10.0)
        .collect();
    let ms: Vec<f32> = (0..rows).map(|r| (r % 5) as f32 - 2.0).collect();
    let ins = [Storage::F32(xs), Storage::F32(ms)];
    let refs: Vec<Option<&Storage>> = ins.iter().map(Some).collect();
    let want = run_program(&p, &refs).expect("interpreter");
    let got = jit(&p, &ins);
    for e in 0..rows * len {
        let (g, w) = (got[0].get_f64(e), want[0].get_f64(e));
        assert!(
            (g - w).abs() <= 2.0 * f32::EPSILON as f64 * w.abs(),
            "[{e}] {g} vs {w}"
        );
    }
}
