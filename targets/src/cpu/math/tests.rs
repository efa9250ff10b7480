//! JIT-compiles every inline math function into an elementwise loop and
//! compares it with the C library's double-precision functions: f32 over
//! every 97th bit pattern plus special values (max ulp error vs the
//! double result rounded to f32), f64 over random bit patterns. Scalar and
//! vector forms must agree bit for bit.

use super::*;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, Function, Signature, UserFuncName};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use std::time::Instant;

mod libm {
    extern "C" {
        pub fn exp(x: f64) -> f64;
        pub fn log(x: f64) -> f64;
        pub fn sin(x: f64) -> f64;
        pub fn cos(x: f64) -> f64;
        pub fn tan(x: f64) -> f64;
        pub fn asin(x: f64) -> f64;
        pub fn acos(x: f64) -> f64;
        pub fn atan(x: f64) -> f64;
        pub fn sinh(x: f64) -> f64;
        pub fn cosh(x: f64) -> f64;
        pub fn tanh(x: f64) -> f64;
        pub fn asinh(x: f64) -> f64;
        pub fn acosh(x: f64) -> f64;
        pub fn atanh(x: f64) -> f64;
        pub fn erf(x: f64) -> f64;
        pub fn pow(x: f64, y: f64) -> f64;
        pub fn expf(x: f32) -> f32;
        pub fn tanhf(x: f32) -> f32;
        pub fn erff(x: f32) -> f32;
        pub fn logf(x: f32) -> f32;
        pub fn sinf(x: f32) -> f32;
        pub fn powf(x: f32, y: f32) -> f32;
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Un(UnOp),
    Sigmoid,
    Pow,
}

fn sigmoid_ref(x: f64) -> f64 {
    1.0 / (1.0 + unsafe { libm::exp(-x) })
}

/// The double-precision reference for `op` (C library, or composed from it).
fn reference(op: Op) -> fn(f64, f64) -> f64 {
    macro_rules! un {
        ($f:path) => {
            |x, _| unsafe { $f(x) }
        };
    }
    match op {
        Op::Un(UnOp::Exp) => un!(libm::exp),
        Op::Un(UnOp::Log) => un!(libm::log),
        Op::Un(UnOp::Sqrt) => |x, _| x.sqrt(),
        Op::Un(UnOp::Sin) => un!(libm::sin),
        Op::Un(UnOp::Cos) => un!(libm::cos),
        Op::Un(UnOp::Tan) => un!(libm::tan),
        Op::Un(UnOp::Asin) => un!(libm::asin),
        Op::Un(UnOp::Acos) => un!(libm::acos),
        Op::Un(UnOp::Atan) => un!(libm::atan),
        Op::Un(UnOp::Sinh) => un!(libm::sinh),
        Op::Un(UnOp::Cosh) => un!(libm::cosh),
        Op::Un(UnOp::Tanh) => un!(libm::tanh),
        Op::Un(UnOp::Asinh) => un!(libm::asinh),
        Op::Un(UnOp::Acosh) => un!(libm::acosh),
        Op::Un(UnOp::Atanh) => un!(libm::atanh),
        Op::Un(UnOp::Erf) => un!(libm::erf),
        Op::Sigmoid => |x, _| sigmoid_ref(x),
        Op::Pow => |x, y| unsafe { libm::pow(x, y) },
        Op::Un(other) => panic!("no reference for {other:?}"),
    }
}

fn emit(b: &mut FunctionBuilder, op: Op, ty: Type, a: Value, c: Value) -> Value {
    let r = match op {
        Op::Un(u) => emit_unary(b, u, ty, a),
        Op::Sigmoid => emit_sigmoid(b, ty, a),
        Op::Pow => emit_pow(b, ty, a, c),
    };
    r.unwrap_or_else(|| panic!("{op:?} not emitted for {ty}"))
}

/// `fn(a: *const T, b: *const T, out: *mut T, n: i64)`: out[i] = op(a[i], b[i]),
/// `n` a multiple of the lane count.
fn loop_function(op: Op, ty: Type, cfg: TargetFrontendConfig) -> Function {
    let ptr = cfg.pointer_type();
    let mut sig = Signature::new(CallConv::SystemV);
    for _ in 0..3 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.params.push(AbiParam::new(I64));
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    let head = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.append_block_param(head, I64);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let zero = b.ins().iconst(I64, 0);
    b.ins().jump(head, &[zero.into()]);
    b.switch_to_block(head);
    let i = b.block_params(head)[0];
    let done = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, i, p[3]);
    b.ins().brif(done, exit, &[], body, &[]);
    b.switch_to_block(body);
    let off = b.ins().imul_imm_u(i, i64::from(ty.lane_type().bytes()));
    let flags = MemFlagsData::new().with_notrap();
    let addr = |b: &mut FunctionBuilder, base: Value| b.ins().iadd(base, off);
    let pa = addr(&mut b, p[0]);
    let pb = addr(&mut b, p[1]);
    let po = addr(&mut b, p[2]);
    let va = b.ins().load(ty, flags, pa, 0);
    let vb = b.ins().load(ty, flags, pb, 0);
    let r = emit(&mut b, op, ty, va, vb);
    b.ins().store(flags, r, po, 0);
    let next = b.ins().iadd_imm_u(i, i64::from(ty.lane_count()));
    b.ins().jump(head, &[next.into()]);
    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(cfg);
    func
}

