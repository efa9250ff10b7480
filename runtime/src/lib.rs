//! The runtime that links with kiln's generated code. `no_std` so that it fits
//! firmware: no allocator, no OS, no global state unless the `std` feature asks
//! for a thread pool.
//!
//! Two faces:
//! - a C ABI (`include/kiln_runtime.h`): [`kiln_parallel_for`], which
//!   generated code calls to split a loop, plus [`kiln_runtime_num_threads`]
//!   and [`kiln_runtime_version`];
//! - a safe Rust API ([`Model`], [`run`]) that checks counts, sizes, dtypes and
//!   the arena before calling a generated `NAME_run`, so that a wrong buffer
//!   is an error value and never memory corruption.
//!
//! On targets with an operating system the crate links `std` even without the
//! `std` feature: stable rustc cannot build a `no_std` static library with the
//! unwinding panic strategy those targets default to. Bare-metal targets
//! (`target_os = "none"`) stay `no_std` and use [`panic_handler`](core::panic).
#![no_std]

#[cfg(any(feature = "std", not(target_os = "none"), test))]
extern crate std;

/// `$go!(R)` for the constant `R` equal to `$r` (1 to 12; anything else as
/// 1): how the x86 kernels turn a runtime row or pixel count into the const
/// parameter their register tiles are unrolled over.
#[allow(unused_macros)]
macro_rules! by_count_to_12 {
    ($r:expr, $go:ident) => {
        match $r {
            12 => $go!(12),
            11 => $go!(11),
            10 => $go!(10),
            9 => $go!(9),
            8 => $go!(8),
            7 => $go!(7),
            6 => $go!(6),
            5 => $go!(5),
            4 => $go!(4),
            3 => $go!(3),
            2 => $go!(2),
            _ => $go!(1),
        }
    };
}

pub mod conv;
pub mod dwconv;
pub mod func;
pub mod gemm;
pub mod maxpool;
mod model;
#[cfg(feature = "std")]
mod pool;
#[cfg(test)]
mod test_rng;

pub use model::{
    run, Arena, DType, Element, Input, Model, ModelInfo, Output, RawRunFn, RunError, TensorInfo,
    ARENA_ALIGN,
};
#[cfg(feature = "std")]
pub use model::{OwnedArena, Session};

use core::ffi::{c_char, c_int, c_void};

/// Whether this CPU runs AVX-512F code (the direct conv and max pool
/// routines have no other kernel).
pub(crate) fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A loop body handed to [`kiln_parallel_for`]: runs iterations `begin..end`.
pub type Task = unsafe extern "C" fn(ctx: *mut c_void, begin: usize, end: usize);

/// Runs `task(ctx, begin, end)` over disjoint ranges covering `0..n`, possibly
/// on several threads, and returns when all of them have finished.
///
/// Without the `std` feature (firmware), this is `task(ctx, 0, n)`. With it,
/// the range is cut into a fixed number of chunks for a persistent pool (see
/// [`kiln_runtime_num_threads`]), which its threads, the caller's included,
/// claim: each its own share first, then what the others left. A call made
/// from inside a task, or while another thread uses the pool, runs inline
/// instead of waiting.
///
/// # Safety
/// `task` must be safe to call concurrently on disjoint ranges with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn kiln_parallel_for(n: usize, task: Option<Task>, ctx: *mut c_void) {
    let Some(task) = task else { return };
    if n == 0 {
        return;
    }
    #[cfg(feature = "std")]
    {
        pool::parallel_for(n, task, ctx);
    }
    #[cfg(not(feature = "std"))]
    {
        task(ctx, 0, n);
    }
}

/// Threads [`kiln_parallel_for`] may use, the caller's included: 1 without
/// the `std` feature; with it, `KILN_NUM_THREADS` if set to a positive number,
/// else the machine's available parallelism. Starts the pool if needed.
#[no_mangle]
pub extern "C" fn kiln_runtime_num_threads() -> c_int {
    #[cfg(feature = "std")]
    {
        c_int::try_from(pool::num_threads()).unwrap_or(c_int::MAX)
    }
    #[cfg(not(feature = "std"))]
    {
        1
    }
}

/// NUL-terminated so C can print it directly.
static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The runtime's version, e.g. `"0.1.0"` (a static string; never free it).
#[no_mangle]
pub extern "C" fn kiln_runtime_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// The version as a Rust string (without the NUL).
pub fn version() -> &'static str {
    &VERSION[..VERSION.len() - 1]
}

/// Bare metal has no unwinder and nobody to report to: a panic (which the
/// safe API never triggers on user data) parks the core.
#[cfg(all(
    feature = "panic-handler",
    target_os = "none",
    not(feature = "std"),
    not(test)
))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
