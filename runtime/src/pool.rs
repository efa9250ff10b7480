//! The thread pool behind `kiln_parallel_for` (feature `std`).
//!
//! Generated code calls `kiln_parallel_for` once per parallel loop, often
//! thousands of times per inference, so a call must cost little: the pool is
//! started once (lazily) and kept; a job is a few words written into a
//! preallocated slot (no allocation, no boxing); workers spin briefly before
//! sleeping so back-to-back loops do not pay a wake-up each, and the caller
//! touches the lock only when a worker is asleep. Ranges are
//! split statically (part `k` of `p` always goes to thread `k`), which makes
//! the split, and so any floating-point reduction inside a part, the same
//! from run to run.

use crate::Task;
use core::ffi::c_void;
use std::boxed::Box;
use std::format;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// Polls before a waiting worker sleeps on the condition variable (some
/// tens of microseconds: long enough to catch the next loop of a model).
const SPIN: u32 = 1 << 16;
/// Every this many polls a waiting thread yields its core, so that when
/// there are more threads than cores the one with work gets to run.
const YIELD_EVERY: u32 = 64;

/// One poll of a wait loop: a CPU pause, or a yield now and then.
fn pause(i: u32) {
    if i % YIELD_EVERY == YIELD_EVERY - 1 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// The pool's shared state. The job fields are written only by the thread
/// holding `busy`, before it bumps `epoch`, and read by workers after they
/// see the new epoch; every worker acknowledges every epoch (through
/// `remaining`) before the next job may be written, so no worker can read a
/// half-written job. The hot path takes no lock: the mutex and condition
/// variable are only for workers that stopped spinning.
struct Shared {
    /// Incremented per job.
    epoch: AtomicUsize,
    /// The `Task` function pointer.
    task: AtomicPtr<()>,
    ctx: AtomicPtr<c_void>,
    n: AtomicUsize,
    parts: AtomicUsize,
    /// Workers that have not finished (or, with no part, seen) the current job.
    remaining: AtomicUsize,
    /// Workers blocked, or about to block, on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Set while a caller owns the pool; other callers and nested calls run inline.
    busy: AtomicBool,
}

struct Pool {
    /// Threads that take part, the caller's included.
    threads: usize,
    shared: &'static Shared,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// A poisoned lock only means another thread panicked while holding it; it
/// guards no data.
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `KILN_NUM_THREADS` if it is a positive integer, else all cores.
fn wanted_threads() -> usize {
    std::env::var("KILN_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicUsize::new(0),
            task: AtomicPtr::new(core::ptr::null_mut()),
            ctx: AtomicPtr::new(core::ptr::null_mut()),
            n: AtomicUsize::new(0),
            parts: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            busy: AtomicBool::new(false),
        }));
        let mut threads = 1;
        for w in 1..wanted_threads() {
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-worker-{w}"))
                .spawn(move || worker(shared, w));
            // Fewer threads than asked (a process limit) is still correct.
            if spawned.is_err() {
                break;
            }
            threads += 1;
        }
        Pool { threads, shared }
    })
}

/// Number of threads taking part, the caller's included.
pub fn num_threads() -> usize {
    pool().threads
}

/// `[begin, end)` of part `k` of `parts` over `0..n`: sizes differ by at most one.
fn range(n: usize, parts: usize, k: usize) -> (usize, usize) {
    let (q, r) = (n / parts, n % parts);
    let begin = |k: usize| k * q + k.min(r);
    (begin(k), begin(k + 1))
}