fn host_isa() -> OwnedTargetIsa {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").expect("opt_level");
    cranelift_native::builder()
        .expect("host ISA")
        .finish(settings::Flags::new(flags))
        .expect("host ISA flags")
}

type Kernel<T> = unsafe extern "C" fn(*const T, *const T, *mut T, i64);

/// JIT-compiles the loop for `op` on `ty`; the module is leaked so the code
/// stays mapped for the test's lifetime.
fn jit<T>(op: Op, ty: Type) -> Kernel<T> {
    let isa = host_isa();
    let cfg = isa.frontend_config();
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let mut ctx = module.make_context();
    ctx.func = loop_function(op, ty, cfg);
    let id = module
        .declare_function("k", Linkage::Local, &ctx.func.signature)
        .expect("declare");
    module.define_function(id, &mut ctx).expect("compile");
    module.finalize_definitions().expect("finalize");
    let code = module.get_finalized_function(id);
    Box::leak(Box::new(module));
    // SAFETY: the function was built with exactly this signature.
    unsafe { std::mem::transmute::<*const u8, Kernel<T>>(code) }
}

fn run<T: Copy + Default>(k: Kernel<T>, a: &[T], b: &[T]) -> Vec<T> {
    let mut out = vec![T::default(); a.len()];
    // SAFETY: all three buffers hold a.len() elements, a multiple of 4.
    unsafe { k(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), a.len() as i64) };
    out
}

/// Distance in representable values (0 when both are NaN).
fn ulps32(got: f32, want: f32) -> u64 {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() {
            0
        } else {
            u64::MAX
        };
    }
    let ord = |v: f32| {
        let b = v.to_bits() as i64;
        if b < 0x8000_0000 {
            b
        } else {
            -(b & 0x7fff_ffff)
        }
    };
    (ord(got) - ord(want)).unsigned_abs()
}

fn ulps64(got: f64, want: f64) -> u64 {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() {
            0
        } else {
            u64::MAX
        };
    }
    let ord = |v: f64| {
        let b = v.to_bits() as i128;
        if b < 1 << 63 {
            b
        } else {
            -(b & 0x7fff_ffff_ffff_ffff)
        }
    };
    (ord(got) - ord(want)).unsigned_abs().min(u64::MAX as u128) as u64
}

const SPECIAL: [f64; 22] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    2.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    1e-30,
    -1e-30,
    88.72,
    -87.33,
    -103.9,
    709.78,
    -745.1,
    3.0,
    1e10,
    -1e10,
    6.0,
    f64::MIN_POSITIVE,
];

