//! The thread pool behind `kiln_parallel_for` (feature `std`).
//!
//! Generated code calls `kiln_parallel_for` once per parallel loop, often
//! thousands of times per inference, so a call must cost little: the pool is
//! started once (lazily) and kept; a job is a few words written into a
//! preallocated slot (no allocation, no boxing); workers spin briefly before
//! sleeping so back-to-back loops do not pay a wake-up each, and the caller
//! touches the lock only when a worker is asleep.
//!
//! Ranges are cut into a fixed number of chunks ([`CHUNKS_PER_THREAD`] per
//! thread, sizes differing by at most one), so the cut, and so any
//! floating-point reduction inside a chunk, is the same from run to run.
//! Which thread runs a chunk is not fixed: thread `k` first takes the
//! chunks of its own share in order, then helps with what is left of the
//! others'. On these machines a core is often shared with other work, and
//! with one fixed half per thread the faster thread then waited for the
//! slower one at every loop.

use crate::Task;
use core::ffi::c_void;
use std::boxed::Box;
use std::format;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// Polls before a waiting worker sleeps on the condition variable (some
/// tens of microseconds: long enough to catch the next loop of a model).
const SPIN: u32 = 1 << 16;
/// Every this many polls a waiting thread yields its core, so that when
/// there are more threads than cores the one with work gets to run.
const YIELD_EVERY: u32 = 64;

/// Chunks a range is cut into per thread taking part: enough that a
/// thread slowed down by other work on its core leaves a small tail to the
/// others, few enough that each chunk's fixed costs (a claim, a task call,
/// a GEMM task's packing) stay small.
const CHUNKS_PER_THREAD: usize = 4;

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
/// see the new epoch. Chunks are claimed from counters tagged with the
/// job's epoch, and the caller writes the next job only once every chunk
/// of this one has finished; so a worker that read a job's fields and then
/// claimed a chunk of that epoch read them whole, and a worker that comes
/// late (its core taken by other work) finds nothing left and holds no
/// one up. The hot path takes no lock: the mutex and condition variable
/// are only for workers that stopped spinning.
struct Shared {
    /// Incremented per job.
    epoch: AtomicUsize,
    /// The `Task` function pointer.
    task: AtomicPtr<()>,
    ctx: AtomicPtr<c_void>,
    n: AtomicUsize,
    /// Chunks of the current job.
    parts: AtomicUsize,
    /// Per thread asked for: its share's next chunk to claim, tagged with
    /// the job (see [`tagged`]), and the chunks it finished.
    slots: Box<[Slot]>,
    /// Workers blocked, or about to block, on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Set while a caller owns the pool; other callers and nested calls run inline.
    busy: AtomicBool,
}

/// One thread's counters, alone on their cache lines: a thread claims from
/// its own share and counts its own chunks without contending with the
/// others (a shared count of finished chunks, bounced between the cores
/// at every chunk, made an empty two-thread loop cost ~0.8 µs).
#[repr(align(128))]
struct Slot {
    next: AtomicU64,
    done: AtomicUsize,
}

/// Chunk `c` of the job of `epoch`, as the claim counters hold it: the
/// epoch's low 32 bits above the chunk index.
fn tagged(epoch: usize, c: usize) -> u64 {
    ((epoch as u64) << 32) | c as u64
}

