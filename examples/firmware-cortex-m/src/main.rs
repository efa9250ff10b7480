//! Runs a kiln-compiled model (`model_run`, linked from `model.o`) on reference
//! inputs, compares its outputs with the reference outputs (f32 within
//! `1e-4 + 1e-3 * |want|`, anything else bit-exact) and exits through
//! semihosting with a status QEMU passes on: 0 = match, 1 = mismatch,
//! 2 = `model_run` failed, 3 = output size differs, 70 = fault, 101 = panic.
//!
//! It also prints the arena size and the stack the inference used (the stack
//! below the caller is painted before and scanned after), and brackets the
//! inference with `bench_start`/`bench_stop` for the instruction-counting
//! QEMU plugin.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut};
use cortex_m_rt::{entry, exception, ExceptionFrame};

/// Storage with the alignment every tensor and the arena need.
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

mod io {
    use super::Aligned;
    include!(concat!(env!("OUT_DIR"), "/io.rs"));
}

extern "C" {
    fn model_run(inputs: *const *const u8, outputs: *const *mut u8, arena: *mut u8) -> i32;
    static model_output_sizes: [usize; 1];
    static __sheap: u32;
}

static mut ARENA: Aligned<[u8; io::ARENA_SIZE]> = Aligned([0; io::ARENA_SIZE]);
static mut OUTPUTS: Aligned<[u8; io::OUTPUT_BYTES]> = Aligned([0; io::OUTPUT_BYTES]);
static mut BENCH_SINK: u32 = 0;

const PAINT: u32 = 0xC0FF_EE11;
/// At most this much stack below the caller is painted.
const PAINT_LIMIT: usize = 256 * 1024;

/// Marks the start of the measured window (distinct body from `bench_stop`,
/// so the two are never merged).
#[no_mangle]
#[inline(never)]
pub extern "C" fn bench_start(id: u32) {
    // SAFETY: a plain store to a static only this firmware's one thread touches.
    unsafe { core::ptr::write_volatile(addr_of_mut!(BENCH_SINK), id) }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn bench_stop() {
    // SAFETY: as in `bench_start`.
    unsafe { core::ptr::write_volatile(addr_of_mut!(BENCH_SINK), 0) }
}

/// An ARM semihosting call (`bkpt 0xAB`; QEMU runs with semihosting enabled).
fn semihost(op: u32, arg: *const u8) -> u32 {
    let mut r0 = op;
    // SAFETY: the semihosting ABI reads `arg` as the operation's parameter block.
    unsafe { core::arch::asm!("bkpt 0xAB", inout("r0") r0, in("r1") arg, options(nostack)) };
    r0
}

/// SYS_EXIT_EXTENDED: QEMU exits with `code` as its own exit status.
fn exit(code: u32) -> ! {
    let block = [0x20026u32, code];
    semihost(0x20, block.as_ptr() as *const u8);
    loop {
        core::hint::spin_loop();
    }
}

/// SYS_WRITE0 of a NUL-terminated byte string.
fn puts(s: &[u8]) {
    let mut buf = [0u8; 96];
    let n = s.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&s[..n]);
    semihost(0x04, buf.as_ptr());
}

fn put_num(label: &[u8], mut v: usize) {
    let mut buf = [0u8; 96];
    let n = label.len().min(64);
    buf[..n].copy_from_slice(&label[..n]);
    let mut digits = [0u8; 20];
    let mut d = 0;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..d {
        buf[n + i] = digits[d - 1 - i];
    }
    buf[n + d] = b'\n';
    semihost(0x04, buf.as_ptr());
}

fn close(got: f32, want: f32) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    let d = if got > want { got - want } else { want - got };
    d <= 1e-4 + 1e-3 * if want < 0.0 { -want } else { want }
}

fn sp() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer only.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack)) };
    sp
}

fn run() -> u32 {
    let mut outs = [core::ptr::null_mut::<u8>(); io::EXPECTED.len()];
    let sizes = core::ptr::addr_of!(model_output_sizes) as *const usize;
    let base = addr_of_mut!(OUTPUTS) as *mut u8;
    let mut off = 0;
    for (i, (want, _)) in io::EXPECTED.iter().enumerate() {
        // SAFETY: `model_output_sizes` has one entry per output (checked at build time).
        let size = unsafe { *sizes.add(i) };
        if size != want.len() {
            puts(b"kiln-fw: output size differs from the reference\n");
            return 3;
        }
        // SAFETY: OUTPUT_BYTES is the sum of the 8-byte-rounded output sizes.
        outs[i] = unsafe { base.add(off) };
        off += want.len().div_ceil(8) * 8;
    }
    let inputs: [*const u8; io::INPUTS.len()] = core::array::from_fn(|i| io::INPUTS[i].as_ptr());

    // Paint the free stack below this frame, run, then find the deepest word written.
    let caller = sp();
    let top = caller - 64;
    let bottom = (addr_of!(__sheap) as usize).max(top.saturating_sub(PAINT_LIMIT)) & !3;
    let mut w = bottom;
    while w < top {
        // SAFETY: the words between the heap start and below the live stack are unused.
        unsafe { core::ptr::write_volatile(w as *mut u32, PAINT) };
        w += 4;
    }
    bench_start(1);
    // SAFETY: buffers of the sizes model.h declares; the arena is ARENA_SIZE bytes, 64-aligned.
    let rc = unsafe {
        model_run(
            inputs.as_ptr(),
            outs.as_ptr(),
            addr_of_mut!(ARENA) as *mut u8,
        )
    };
    bench_stop();
    let mut low = bottom;
    // SAFETY: reads back the painted words.
    while low < top && unsafe { core::ptr::read_volatile(low as *const u32) } == PAINT {
        low += 4;
    }
    if rc != 0 {
        puts(b"kiln-fw: model_run failed\n");
        return 2;
    }
    let (mut bad, mut n) = (0usize, 0usize);
    for (i, (want, kind)) in io::EXPECTED.iter().enumerate() {
        // SAFETY: outs[i] holds want.len() bytes written by model_run.
        let got = unsafe { core::slice::from_raw_parts(outs[i], want.len()) };
        if *kind == b'f' {
            for (g, e) in got.chunks_exact(4).zip(want.chunks_exact(4)) {
                let g = f32::from_le_bytes([g[0], g[1], g[2], g[3]]);
                let e = f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                bad += usize::from(!close(g, e));
                n += 1;
            }
        } else {
            bad += got.iter().zip(want.iter()).filter(|(g, e)| g != e).count();
            n += want.len();
        }
    }
    put_num(b"kiln-fw: arena bytes ", io::ARENA_SIZE);
    put_num(b"kiln-fw: stack bytes ", caller - low);
    put_num(b"kiln-fw: values compared ", n);
    put_num(b"kiln-fw: mismatches ", bad);
    if low == bottom {
        puts(b"kiln-fw: stack paint exhausted (stack figure is a lower bound)\n");
    }
    if bad == 0 {
        puts(b"kiln-fw: PASS\n");
        0
    } else {
        puts(b"kiln-fw: FAIL\n");
        1
    }
}

#[entry]
fn main() -> ! {
    exit(run())
}

#[exception]
unsafe fn HardFault(_ef: &ExceptionFrame) -> ! {
    puts(b"kiln-fw: hard fault\n");
    exit(70)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    puts(b"kiln-fw: panic\n");
    exit(101)
}