fn pad4<T: Copy>(v: &mut Vec<T>, fill: T) {
    while !v.len().is_multiple_of(4) {
        v.push(fill);
    }
}

/// Every 97th f32 bit pattern plus special values and subnormal boundaries.
fn f32_inputs(start: u64) -> Vec<f32> {
    let mut v: Vec<f32> = (start..1u64 << 32)
        .step_by(97)
        .map(|b| f32::from_bits(b as u32))
        .collect();
    v.extend(SPECIAL.iter().map(|&s| s as f32));
    v.extend([
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        f32::EPSILON,
    ]);
    v.extend([1.0e38f32, -3.0e38, 16_777_215.0, 8.0e6, 1.0e-7, 0.9999999]);
    pad4(&mut v, 0.0);
    v
}

struct Report {
    max_ulp: u64,
    worst: (f64, f64),
}

/// Runs the scalar and f32x4 kernels over `a`/`b`, checks that they agree
/// bit for bit and returns the max ulp error against the reference.
fn check_f32(op: Op, a: &[f32], b: &[f32]) -> Report {
    let scalar = jit::<f32>(op, F32);
    let vector = jit::<f32>(op, F32X4);
    let f = reference(op);
    let mut rep = Report {
        max_ulp: 0,
        worst: (0.0, 0.0),
    };
    for (ca, cb) in a.chunks(1 << 20).zip(b.chunks(1 << 20)) {
        let s = run(scalar, ca, cb);
        let v = run(vector, ca, cb);
        for i in 0..ca.len() {
            assert!(
                s[i].to_bits() == v[i].to_bits(),
                "{op:?}({}, {}): scalar {} vector {}",
                ca[i],
                cb[i],
                s[i],
                v[i]
            );
            let want = f(f64::from(ca[i]), f64::from(cb[i])) as f32;
            let e = ulps32(s[i], want);
            if e > rep.max_ulp {
                rep.max_ulp = e;
                rep.worst = (f64::from(ca[i]), f64::from(cb[i]));
            }
        }
    }
    rep
}

fn check_unary_f32(op: UnOp, bound: u64) {
    let a = f32_inputs(0);
    let rep = check_f32(Op::Un(op), &a, &a);
    println!(
        "f32 {op:?}: max {} ulp at {:e} ({} inputs)",
        rep.max_ulp,
        rep.worst.0,
        a.len()
    );
    assert!(
        rep.max_ulp <= bound,
        "{op:?}: {} ulp at {:e}",
        rep.max_ulp,
        rep.worst.0
    );
}