/// Runs every chunk of the job of `epoch` that thread `me` can still
/// claim: first its own share's, in order, then what is left of the
/// others'. A chunk runs exactly once, by whoever's compare-exchange moved
/// its share's counter past it.
///
/// # Safety
/// As `kiln_parallel_for`, for the job of `epoch` published in `sh`
/// (`task`, `ctx`, `n`, `parts` read after seeing that epoch).
unsafe fn claim(sh: &Shared, me: usize, epoch: usize, job: (Task, *mut c_void, usize, usize)) {
    let (task, ctx, n, parts) = job;
    let shares = sh.slots.len();
    let done = &sh.slots[me].done;
    for j in (0..shares).map(|i| (me + i) % shares) {
        let end = tagged(epoch, range(parts, shares, j).1);
        let next = &sh.slots[j].next;
        let mut cur = next.load(Ordering::Acquire);
        // Same epoch, and not past the share's end (tags compare first).
        while cur >> 32 == tagged(epoch, 0) >> 32 && cur < end {
            match next.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let (b, e) = range(n, parts, (cur & u64::from(u32::MAX)) as usize);
                    task(ctx, b, e);
                    // Only this thread writes its count; the caller sums.
                    done.store(done.load(Ordering::Relaxed) + 1, Ordering::Release);
                    cur = next.load(Ordering::Acquire);
                }
                Err(now) => cur = now,
            }
        }
    }
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
        let wanted = wanted_threads();
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicUsize::new(0),
            task: AtomicPtr::new(core::ptr::null_mut()),
            ctx: AtomicPtr::new(core::ptr::null_mut()),
            n: AtomicUsize::new(0),
            parts: AtomicUsize::new(0),
            slots: (0..wanted)
                .map(|_| Slot {
                    next: AtomicU64::new(0),
                    done: AtomicUsize::new(0),
                })
                .collect(),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            busy: AtomicBool::new(false),
        }));
        let mut threads = 1;
        for w in 1..wanted {
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-worker-{w}"))
                .spawn(move || worker(shared, w));
            // Fewer threads than asked (a process limit) is still correct:
            // the shares of those missing are taken by the others.
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
        seen = sh.epoch.load(Ordering::Acquire);
        // Acquire: a field of a later job read here synchronizes with its
        // write, so the claim below cannot see this job's counters as
        // they were before that job was finished.
        let task = sh.task.load(Ordering::Acquire);
        if task.is_null() {
            continue;
        }
        // SAFETY: `task` is a `Task` a caller stored (never null once set).
        let task: Task = unsafe { core::mem::transmute::<*mut (), Task>(task) };
        let job = (
            task,
            sh.ctx.load(Ordering::Acquire),
            sh.n.load(Ordering::Acquire),
            sh.parts.load(Ordering::Acquire),
        );
        // SAFETY: the caller of `kiln_parallel_for` promised that `task`
        // may run concurrently on disjoint ranges with `ctx`; a chunk is
        // only run if its claim proves the job is still the one read (see
        // `Shared`), and the caller waits for every chunk to finish.
        unsafe { claim(sh, w, seen, job) };
    }
}

/// See `kiln_parallel_for`.
///
/// # Safety
/// As `kiln_parallel_for`.
pub unsafe fn parallel_for(n: usize, task: Task, ctx: *mut c_void) {
    let p = pool();
    let parts = p.threads.saturating_mul(CHUNKS_PER_THREAD).min(n);
    if p.threads <= 1
        || parts <= 1
        || p.shared
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        task(ctx, 0, n);
        return;
    }
    let sh = p.shared;
    let epoch = sh.epoch.load(Ordering::Relaxed).wrapping_add(1);
    sh.task.store(task as *mut (), Ordering::Release);
    sh.ctx.store(ctx, Ordering::Release);
    sh.n.store(n, Ordering::Release);
    sh.parts.store(parts, Ordering::Release);
    let shares = sh.slots.len();
    for (j, slot) in sh.slots.iter().enumerate() {
        slot.done.store(0, Ordering::Relaxed);
        let first = tagged(epoch, range(parts, shares, j).0);
        slot.next.store(first, Ordering::Relaxed);
    }
    // SeqCst: ordered with the load of `sleepers` below (see `worker`),
    // and a release of everything above.
    sh.epoch.store(epoch, Ordering::SeqCst);
    if sh.sleepers.load(Ordering::SeqCst) > 0 {
        let _g = lock(&sh.lock);
        sh.wake.notify_all();
    }
    claim(sh, 0, epoch, (task, ctx, n, parts));
    let mut spins = 0u32;
    while sh
        .slots
        .iter()
        .map(|s| s.done.load(Ordering::Acquire))
        .sum::<usize>()
        != parts
    {
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