fn worker(sh: &'static Shared, w: usize) {
    let mut seen = 0;
    loop {
        let mut spins = 0;
        while sh.epoch.load(Ordering::Acquire) == seen && spins < SPIN {
            pause(spins);
            spins += 1;
        }
        if sh.epoch.load(Ordering::Acquire) == seen {
            // Announce the sleep before the last check: a caller bumps the
            // epoch, then looks at `sleepers` (both SeqCst), so either this
            // check sees the new epoch or the caller sees this sleeper and
            // notifies under the lock, which it can only take once we wait.
            let mut g = lock(&sh.lock);
            sh.sleepers.fetch_add(1, Ordering::SeqCst);
            while sh.epoch.load(Ordering::SeqCst) == seen {
                g = sh.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        // The caller waits for every worker's acknowledgement before the
        // next job, so the epoch moved exactly one step.
        seen = sh.epoch.load(Ordering::Acquire);
        let parts = sh.parts.load(Ordering::Relaxed);
        if w < parts {
            let n = sh.n.load(Ordering::Relaxed);
            let ctx = sh.ctx.load(Ordering::Relaxed);
            let task = sh.task.load(Ordering::Relaxed);
            // SAFETY: `task` holds the `Task` the caller stored for this
            // epoch (never null: the caller stores it before the epoch).
            let task: Task = unsafe { core::mem::transmute::<*mut (), Task>(task) };
            let (b, e) = range(n, parts, w);
            // SAFETY: the caller of `kiln_parallel_for` promised that `task`
            // may run concurrently on disjoint ranges with `ctx`, and it
            // waits for `remaining` to reach 0 before returning.
            unsafe { task(ctx, b, e) };
        }
        sh.remaining.fetch_sub(1, Ordering::Release);
    }
}

/// See `kiln_parallel_for`.
///
/// # Safety
/// As `kiln_parallel_for`.
pub unsafe fn parallel_for(n: usize, task: Task, ctx: *mut c_void) {
    let p = pool();
    let parts = p.threads.min(n);
    if parts <= 1
        || p.shared
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        task(ctx, 0, n);
        return;
    }
    let sh = p.shared;
    sh.task.store(task as *mut (), Ordering::Relaxed);
    sh.ctx.store(ctx, Ordering::Relaxed);
    sh.n.store(n, Ordering::Relaxed);
    sh.parts.store(parts, Ordering::Relaxed);
    sh.remaining.store(p.threads - 1, Ordering::Relaxed);
    sh.epoch.fetch_add(1, Ordering::SeqCst);
    if sh.sleepers.load(Ordering::SeqCst) > 0 {
        let _g = lock(&sh.lock);
        sh.wake.notify_all();
    }
    let (b, e) = range(n, parts, 0);
    task(ctx, b, e);
    let mut spins = 0u32;
    while sh.remaining.load(Ordering::Acquire) != 0 {
        pause(spins);
        spins = spins.wrapping_add(1);
    }
    sh.busy.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::vec::Vec;

    #[test]
    fn ranges_cover_exactly() {
        for n in [1usize, 2, 3, 7, 64, 1000, 1001] {
            for parts in 1..=8.min(n) {
                let mut next = 0;
                for k in 0..parts {
                    let (b, e) = range(n, parts, k);
                    assert_eq!(b, next);
                    assert!(e - b == n / parts || e - b == n / parts + 1);
                    next = e;
                }
                assert_eq!(next, n);
            }
        }
    }

    struct Ctx {
        hits: Vec<AtomicU64>,
        nested: bool,
    }

    unsafe extern "C" fn count(ctx: *mut c_void, b: usize, e: usize) {
        let c = &*(ctx as *const Ctx);
        for i in b..e {
            c.hits[i].fetch_add(1, Ordering::Relaxed);
            if c.nested {
                let inner = Ctx {
                    hits: (0..5).map(|_| AtomicU64::new(0)).collect(),
                    nested: false,
                };
                parallel_for(5, count, &inner as *const Ctx as *mut c_void);
                assert!(inner.hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn every_index_once_even_nested_and_from_many_threads() {
        std::thread::scope(|s| {
            for t in 0..3 {
                s.spawn(move || {
                    for round in 0..200 {
                        let n = 1 + (round * 7 + t) % 50;
                        let c = Ctx {
                            hits: (0..n).map(|_| AtomicU64::new(0)).collect(),
                            nested: round % 3 == 0,
                        };
                        unsafe { parallel_for(n, count, &c as *const Ctx as *mut c_void) };
                        assert!(c.hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
        assert!(num_threads() >= 1);
    }
}