/// Deterministic 64-bit generator (splitmix64).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Random bit patterns, random values in [-lim, lim], and special values.
fn f64_inputs(lim: f64) -> Vec<f64> {
    let mut s = 7u64;
    let mut v: Vec<f64> = (0..1 << 20)
        .map(|_| f64::from_bits(splitmix(&mut s)))
        .collect();
    v.extend((0..1 << 20).map(|_| {
        let u = splitmix(&mut s);
        (u >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * lim - lim
    }));
    v.extend((0..1 << 18).map(|_| {
        let u = splitmix(&mut s);
        (u >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }));
    v.extend(SPECIAL);
    v.extend([f64::MAX, f64::MIN, 5e-324, -5e-324, 1e-310, 1e300, -1e300]);
    pad4(&mut v, 0.0);
    v
}

/// f64 and f64x2 against the C library; returns the max ulp error over
/// inputs with |x| ≤ `domain`.
fn check_f64(op: Op, a: &[f64], b: &[f64], domain: f64) -> Report {
    let scalar = jit::<f64>(op, F64);
    let vector = jit::<f64>(op, F64X2);
    let f = reference(op);
    let s = run(scalar, a, b);
    let v = run(vector, a, b);
    let mut rep = Report {
        max_ulp: 0,
        worst: (0.0, 0.0),
    };
    for i in 0..a.len() {
        assert!(
            s[i].to_bits() == v[i].to_bits(),
            "{op:?}({}): f64 vs f64x2",
            a[i]
        );
        if a[i].abs() > domain {
            continue;
        }
        let e = ulps64(s[i], f(a[i], b[i]));
        if e > rep.max_ulp {
            rep.max_ulp = e;
            rep.worst = (a[i], b[i]);
        }
    }
    rep
}

fn check_unary_f64(op: UnOp, lim: f64, domain: f64, bound: u64) {
    let a = f64_inputs(lim);
    let rep = check_f64(Op::Un(op), &a, &a, domain);
    println!("f64 {op:?}: max {} ulp at {:e}", rep.max_ulp, rep.worst.0);
    assert!(
        rep.max_ulp <= bound,
        "f64 {op:?}: {} ulp at {:e}",
        rep.max_ulp,
        rep.worst.0
    );
}

/// name: op, f32 ulp bound, f64 input range ±lim, f64 checked domain |x| ≤ dom,
/// f64 ulp bound.
macro_rules! unary_tests {
    ($($name:ident: $op:ident, $b32:expr, $lim:expr, $dom:expr, $b64:expr;)*) => {$(
        #[test]
        fn $name() {
            check_unary_f32(UnOp::$op, $b32);
            check_unary_f64(UnOp::$op, $lim, $dom, $b64);
        }
    )*};
}

unary_tests! {
    exp: Exp, 1, 750.0, f64::INFINITY, 2;
    log: Log, 1, 1e6, f64::INFINITY, 2;
    sqrt: Sqrt, 0, 1e6, f64::INFINITY, 0;
    sin: Sin, 1, 1e5, 1_048_576.0, 2;
    cos: Cos, 1, 1e5, 1_048_576.0, 2;
    tan: Tan, 1, 1e5, 1_048_576.0, 4;
    asin: Asin, 1, 1.0, f64::INFINITY, 4;
    acos: Acos, 1, 1.0, f64::INFINITY, 4;
    atan: Atan, 1, 10.0, f64::INFINITY, 2;
    sinh: Sinh, 1, 720.0, f64::INFINITY, 4;
    cosh: Cosh, 1, 720.0, f64::INFINITY, 4;
    tanh: Tanh, 2, 20.0, f64::INFINITY, 4;
    asinh: Asinh, 1, 1e3, f64::INFINITY, 4;
    acosh: Acosh, 1, 1e3, f64::INFINITY, 4;
    atanh: Atanh, 1, 1.0, f64::INFINITY, 4;
    erf: Erf, 1, 7.0, f64::INFINITY, 4;
}

#[test]
fn sigmoid() {
    let a = f32_inputs(0);
    let rep = check_f32(Op::Sigmoid, &a, &a);
    println!("f32 sigmoid: max {} ulp at {:e}", rep.max_ulp, rep.worst.0);
    assert!(
        rep.max_ulp <= 2,
        "sigmoid: {} ulp at {:e}",
        rep.max_ulp,
        rep.worst.0
    );
    let a = f64_inputs(50.0);
    let rep = check_f64(Op::Sigmoid, &a, &a, f64::INFINITY);
    println!("f64 sigmoid: max {} ulp at {:e}", rep.max_ulp, rep.worst.0);
    assert!(
        rep.max_ulp <= 4,
        "f64 sigmoid: {} ulp at {:e}",
        rep.max_ulp,
        rep.worst.0
    );
}

/// Exponents that exercise C99's special cases.
const POW_Y: [f64; 24] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.0,
    3.0,
    -3.0,
    0.5,
    -0.5,
    1.0 / 3.0,
    2.5,
    -2.5,
    10.0,
    -7.0,
    100.0,
    -100.0,
    1e-3,
    16_777_216.0,
    16_777_217.0,
    1e20,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    0.75,
];

#[test]
fn pow_f32() {
    let xs: Vec<f32> = (0..1u64 << 32)
        .step_by(9973)
        .map(|b| f32::from_bits(b as u32))
        .chain(SPECIAL.iter().map(|&s| s as f32))
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &y in &POW_Y {
        a.extend(&xs);
        b.extend(std::iter::repeat_n(y as f32, xs.len()));
        // Every special value as the exponent of every special base too.
        for &x in &SPECIAL {
            a.push(x as f32);
            b.push(y as f32);
        }
    }
    let mut s = 11u64;
    for _ in 0..1 << 22 {
        let u = splitmix(&mut s);
        a.push(f32::from_bits(u as u32));
        // Exponents up to ~2^8 in magnitude, so many results stay finite.
        let e = f32::from_bits(((u >> 32) as u32 & 0x83ff_ffff) | 0x3800_0000);
        b.push(e);
    }
    pad4(&mut a, 1.0);
    pad4(&mut b, 1.0);
    let rep = check_f32(Op::Pow, &a, &b);
    println!(
        "f32 pow: max {} ulp at ({:e}, {:e}) over {} pairs",
        rep.max_ulp,
        rep.worst.0,
        rep.worst.1,
        a.len()
    );
    assert!(
        rep.max_ulp <= 1,
        "pow: {} ulp at {:?}",
        rep.max_ulp,
        (rep.worst.0, rep.worst.1)
    );
}

#[test]
fn pow_f64() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut s = 13u64;
    for _ in 0..1 << 20 {
        let u = splitmix(&mut s);
        a.push(f64::from_bits(
            u & 0xbfff_ffff_ffff_ffff | 0x3000_0000_0000_0000,
        ));
        let y = (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64 * 64.0 - 32.0;
        b.push(y);
    }
    for &y in &POW_Y {
        for &x in &SPECIAL {
            a.push(x);
            b.push(y);
        }
    }
    pad4(&mut a, 1.0);
    pad4(&mut b, 1.0);
    let scalar = jit::<f64>(Op::Pow, F64);
    let vector = jit::<f64>(Op::Pow, F64X2);
    let got = run(scalar, &a, &b);
    let vec = run(vector, &a, &b);
    // exp(y·log x) in double loses about |y·ln x| ulp.
    let mut worst = 0.0f64;
    for i in 0..a.len() {
        assert_eq!(
            got[i].to_bits(),
            vec[i].to_bits(),
            "pow({}, {})",
            a[i],
            b[i]
        );
        let want = unsafe { libm::pow(a[i], b[i]) };
        let e = ulps64(got[i], want) as f64;
        let growth = (b[i] * a[i].abs().ln()).abs();
        let allowed = 2.0 + 2.0 * if growth.is_finite() { growth } else { 0.0 };
        assert!(
            e <= allowed,
            "pow({:e}, {:e}) = {:e}, want {:e}",
            a[i],
            b[i],
            got[i],
            want
        );
        worst = worst.max(e / allowed);
    }
    println!("f64 pow: worst error / (2 + 2|y ln x|) = {worst:.3}");
}

/// Best of five timed runs, in ns per element.
fn ns_per(mut f: impl FnMut(), n: usize) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Calls a kernel on preallocated buffers.
fn run_into<T>(k: Kernel<T>, a: &[T], b: &[T], out: &mut [T]) {
    assert!(a.len() == out.len() && b.len() == out.len());
    // SAFETY: all three buffers hold out.len() elements, a multiple of 4.
    unsafe { k(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), out.len() as i64) };
}

/// Throughput against the C library's single-precision functions; prints
/// ns/element (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn bench_f32() {
    let n = 1 << 20;
    let mut s = 3u64;
    let a: Vec<f32> = (0..n)
        .map(|_| (splitmix(&mut s) >> 40) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0)
        .collect();
    let pos: Vec<f32> = a.iter().map(|x| x.abs() + 0.01).collect();
    type LibF = unsafe extern "C" fn(f32) -> f32;
    let cases: [(Op, LibF, &[f32]); 5] = [
        (Op::Un(UnOp::Exp), libm::expf, &a),
        (Op::Un(UnOp::Log), libm::logf, &pos),
        (Op::Un(UnOp::Tanh), libm::tanhf, &a),
        (Op::Un(UnOp::Erf), libm::erff, &a),
        (Op::Un(UnOp::Sin), libm::sinf, &a),
    ];
    for (op, lib, x) in cases {
        let sk = jit::<f32>(op, F32);
        let vk = jit::<f32>(op, F32X4);
        let mut out = vec![0.0f32; n];
        let ts = ns_per(|| run_into(sk, x, x, &mut out), n);
        let tv = ns_per(|| run_into(vk, x, x, &mut out), n);
        let tl = ns_per(
            || {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = unsafe { lib(v) };
                }
            },
            n,
        );
        println!("{op:?}: scalar {ts:.2} ns, f32x4 {tv:.2} ns, libm {tl:.2} ns per element");
    }
    let sk = jit::<f32>(Op::Sigmoid, F32X4);
    let mut out = vec![0.0f32; n];
    let tv = ns_per(|| run_into(sk, &a, &a, &mut out), n);
    let tl = ns_per(
        || {
            for (o, &x) in out.iter_mut().zip(&a) {
                *o = 1.0 / (1.0 + unsafe { libm::expf(-x) });
            }
        },
        n,
    );
    println!("Sigmoid: f32x4 {tv:.2} ns, 1/(1+expf(-x)) {tl:.2} ns per element");
    let sk = jit::<f32>(Op::Pow, F32X4);
    let mut out = vec![0.0f32; n];
    let tv = ns_per(|| run_into(sk, &pos, &a, &mut out), n);
    let tl = ns_per(
        || {
            for ((o, &x), &y) in out.iter_mut().zip(&pos).zip(&a) {
                *o = unsafe { libm::powf(x, y) };
            }
        },
        n,
    );
    println!("Pow: f32x4 {tv:.2} ns, libm {tl:.2} ns per element");
}

/// Every function must compile for aarch64 and for baseline x86_64
/// (SSE4.1, no AVX/FMA) as well as for the host.
#[test]
fn compiles_for_other_isas() {
    use std::str::FromStr;
    let mut x86 = settings::builder();
    x86.set("opt_level", "speed").expect("opt_level");
    let targets = [
        ("aarch64-unknown-linux-gnu", vec![]),
        (
            "x86_64-unknown-linux-gnu",
            vec!["has_sse3", "has_ssse3", "has_sse41"],
        ),
        (
            "x86_64-unknown-linux-gnu",
            vec![
                "has_sse3",
                "has_ssse3",
                "has_sse41",
                "has_sse42",
                "has_avx",
                "has_fma",
            ],
        ),
    ];
    let mut ops: Vec<Op> = crate::cpu::test_util::transcendental_unary()
        .into_iter()
        .chain([UnOp::Sqrt])
        .map(Op::Un)
        .collect();
    ops.extend([Op::Sigmoid, Op::Pow]);
    for (triple, isa_flags) in targets {
        let mut ib = cranelift_codegen::isa::lookup(
            target_lexicon::Triple::from_str(triple).expect("triple"),
        )
        .expect("ISA available");
        for f in &isa_flags {
            ib.enable(f).expect("ISA flag");
        }
        let isa = ib.finish(settings::Flags::new(x86.clone())).expect("ISA");
        for &op in &ops {
            for ty in [F32, F32X4, F64, F64X2] {
                let mut ctx = Context::for_function(loop_function(op, ty, isa.frontend_config()));
                ctx.compile(&*isa, &mut Default::default())
                    .unwrap_or_else(|e| panic!("{triple} {isa_flags:?} {op:?} {ty}: {e:?}"));
            }
        }
    }
}

#[test]
fn other_ops_and_types_are_declined() {
    let mut func = Function::new();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let blk = b.create_block();
    b.switch_to_block(blk);
    let x = b.ins().f32const(1.0);
    assert!(emit_unary(&mut b, UnOp::Neg, F32, x).is_none());
    assert!(emit_unary(&mut b, UnOp::Floor, F32, x).is_none());
    let i = b.ins().iconst(I64, 1);
    assert!(emit_unary(&mut b, UnOp::Exp, I64, i).is_none());
    assert!(emit_sigmoid(&mut b, I64, i).is_none());
}
